/* eval_loglik.h — log-likelihoods of continuations after contexts, batched:
 * what multiple-choice and cloze tasks are scored with.
 *
 * Requests next to each other that share a context (the choices of one
 * question) are a group. The context runs once, in the first request's KV
 * cache, together with that request's continuation when that saves more
 * than it costs (the logits of all those positions fit in 64 MB, and those
 * of the context's positions, which are not needed, cost fewer
 * multiply-adds than four times the bytes of weights a pass reads: short
 * contexts); the other requests get a copy of the cache
 * cut back to the context (llm_infer_seq_copy, llm_infer_seq_truncate) and
 * run only their continuations, several sequences per llm_infer_batch. So a
 * question of K choices costs K passes of the model (K + 1 with a long
 * context; lib/infer.c runs a sequence of several tokens alone, one-token
 * continuations together), and its context's tokens run once. Whole groups go `batch` sequences at a
 * time (a larger group gets as many as it has requests), so each request is
 * scored by the same passes whatever the batch, and its result does not
 * depend on it.
 *
 * The last token of a continuation is scored, never run: a request runs
 * n_ctx + n_cont - 1 tokens, which must fit the model's context. */
#ifndef LLMUX_EVAL_LOGLIK_H
#define LLMUX_EVAL_LOGLIK_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "infer.h"

typedef struct {
    const uint32_t *ctx;     /* >= 1 token */
    size_t n_ctx;
    const uint32_t *cont;    /* >= 1 token */
    size_t n_cont;
    double logprob;          /* out: sum of log p(cont[i] | ctx, cont[..i)) (natural log) */
    int greedy;              /* out: each cont[i] is the most likely token (the lowest id among equals) */
} llm_eval_req;

typedef void (*llm_eval_progress_fn)(void *ctx, uint64_t done);

/* Scores reqs[0..n); *tokens_run (may be NULL) adds the tokens run through
 * the model; progress (may be NULL) gets the requests done so far. */
int llm_eval_loglik(llm_infer *m, llm_eval_req *reqs, size_t n, size_t batch, uint64_t *tokens_run,
                    llm_eval_progress_fn progress, void *pctx, llm_err *err);

/* log p(target) under the softmax of one row of logits, and whether target
 * is its argmax (lowest id among equals). */
double llm_eval_logprob(const float *logits, size_t V, uint32_t target, int *greedy);

#endif
