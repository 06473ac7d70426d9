/* chat.h — rendering instruction records into text segments for training.
 *
 * llm-tokenize turns instruction data into tokens plus a loss mask that marks
 * only the response as trained. This is the step before the tokenizer: a
 * record becomes a list of segments, each a piece of text with flags
 *   trained  the segment's tokens are part of the loss (mask 1);
 *   special  the text is exactly one special/added token of the format
 *            ("<|im_start|>", "<s>", "<|eot_id|>"...), to be looked up as such;
 *            all other text, message content included, is plain text in which
 *            special-token strings must NOT be matched (a user who writes
 *            "<|im_end|>" gets those characters, not the token);
 *   eos      (format none only) the tokenizer's end-of-text token; text is "".
 * The caller tokenizes segment by segment and sets mask bytes from `trained`.
 * Segments are meant to tokenize as their concatenation would: a tokenizer that
 * adds a dummy prefix space (SentencePiece, Llama 2) adds it where it would in
 * the whole text (at its start and after a special token), not at every segment.
 * Plain segments that follow each other with the same flags are merged; special
 * segments never are (each is one token).
 *
 * Records (JSON objects; other fields are ignored):
 *   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
 *   {"prompt": "...", "response": "..."}
 * When "messages" is present it is used and "prompt"/"response" are ignored
 * (HuggingFaceH4/ultrachat_200k carries both). A messages list is an optional
 * system message, then user and assistant messages alternating, starting with
 * a user message; it may end with either. Under a chat format a prompt/response
 * record is one user message and one assistant message.
 *
 * Formats — the strings are those of the models' own chat templates
 * (tokenizer_config.json "chat_template") and Meta's reference code:
 *
 * LLM_CHAT_CHATML  (Qwen/Qwen2-*-Instruct, Qwen2.5, SmolLM2-Instruct, and the
 *   generic ChatML template of the transformers docs), per message:
 *     <|im_start|>{role}\n{content}<|im_end|>\n
 *   Content is used as it is. Trained: an assistant's content and its
 *   <|im_end|>; the "\n" after it is not (generation stops at <|im_end|>, and
 *   the newline belongs to the framing before the next header). Unlike Qwen2's
 *   template, no default system message is inserted when the record has none.
 *
 * LLM_CHAT_LLAMA2  (meta-llama/Llama-2-*-chat-hf, CodeLlama-Instruct):
 *     <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST] ...
 *   As in the HF template and Meta's chat_completion, the system block is
 *   prepended to the first user message and that text is then stripped of
 *   whitespace at both ends (Python str.strip, Unicode whitespace); later user
 *   messages and assistant messages are stripped likewise. Only <s> and </s> are
 *   special; "[INST]", "<<SYS>>" are plain text. Trained: " {assistant} " (the
 *   space before the answer glues to its first word, "▁Hello") and </s>.
 *
 * LLM_CHAT_LLAMA3  (meta-llama/Meta-Llama-3-*-Instruct):
 *     <|begin_of_text|> then per message
 *     <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>
 *   with content stripped at both ends (the template's `| trim`, Meta's
 *   .strip()). Trained: an assistant's content and its <|eot_id|>.
 *   (Llama 3.1's template adds a dated system block; that is not rendered.)
 *
 * LLM_CHAT_NONE  (no template; prompt/response records only):
 *     {prompt}{response}<eos>
 *   prompt untrained, response trained, then an `eos` segment (trained, empty
 *   text) standing for the tokenizer's end-of-text token. No BOS is rendered.
 *
 * Under llama2/llama3 the BOS token is part of the rendering: the caller must
 * not add another.
 *
 * Errors are "record: ..." naming the problem (the caller adds file:line):
 * not an object; no "messages" and no "prompt"/"response"; a field of the wrong
 * type; an empty messages list; a message that is not an object; a role other
 * than system/user/assistant; a system message not first; roles that do not
 * alternate user/assistant; missing, null or non-string content; empty content
 * in a user or assistant message (an empty system message is allowed and
 * rendered as the templates render it); an empty response; a messages record
 * under LLM_CHAT_NONE. */
#ifndef LLMUX_CHAT_H
#define LLMUX_CHAT_H

#include <jansson.h>
#include <stddef.h>

#include "err.h"

typedef enum { LLM_CHAT_NONE, LLM_CHAT_CHATML, LLM_CHAT_LLAMA2, LLM_CHAT_LLAMA3 } llm_chat_format;

/* "none", "chatml", "llama2", "llama3" → 0 and *out; anything else → -1. */
int llm_chat_format_parse(const char *name, llm_chat_format *out);

/* The name llm_chat_format_parse takes; "?" for a value out of range. */
const char *llm_chat_format_name(llm_chat_format f);

/* Recognises a family from a tokenizer_config.json "chat_template" string by
 * signature substrings: "<|start_header_id|>" → llama3, "<|im_start|>" →
 * chatml, "[INST]" together with "<<SYS>>" → llama2. "[INST]" alone is not
 * enough: Mistral's templates use it with a different spacing and no system
 * block. 0 and *out, or -1 when unknown (template NULL included). */
int llm_chat_format_detect(const char *jinja_template, llm_chat_format *out);

typedef struct {
    char *text;     /* malloc'd, NUL-terminated (text may also contain NULs) */
    size_t len;
    unsigned trained : 1, special : 1, eos : 1;
} llm_chat_segment;

typedef struct {
    llm_chat_segment *seg;
    size_t count, cap;
} llm_chat_segments;   /* zero-initialise before first use */

/* Renders record under format f, appending segments to out (the caller resets
 * between records). 0 on success; -1 with err set and out as it was before the
 * call. Out of memory is reported as an error. */
int llm_chat_render(llm_chat_format f, const json_t *record, llm_chat_segments *out, llm_err *err);

/* For generation: appends what the template puts before an assistant's
 * answer after the last message (transformers' add_generation_prompt):
 * chatml "<|im_start|>assistant\n", llama3 "<|start_header_id|>assistant
 * <|end_header_id|>\n\n"; llama2 and none add nothing (a rendered user
 * turn already ends with " [/INST]"). */
int llm_chat_generation_prompt(llm_chat_format f, llm_chat_segments *out, llm_err *err);
/* The special token an assistant's answer ends with: "<|im_end|>",
 * "<|eot_id|>", "</s>"; NULL for none. */
const char *llm_chat_end_token(llm_chat_format f);

/* Frees the segments' texts and sets count to 0, keeping the array. */
void llm_chat_segments_reset(llm_chat_segments *s);
/* Frees everything; s is then empty and reusable. */
void llm_chat_segments_free(llm_chat_segments *s);

#endif
