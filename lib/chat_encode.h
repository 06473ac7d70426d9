/* chat_encode.h — chat segments (lib/chat.h) to token ids. */
#ifndef LLMUX_CHAT_ENCODE_H
#define LLMUX_CHAT_ENCODE_H

#include "chat.h"
#include "tokenizer.h"

/* Appends the ids of one segment: a special segment is exactly one token,
 * which the tokenizer must have; an eos segment the tokenizer's end token;
 * plain text is encoded with no special-token matching, continuing the text
 * before it when after_text (LLM_TOK_CONTINUE). */
int llm_chat_encode_segment(const llm_tokenizer *tok, llm_tok_scratch *s, const llm_chat_segment *g, int after_text,
                            llm_ids *ids, llm_err *err);

/* Appends the ids of all segments. */
int llm_chat_encode(const llm_tokenizer *tok, llm_tok_scratch *s, const llm_chat_segments *segs, llm_ids *ids,
                    llm_err *err);

#endif
