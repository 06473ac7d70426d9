#include "quant.h"


const llm_quant_type *llm_quant_find(const char *name)
{
    llmk_qtype t;
    return llmk_qtype_find(name, &t) ? NULL : llmk_qtype_traits(t);
}

int llm_quant_nbytes(const llm_quant_type *q, size_t ndim, const uint64_t *shape, uint64_t *nbytes)
{
    if (ndim == 0 || shape[ndim - 1] % q->block_elems) return -1;
    uint64_t n = 1;
    for (size_t i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, shape[i], &n)) return -1;
    uint64_t blocks = n / q->block_elems;
    if (__builtin_mul_overflow(blocks, (uint64_t)q->block_bytes, nbytes)) return -1;
    if (q == llmk_qtype_traits(LLMK_NF4)) {
        /* the tensor's tail: an f32 scale per 256 blocks, then the f32 offset */
        uint64_t tail = (blocks / 256 + (blocks % 256 != 0)) * 4 + 4;
        if (__builtin_add_overflow(*nbytes, tail, nbytes)) return -1;
    }
    return 0;
}
