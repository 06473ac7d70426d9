/* eval_run.h — one evaluation from start to result: a task file (mc, cloze,
 * gen), a shard set or sequence stream, or a text file, on a model; the
 * metrics and counts go into an llm_eval_result (eval_result.h).
 *
 * Metrics (llm-eval(1) METRICS):
 *   lm     loss (mean negative log-likelihood per scored token, nats), ppl
 *          (e^loss), bpb (bits per byte: the summed loss / ln 2 / the bytes
 *          the scored tokens stand for, eval_lm.h);
 *   mc     acc (the choice of highest summed log-likelihood is the gold one),
 *          acc_norm (the same with each sum divided by its choice's length in
 *          characters, lm-eval-harness's acc_norm);
 *   cloze  acc (greedy decoding gives every token of the answer), ppl
 *          (e^-(mean over examples of the answer's summed log-likelihood),
 *          lm-eval-harness's LAMBADA perplexity);
 *   gen    acc (the greedy continuation matches an answer, eval_match.h).
 * Counts: examples (or sequences, windows), tokens (run through the model;
 * lm: scored), bytes (lm), skipped (bad lines and examples), truncated
 * (examples whose context lost tokens at its start to fit the model). */
#ifndef LLMUX_EVAL_RUN_H
#define LLMUX_EVAL_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "eval_loglik.h"
#include "eval_prompt.h"
#include "eval_result.h"
#include "eval_task.h"
#include "infer.h"

typedef struct {
    size_t batch;                /* sequences at once (KV caches) */
    uint64_t limit;              /* the first N examples or sequences (0: all) */
    int has_shots;               /* shots given (else the task's, else 0) */
    uint64_t shots, seed;
    const llm_eval_task *pool;   /* few-shot examples from their own file, or NULL: the "split":"train" ones */
    int skip_bad;
    llm_eval_warn_fn warn;       /* "FILE:LINE: problem" of each example skipped */
    void *warn_ctx;
    llm_eval_progress_fn progress;   /* examples, sequences or windows done */
    void *progress_ctx;
    void (*detail)(void *ctx, const char *json, size_t len);   /* one JSON line per example (may be NULL) */
    void *detail_ctx;
} llm_eval_opts;

/* The number of examples a task run scores (for a progress total). */
uint64_t llm_eval_task_total(const llm_eval_task *t, const llm_eval_opts *o);

int llm_eval_run_task(llm_infer *m, llm_eval_tok *et, const llm_eval_task *t, const llm_eval_opts *o,
                      llm_eval_result *r, llm_err *err);

/* A shard set or sequence stream; tok (for bpb) may be NULL. */
int llm_eval_run_data(llm_infer *m, const llm_tokenizer *tok, const char *path, const llm_eval_opts *o,
                      llm_eval_result *r, llm_err *err);

/* A text file as one document: the template's prefix (BOS) or else the
 * end-of-text token before it, so that its first token is scored too (none
 * when the tokenizer has neither), in windows of `window` tokens each scoring
 * `stride` new ones. */
int llm_eval_run_text(llm_infer *m, llm_eval_tok *et, const char *path, size_t window, size_t stride,
                      const llm_eval_opts *o, llm_eval_result *r, llm_err *err);

#endif
