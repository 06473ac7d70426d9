#include "dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
    int is_float;
} table[LLM_DTYPE_COUNT] = {
    [LLM_BOOL] = {"BOOL", 1, 0},     [LLM_U8] = {"U8", 1, 0},
    [LLM_I8] = {"I8", 1, 0},         [LLM_F8_E5M2] = {"F8_E5M2", 1, 1},
    [LLM_F8_E4M3] = {"F8_E4M3", 1, 1},
    [LLM_I16] = {"I16", 2, 0},       [LLM_U16] = {"U16", 2, 0},
    [LLM_F16] = {"F16", 2, 1},       [LLM_BF16] = {"BF16", 2, 1},
    [LLM_I32] = {"I32", 4, 0},       [LLM_U32] = {"U32", 4, 0},
    [LLM_F32] = {"F32", 4, 1},
    [LLM_I64] = {"I64", 8, 0},       [LLM_U64] = {"U64", 8, 0},
    [LLM_F64] = {"F64", 8, 1},
};

size_t llm_dtype_size(llm_dtype t) { return t < LLM_DTYPE_COUNT ? table[t].size : 0; }
const char *llm_dtype_name(llm_dtype t) { return t < LLM_DTYPE_COUNT ? table[t].name : "?"; }
int llm_dtype_is_float(llm_dtype t) { return t < LLM_DTYPE_COUNT && table[t].is_float; }

int llm_dtype_parse(const char *name, llm_dtype *out)
{
    for (int i = 0; i < LLM_DTYPE_COUNT; i++)
        if (!strcmp(table[i].name, name)) { *out = (llm_dtype)i; return 0; }
    return -1;
}
