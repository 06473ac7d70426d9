/* kvpool.h — the blocks of a paged KV cache (lib/infer.c): fixed-size
 * blocks of floats, reference-counted, with a registry of full blocks by
 * the tokens they hold (prefix sharing).
 *
 * A block is allocated when first needed and never returned to the system
 * before the pool is freed; at most max_blocks exist (0: no limit). A block
 * with no references is free: a plain free block is reused first; a free
 * block that is registered keeps its content (and a later lookup can take
 * it back) until no other block is left, then the oldest freed goes first.
 *
 * The registry maps a key to a block: key = XXH3-64 of the block's tokens
 * seeded by the key of the block before it (0 for the first), so a key
 * names a whole prefix. A lookup compares the parent key and the tokens
 * too. Only full blocks are registered; a registered block is never written
 * (lib/infer copies a shared block before writing into it and unregisters
 * a block whose positions it takes back). */
#ifndef LLMUX_KVPOOL_H
#define LLMUX_KVPOOL_H

#include <stddef.h>
#include <stdint.h>

#define LLM_KVPOOL_NONE UINT32_MAX

typedef struct llm_kvpool llm_kvpool;

/* A pool of blocks of block_floats floats (64-byte aligned), each for
 * block_tokens positions; NULL when out of memory. */
llm_kvpool *llm_kvpool_new(size_t block_floats, size_t block_tokens, size_t max_blocks);
void llm_kvpool_free(llm_kvpool *p);

float *llm_kvpool_data(const llm_kvpool *p, uint32_t b);
/* A block with one reference (content undefined), or LLM_KVPOOL_NONE when
 * max_blocks are in use or memory is out. */
uint32_t llm_kvpool_alloc(llm_kvpool *p);
void llm_kvpool_ref(llm_kvpool *p, uint32_t b);
void llm_kvpool_unref(llm_kvpool *p, uint32_t b);
uint32_t llm_kvpool_refs(const llm_kvpool *p, uint32_t b);

/* Blocks an alloc can still give (free ones and those not yet made), or
 * SIZE_MAX without a limit. */
size_t llm_kvpool_available(const llm_kvpool *p);
/* Blocks with references; the limit (0: none); bytes of one block. */
size_t llm_kvpool_used(const llm_kvpool *p);
size_t llm_kvpool_max(const llm_kvpool *p);
size_t llm_kvpool_block_bytes(const llm_kvpool *p);

/* The key of a block of tokens after the prefix whose key is parent. */
uint64_t llm_kvpool_key(const llm_kvpool *p, uint64_t parent, const uint32_t *tokens);
/* Registers block b (full: its block_tokens tokens) under key; nothing when
 * the key is already there (the first block stays) or b is registered. */
void llm_kvpool_register(llm_kvpool *p, uint32_t b, uint64_t key, uint64_t parent, const uint32_t *tokens);
void llm_kvpool_unregister(llm_kvpool *p, uint32_t b);
int llm_kvpool_registered(const llm_kvpool *p, uint32_t b);
/* The registered block holding tokens after parent, with a reference taken
 * (a free one leaves the free list), or LLM_KVPOOL_NONE. */
uint32_t llm_kvpool_lookup(llm_kvpool *p, uint64_t key, uint64_t parent, const uint32_t *tokens);

#endif
