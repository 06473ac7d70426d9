/* BPE encoding: the fast paths (small-piece loop, heap for long pieces,
 * cache) against the reference loop on random vocabularies and pieces. */
#include "bpe.h"
#include "unit.h"

/* A vocabulary over a small alphabet: 256 bytes, then `merges` random merges
 * of existing tokens (ranks in creation order), the way BPE training grows one. */
static llm_bpe *random_vocab(int merges, int ranks_mode)
{
    llm_bpe *b = llm_bpe_new();
    llm_err e;
    static unsigned char tok[4096][64];
    static size_t len[4096];
    uint32_t n = 0;
    for (int c = 0; c < 256; c++, n++) {
        tok[n][0] = (unsigned char)c;
        len[n] = 1;
        llm_bpe_set_token(b, n, tok[n], 1, &e);
    }
    for (int m = 0; m < merges && n < 4096; m++) {
        /* merge two tokens over the alphabet "abcd" so that pieces hit many merges */
        uint32_t x = 'a' + (uint32_t)(unit_rand() % 4), y = 'a' + (uint32_t)(unit_rand() % 4);
        if (n > 256 && unit_rand() % 3) x = 256 + (uint32_t)(unit_rand() % (n - 256));
        if (n > 256 && unit_rand() % 2) y = 256 + (uint32_t)(unit_rand() % (n - 256));
        if (len[x] + len[y] > 64) continue;
        memcpy(tok[n], tok[x], len[x]);
        memcpy(tok[n] + len[x], tok[y], len[y]);
        len[n] = len[x] + len[y];
        uint32_t existing;
        if (llm_bpe_lookup(b, tok[n], len[n], &existing) == 0) continue;
        llm_bpe_set_token(b, n, tok[n], len[n], &e);
        if (!ranks_mode) llm_bpe_add_merge(b, x, y, n, &e);
        n++;
    }
    if (ranks_mode) llm_bpe_merges_from_ranks(b, &e);
    return b;
}

static int same(const llm_ids *a, const llm_ids *b)
{
    return a->n == b->n && !memcmp(a->v, b->v, a->n * sizeof *a->v);
}

TEST(fast_paths_match_reference)
{
    llm_err e;
    int bad = 0;
    for (int v = 0; v < 6; v++) {
        llm_bpe *b = random_vocab(300 + v * 200, v & 1);
        llm_bpe_scratch *s = llm_bpe_scratch_new();
        unsigned char piece[3000];
        for (int rep = 0; rep < 300; rep++) {
            size_t n = rep % 10 == 0 ? 65 + unit_rand() % 2900 : 1 + unit_rand() % 40;
            for (size_t i = 0; i < n; i++) piece[i] = (unsigned char)('a' + unit_rand() % 4);
            llm_ids fast = {0}, ref = {0};
            /* twice: the second call may come from the cache */
            for (int k = 0; k < 2; k++) {
                fast.n = 0;
                CHECK(llm_bpe_encode(b, s, piece, n, &fast, &e) == 0);
            }
            CHECK(llm_bpe_encode_ref(b, piece, n, &ref, &e) == 0);
            if (!same(&fast, &ref)) bad++;
            /* decoding the ids gives the piece back */
            size_t at = 0;
            for (size_t i = 0; i < fast.n; i++) {
                size_t len;
                const unsigned char *p = llm_bpe_token(b, fast.v[i], &len);
                if (!p || at + len > n || memcmp(p, piece + at, len)) { bad++; break; }
                at += len;
            }
            llm_ids_free(&fast);
            llm_ids_free(&ref);
        }
        llm_bpe_scratch_free(s);
        llm_bpe_free(b);
    }
    CHECK(bad == 0);
}

TEST(known_merges)
{
    llm_err e;
    llm_bpe *b = llm_bpe_new();
    for (int c = 0; c < 256; c++) { unsigned char x = (unsigned char)c; llm_bpe_set_token(b, (uint32_t)c, &x, 1, &e); }
    llm_bpe_set_token(b, 256, "ab", 2, &e);
    llm_bpe_set_token(b, 257, "bc", 2, &e);
    llm_bpe_set_token(b, 258, "abc", 3, &e);
    CHECK(llm_bpe_add_merge(b, 'b', 'c', 0, &e) == 0);   /* bc first: rank 0 */
    CHECK(llm_bpe_add_merge(b, 'a', 'b', 1, &e) == 0);
    CHECK(llm_bpe_add_merge(b, 'a', 257, 2, &e) == 0);
    CHECK(llm_bpe_add_merge(b, 'x', 'y', 3, &e) != 0);   /* "xy" is no token */
    llm_bpe_scratch *s = llm_bpe_scratch_new();
    llm_ids out = {0};
    CHECK(llm_bpe_encode(b, s, (const unsigned char *)"abcab", 5, &out, &e) == 0);
    CHECK(out.n == 2 && out.v[0] == 258 && out.v[1] == 256);
    CHECK(llm_bpe_set_token(b, 300, "ab", 2, &e) != 0);  /* same bytes twice */
    llm_ids_free(&out);
    llm_bpe_scratch_free(s);
    llm_bpe_free(b);
}

TEST(char_symbols_with_byte_fallback)
{
    llm_err e;
    llm_bpe *b = llm_bpe_new();
    char name[8];
    for (int c = 0; c < 256; c++) {
        snprintf(name, sizeof name, "<0x%02X>", c);
        llm_bpe_set_token(b, (uint32_t)(3 + c), name, 6, &e);
    }
    llm_bpe_set_token(b, 300, "\xe2\x96\x81", 3, &e);   /* ▁ */
    llm_bpe_set_token(b, 301, "h", 1, &e);
    llm_bpe_set_token(b, 302, "i", 1, &e);
    llm_bpe_set_token(b, 303, "hi", 2, &e);
    llm_bpe_set_token(b, 304, "\xe2\x96\x81hi", 5, &e);
    llm_bpe_add_merge(b, 301, 302, 0, &e);
    llm_bpe_add_merge(b, 300, 303, 1, &e);
    llm_bpe_set_char_symbols(b, 1, 0);
    llm_bpe_scratch *s = llm_bpe_scratch_new();
    llm_ids out = {0};
    /* "▁hi" then "é" (not in vocab: two fallback bytes) */
    CHECK(llm_bpe_encode(b, s, (const unsigned char *)"\xe2\x96\x81hi\xc3\xa9", 7, &out, &e) == 0);
    CHECK(out.n == 3 && out.v[0] == 304 && out.v[1] == 3 + 0xc3 && out.v[2] == 3 + 0xa9);
    llm_ids_free(&out);
    llm_bpe_scratch_free(s);
    llm_bpe_free(b);
}

int main(void)
{
    unit_seed();
    RUN(fast_paths_match_reference);
    RUN(known_merges);
    RUN(char_symbols_with_byte_fallback);
    return unit_done();
}
