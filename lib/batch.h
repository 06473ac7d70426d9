/* batch.h — what training and evaluation read: the sequences of a shard set
 * or of a sequence stream (llm_seqset_open takes either), in the order an
 * epoch-aware cursor gives (cursor.h), a batch at a time.
 *
 * Opening checks every shard's checksum first, so a damaged set is refused
 * before any step is taken on it. A batch of B sequences is B * (T + 1)
 * tokens (inputs are tokens 0..T-1 of a row, targets 1..T) and, when asked
 * for, B * (T + 1) mask bytes: 1 where a token is trained on as a target
 * (all 1 for a set without masks). */
#ifndef LLMUX_BATCH_H
#define LLMUX_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "cursor.h"
#include "err.h"
#include "seqset.h"

typedef struct llm_batcher llm_batcher;

int llm_batcher_open(llm_batcher **out, const char *path, uint64_t seed, int shuffle, uint32_t rank, uint32_t world,
                     llm_err *err);
void llm_batcher_close(llm_batcher *b);
llm_seqset *llm_batcher_set(llm_batcher *b);
uint32_t llm_batcher_seq_len(const llm_batcher *b);
/* The next B sequences of this rank's share (into the next epoch when this
 * one is used up); mask may be NULL. */
int llm_batcher_next(llm_batcher *b, size_t B, uint32_t *tokens, uint8_t *mask, llm_err *err);
/* The cursor, to save in a checkpoint (llm_cursor_save) and to restore. */
const llm_cursor *llm_batcher_cursor(const llm_batcher *b);
int llm_batcher_restore(llm_batcher *b, const char *cursor_json, llm_err *err);

#endif
