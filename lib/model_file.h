/* model_file.h — model and checkpoint files (safetensors, llm-tensors(5)),
 * read into and written from one float allocation of the model's layout.
 *
 * Reading checks that the "config" metadata is valid, that every parameter
 * of that configuration is present with its shape (F32, F16 or BF16; the
 * others converted to F32) and that nothing else is there but the optimizer
 * moments (optim.m.NAME, optim.v.NAME: both for every parameter, F32, or none
 * at all). Errors name the file and the tensor. */
#ifndef LLMUX_MODEL_FILE_H
#define LLMUX_MODEL_FILE_H

#include "model.h"

typedef struct {
    llm_config cfg;
    llm_param *params;        /* the layout (llm_params_layout) */
    size_t nparams, total;
    float *w;                 /* (total) parameters, 64-byte aligned */
    float *m, *v;             /* (total) AdamW moments, or NULL */
    /* metadata strings, malloc'd, or NULL when absent */
    char *tokenizer, *tokenizer_config, *training;
} llm_model_file;

/* A fresh model of this configuration: parameters allocated (not
 * initialised), no moments, no metadata. */
int llm_model_file_new(llm_model_file *f, const llm_config *c, llm_err *err);
int llm_model_file_read(llm_model_file *f, const char *path, int with_moments, llm_err *err);
/* Writes parameters (and moments when not NULL) with format, llmux.version,
 * config and the metadata strings that are set; atomically. */
int llm_model_file_write(const llm_model_file *f, const char *path, llm_err *err);
void llm_model_file_free(llm_model_file *f);
/* Allocates zeroed moments (when training starts from a model file). */
int llm_model_file_add_moments(llm_model_file *f, llm_err *err);
int llm_set_string(char **dst, const char *src, llm_err *err);

#endif
