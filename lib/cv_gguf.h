/* cv_gguf.h — within llm-convert's GGUF reader and writer (lib/cv_gguf.c):
 * the tokenizer's part (lib/cv_gguf_tok.c).
 *
 * Out: our tokenizer.json (byte-level BPE only) as tokenizer.ggml.* (model
 * "gpt2"; pre from the Split pattern: gpt-2, llama-bpe, qwen2, gpt-4o, else
 * "default"; tokens padded to vocab_size with [PADn] of type UNUSED; added
 * tokens CONTROL when special, USER_DEFINED otherwise; merges "LEFT RIGHT";
 * BOS the post-processor's first special token, else tokenizer_config's
 * bos_token, else the EOS, as GPT-2's), and whole as
 * tokenizer.huggingface.json; the chat template (ours, else
 * tokenizer_config's) as tokenizer.chat_template; our tokenizer_config and
 * generation_config as llmux.tokenizer_config, llmux.generation_config.
 *
 * In: tokenizer.huggingface.json when there is one, else a tokenizer.json
 * built from tokenizer.ggml.* (which are checked either way); it must load
 * (lib/tokenizer.h) and fit the model's vocabulary. */
#ifndef LLMUX_CV_GGUF_H
#define LLMUX_CV_GGUF_H

#include "cv.h"
#include "gguf.h"

int llm_cv_gguf_write_tokenizer(llm_gguf_writer *w, const llm_cv_model *m, llm_err *err);
int llm_cv_gguf_read_tokenizer(const llm_gguf_file *f, llm_cv_model *m, llm_err *err);

#endif
