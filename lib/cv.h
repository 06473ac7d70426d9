/* cv.h — llm-convert's model in flight, between a reader of one format and
 * a writer of another.
 *
 * A model is our configuration (lib/model.h), its metadata strings, and its
 * tensors under OUR names and layouts (llm-tensors(5): "tok_embeddings.weight",
 * "layers.3.attn.q.weight" (out, in), ...), in the order llm_params_layout
 * gives. A tensor's bytes are either where a reader mapped them (data) or
 * made on demand by fill (a transposed, split, permuted or converted
 * tensor), one tensor at a time into a buffer the writer owns: a
 * conversion never holds the model twice.
 *
 * Every reader checks what it reads against the file (shapes, dtypes,
 * sizes, the config against the tensors) and fails with a message naming
 * the file and the tensor or field; every writer writes a temp file (or
 * directory) and renames it into place, so a failed conversion leaves
 * nothing. */
#ifndef LLMUX_CV_H
#define LLMUX_CV_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "err.h"
#include "model.h"
#include "quant.h"

typedef struct llm_cv_tensor llm_cv_tensor;

/* Fills out (t->nbytes bytes) with t's bytes. */
typedef int (*llm_cv_fill_fn)(const llm_cv_tensor *t, void *out, llm_err *err);

struct llm_cv_tensor {
    char name[64];                /* ours */
    llm_dtype dtype;              /* F32, F16 or BF16; U8 for a quantized blob */
    const llm_quant_type *quant;  /* the block type of a quantized blob, else NULL */
    size_t ndim;                  /* 1 or 2 */
    uint64_t shape[2];            /* the logical shape (rows, columns), as our config says */
    uint64_t nbytes;
    const void *data;             /* the bytes where they lie (unaligned), or NULL: then fill */
    llm_cv_fill_fn fill;
    const void *src;              /* the reader's, for fill (e.g. the source tensor) */
    uint64_t arg[4];              /* the reader's, for fill */
};

typedef struct {
    llm_config c;
    char *tokenizer;              /* Hugging Face tokenizer.json text (our "tokenizer" metadata), or NULL */
    char *tokenizer_config;       /* tokenizer_config.json text (special tokens, chat template), or NULL */
    char *chat_template;          /* a Jinja template or one of our names, or NULL */
    char *generation_config;      /* generation_config.json text, or NULL */
    llm_cv_tensor *t;             /* (n), in llm_params_layout order; tied output: no "output.weight" */
    size_t n;
    /* the reader's resources, released by llm_cv_model_free */
    void *owner;
    void (*release)(void *owner);
} llm_cv_model;

void llm_cv_model_free(llm_cv_model *m);
const llm_cv_tensor *llm_cv_find(const llm_cv_model *m, const char *name);
/* The bytes of t: t->data, or fill into buf (grown as needed: *buf, *cap). */
const void *llm_cv_bytes(const llm_cv_tensor *t, void **buf, size_t *cap, llm_err *err);
/* t's elements as floats into out (nelem floats), from F32, F16, BF16 or a
 * quantized blob (dequantized). */
int llm_cv_floats(const llm_cv_tensor *t, float *out, void **buf, size_t *cap, llm_err *err);
uint64_t llm_cv_nelem(const llm_cv_tensor *t);

/* Checks that m has every tensor its config's layout names, with that
 * shape, and no other (the reader's last step). */
int llm_cv_check(const llm_cv_model *m, const char *path, llm_err *err);

typedef struct {
    int dtype_set;                /* --dtype given */
    llm_dtype dtype;              /* F32, F16 or BF16: float tensors are written as this */
} llm_cv_options;

/* The formats. Readers: path is a file, or a directory (hf). */
typedef enum { LLM_CV_LLMUX, LLM_CV_HF, LLM_CV_GGUF, LLM_CV_ONNX, LLM_CV_LLMC } llm_cv_format;
const char *llm_cv_format_name(llm_cv_format f);
int llm_cv_format_parse(const char *name, llm_cv_format *f);
/* What path holds: a directory with config.json (hf), GGUF magic, llm.c's
 * magic, or a safetensors header (llmux). */
int llm_cv_detect(const char *path, llm_cv_format *f, llm_err *err);

int llm_cv_read_llmux(const char *path, llm_cv_model *m, llm_err *err);
int llm_cv_write_llmux(const llm_cv_model *m, const char *out, const llm_cv_options *o, llm_err *err);
int llm_cv_read_hf(const char *dir, llm_cv_model *m, llm_err *err);
int llm_cv_write_hf(const llm_cv_model *m, const char *out_dir, const llm_cv_options *o, llm_err *err);
int llm_cv_read_gguf(const char *path, llm_cv_model *m, llm_err *err);
int llm_cv_write_gguf(const llm_cv_model *m, const char *out, const llm_cv_options *o, llm_err *err);
int llm_cv_write_onnx(const llm_cv_model *m, const char *out, const llm_cv_options *o, llm_err *err);
int llm_cv_read_llmc(const char *path, llm_cv_model *m, llm_err *err);
int llm_cv_write_llmc(const llm_cv_model *m, const char *out, const llm_cv_options *o, llm_err *err);

#endif
