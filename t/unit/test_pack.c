/* Packing: every token that goes in comes out, in order, in sequences of
 * T + 1 that overlap by one; per-document packing never mixes documents. */
#include "pack.h"
#include "unit.h"


typedef struct {
    uint32_t *tok;
    uint8_t *mask;
    size_t n, cap, seqs, T;
    int bad;
} collected;

static int collect(void *ctx, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err)
{
    (void)err;
    collected *c = ctx;
    if (n != c->T + 1) c->bad++;
    if (c->n + n > c->cap) {
        c->cap = 2 * (c->n + n);
        c->tok = realloc(c->tok, c->cap * sizeof *c->tok);
        c->mask = realloc(c->mask, c->cap);
    }
    memcpy(c->tok + c->n, tokens, n * sizeof *tokens);
    if (mask) memcpy(c->mask + c->n, mask, n);
    else memset(c->mask + c->n, 2, n);
    c->n += n;
    c->seqs++;
    return 0;
}

enum { EOS = 99999, DOCS = 40 };

static uint32_t doc_tokens[DOCS][300];
static uint8_t doc_mask[DOCS][300];
static size_t doc_len[DOCS];

static void make_docs(void)
{
    for (int d = 0; d < DOCS; d++) {
        doc_len[d] = (size_t)(unit_rand() % 200);
        for (size_t i = 0; i < doc_len[d]; i++) {
            doc_tokens[d][i] = (uint32_t)(unit_rand() % 50000);
            doc_mask[d][i] = (uint8_t)(unit_rand() & 1);
        }
    }
}

TEST(packed_round_trip)
{
    size_t Ts[] = {1, 2, 7, 64, 1000};
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
        for (int masked = 0; masked < 2; masked++) {
            size_t T = Ts[ti];
            collected c = {.T = T};
            llm_pack_opts o = {T, EOS, EOS, 1, masked};
            llm_packer *p;
            llm_err e;
            CHECK(llm_packer_new(&p, &o, collect, &c, &e) == 0);
            /* the stream the sequences must come from: documents, each followed by EOS */
            uint32_t *want = malloc(DOCS * 301 * sizeof *want);
            uint8_t *want_mask = malloc(DOCS * 301);
            size_t nwant = 0;
            for (int d = 0; d < DOCS; d++) {
                CHECK(llm_packer_add(p, doc_tokens[d], masked ? doc_mask[d] : NULL, doc_len[d], &e) == 0);
                for (size_t i = 0; i < doc_len[d]; i++) {
                    want[nwant] = doc_tokens[d][i];
                    want_mask[nwant++] = masked ? doc_mask[d][i] : 1;
                }
                want[nwant] = EOS;
                want_mask[nwant++] = masked ? 0 : 1;
            }
            CHECK(llm_packer_finish(p, &e) == 0);
            const llm_pack_stats *st = llm_packer_stats(p);
            CHECK(c.bad == 0);
            CHECK_EQ_U64(st->sequences, c.seqs);
            CHECK_EQ_U64(c.seqs, nwant >= T + 1 ? (nwant - 1) / T : 0);
            /* sequence k is want[k*T .. k*T + T] */
            int wrong = 0;
            for (size_t k = 0; k < c.seqs; k++)
                for (size_t j = 0; j <= T; j++) {
                    if (c.tok[k * (T + 1) + j] != want[k * T + j]) wrong++;
                    uint8_t m = c.mask[k * (T + 1) + j];
                    if (masked ? m != want_mask[k * T + j] : m != 2) wrong++;
                }
            CHECK(wrong == 0);
            /* every token is in a sequence or counted as dropped */
            CHECK_EQ_U64(c.seqs * T + (c.seqs ? 1 : 0) + st->tokens_dropped, nwant);
            llm_packer_free(p);
            free(want);
            free(want_mask);
            free(c.tok);
            free(c.mask);
        }
    }
}

TEST(per_document_sequences_do_not_mix)
{
    size_t T = 16;
    collected c = {.T = T};
    llm_pack_opts o = {T, EOS, 7, 0, 0};
    llm_packer *p;
    llm_err e;
    CHECK(llm_packer_new(&p, &o, collect, &c, &e) == 0);
    size_t expect_seqs = 0;
    for (int d = 0; d < DOCS; d++) {
        size_t before = c.seqs;
        CHECK(llm_packer_add(p, doc_tokens[d], NULL, doc_len[d], &e) == 0);
        size_t n = doc_len[d] + 1;   /* with its EOS */
        expect_seqs += n > 1 ? (n - 2) / T + 1 : 0;
        /* this document's sequences: its tokens, its EOS, then padding with mask 0 */
        size_t at = 0;
        int wrong = 0;
        for (size_t k = before; k < c.seqs; k++)
            for (size_t j = 0; j <= T; j++) {
                size_t pos = (k - before) * T + j;
                uint32_t tok = c.tok[k * (T + 1) + j];
                uint8_t m = c.mask[k * (T + 1) + j];
                if (pos < doc_len[d]) wrong += tok != doc_tokens[d][pos] || m != 1;
                else if (pos == doc_len[d]) wrong += tok != EOS || m != 1;
                else wrong += tok != 7 || m != 0;
                at = pos;
            }
        (void)at;
        CHECK(wrong == 0);
    }
    CHECK_EQ_U64(c.seqs, expect_seqs);
    CHECK(llm_packer_finish(p, &e) == 0);
    CHECK_EQ_U64(llm_packer_stats(p)->tokens_dropped, 0);
    llm_packer_free(p);
    free(c.tok);
    free(c.mask);
}

TEST(document_ending_in_eos_gets_no_second)
{
    collected c = {.T = 3};
    llm_pack_opts o = {3, EOS, EOS, 1, 0};
    llm_packer *p;
    llm_err e;
    CHECK(llm_packer_new(&p, &o, collect, &c, &e) == 0);
    uint32_t d1[] = {1, 2, EOS}, d2[] = {3};
    llm_packer_add(p, d1, NULL, 3, &e);
    llm_packer_add(p, d2, NULL, 1, &e);
    llm_packer_finish(p, &e);
    CHECK(c.seqs == 1 && c.tok[0] == 1 && c.tok[1] == 2 && c.tok[2] == EOS && c.tok[3] == 3);
    CHECK_EQ_U64(llm_packer_stats(p)->tokens_dropped, 1);   /* the last EOS */
    llm_packer_free(p);
    free(c.tok);
    free(c.mask);
}

/* A document appended in pieces (any sizes, a long one among them) packs
 * exactly as when added whole, packed or per document, masked or not. */
TEST(pieces_pack_as_the_whole)
{
    enum { LONG = 200000 };
    static uint32_t big[LONG];
    static uint8_t big_mask[LONG];
    for (size_t i = 0; i < LONG; i++) { big[i] = (uint32_t)(unit_rand() % 50000); big_mask[i] = (uint8_t)(i & 1); }
    for (int cross = 0; cross < 2; cross++) {
        for (int masked = 0; masked < 2; masked++) {
            size_t T = 37;
            collected whole = {.T = T}, parts = {.T = T};
            llm_pack_opts o = {T, EOS, EOS, cross, masked};
            llm_packer *a, *b;
            llm_err e;
            CHECK(llm_packer_new(&a, &o, collect, &whole, &e) == 0 && llm_packer_new(&b, &o, collect, &parts, &e) == 0);
            for (int d = 0; d < DOCS; d++) {
                const uint8_t *m = masked ? doc_mask[d] : NULL;
                CHECK(llm_packer_add(a, doc_tokens[d], m, doc_len[d], &e) == 0);
                size_t cut = doc_len[d] ? unit_rand() % doc_len[d] : 0;
                CHECK(llm_packer_append(b, doc_tokens[d], m, cut, &e) == 0);
                CHECK(llm_packer_append(b, doc_tokens[d] + cut, m ? m + cut : NULL, doc_len[d] - cut, &e) == 0);
                CHECK(llm_packer_end_doc(b, &e) == 0);
            }
            CHECK(llm_packer_add(a, big, masked ? big_mask : NULL, LONG, &e) == 0);
            for (size_t at = 0; at < LONG; at += 70001) {
                size_t k = LONG - at < 70001 ? LONG - at : 70001;
                CHECK(llm_packer_append(b, big + at, masked ? big_mask + at : NULL, k, &e) == 0);
            }
            CHECK(llm_packer_end_doc(b, &e) == 0);
            CHECK(llm_packer_finish(a, &e) == 0 && llm_packer_finish(b, &e) == 0);
            CHECK_EQ_U64(whole.n, parts.n);
            CHECK(whole.n == parts.n && !memcmp(whole.tok, parts.tok, whole.n * 4) && !memcmp(whole.mask, parts.mask, whole.n));
            CHECK(!memcmp(llm_packer_stats(a), llm_packer_stats(b), sizeof(llm_pack_stats)));
            llm_packer_free(a);
            llm_packer_free(b);
            free(whole.tok); free(whole.mask); free(parts.tok); free(parts.mask);
        }
    }
}

int main(void)
{
    unit_seed();
    make_docs();
    RUN(packed_round_trip);
    RUN(per_document_sequences_do_not_mix);
    RUN(document_ending_in_eos_gets_no_second);
    RUN(pieces_pack_as_the_whole);
    return unit_done();
}
