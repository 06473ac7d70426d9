/* bpe.h — byte-pair encoding of one pre-tokenized piece.
 *
 * A vocabulary maps ids to byte strings. Merges map a pair of ids (left,
 * right) to a rank and to the id of their concatenation. Encoding starts
 * from initial symbols — the piece's bytes, or (SentencePiece style) its
 * UTF-8 characters with byte fallback — and repeatedly merges the adjacent
 * pair of lowest rank, the leftmost on ties, until no pair has a rank. That
 * is both tiktoken's rule (rank = rank of the concatenated bytes, see
 * llm_bpe_merges_from_ranks) and Hugging Face tokenizers' (rank = position in
 * the merges list). Long pieces use a heap, so the cost is O(n log n) in the
 * piece length, never quadratic. */
#ifndef LLMUX_BPE_H
#define LLMUX_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct {
    uint32_t *v;
    size_t n, cap;
} llm_ids;

int llm_ids_push(llm_ids *ids, uint32_t id);
void llm_ids_free(llm_ids *ids);

typedef struct llm_bpe llm_bpe;

#define LLM_BPE_MAX_ID (1u << 24)   /* ids are below this (vocabularies have ~10^5) */

llm_bpe *llm_bpe_new(void);
void llm_bpe_free(llm_bpe *b);

/* Defines token `id` (< LLM_BPE_MAX_ID) as `bytes`. Ids may have gaps; a byte
 * string may have one id only (a second definition is an error, naming both). */
int llm_bpe_set_token(llm_bpe *b, uint32_t id, const void *bytes, size_t n, llm_err *err);
/* Adds the merge (left, right) -> token of their concatenation, with `rank`. */
int llm_bpe_add_merge(llm_bpe *b, uint32_t left, uint32_t right, uint32_t rank, llm_err *err);
/* tiktoken: every token t of two or more bytes yields the merges (x, y) for
 * each split t = x + y where x and y are tokens, with rank = t's id. */
int llm_bpe_merges_from_ranks(llm_bpe *b, llm_err *err);

/* Options (set before encoding): */
/* Look the whole piece up first and return its id when present (tiktoken;
 * tokenizers' ignore_merges). */
void llm_bpe_set_whole_piece_lookup(llm_bpe *b, int on);
/* SentencePiece style: initial symbols are UTF-8 characters; a character that
 * is not a token becomes the byte-fallback tokens "<0xXX>" of its bytes when
 * byte_fallback is on, else `unk` (UINT32_MAX: dropped). */
void llm_bpe_set_char_symbols(llm_bpe *b, int byte_fallback, uint32_t unk);

/* Computes the tables encoding reads (single-byte and byte-fallback ids).
 * Call once after the vocabulary and options are set and before encoding
 * from several threads; encoding calls it itself if nobody did. */
void llm_bpe_prepare(llm_bpe *b);

size_t llm_bpe_vocab_size(const llm_bpe *b);   /* highest id + 1 */
/* The bytes of token id, or NULL when id is not defined. */
const unsigned char *llm_bpe_token(const llm_bpe *b, uint32_t id, size_t *n);
/* 0 and *id when the byte string is a token, else -1. */
int llm_bpe_lookup(const llm_bpe *b, const void *bytes, size_t n, uint32_t *id);

/* Per-thread working memory, with a cache of recent pieces. */
typedef struct llm_bpe_scratch llm_bpe_scratch;
llm_bpe_scratch *llm_bpe_scratch_new(void);
void llm_bpe_scratch_free(llm_bpe_scratch *s);

/* Appends the ids of piece[0..n) to out. Fails only when a byte has no
 * token (a vocabulary without all 256 single bytes) or memory runs out. */
int llm_bpe_encode(const llm_bpe *b, llm_bpe_scratch *s, const unsigned char *piece, size_t n, llm_ids *out,
                   llm_err *err);

/* The oracle for llm_bpe_encode: the plain quadratic loop (find the lowest
 * rank, leftmost, merge, repeat), no cache, no heap. For tests. */
int llm_bpe_encode_ref(const llm_bpe *b, const unsigned char *piece, size_t n, llm_ids *out, llm_err *err);

#endif
