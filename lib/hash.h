/* hash.h — the one hash of byte strings that lib/'s tables use. */
#ifndef LLMUX_HASH_H
#define LLMUX_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A 64-bit finalizer (MurmurHash3's fmix64 constants). */
static inline uint64_t llm_hash_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Eight bytes at a time, then the tail, then the finalizer: fast for the
 * short strings tokens are, and all 64 bits usable (tags take the low 32). */
static inline uint64_t llm_hash_bytes(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xbf58476d1ce4e5b9ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    if (n) memcpy(&w, p, n);
    return llm_hash_mix(h ^ w);
}

#endif
