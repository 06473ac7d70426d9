/* pack.h — documents of tokens into training sequences.
 *
 * Each sequence is T + 1 tokens: T inputs and, shifted by one, T targets
 * (target j is token j + 1). An end-of-sequence token follows every
 * document (unless the document already ends with it).
 *
 * Packed (the default, for pretraining): the documents and their end tokens
 * form one token stream, cut into sequences that overlap by one token
 * (sequence k is stream[k*T .. k*T + T]); the tail too short for a whole
 * sequence is dropped and counted.
 *
 * Per document (cross_doc 0, for finetuning): each document is cut the same
 * way on its own and its last sequence is filled with the pad token, whose
 * mask bytes are 0.
 *
 * Masks: mask[j] = 1 when token j is trained on as a target. Without
 * document masks every token is 1 (padding 0); with them (instruction data)
 * the documents' bytes are carried and the added end tokens are 0. */
#ifndef LLMUX_PACK_H
#define LLMUX_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Receives each sequence: n = T + 1 tokens and their mask (NULL when the
 * packer was made without masks). Returns 0, or -1 to stop. */
typedef int (*llm_seq_fn)(void *ctx, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err);

typedef struct {
    size_t seq;          /* T */
    uint32_t eos;        /* end of each document */
    uint32_t pad;        /* fills the last sequence of a document (cross_doc 0) */
    int cross_doc;       /* 1: pack across documents; 0: one document per sequence group */
    int masks;           /* sequences carry masks (always when cross_doc is 0) */
} llm_pack_opts;

typedef struct {
    uint64_t documents, sequences;
    uint64_t tokens_in;       /* document tokens, end tokens not counted */
    uint64_t tokens_dropped;  /* packed: the short tail */
    uint64_t tokens_padded;   /* per document: pad tokens added */
} llm_pack_stats;

typedef struct llm_packer llm_packer;

int llm_packer_new(llm_packer **out, const llm_pack_opts *opts, llm_seq_fn fn, void *ctx, llm_err *err);
/* Adds one document; mask may be NULL (all trained). */
int llm_packer_add(llm_packer *p, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err);
/* The same in parts: append the document's tokens in any number of pieces
 * (with masks in all of them or in none), then end it. */
int llm_packer_append(llm_packer *p, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err);
int llm_packer_end_doc(llm_packer *p, llm_err *err);
/* Ends the input (packed: drops and counts the tail). */
int llm_packer_finish(llm_packer *p, llm_err *err);
const llm_pack_stats *llm_packer_stats(const llm_packer *p);
void llm_packer_free(llm_packer *p);

#endif
