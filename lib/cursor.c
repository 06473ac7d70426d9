#include "cursor.h"
#include "hash.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

int llm_cursor_init(llm_cursor *c, uint64_t n, uint64_t seed, int shuffle, uint32_t rank, uint32_t world, llm_err *err)
{
    if (!n) return llm_errf(err, "a cursor over an empty set");
    if (!world || rank >= world) return llm_errf(err, "rank %u of %u ranks", rank, world);
    memset(c, 0, sizeof *c);
    c->n = n;
    c->seed = seed;
    c->shuffle = shuffle;
    c->rank = rank;
    c->world = world;
    c->pos = rank < n ? rank : rank % n;
    return 0;
}

/* A bijection of [0, 2^bits), bits even: four Feistel rounds over the two
 * halves, each round keyed by the key and its number. */
static uint64_t feistel(uint64_t x, int bits, uint64_t key)
{
    int half = bits / 2;
    uint64_t hmask = (1ull << half) - 1;
    uint64_t a = x >> half, b = x & hmask;
    for (int round = 0; round < 4; round++) {
        uint64_t f = llm_hash_mix(key ^ ((uint64_t)round + 1) * 0x9e3779b97f4a7c15ull ^ b) & hmask;
        uint64_t t = b;
        b = a ^ f;
        a = t;
    }
    return a << half | b;
}

uint64_t llm_cursor_order(const llm_cursor *c, uint64_t epoch, uint64_t pos)
{
    if (!c->shuffle || c->n < 2) return pos;
    int bits = 2;   /* even, and 2^bits >= n: the walk back takes under 4 steps on average */
    while (bits < 62 && (1ull << bits) < c->n) bits += 2;
    uint64_t key = llm_hash_mix(c->seed ^ llm_hash_mix(epoch + 0x5851f42d4c957f2dull));
    uint64_t x = pos;
    do x = feistel(x, bits, key); while (x >= c->n);   /* cycle-walk back into [0, n) */
    return x;
}

uint64_t llm_cursor_next(llm_cursor *c)
{
    if (c->pos >= c->n) {
        c->epoch++;
        c->pos = c->rank;
        if (c->pos >= c->n) c->pos = c->rank % c->n;   /* more ranks than sequences */
    }
    uint64_t i = llm_cursor_order(c, c->epoch, c->pos);
    c->pos += c->world;
    return i;
}

int llm_cursor_save(const llm_cursor *c, char *buf, size_t size)
{
    int n = snprintf(buf, size, "{\"n\":%llu,\"seed\":%llu,\"shuffle\":%s,\"rank\":%u,\"world\":%u,\"epoch\":%llu,\"pos\":%llu}",
                     (unsigned long long)c->n, (unsigned long long)c->seed, c->shuffle ? "true" : "false", c->rank,
                     c->world, (unsigned long long)c->epoch, (unsigned long long)c->pos);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int llm_cursor_load(llm_cursor *c, const char *text, uint64_t n, llm_err *err)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j) return llm_errf(err, "cursor: invalid JSON: %s", jerr.text);
    const char *keys[] = {"n", "seed", "rank", "world", "epoch", "pos"};
    uint64_t v[6];
    int rc = 0;
    for (int i = 0; i < 6 && !rc; i++) {
        json_t *x = json_object_get(j, keys[i]);
        if (!json_is_integer(x) || json_integer_value(x) < 0) rc = llm_errf(err, "cursor: field '%s' missing or invalid", keys[i]);
        else v[i] = (uint64_t)json_integer_value(x);
    }
    json_t *sh = json_object_get(j, "shuffle");
    if (!rc && !json_is_boolean(sh)) rc = llm_errf(err, "cursor: field 'shuffle' missing or invalid");
    if (!rc && v[0] != n) rc = llm_errf(err, "cursor: saved over %llu sequences, the set has %llu", (unsigned long long)v[0], (unsigned long long)n);
    if (!rc && (v[3] == 0 || v[2] >= v[3] || v[3] > UINT32_MAX)) rc = llm_errf(err, "cursor: rank %llu of %llu", (unsigned long long)v[2], (unsigned long long)v[3]);
    if (!rc) {
        c->n = v[0];
        c->seed = v[1];
        c->rank = (uint32_t)v[2];
        c->world = (uint32_t)v[3];
        c->epoch = v[4];
        c->pos = v[5];
        c->shuffle = json_is_true(sh);
    }
    json_decref(j);
    return rc;
}
