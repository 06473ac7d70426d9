#include "pack.h"

#include <stdlib.h>
#include <string.h>

struct llm_packer {
    llm_pack_opts o;
    llm_seq_fn fn;
    void *ctx;
    uint32_t *tok;       /* pending tokens: [0, n) */
    uint8_t *mask;       /* their masks, when o.masks */
    size_t n, cap;
    llm_pack_stats stats;
    size_t doc_tokens;   /* of the document being appended */
    uint32_t last;       /* its last token so far */
    int doc_masked;      /* it came with a mask */
};

/* Tokens are taken in pieces of this many, so a long document costs no
 * more memory than a piece and a sequence. */
#define PIECE 65536

int llm_packer_new(llm_packer **out, const llm_pack_opts *opts, llm_seq_fn fn, void *ctx, llm_err *err)
{
    *out = NULL;
    if (opts->seq < 1 || opts->seq > (1u << 24)) return llm_errf(err, "sequence length %zu is out of range", opts->seq);
    llm_packer *p = calloc(1, sizeof *p);
    if (!p) return llm_errf(err, "out of memory");
    p->o = *opts;
    if (!p->o.cross_doc) p->o.masks = 1;
    p->fn = fn;
    p->ctx = ctx;
    *out = p;
    return 0;
}

void llm_packer_free(llm_packer *p)
{
    if (!p) return;
    free(p->tok);
    free(p->mask);
    free(p);
}

const llm_pack_stats *llm_packer_stats(const llm_packer *p) { return &p->stats; }

static int reserve(llm_packer *p, size_t more, llm_err *err)
{
    if (p->n + more <= p->cap) return 0;
    size_t cap = p->cap ? p->cap : 4 * (p->o.seq + 1);
    while (cap < p->n + more) cap *= 2;
    uint32_t *t = realloc(p->tok, cap * sizeof *t);
    if (t) p->tok = t;
    uint8_t *m = p->o.masks ? realloc(p->mask, cap) : NULL;
    if (m) p->mask = m;
    if (!t || (p->o.masks && !m)) return llm_errf(err, "out of memory");
    p->cap = cap;
    return 0;
}

/* Emits every whole sequence in the pending tokens, keeping the last token
 * of each as the first of the next. */
static int drain(llm_packer *p, llm_err *err)
{
    size_t T = p->o.seq, at = 0;
    while (p->n - at >= T + 1) {
        if (p->fn(p->ctx, p->tok + at, p->o.masks ? p->mask + at : NULL, T + 1, err)) return -1;
        p->stats.sequences++;
        at += T;
    }
    if (at) {
        memmove(p->tok, p->tok + at, (p->n - at) * sizeof *p->tok);
        if (p->o.masks) memmove(p->mask, p->mask + at, p->n - at);
        p->n -= at;
    }
    return 0;
}

int llm_packer_append(llm_packer *p, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err)
{
    if (mask) p->doc_masked = 1;
    for (size_t at = 0; at < n;) {
        size_t k = n - at < PIECE ? n - at : PIECE;
        if (reserve(p, k, err)) return -1;
        memcpy(p->tok + p->n, tokens + at, k * sizeof *tokens);
        if (p->o.masks) {
            if (mask) memcpy(p->mask + p->n, mask + at, k);
            else memset(p->mask + p->n, 1, k);
        }
        p->n += k;
        at += k;
        if (drain(p, err)) return -1;
    }
    if (n) p->last = tokens[n - 1];
    p->doc_tokens += n;
    p->stats.tokens_in += n;
    return 0;
}

int llm_packer_end_doc(llm_packer *p, llm_err *err)
{
    if (reserve(p, 1, err)) return -1;
    if (!(p->doc_tokens && p->last == p->o.eos)) {
        p->tok[p->n] = p->o.eos;
        if (p->o.masks) p->mask[p->n] = p->doc_masked ? 0 : 1;   /* instruction data: the separator is not trained */
        p->n++;
    }
    p->stats.documents++;
    p->doc_tokens = 0;
    p->doc_masked = 0;
    if (drain(p, err)) return -1;
    if (!p->o.cross_doc && p->n > 1) {   /* the document's last sequence, padded */
        size_t T = p->o.seq, fill = T + 1 - p->n;
        if (reserve(p, fill, err)) return -1;
        for (size_t i = 0; i < fill; i++) {
            p->tok[p->n + i] = p->o.pad;
            p->mask[p->n + i] = 0;
        }
        p->n += fill;
        p->stats.tokens_padded += fill;
        if (drain(p, err)) return -1;
    }
    if (!p->o.cross_doc) p->n = 0;   /* nothing of this document crosses into the next */
    return 0;
}

int llm_packer_add(llm_packer *p, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err)
{
    if (llm_packer_append(p, tokens, mask, n, err)) return -1;
    return llm_packer_end_doc(p, err);
}

int llm_packer_finish(llm_packer *p, llm_err *err)
{
    (void)err;
    /* after a sequence, the first pending token was already its last target */
    size_t seen = p->stats.sequences ? 1 : 0;
    if (p->o.cross_doc && p->n > seen) p->stats.tokens_dropped += p->n - seen;
    p->n = 0;
    return 0;
}
