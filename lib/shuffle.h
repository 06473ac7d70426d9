/* shuffle.h — a global shuffle of fixed-size records, larger than memory.
 *
 * Record i (in the order added) gets the key k(i) = mix(i, seed), a
 * bijection of the 64-bit integers, and the records come out sorted by key:
 * a uniformly scattered order fixed by the seed and the input alone, the
 * same whatever the memory budget.
 *
 * How: records are appended, each after its key, to one of 64 temporary
 * files by the key's top 6 bits (a range partition). At the end each file in
 * turn is read whole and sorted in memory when it fits the budget, or split
 * again by the next 6 bits of the key when it does not. So memory stays
 * within `mem` bytes (the write buffers take a quarter, a bucket being sorted
 * at most half) and every record is written twice (once more per split).
 * The temporary files are unnamed (O_TMPFILE, or unlinked at once) in
 * `tmpdir`: nothing is left behind, whatever happens. */
#ifndef LLMUX_SHUFFLE_H
#define LLMUX_SHUFFLE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LLM_SHUFFLE_MIN_MEM (64u << 10)

typedef struct llm_shuffler llm_shuffler;

/* rec_bytes: the size of every record; mem: the budget (at least
 * LLM_SHUFFLE_MIN_MEM and room for a few records). */
int llm_shuffler_new(llm_shuffler **out, size_t rec_bytes, uint64_t seed, size_t mem, const char *tmpdir, llm_err *err);
int llm_shuffler_add(llm_shuffler *s, const void *rec, llm_err *err);
/* Receives the records in shuffled order. Returns 0, or -1 to stop. */
typedef int (*llm_record_fn)(void *ctx, const void *rec, llm_err *err);
/* Emits every record; the shuffler takes no more records after it. */
int llm_shuffler_finish(llm_shuffler *s, llm_record_fn fn, void *ctx, llm_err *err);
uint64_t llm_shuffler_count(const llm_shuffler *s);
void llm_shuffler_free(llm_shuffler *s);

/* The key of record i under seed: a bijection of i for each seed. */
uint64_t llm_shuffle_key(uint64_t i, uint64_t seed);

#endif
