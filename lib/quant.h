/* quant.h — block layouts of quantized tensors stored as U8 blobs.
 *
 * A quantized tensor is a 1-D U8 tensor in the file; the "quantization"
 * metadata key (a JSON object, see llm-tensors(5)) names its type and its
 * logical shape. Blocks run along the last (contiguous) dimension, as in
 * llama.cpp, so that dimension must be a multiple of the block size.
 * Byte layouts of the blocks are llama.cpp's (bit-exact, so GGUF export is a
 * copy); the kernels that read them live in kernels/. */
#ifndef LLMUX_QUANT_H
#define LLMUX_QUANT_H

#include <stddef.h>
#include <stdint.h>

#define LLM_QUANT_MAX_DIMS 8

#include "llmk.h"

/* The block types are the kernels' (one table, kernels/quant_ref.c):
 * name ("q8_0", "q4_0", "q4_k", "nf4"), weights and bytes per block. */
typedef llmk_qtraits llm_quant_type;

const llm_quant_type *llm_quant_find(const char *name);

/* Bytes a tensor of logical shape (ndim, shape) takes in type q (nf4's tail
 * of scales included: llmk_qbytes of its weights). Returns 0 and
 * sets *nbytes, or -1 when the last dimension is not a multiple of the block
 * size or the size overflows 64 bits. */
int llm_quant_nbytes(const llm_quant_type *q, size_t ndim, const uint64_t *shape, uint64_t *nbytes);

#endif
