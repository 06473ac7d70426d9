/* infer.h — running a model forward for generation: KV caches, fp32 or
 * quantized weights (q8_0, q4_0, q4_k, nf4; lib/quantize.h), one or many
 * sequences at once.
 *
 * The model file stays mapped: quantized matrices and 4-byte-aligned F32
 * tensors are read where they lie; F16 and BF16 tensors are converted once
 * into an allocation. A sequence (llm_infer_seq) is a KV cache: the keys and
 * values of every position so far, in blocks of LLM_KV_BLOCK positions (of
 * every layer) from one pool per model (lib/kvpool.h) that grows as
 * sequences need blocks, up to a budget (llm_infer_kv_limit). A sequence
 * holds a table of its blocks; a copy shares them (reference counts), and
 * a block shared by two sequences is copied before one writes into it.
 * With llm_infer_share_prefixes, full blocks are registered under the
 * tokens of their whole prefix, and a new sequence can start with the
 * blocks of a prompt that begins the same way (llm_infer_seq_reuse).
 * llm_infer_batch runs new tokens of several sequences in one pass, so the
 * weights are read once for all of them (offline batching, beams, n samples);
 * a sequence's results do not depend on what else is in the batch, bit for
 * bit: a prompt runs in a pass of its own, and decoding tokens go through
 * the kernels' rowwise paths (kernels/llmk.h), where a row's result is what
 * it would be alone.
 *
 * Opening checks memory first: the bytes the weights take (mapped or
 * converted), one KV cache and the activations, against what the machine can
 * give (MemAvailable, the cgroup's memory.max, RLIMIT_AS / RLIMIT_DATA);
 * a model that does not fit fails there, naming the sizes, before any work. */
#ifndef LLMUX_INFER_H
#define LLMUX_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "model.h"

typedef struct llm_infer llm_infer;
typedef struct llm_infer_seq llm_infer_seq;

int llm_infer_open(llm_infer **out, const char *path, llm_err *err);
void llm_infer_close(llm_infer *m);
const llm_config *llm_infer_config(const llm_infer *m);
/* Metadata strings of the file (NULL when absent): "tokenizer", ... */
const char *llm_infer_meta(const llm_infer *m, const char *key);
/* Bytes of weights read per generated token (for bandwidth bounds). */
uint64_t llm_infer_weight_bytes(const llm_infer *m);
/* Bytes of one sequence's KV cache for the whole context; of one block. */
uint64_t llm_infer_seq_bytes(const llm_infer *m);
uint64_t llm_infer_kv_block_bytes(const llm_infer *m);

#define LLM_KV_BLOCK 32   /* positions per block: the attention kernel's tile of keys */

/* At most max_blocks blocks of KV cache (all sequences together; 0: no
 * limit, the default); set before any sequence has run. Fails when that many
 * do not fit in memory. A pass whose sequences need more blocks than are
 * free fails (llm_infer_batch), changing nothing. */
int llm_infer_kv_limit(llm_infer *m, size_t max_blocks, llm_err *err);
/* Registers full blocks for llm_infer_seq_reuse (off by default). */
void llm_infer_share_prefixes(llm_infer *m, int on);
typedef struct {
    size_t used;             /* blocks held by sequences */
    size_t max;              /* the limit, 0 for none */
    size_t available;        /* blocks a pass can still take (SIZE_MAX without a limit) */
    uint64_t block_bytes;
} llm_infer_kv;
void llm_infer_kv_stats(const llm_infer *m, llm_infer_kv *st);

/* A new sequence (an empty KV cache), or NULL with err set. */
llm_infer_seq *llm_infer_seq_new(llm_infer *m, llm_err *err);
void llm_infer_seq_free(llm_infer_seq *s);
/* dst becomes a copy of src (its positions and cache): a fork. */
void llm_infer_seq_copy(llm_infer_seq *dst, const llm_infer_seq *src);
/* Forgets the sequence's tokens from position pos on (pos <= its length):
 * 0 empties it. */
void llm_infer_seq_truncate(llm_infer_seq *s, size_t pos);
size_t llm_infer_seq_pos(const llm_infer_seq *s);
/* An empty sequence s takes the registered blocks that hold the longest
 * run of whole blocks at the start of tokens (n of them), leaving at least
 * the last token to run; returns the positions it now has (0 with sharing
 * off). Those keys and values were computed in another pass, so the logits
 * that follow can differ from a fresh run in the last bits. */
size_t llm_infer_seq_reuse(llm_infer_seq *s, const uint32_t *tokens, size_t n);

/* Runs counts[i] new tokens (>= 1) of sequence seqs[i] for i < nseq; tokens
 * are the sequences' tokens one after the other. A sequence may appear once.
 * logits: (nseq, vocab), each sequence's last token; or with all_logits
 * (sum of counts, vocab), every token. Fails, changing nothing, when a
 * sequence would overflow the context or a token is outside the vocabulary. */
int llm_infer_batch(llm_infer *m, llm_infer_seq *const *seqs, const uint32_t *tokens, const size_t *counts, size_t nseq,
                    float *logits, int all_logits, llm_err *err);

/* The same for the model's own sequence (made at open). */
void llm_infer_reset(llm_infer *m);
size_t llm_infer_pos(const llm_infer *m);
int llm_infer_step(llm_infer *m, const uint32_t *tokens, size_t n, float *logits, int all_logits, llm_err *err);

#endif
