/* gguf.h — the GGUF container (llama.cpp's model files), versions 2 and 3,
 * little-endian: a header, key/value metadata, tensor infos, then the
 * tensor data, each tensor at a multiple of general.alignment (default 32)
 * from the start of the data section.
 *
 *   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv times:      string key | u32 value type | value
 *   n_tensors times: string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset
 *   padding to the alignment | data
 *
 * A string is a u64 length and that many bytes (no terminator); an array is
 * a u32 element type, a u64 count and the elements. ne[0] is the number of
 * columns (the fastest dimension): a PyTorch (rows, cols) matrix is
 * ne = [cols, rows].
 *
 * The reader (gguf_read.c) maps the file and checks all of it before a caller
 * sees anything: the magic, the version, every count, string and array
 * against the bytes that remain, keys and tensor names unique, types known,
 * sizes that do not overflow, the alignment a power of two, every tensor's
 * offset aligned and its bytes inside the file. Errors name the file and the
 * key or tensor. The model-level mapping (names, config keys, tokenizer) is
 * lib/cv_gguf.c's. */
#ifndef LLMUX_GGUF_H
#define LLMUX_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "fileio.h"

/* Value types of metadata. */
enum {
    LLM_GGUF_U8 = 0, LLM_GGUF_I8 = 1, LLM_GGUF_U16 = 2, LLM_GGUF_I16 = 3, LLM_GGUF_U32 = 4, LLM_GGUF_I32 = 5,
    LLM_GGUF_F32 = 6, LLM_GGUF_BOOL = 7, LLM_GGUF_STRING = 8, LLM_GGUF_ARRAY = 9, LLM_GGUF_U64 = 10,
    LLM_GGUF_I64 = 11, LLM_GGUF_F64 = 12,
};

/* Tensor (ggml) types that llm-convert reads and writes. */
enum {
    LLM_GGML_F32 = 0, LLM_GGML_F16 = 1, LLM_GGML_Q4_0 = 2, LLM_GGML_Q8_0 = 8, LLM_GGML_Q4_K = 12, LLM_GGML_BF16 = 30,
};

#define LLM_GGUF_DEFAULT_ALIGNMENT 32
#define LLM_GGUF_MAX_DIMS 4
#define LLM_GGUF_MAX_NAME 63   /* ggml's GGML_MAX_NAME less the terminator */

/* "Q5_K", "F32", ...; NULL for a number ggml does not define. */
const char *llm_ggml_type_name(uint32_t type);
/* Elements and bytes per block of a ggml type (1 and the element size for
 * F32, F16, ...): 0, or -1 for a type without a known size. */
int llm_ggml_type_size(uint32_t type, uint64_t *block_elems, uint64_t *block_bytes);
const char *llm_gguf_value_type_name(uint32_t type);   /* "UINT32", ... */

/* ---- reading ---- */

typedef struct {
    char *key;                   /* NUL-terminated copy */
    uint32_t type;               /* LLM_GGUF_* */
    uint32_t elem_type;          /* arrays: the element type */
    uint64_t count;              /* arrays: the element count */
    const unsigned char *val;    /* the value in the map (arrays: the first element) */
    uint64_t len;                /* bytes of the value (arrays: of the elements) */
} llm_gguf_kv;

typedef struct {
    char *name;                  /* NUL-terminated copy */
    uint32_t n_dims;
    uint64_t ne[LLM_GGUF_MAX_DIMS];   /* unused dimensions are 1 */
    uint32_t type;               /* ggml type */
    uint64_t offset;             /* from the start of the data section */
    uint64_t nbytes;
    const unsigned char *data;   /* in the map */
} llm_gguf_tensor;

typedef struct {
    char *path;
    llm_mapped map;
    uint32_t version;
    llm_gguf_kv *kv;
    size_t n_kv;
    llm_gguf_tensor *t;
    size_t n_tensors;
    uint64_t alignment, data_offset;
} llm_gguf_file;

int llm_gguf_open(const char *path, llm_gguf_file **out, llm_err *err);
void llm_gguf_close(llm_gguf_file *f);

const llm_gguf_kv *llm_gguf_get(const llm_gguf_file *f, const char *key);
const llm_gguf_tensor *llm_gguf_tensor_find(const llm_gguf_file *f, const char *name);

/* Typed getters. A missing key is an error only when required (else 1 is
 * returned and *v untouched); a key of another type is an error. Errors
 * name the file and the key. Integers: any integer type, not negative.
 * Floats: F32 or F64. */
int llm_gguf_get_uint(const llm_gguf_file *f, const char *key, int required, uint64_t *v, llm_err *err);
int llm_gguf_get_float(const llm_gguf_file *f, const char *key, int required, double *v, llm_err *err);
int llm_gguf_get_bool(const llm_gguf_file *f, const char *key, int required, int *v, llm_err *err);
/* The string's bytes (not terminated) and length. */
int llm_gguf_get_string(const llm_gguf_file *f, const char *key, int required, const char **s, size_t *len,
                        llm_err *err);
/* An array of elem_type (-1: any); *kv is the entry. */
int llm_gguf_get_array(const llm_gguf_file *f, const char *key, int required, int elem_type, const llm_gguf_kv **kv,
                       llm_err *err);
/* Walks an array of strings (already checked): *p starts at kv->val. */
static inline void llm_gguf_next_string(const unsigned char **p, const char **s, size_t *len)
{
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)(*p)[i] << (8 * i);
    *s = (const char *)*p + 8;
    *len = (size_t)n;
    *p += 8 + n;
}
/* Element i of an array of a fixed-size integer type, as int64. */
int64_t llm_gguf_array_int(const llm_gguf_kv *kv, uint64_t i);

/* ---- writing ---- */

typedef struct llm_gguf_writer llm_gguf_writer;

/* Makes the bytes of a tensor at write time: out holds nbytes. */
typedef int (*llm_gguf_fill_fn)(void *ctx, void *out, uint64_t nbytes, llm_err *err);

llm_gguf_writer *llm_gguf_writer_new(void);
void llm_gguf_writer_free(llm_gguf_writer *w);

/* Metadata, written in the order given (a key given twice is an error). */
int llm_gguf_add_u32(llm_gguf_writer *w, const char *key, uint32_t v, llm_err *err);
int llm_gguf_add_i32(llm_gguf_writer *w, const char *key, int32_t v, llm_err *err);
int llm_gguf_add_f32(llm_gguf_writer *w, const char *key, float v, llm_err *err);
int llm_gguf_add_bool(llm_gguf_writer *w, const char *key, int v, llm_err *err);
int llm_gguf_add_string(llm_gguf_writer *w, const char *key, const char *s, size_t len, llm_err *err);
/* Arrays of strings (s[i], len[i]) and of int32. */
int llm_gguf_add_strings(llm_gguf_writer *w, const char *key, const char *const *s, const size_t *len, uint64_t n,
                         llm_err *err);
int llm_gguf_add_i32s(llm_gguf_writer *w, const char *key, const int32_t *v, uint64_t n, llm_err *err);

/* A tensor: ne as GGUF orders it (ne[0] the columns); its bytes are data,
 * or, when data is NULL, what fill makes at write time. nbytes must be what
 * the type and ne say. Tensors are written in the order given. */
int llm_gguf_add_tensor(llm_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims, const uint64_t *ne,
                        const void *data, uint64_t nbytes, llm_gguf_fill_fn fill, void *ctx, llm_err *err);

/* Writes the file (version 3, general.alignment 32 unless a general.alignment
 * u32 was added) to a temp file and renames it onto path. One filled tensor
 * is in memory at a time. */
int llm_gguf_writer_write(llm_gguf_writer *w, const char *path, llm_err *err);

#endif
