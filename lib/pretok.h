/* pretok.h — pre-tokenization: splitting text into the pieces that BPE then
 * encodes one by one, as a regex with find-all semantics would.
 *
 * A pretokenizer is made from a pattern string. Patterns of the known
 * encodings (gpt2 = r50k_base = p50k_base, cl100k_base, o200k_base, and the
 * Llama 3 and Qwen 2 Split patterns) are recognised by their exact text and
 * run by hand-written scanners; any other pattern runs on PCRE2 (UTF and UCP
 * mode, JIT), which is also the oracle the scanners are tested against.
 * Unicode classes in the scanners (\p{L}, \p{Lu}, \p{N}, \p{M}, \s ...) come
 * from lib/unicode.h, Unicode 16.0, as tiktoken's regex engine uses.
 *
 * Only matches are pieces: text between matches (which the known patterns
 * never leave) is skipped, as tiktoken and tokenizers' Split(Isolated) do. */
#ifndef LLMUX_PRETOK_H
#define LLMUX_PRETOK_H

#include <stddef.h>

#include "err.h"

typedef struct llm_pretok llm_pretok;

/* The pattern text of a named encoding ("gpt2", "r50k_base", "p50k_base",
 * "cl100k_base", "o200k_base", "llama3", "qwen2"), or NULL: for the tiktoken
 * encodings, tiktoken's own spelling (possessive quantifiers, "\s++$"). */
const char *llm_pretok_named_pattern(const char *name);
/* The same languages without possessive quantifiers or '$' (which Oniguruma,
 * Hugging Face tokenizers' regex engine, reads differently): what a
 * tokenizer.json we write should carry. Differs from the tiktoken spelling
 * only for text that ends in whitespace after a newline. */
const char *llm_pretok_portable_pattern(const char *name);

/* Compiles a pattern. Thread-safe to use from many threads once made. */
int llm_pretok_new(llm_pretok **out, const char *pattern, llm_err *err);
/* Forces the PCRE2 engine even for a known pattern (tests, benchmarks). */
int llm_pretok_new_regex(llm_pretok **out, const char *pattern, llm_err *err);
void llm_pretok_free(llm_pretok *p);
/* "gpt2", "cl100k", "o200k", "llama3", "qwen2" for a scanner, "pcre2" otherwise. */
const char *llm_pretok_engine(const llm_pretok *p);

/* Per-thread working memory (PCRE2 match data). */
typedef struct llm_pretok_scratch llm_pretok_scratch;
llm_pretok_scratch *llm_pretok_scratch_new(const llm_pretok *p);
void llm_pretok_scratch_free(llm_pretok_scratch *s);

/* Finds the next match in text[0..len) at or after byte `pos`: returns 1 and
 * sets [*start, *end) (end > start), or 0 when there is none. text must be
 * valid UTF-8 (callers check); a match is never empty. */
int llm_pretok_find(const llm_pretok *p, llm_pretok_scratch *s, const char *text, size_t len, size_t pos,
                    size_t *start, size_t *end);

#endif
