/* eval_prompt.h — the text an example is scored on, and its tokens.
 *
 * Text: the task's description, then K few-shot examples each followed by
 * the few-shot delimiter, then the example's context (llm-tasks(5)):
 *     description + shot_1 + fd + ... + shot_K + fd + context
 * A shot is an example's context, the target delimiter and its answer (mc:
 * the gold choice; cloze: the answer; gen: the first answer); a cloze
 * {"text"} shot is its text as written. What is scored after the context is
 * the target delimiter and the choice (a cloze {"text"} answer carries its
 * own space: no delimiter).
 *
 * The shots of the example at index i (among those scored) are K distinct
 * examples of the pool drawn by a partial Fisher-Yates shuffle with
 * xoshiro256** seeded by splitmix64 of (seed, i): the same seed gives the
 * same shots for each example whatever else the file holds after it. */
#ifndef LLMUX_EVAL_PROMPT_H
#define LLMUX_EVAL_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "eval_task.h"
#include "strbuf.h"
#include "tokenizer.h"

/* k distinct indices of [0, n) into out (k <= n), in the order drawn. */
void llm_eval_draw(size_t n, size_t k, uint64_t seed, uint64_t index, size_t *out);

/* Appends the context text of e after the shots. */
void llm_eval_context_text(const llm_eval_task *t, const llm_eval_example *e, const llm_eval_example *const *shots,
                           size_t k, llm_strbuf *out);
/* Appends what is scored for choice i of e: the delimiter and the choice. */
void llm_eval_choice_text(const llm_eval_task *t, const llm_eval_example *e, size_t i, llm_strbuf *out);

/* The tokenizer as the scorer uses it: the template's prefix (a BOS) and
 * the end-of-text token. */
typedef struct {
    const llm_tokenizer *tok;
    llm_tok_scratch *ts;
    llm_ids prefix;          /* what the template puts before a text (may be empty) */
    int has_eos;
    uint32_t eos;
} llm_eval_tok;

int llm_eval_tok_init(llm_eval_tok *et, const llm_tokenizer *tok, llm_err *err);
void llm_eval_tok_free(llm_eval_tok *et);

/* The tokens for scoring cont after ctx, as lm-eval-harness makes them:
 * white space at the end of ctx moves to the start of cont; the tokens of
 * ctx + cont are split after the longest prefix they share with the tokens
 * of ctx alone (ctx's own tokens, unless the tokenizer merges across the
 * seam); the context part gets the template's prefix (BOS), and when it is
 * then empty, the end-of-text token (an error when the tokenizer has none). */
int llm_eval_encode_pair(llm_eval_tok *et, const char *ctx, size_t n_ctx, const char *cont, size_t n_cont,
                         llm_ids *ctx_ids, llm_ids *cont_ids, llm_err *err);

#endif
