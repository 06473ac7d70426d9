/* eval_gen.h — greedy generation for many prompts at once, for generation
 * tasks: lib/generate.h with temperature 0 (the most likely token, the
 * lowest id among equals), as llm-infer --temp 0 generates, each prompt in
 * its own sequence, up to `batch` sequences per pass. */
#ifndef LLMUX_EVAL_GEN_H
#define LLMUX_EVAL_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "eval_loglik.h"
#include "infer.h"
#include "tokenizer.h"

typedef struct {
    const uint32_t *prompt;  /* >= 1 token, shorter than the context */
    size_t n_prompt;
    size_t max_tokens;
    const char *const *stop; /* stop strings: the text ends before the first */
    size_t n_stop;
    char *text;              /* out: malloc'd, NUL-terminated; free with free() */
    size_t text_len;
    size_t n_tokens;         /* out: tokens generated */
} llm_eval_gen_req;

int llm_eval_generate(llm_infer *m, const llm_tokenizer *tok, llm_eval_gen_req *reqs, size_t n, size_t batch,
                      uint64_t *tokens_run, llm_eval_progress_fn progress, void *pctx, llm_err *err);

#endif
