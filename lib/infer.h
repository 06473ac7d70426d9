/* infer.h — running a model forward for generation: a KV cache, fp32 or
 * quantized weights (q8_0, q4_0, q4_k; lib/quantize.h), one sequence.
 *
 * The model file stays mapped: quantized matrices are read where they lie;
 * float tensors (F32, F16, BF16) are converted once into an aligned
 * allocation. The cache holds the keys and values of every position so far
 * (n_layers x ctx_len x 2 x kv_dim floats); llm_infer_step runs n new tokens
 * at the next positions and gives the logits of the last one (or of all). */
#ifndef LLMUX_INFER_H
#define LLMUX_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "model.h"

typedef struct llm_infer llm_infer;

int llm_infer_open(llm_infer **out, const char *path, llm_err *err);
void llm_infer_close(llm_infer *m);
const llm_config *llm_infer_config(const llm_infer *m);
/* Metadata strings of the file (NULL when absent): "tokenizer", ... */
const char *llm_infer_meta(const llm_infer *m, const char *key);
/* Bytes of weights read per generated token (for bandwidth bounds). */
uint64_t llm_infer_weight_bytes(const llm_infer *m);

/* Forgets the sequence: the next step starts at position 0. */
void llm_infer_reset(llm_infer *m);
size_t llm_infer_pos(const llm_infer *m);
/* Runs tokens (n >= 1; each < vocab) at positions pos .. pos + n - 1.
 * logits: (vocab) for the last token, or (n, vocab) with all_logits. Fails
 * when the context would overflow. */
int llm_infer_step(llm_infer *m, const uint32_t *tokens, size_t n, float *logits, int all_logits, llm_err *err);

#endif
