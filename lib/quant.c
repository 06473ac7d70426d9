#include "quant.h"

#include <string.h>

/* Sizes from llama.cpp's block structs:
 *   block_q8_0 { ggml_half d; int8_t qs[32]; }                      = 34 bytes / 32
 *   block_q4_0 { ggml_half d; uint8_t qs[16]; }                     = 18 bytes / 32
 *   block_q4_K { ggml_half d, dmin; uint8_t scales[12]; qs[128]; }  = 144 bytes / 256 */
static const llm_quant_type types[] = {
    {"q8_0", 32, 34},
    {"q4_0", 32, 18},
    {"q4_k", 256, 144},
};

const llm_quant_type *llm_quant_find(const char *name)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(types[i].name, name)) return &types[i];
    return NULL;
}

int llm_quant_nbytes(const llm_quant_type *q, size_t ndim, const uint64_t *shape, uint64_t *nbytes)
{
    if (ndim == 0 || shape[ndim - 1] % q->block_elems) return -1;
    uint64_t n = 1;
    for (size_t i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, shape[i], &n)) return -1;
    uint64_t blocks = n / q->block_elems;
    if (__builtin_mul_overflow(blocks, (uint64_t)q->block_bytes, nbytes)) return -1;
    return 0;
}
