/* cursor.h — which sequence a training rank reads next, epoch after epoch.
 *
 * In epoch e the N sequences are read in an order that is a permutation of
 * 0..N-1 fixed by (seed, e) (or 0..N-1 itself without shuffling); rank r of
 * w ranks takes positions r, r + w, r + 2w, ... of that order, so the ranks'
 * shares of an epoch are disjoint and together cover the set. The
 * permutation is computed, not stored (a Feistel network over the next power
 * of two, walked back into range), so a cursor is a few integers whatever N
 * is, and saving and restoring it continues exactly. (With more ranks than
 * sequences the shares cannot be disjoint: rank r then starts at r mod N.) */
#ifndef LLMUX_CURSOR_H
#define LLMUX_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct {
    uint64_t n;          /* sequences in the set */
    uint64_t seed;
    int shuffle;
    uint32_t rank, world;
    uint64_t epoch;      /* epochs completed */
    uint64_t pos;        /* next position in this epoch's order */
} llm_cursor;

/* Fails when n is 0, world is 0 or rank >= world. */
int llm_cursor_init(llm_cursor *c, uint64_t n, uint64_t seed, int shuffle, uint32_t rank, uint32_t world, llm_err *err);
/* The index of the next sequence for this rank; moves to the next epoch
 * when this rank's share of the current one is used up. */
uint64_t llm_cursor_next(llm_cursor *c);
/* The sequence at position pos of epoch e's order. */
uint64_t llm_cursor_order(const llm_cursor *c, uint64_t epoch, uint64_t pos);

/* The state as JSON ({"n","seed","shuffle","rank","world","epoch","pos"}),
 * and back: a restored cursor continues exactly where the saved one was.
 * Restoring checks n against the set it is used with. */
int llm_cursor_save(const llm_cursor *c, char *buf, size_t size);
int llm_cursor_load(llm_cursor *c, const char *json, uint64_t n, llm_err *err);

#endif
