/* Batched log-likelihoods of continuations: see eval_loglik.h. */
#include "eval_loglik.h"
#include "llmk.h"

#include <stdlib.h>
#include <string.h>

#define LOGITS_BYTES (64u << 20)

double llm_eval_logprob(const float *logits, size_t V, uint32_t target, int *greedy)
{
    float loss;
    /* logsumexp(row) - row[target], in double inside the row (the training loss's kernel) */
    llmk_softmax_xent(&loss, (float *)logits, &target, NULL, 1, V);
    if (greedy) {
        size_t best = 0;
        for (size_t v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        *greedy = best == target;
    }
    return -(double)loss;
}

static int same_context(const llm_eval_req *a, const llm_eval_req *b)
{
    return a->n_ctx == b->n_ctx && (a->ctx == b->ctx || !memcmp(a->ctx, b->ctx, a->n_ctx * sizeof *a->ctx));
}

/* The end of the group of requests that starts at i: those next to it that share its context. */
static size_t group_end(const llm_eval_req *reqs, size_t n, size_t i)
{
    size_t end = i + 1;
    while (end < n && same_context(&reqs[end], &reqs[i])) end++;
    return end;
}

typedef struct {
    llm_infer *m;
    size_t V, cap;           /* cap: rows of logits a pass may return */
    size_t dim;
    uint64_t weight_bytes;
    llm_infer_seq **seqs, **run;
    size_t nseqs, *counts, *who, *at;
    uint32_t *toks;
    float *logits;
    uint64_t ran;
} state;

/* Sequences (and per-sequence arrays) for n requests at once. */
static int reserve(state *s, size_t n, llm_err *err)
{
    if (n <= s->nseqs) return 0;
    llm_infer_seq **seqs = realloc(s->seqs, n * sizeof *seqs), **run;
    if (seqs) s->seqs = seqs;
    run = realloc(s->run, n * sizeof *run);
    if (run) s->run = run;
    size_t *c = realloc(s->counts, n * sizeof *c), *w, *a;
    if (c) s->counts = c;
    w = realloc(s->who, n * sizeof *w);
    if (w) s->who = w;
    a = realloc(s->at, n * sizeof *a);
    if (a) s->at = a;
    if (!seqs || !run || !c || !w || !a) return llm_errf(err, "out of memory");
    for (; s->nseqs < n; s->nseqs++)
        if (!(s->seqs[s->nseqs] = llm_infer_seq_new(s->m, err))) return -1;
    return 0;
}

/* One group: its context runs once, in the first request's cache, with the
 * first request's continuation when the logits of all those rows fit; the
 * other requests get a copy of the cache cut back to the context. */
static int run_context(state *s, llm_eval_req *r, size_t n, llm_infer_seq *const *seqs, size_t *at, llm_err *err)
{
    const size_t V = s->V;
    llm_eval_req *o = &r[0];
    size_t rows = o->n_ctx + o->n_cont - 1, k = o->n_ctx;
    /* the logits of the context's positions but its last are not needed:
     * computing them costs (n_ctx - 1) x V x dim multiply-adds, a pass of
     * its own about a read of the weights; whole when the first is the
     * smaller (counting a byte of weights as four multiply-adds) */
    double waste = (double)(o->n_ctx - 1) * (double)V * (double)s->dim;
    int whole = rows <= s->cap && waste <= 4.0 * (double)s->weight_bytes;
    llm_infer_seq *seq = seqs[0];
    llm_infer_seq_truncate(seq, 0);
    memcpy(s->toks, o->ctx, o->n_ctx * sizeof *s->toks);
    if (whole) {
        memcpy(s->toks + o->n_ctx, o->cont, (o->n_cont - 1) * sizeof *s->toks);
        k = rows;
    }
    if (llm_infer_batch(s->m, &seq, s->toks, &k, 1, s->logits, whole, err)) return -1;
    s->ran += k;
    const float *last = s->logits + (whole ? o->n_ctx - 1 : 0) * V;   /* the context's last row */
    for (size_t j = 0; j < n; j++) {
        r[j].logprob = llm_eval_logprob(last, V, r[j].cont[0], &r[j].greedy);
        at[j] = 1;
    }
    if (whole) {
        for (size_t t = 1; t < o->n_cont; t++) {
            int g;
            o->logprob += llm_eval_logprob(s->logits + (o->n_ctx - 1 + t) * V, V, o->cont[t], &g);
            o->greedy &= g;
        }
        at[0] = o->n_cont;
    }
    for (size_t j = 1; j < n; j++) {
        llm_infer_seq_copy(seqs[j], seq);
        llm_infer_seq_truncate(seqs[j], o->n_ctx);
    }
    return 0;
}

/* The rest of every continuation of r[0..n), each in one piece (longer ones
 * in pieces of at most cap rows), several per llm_infer_batch: running
 * cont[t - 1] scores cont[t]. */
static int run_continuations(state *s, llm_eval_req *r, size_t n, llm_err *err)
{
    const size_t V = s->V;
    for (;;) {
        size_t rows = 0, nrun = 0;
        for (size_t i = 0; i < n && rows < s->cap; i++) {
            if (s->at[i] >= r[i].n_cont) continue;
            size_t k = r[i].n_cont - s->at[i];
            if (k > s->cap - rows) k = s->cap - rows;
            s->run[nrun] = s->seqs[i];
            s->counts[nrun] = k;
            s->who[nrun++] = i;
            memcpy(s->toks + rows, r[i].cont + s->at[i] - 1, k * sizeof *s->toks);
            rows += k;
        }
        if (!nrun) return 0;
        if (llm_infer_batch(s->m, s->run, s->toks, s->counts, nrun, s->logits, 1, err)) return -1;
        s->ran += rows;
        for (size_t k = 0, row = 0; k < nrun; k++) {
            llm_eval_req *q = &r[s->who[k]];
            for (size_t j = 0; j < s->counts[k]; j++, row++) {
                int g;
                q->logprob += llm_eval_logprob(s->logits + row * V, V, q->cont[s->at[s->who[k]] + j], &g);
                q->greedy &= g;
            }
            s->at[s->who[k]] += s->counts[k];
        }
    }
}

int llm_eval_loglik(llm_infer *m, llm_eval_req *reqs, size_t n, size_t batch, uint64_t *tokens_run,
                    llm_eval_progress_fn progress, void *pctx, llm_err *err)
{
    const llm_config *c = llm_infer_config(m);
    size_t V = c->vocab_size, ctx_len = c->ctx_len;
    for (size_t i = 0; i < n; i++) {
        if (reqs[i].n_ctx < 1 || reqs[i].n_cont < 1) return llm_errf(err, "request %zu has an empty context or continuation", i);
        if (reqs[i].n_ctx + reqs[i].n_cont - 1 > ctx_len)
            return llm_errf(err, "request %zu: %zu tokens do not fit the context of %zu", i,
                            reqs[i].n_ctx + reqs[i].n_cont - 1, ctx_len);
        for (size_t k = 0; k < reqs[i].n_cont; k++)
            if (reqs[i].cont[k] >= V) return llm_errf(err, "token %u is outside the vocabulary of %zu", reqs[i].cont[k], V);
    }
    if (batch < 1) batch = 1;
    state s = {.m = m, .V = V, .cap = LOGITS_BYTES / (V * sizeof(float)), .dim = c->dim,
               .weight_bytes = llm_infer_weight_bytes(m)};
    if (s.cap > ctx_len) s.cap = ctx_len;   /* a pass runs one sequence of several tokens at most */
    if (s.cap < 1) s.cap = 1;
    s.toks = malloc(ctx_len * sizeof *s.toks);
    s.logits = malloc(s.cap * V * sizeof *s.logits);
    int rc = s.toks && s.logits ? 0 : llm_errf(err, "out of memory");
    /* whole groups at a time, as many as `batch` sequences hold (a group
     * larger than that gets sequences of its own): so each request is
     * scored the same way, whatever the batch */
    for (size_t first = 0; !rc && first < n;) {
        size_t end = group_end(reqs, n, first);
        while (end < n) {
            size_t next = group_end(reqs, n, end);
            if (next - first > batch) break;
            end = next;
        }
        if ((rc = reserve(&s, end - first, err))) break;
        for (size_t g = first; !rc && g < end;) {
            size_t ge = group_end(reqs, n, g);
            rc = run_context(&s, reqs + g, ge - g, s.seqs + (g - first), s.at + (g - first), err);
            g = ge;
        }
        if (!rc) rc = run_continuations(&s, reqs + first, end - first, err);
        if (!rc && progress) progress(pctx, end);
        first = end;
    }
    for (size_t i = 0; i < s.nseqs; i++) llm_infer_seq_free(s.seqs[i]);
    free(s.seqs), free(s.run), free(s.counts), free(s.who), free(s.at), free(s.toks), free(s.logits);
    if (tokens_run) *tokens_run += s.ran;
    return rc ? -1 : 0;
}
