/* eval_match.h — whether generated text answers a question:
 *   exact     the text and the answer equal, once the white space at both
 *             ends of each is removed;
 *   contains  the answer occurs in the text (as given, white space included);
 *   regex     the answer, a Perl-compatible regular expression (PCRE2, UTF
 *             mode), matches somewhere in the text (anchor it with ^ and $
 *             for the whole text).
 * An example may list several answers: any of them counts. */
#ifndef LLMUX_EVAL_MATCH_H
#define LLMUX_EVAL_MATCH_H

#include <stddef.h>

#include "err.h"
#include "eval_task.h"

/* Compiles a pattern (NULL with err set when it is not valid). */
void *llm_eval_regex_compile(const char *pattern, llm_err *err);
void llm_eval_regex_free(void *re);

/* 1 when text answers with answer i of the example, else 0. */
int llm_eval_matches(llm_eval_match_kind kind, const char *text, size_t len, const char *answer, void *regex);

#endif
