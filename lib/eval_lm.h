/* eval_lm.h — language-modelling loss: the mean negative log-likelihood of
 * tokens given the tokens before them, over shard sets, sequence streams and
 * long documents cut into windows.
 *
 * A run of tokens goes through the model from an empty cache with the logits
 * of every position (lib/infer.h), in pieces that keep the logits within
 * 64 MB; each position's loss is logsumexp(logits) - logits[target] in
 * double inside the row (the kernel llm-train's loss uses), summed in double
 * over the scored positions. On a shard set that is llm-train's validation
 * loss, sequence by sequence: each sequence of T + 1 tokens scores its last
 * T (where the mask, if any, says so).
 *
 * Bytes, for bits per byte: each scored token counts the bytes it decodes to
 * in running text (a SentencePiece word-start counts its space); special and
 * added tokens (<|endoftext|>) count none, though their loss counts. */
#ifndef LLMUX_EVAL_LM_H
#define LLMUX_EVAL_LM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "eval_loglik.h"
#include "infer.h"
#include "seqset.h"
#include "tokenizer.h"

typedef struct {
    double nll;              /* summed, in nats */
    uint64_t scored;         /* tokens scored */
    uint64_t bytes;          /* bytes they stand for (0 without a byte table) */
    uint64_t run;            /* tokens run through the model */
    uint64_t runs;           /* sequences or windows run */
} llm_eval_lm_totals;

typedef struct llm_eval_lm llm_eval_lm;

/* token_bytes: (vocab) bytes per token (llm_eval_token_bytes), or NULL. */
llm_eval_lm *llm_eval_lm_new(llm_infer *m, const uint32_t *token_bytes, llm_err *err);
void llm_eval_lm_free(llm_eval_lm *e);
const llm_eval_lm_totals *llm_eval_lm_totals_of(const llm_eval_lm *e);

/* Runs tokens[0..n-1) from an empty cache and scores the targets
 * tokens[first..n) (first >= 1), those with mask[t] only when mask is not
 * NULL. n - 1 must fit the context. */
int llm_eval_lm_score(llm_eval_lm *e, const uint32_t *tokens, size_t n, size_t first, const uint8_t *mask, llm_err *err);

/* Every sequence of a shard set or sequence stream (the first max, 0: all). */
int llm_eval_lm_seqset(llm_eval_lm *e, llm_seqset *set, const char *name, uint64_t max, llm_eval_progress_fn progress,
                       void *pctx, llm_err *err);

/* Windows over a long document: the targets [first, n) in consecutive
 * pieces of `stride`, each piece scored by a window that runs the `window`
 * tokens before its last target (fewer at the start): every target scored
 * once, with at least window - stride + 1 tokens before it where the
 * document has them. stride <= window. */
typedef struct {
    size_t begin, end;       /* run tokens [begin, end - 1), predicting [begin + 1, end) */
    size_t first;            /* score targets [first, end) */
} llm_eval_window;

/* Fills out (when not NULL) and returns the number of windows. */
size_t llm_eval_windows(size_t n, size_t first, size_t window, size_t stride, llm_eval_window *out);

/* max: the first max windows only (0: all). */
int llm_eval_lm_document(llm_eval_lm *e, const uint32_t *tokens, size_t n, size_t first, size_t window, size_t stride,
                         uint64_t max, llm_eval_progress_fn progress, void *pctx, llm_err *err);

/* Bytes per token id (vocab entries): see above. Ids the tokenizer does not
 * know count 0. */
int llm_eval_token_bytes(const llm_tokenizer *tok, size_t vocab, uint32_t **out, llm_err *err);

#endif
