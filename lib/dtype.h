/* dtype.h — the element types of tensor files, named as safetensors names them.
 * The enum order is the safetensors crate's (its writers sort tensors by it,
 * descending, then by name); our writer uses it to lay files out the same way. */
#ifndef LLMUX_DTYPE_H
#define LLMUX_DTYPE_H

#include <stddef.h>

typedef enum {
    LLM_BOOL, LLM_U8, LLM_I8, LLM_F8_E5M2, LLM_F8_E4M3,
    LLM_I16, LLM_U16, LLM_F16, LLM_BF16,
    LLM_I32, LLM_U32, LLM_F32,
    LLM_F64, LLM_I64, LLM_U64,
    LLM_DTYPE_COUNT
} llm_dtype;

size_t llm_dtype_size(llm_dtype t);          /* bytes per element */
const char *llm_dtype_name(llm_dtype t);     /* "F32", "BF16", ... */
int llm_dtype_is_float(llm_dtype t);
/* Looks up a safetensors dtype string; returns 0 and sets *out, or -1. */
int llm_dtype_parse(const char *name, llm_dtype *out);

#endif
