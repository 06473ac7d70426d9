/* Language-modelling loss: see eval_lm.h. */
#include "eval_lm.h"
#include "llmk.h"

#include <stdlib.h>
#include <string.h>

#define LOGITS_BYTES (64u << 20)

struct llm_eval_lm {
    llm_infer *m;
    llm_infer_seq *seq;
    const uint32_t *token_bytes;
    size_t V, ctx_len, rows;     /* rows: positions per piece */
    float *logits;               /* (rows, V) */
    float *loss;                 /* (rows) */
    uint32_t *targets;           /* (rows) */
    llm_eval_lm_totals totals;
};

llm_eval_lm *llm_eval_lm_new(llm_infer *m, const uint32_t *token_bytes, llm_err *err)
{
    llm_eval_lm *e = calloc(1, sizeof *e);
    if (!e) { llm_errf(err, "out of memory"); return NULL; }
    const llm_config *c = llm_infer_config(m);
    e->m = m;
    e->token_bytes = token_bytes;
    e->V = c->vocab_size;
    e->ctx_len = c->ctx_len;
    e->rows = LOGITS_BYTES / (e->V * sizeof(float));
    if (e->rows < 1) e->rows = 1;
    if (e->rows > e->ctx_len) e->rows = e->ctx_len;
    e->logits = malloc(e->rows * e->V * sizeof *e->logits);
    e->loss = malloc(e->rows * sizeof *e->loss);
    e->targets = malloc(e->rows * sizeof *e->targets);
    if (!e->logits || !e->loss || !e->targets) {
        llm_errf(err, "out of memory for the logits of %zu positions", e->rows);
        llm_eval_lm_free(e);
        return NULL;
    }
    if (!(e->seq = llm_infer_seq_new(m, err))) { llm_eval_lm_free(e); return NULL; }
    return e;
}

void llm_eval_lm_free(llm_eval_lm *e)
{
    if (!e) return;
    llm_infer_seq_free(e->seq);
    free(e->logits), free(e->loss), free(e->targets);
    free(e);
}

const llm_eval_lm_totals *llm_eval_lm_totals_of(const llm_eval_lm *e) { return &e->totals; }

int llm_eval_lm_score(llm_eval_lm *e, const uint32_t *tokens, size_t n, size_t first, const uint8_t *mask, llm_err *err)
{
    if (n < 2 || first < 1 || first >= n) return 0;   /* nothing to score */
    if (n - 1 > e->ctx_len) return llm_errf(err, "%zu tokens do not fit the context of %zu", n - 1, e->ctx_len);
    for (size_t t = first; t < n; t++)
        if (tokens[t] >= e->V) return llm_errf(err, "token %u is outside the vocabulary of %zu", tokens[t], e->V);
    llm_infer_seq_truncate(e->seq, 0);
    /* positions [at, at + k) predict targets at + 1 .. at + k; those before
     * first - 1 are run for their keys and values only, in one piece */
    for (size_t at = 0; at < n - 1;) {
        size_t k = n - 1 - at;
        int all = at + 1 >= first;
        if (!all) k = first - 1 - at;
        else if (k > e->rows) k = e->rows;
        llm_infer_seq *s = e->seq;
        if (llm_infer_batch(e->m, &s, tokens + at, &k, 1, e->logits, all, err)) return -1;
        e->totals.run += k;
        if (all) {
            for (size_t r = 0; r < k; r++) e->targets[r] = tokens[at + r + 1];
            llmk_softmax_xent(e->loss, e->logits, e->targets, NULL, k, e->V);
            for (size_t r = 0; r < k; r++) {
                size_t t = at + r + 1;
                if (t < first || (mask && !mask[t])) continue;
                e->totals.nll += e->loss[r];
                e->totals.scored++;
                if (e->token_bytes) e->totals.bytes += e->token_bytes[tokens[t]];
            }
        }
        at += k;
    }
    e->totals.runs++;
    return 0;
}

int llm_eval_lm_seqset(llm_eval_lm *e, llm_seqset *set, const char *name, uint64_t max, llm_eval_progress_fn progress,
                       void *pctx, llm_err *err)
{
    size_t T = llm_seqset_seq_len(set);
    if (T > e->ctx_len)
        return llm_errf(err, "%s: sequences of %zu tokens do not fit the model's context of %zu", name, T, e->ctx_len);
    uint64_t n = llm_seqset_count(set);
    if (max && max < n) n = max;
    uint32_t *tok = malloc((T + 1) * sizeof *tok);
    uint8_t *mask = malloc(T + 1);
    int rc = tok && mask ? 0 : llm_errf(err, "out of memory");
    int masks = llm_seqset_has_masks(set);
    for (uint64_t i = 0; !rc && i < n; i++) {
        rc = llm_seqset_get(set, i, tok, mask, err);
        if (!rc && llm_eval_lm_score(e, tok, T + 1, 1, masks ? mask : NULL, err))
            rc = llm_err_prefix(err, "%s: sequence %llu", name, (unsigned long long)i);
        if (!rc && progress) progress(pctx, i + 1);
    }
    free(tok);
    free(mask);
    return rc;
}

size_t llm_eval_windows(size_t n, size_t first, size_t window, size_t stride, llm_eval_window *out)
{
    if (first < 1) first = 1;
    if (stride < 1) stride = 1;
    if (window < 1) window = 1;
    if (stride > window) stride = window;
    size_t count = 0;
    for (size_t a = first; a < n; a += stride) {
        size_t z = a + stride < n ? a + stride : n;   /* targets [a, z) */
        size_t begin = z - 1 > window ? z - 1 - window : 0;
        if (out) out[count] = (llm_eval_window){begin, z, a};
        count++;
    }
    return count;
}

int llm_eval_lm_document(llm_eval_lm *e, const uint32_t *tokens, size_t n, size_t first, size_t window, size_t stride,
                         uint64_t max, llm_eval_progress_fn progress, void *pctx, llm_err *err)
{
    size_t nw = llm_eval_windows(n, first, window, stride, NULL);
    llm_eval_window *w = malloc((nw ? nw : 1) * sizeof *w);
    if (!w) return llm_errf(err, "out of memory");
    llm_eval_windows(n, first, window, stride, w);
    if (max && max < nw) nw = (size_t)max;
    int rc = 0;
    for (size_t i = 0; !rc && i < nw; i++) {
        rc = llm_eval_lm_score(e, tokens + w[i].begin, w[i].end - w[i].begin, w[i].first - w[i].begin, NULL, err);
        if (!rc && progress) progress(pctx, i + 1);
    }
    free(w);
    return rc;
}

/* An added or special token: one the tokenizer knows by its text (a
 * regular token whose text is its piece is known too) and which encoding its
 * text as ordinary text does not give back. */
static int is_special(const llm_tokenizer *tok, llm_tok_scratch *ts, uint32_t id, const llm_strbuf *text, llm_ids *tmp)
{
    char *s = strndup(text->data, text->len);
    uint32_t sid;
    int known = s && llm_tok_special(tok, s, &sid) == 0 && sid == id;
    free(s);
    if (!known) return 0;
    llm_err e;
    tmp->n = 0;
    if (llm_tok_encode(tok, ts, text->data, text->len, LLM_TOK_CONTINUE, tmp, &e)) return 1;
    return !(tmp->n == 1 && tmp->v[0] == id);
}

int llm_eval_token_bytes(const llm_tokenizer *tok, size_t vocab, uint32_t **out, llm_err *err)
{
    uint32_t *b = calloc(vocab ? vocab : 1, sizeof *b);
    llm_tok_scratch *ts = llm_tok_scratch_new(tok);
    if (!b || !ts) { free(b); llm_tok_scratch_free(ts); return llm_errf(err, "out of memory"); }
    llm_strbuf one = {0}, two = {0};
    llm_ids tmp = {0};
    for (size_t id = 0; id < vocab; id++) {
        uint32_t ids[2] = {(uint32_t)id, (uint32_t)id};
        one.len = two.len = 0;
        llm_err e;
        if (llm_tok_decode(tok, ids, 1, &one, &e) || llm_tok_decode(tok, ids, 2, &two, &e)) continue;   /* unknown: 0 */
        if (one.len && is_special(tok, ts, (uint32_t)id, &one, &tmp)) continue;
        /* the second copy decodes as running text (no stripped leading space) */
        b[id] = two.len > one.len ? (uint32_t)(two.len - one.len) : 0;
    }
    int oom = one.failed || two.failed;
    llm_sb_free(&one);
    llm_sb_free(&two);
    llm_ids_free(&tmp);
    llm_tok_scratch_free(ts);
    if (oom) { free(b); return llm_errf(err, "out of memory"); }
    *out = b;
    return 0;
}
