/* safetensors.h — read and write tensor files exactly per the safetensors spec.
 *
 * File: u64 little-endian N | N bytes of JSON header | data section.
 * The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]}
 * (offsets relative to the data section) plus an optional "__metadata__"
 * object of string values. The reader checks everything against the file:
 * header length within LLM_ST_MAX_HEADER and the file; JSON valid UTF-8 with
 * no duplicate keys; known dtypes; shape products and byte sizes computed with
 * overflow checks; tensors that tile the data section exactly (no holes, no
 * overlaps, nothing after the last one); and the layout of quantized U8 blobs
 * named by the "quantization" metadata key (see llm-tensors(5)).
 *
 * Tensor data pointers point into the mapping and carry no alignment promise:
 * read them with memcpy or unaligned loads. */
#ifndef LLMUX_SAFETENSORS_H
#define LLMUX_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "err.h"
#include "quant.h"

#define LLM_ST_MAX_HEADER 100000000ull   /* the limit the safetensors crate uses */

typedef struct {
    const char *name;
    llm_dtype dtype;
    size_t ndim;
    const uint64_t *shape;      /* (ndim) */
    uint64_t nelem;             /* product of shape (1 for a scalar) */
    uint64_t begin, end;        /* byte offsets within the data section */
    const void *data;           /* (end - begin) bytes, unaligned */
    /* Quantized blobs only (dtype U8, 1-D), else NULL / 0: */
    const llm_quant_type *quant;
    size_t quant_ndim;
    const uint64_t *quant_shape; /* logical shape, (quant_ndim) */
} llm_st_tensor;

typedef struct llm_st_file llm_st_file;

/* Maps and validates a file. */
int llm_st_open(const char *path, llm_st_file **out, llm_err *err);
/* Validates a file image already in memory (not copied; must outlive the result). */
int llm_st_open_mem(const void *buf, size_t len, const char *name, llm_st_file **out, llm_err *err);
void llm_st_close(llm_st_file *f);

uint64_t llm_st_header_len(const llm_st_file *f);   /* N */
uint64_t llm_st_file_size(const llm_st_file *f);
size_t llm_st_count(const llm_st_file *f);
/* Tensors in data-section order. */
const llm_st_tensor *llm_st_at(const llm_st_file *f, size_t i);
const llm_st_tensor *llm_st_find(const llm_st_file *f, const char *name);

/* __metadata__, keys sorted. llm_st_meta returns NULL when absent.
 * llm_st_has_metadata tells an empty "__metadata__": {} from none at all. */
int llm_st_has_metadata(const llm_st_file *f);
size_t llm_st_meta_count(const llm_st_file *f);
const char *llm_st_meta_key(const llm_st_file *f, size_t i);
const char *llm_st_meta_value(const llm_st_file *f, size_t i);
const char *llm_st_meta(const llm_st_file *f, const char *key);

/* ---- writing ----
 * Tensors are laid out as the safetensors crate lays them out (by dtype,
 * widest first, then by name) and the header is padded with spaces to a
 * multiple of 8, so a file we write from the same tensors and metadata is
 * byte-identical to one the Python package writes whenever the metadata has
 * at most one key (we sort metadata keys; the crate writes them in hash order).
 * Data pointers are borrowed until llm_st_writer_write returns. */
typedef struct llm_st_writer llm_st_writer;

llm_st_writer *llm_st_writer_new(void);
void llm_st_writer_free(llm_st_writer *w);
/* Sets (or replaces) a metadata string. "quantization" is reserved: it is
 * written from llm_st_writer_add_quant calls. */
int llm_st_writer_meta(llm_st_writer *w, const char *key, const char *value, llm_err *err);
/* Writes "__metadata__": {} even when no key is set (the Python package does
 * for metadata={}); by default an empty metadata map is left out. */
void llm_st_writer_always_metadata(llm_st_writer *w);
int llm_st_writer_add(llm_st_writer *w, const char *name, llm_dtype dtype, size_t ndim,
                      const uint64_t *shape, const void *data, uint64_t nbytes, llm_err *err);
/* Adds a quantized tensor: a U8 blob of llm_quant_nbytes(q, ndim, shape) bytes. */
int llm_st_writer_add_quant(llm_st_writer *w, const char *name, const llm_quant_type *q, size_t ndim,
                            const uint64_t *shape, const void *data, uint64_t nbytes, llm_err *err);
/* Adds a tensor whose nbytes come from fill at write time, one tensor at a
 * time into a buffer the writer keeps (a conversion streams through it
 * instead of holding every tensor). fill fails with err set. */
typedef int (*llm_st_fill_fn)(void *ctx, void *out, uint64_t nbytes, llm_err *err);
int llm_st_writer_add_fill(llm_st_writer *w, const char *name, llm_dtype dtype, size_t ndim, const uint64_t *shape,
                           uint64_t nbytes, llm_st_fill_fn fill, void *ctx, llm_err *err);
int llm_st_writer_add_quant_fill(llm_st_writer *w, const char *name, const llm_quant_type *q, size_t ndim,
                                 const uint64_t *shape, uint64_t nbytes, llm_st_fill_fn fill, void *ctx, llm_err *err);

/* Writes to a temp file beside path and renames it into place. */
int llm_st_writer_write(llm_st_writer *w, const char *path, llm_err *err);

#endif
