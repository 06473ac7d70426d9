/* tokenizer.h — a loaded tokenizer: text to ids and back.
 *
 * Sources (llm_tok_load detects which):
 *  - a tiktoken rank file ("base64-token rank" per line); its pattern and
 *    special tokens come from the encoding's name (gpt2, r50k_base,
 *    p50k_base, cl100k_base, o200k_base), given or taken from the file name;
 *  - a Hugging Face tokenizer.json with a BPE model: byte-level (GPT-2,
 *    Llama 3, Qwen 2) or SentencePiece-style with byte fallback (Llama 2);
 *    normalizers NFC, Prepend, Replace, Sequence; pre-tokenizers ByteLevel,
 *    Split (Isolated), Metaspace, Sequence; post-processors
 *    TemplateProcessing, ByteLevel, Sequence; added tokens. Anything else is
 *    refused with a message naming it;
 *  - an llmux model file (safetensors) whose "tokenizer" metadata holds
 *    tokenizer.json text.
 * A loaded tokenizer is read-only: encode from many threads, each with its
 * own scratch. */
#ifndef LLMUX_TOKENIZER_H
#define LLMUX_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "bpe.h"
#include "err.h"
#include "strbuf.h"

typedef struct llm_tokenizer llm_tokenizer;

/* encoding: the tiktoken encoding name for rank files (NULL: from the file
 * name); ignored for other sources. */
int llm_tok_load(const char *path, const char *encoding, llm_tokenizer **out, llm_err *err);
int llm_tok_from_json(const char *text, size_t n, const char *name, llm_tokenizer **out, llm_err *err);
void llm_tok_free(llm_tokenizer *t);

/* "gpt2", "cl100k_base", ... for rank files; "tokenizer.json:<fnv hash>" for
 * tokenizer.json text — what a stream header records as its tokenizer. */
const char *llm_tok_name(const llm_tokenizer *t);
size_t llm_tok_vocab_size(const llm_tokenizer *t);   /* highest id + 1 */
/* The id of a special or added token given by its text. */
int llm_tok_special(const llm_tokenizer *t, const char *text, uint32_t *id);
/* The end-of-text / end-of-sequence id (<|endoftext|>, </s>, <|end_of_text|>,
 * <|im_end|>, the post-processor's last special), or -1 when there is none. */
int llm_tok_eos(const llm_tokenizer *t, uint32_t *id);
/* tokenizer.json text for an llmux model file: the file's own text when it
 * came from one, else NULL (rank files are not converted). */
const char *llm_tok_json(const llm_tokenizer *t);

typedef struct llm_tok_scratch llm_tok_scratch;
llm_tok_scratch *llm_tok_scratch_new(const llm_tokenizer *t);
void llm_tok_scratch_free(llm_tok_scratch *s);

enum {
    LLM_TOK_ALLOW_SPECIAL = 1,  /* added and special tokens in the text become their ids
                                   (tokenizers' encode; tiktoken's allowed_special="all") */
    LLM_TOK_ADD_SPECIAL = 2,    /* apply the post-processor's template (BOS/EOS) */
    LLM_TOK_BYTES = 4,          /* the text may be any bytes (byte-level tokenizers without
                                   normalizers): from the first invalid UTF-8 byte on, the
                                   last piece before it and all the rest are one BPE piece,
                                   as tiktoken's _encode_bytes does; no special matching */
    LLM_TOK_CONTINUE = 8,       /* the text continues the text of the previous call (one
                                   rendered string encoded in parts): no prefix space,
                                   Prepend normalizer or Metaspace prefix at its start */
};

/* Where a long text may be cut so that encoding the parts one after another
 * gives exactly the ids of the whole: the first position at or after
 * `target` just past a "\n" that follows a visible ASCII character and
 * precedes an ASCII letter (a piece boundary for every built-in pattern).
 * Returns n when there is none within 1 MiB, or when the tokenizer or flags
 * do not allow cutting (normalizers, SentencePiece text, special tokens,
 * a pattern that is not one of the built-in ones). */
size_t llm_tok_cut_point(const llm_tokenizer *t, int flags, const char *text, size_t n, size_t target);

/* Appends the ids of text[0..n) (valid UTF-8 unless LLM_TOK_BYTES) to out. */
int llm_tok_encode(const llm_tokenizer *t, llm_tok_scratch *s, const char *text, size_t n, int flags, llm_ids *out,
                   llm_err *err);

/* Appends the bytes of ids to out (byte-level: exactly the bytes encoded;
 * SentencePiece: "▁" as space, byte-fallback tokens as their bytes, the
 * leading space of the text removed). An unknown id is an error. */
int llm_tok_decode(const llm_tokenizer *t, const uint32_t *ids, size_t n, llm_strbuf *out, llm_err *err);

#endif
