/* le.h — token ids to and from little-endian bytes of width 2 or 4, for
 * buffers with no alignment. Plain loops over memcpy'd words, which the
 * compiler turns into vector code: these run once per token of every stream
 * and shard. */
#ifndef LLMUX_LE_H
#define LLMUX_LE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline void llm_le_to_u32(uint32_t *out, const void *in, size_t n, int width)
{
    const unsigned char *b = in;
    if (!n) return;   /* out may be NULL then */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (width == 4) { memcpy(out, b, n * 4); return; }
    for (size_t i = 0; i < n; i++) {
        uint16_t v;
        memcpy(&v, b + 2 * i, 2);
        out[i] = v;
    }
#else
    for (size_t i = 0; i < n; i++, b += width)
        out[i] = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (width == 4 ? (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24 : 0);
#endif
}

/* Returns -1 when an id does not fit a 2-byte width (out is then partial). */
static inline int llm_u32_to_le(void *out, const uint32_t *in, size_t n, int width)
{
    unsigned char *b = out;
    if (!n) return 0;   /* out may be NULL then */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (width == 4) { memcpy(b, in, n * 4); return 0; }
    uint32_t high = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t v = (uint16_t)in[i];
        high |= in[i] >> 16;
        memcpy(b + 2 * i, &v, 2);
    }
    return high ? -1 : 0;
#else
    for (size_t i = 0; i < n; i++) {
        uint32_t v = in[i];
        if (width == 2 && v > 0xffff) return -1;
        for (int k = 0; k < width; k++) *b++ = (unsigned char)(v >> (8 * k));
    }
    return 0;
#endif
}

#endif
