/* Model and checkpoint files: see model_file.h. */
#include "model_file.h"
#include "llmk.h"
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *alloc_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}

int llm_set_string(char **dst, const char *src, llm_err *err)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? llm_errf(err, "out of memory") : 0;
}

int llm_model_file_new(llm_model_file *f, const llm_config *c, llm_err *err)
{
    memset(f, 0, sizeof *f);
    if (llm_config_check(c, err)) return -1;
    f->cfg = *c;
    f->params = llm_params_layout(c, &f->nparams, &f->total);
    if (!f->params || !(f->w = alloc_floats(f->total))) {
        llm_model_file_free(f);
        return llm_errf(err, "out of memory for %zu parameters", f->total);
    }
    return 0;
}

int llm_model_file_add_moments(llm_model_file *f, llm_err *err)
{
    if (f->m) return 0;
    f->m = alloc_floats(f->total);
    f->v = alloc_floats(f->total);
    if (!f->m || !f->v) return llm_errf(err, "out of memory for the optimizer's moments");
    memset(f->m, 0, f->total * sizeof(float));
    memset(f->v, 0, f->total * sizeof(float));
    return 0;
}

void llm_model_file_free(llm_model_file *f)
{
    free(f->params);
    free(f->w);
    free(f->m);
    free(f->v);
    free(f->tokenizer);
    free(f->tokenizer_config);
    free(f->training);
    memset(f, 0, sizeof *f);
}

/* Copies tensor t into dst (n floats), converting F16 and BF16. */
static int load_tensor(const char *path, const llm_st_tensor *t, const llm_param *p, float *dst, llm_err *err)
{
    int shape_ok = t->ndim == p->ndim && t->shape[0] == p->shape[0] && (p->ndim == 1 || t->shape[1] == p->shape[1]);
    if (!shape_ok) {
        char want[64], got[96] = "";
        if (p->ndim == 1) snprintf(want, sizeof want, "[%zu]", p->shape[0]);
        else snprintf(want, sizeof want, "[%zu, %zu]", p->shape[0], p->shape[1]);
        for (size_t i = 0; i < t->ndim && i < 4; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", i ? ", " : "[", (unsigned long long)t->shape[i]);
        strcat(got, t->ndim ? "]" : "[]");
        return llm_errf(err, "%s: tensor '%s' has shape %s, the config says %s", path, t->name, got, want);
    }
    switch (t->dtype) {
    case LLM_F32: memcpy(dst, t->data, p->size * sizeof(float)); return 0;
    case LLM_F16: {
        uint16_t *tmp = malloc(p->size * 2);
        if (!tmp) return llm_errf(err, "out of memory");
        memcpy(tmp, t->data, p->size * 2);   /* the data is not aligned */
        llmk_f16_to_f32(dst, tmp, p->size);
        free(tmp);
        return 0;
    }
    case LLM_BF16: {
        uint16_t *tmp = malloc(p->size * 2);
        if (!tmp) return llm_errf(err, "out of memory");
        memcpy(tmp, t->data, p->size * 2);
        llmk_bf16_to_f32(dst, tmp, p->size);
        free(tmp);
        return 0;
    }
    default:
        return llm_errf(err, "%s: tensor '%s' is %s; model tensors are F32, F16 or BF16 (quantized models are for llm-infer)",
                        path, t->name, llm_dtype_name(t->dtype));
    }
}

int llm_model_file_read(llm_model_file *f, const char *path, int with_moments, llm_err *err)
{
    memset(f, 0, sizeof *f);
    llm_st_file *st;
    if (llm_st_open(path, &st, err)) return -1;
    const char *cfg_json = llm_st_meta(st, "config"), *version = llm_st_meta(st, "llmux.version");
    llm_config cfg;
    int rc = 0;
    if (!cfg_json) rc = llm_errf(err, "%s: no \"config\" in the metadata: not an llmux model (llm-convert imports others)", path);
    else if (version && strcmp(version, "1")) rc = llm_errf(err, "%s: llmux.version %s is not one this program reads (1)", path, version);
    else if (llm_config_from_json(&cfg, cfg_json, err)) rc = llm_err_prefix(err, "%s", path);
    if (!rc && llm_model_file_new(f, &cfg, err)) rc = llm_err_prefix(err, "%s", path);
    size_t found = 0, moments = 0;
    if (!rc && with_moments && llm_st_find(st, "optim.m.tok_embeddings.weight") && llm_model_file_add_moments(f, err)) rc = -1;
    for (size_t i = 0; !rc && i < f->nparams; i++) {
        const llm_param *p = &f->params[i];
        const llm_st_tensor *t = llm_st_find(st, p->name);
        if (!t) { rc = llm_errf(err, "%s: tensor '%s' is missing", path, p->name); break; }
        rc = load_tensor(path, t, p, f->w + p->offset, err);
        found++;
        char name[64];
        for (int k = 0; !rc && k < 2; k++) {
            snprintf(name, sizeof name, "optim.%c.%s", k ? 'v' : 'm', p->name);
            const llm_st_tensor *mt = llm_st_find(st, name);
            if (mt) moments++;
            if (!f->m) continue;
            if (!mt) rc = llm_errf(err, "%s: tensor '%s' is missing (the file has moments for other parameters)", path, name);
            else if (mt->dtype != LLM_F32) rc = llm_errf(err, "%s: tensor '%s' is %s, not F32", path, name, llm_dtype_name(mt->dtype));
            else rc = load_tensor(path, mt, p, (k ? f->v : f->m) + p->offset, err);
        }
    }
    if (!rc && found + moments != llm_st_count(st)) {
        /* name the first tensor that is not ours */
        for (size_t i = 0; i < llm_st_count(st); i++) {
            const char *name = llm_st_at(st, i)->name, *base = name;
            if (!strncmp(name, "optim.m.", 8) || !strncmp(name, "optim.v.", 8)) base = name + 8;
            int known = 0;
            for (size_t j = 0; j < f->nparams && !known; j++) known = !strcmp(f->params[j].name, base);
            if (!known) { rc = llm_errf(err, "%s: tensor '%s' is not part of this config", path, name); break; }
        }
        if (!rc) rc = llm_errf(err, "%s: unexpected tensors", path);
    }
    if (!rc) rc = llm_set_string(&f->tokenizer, llm_st_meta(st, "tokenizer"), err);
    if (!rc) rc = llm_set_string(&f->tokenizer_config, llm_st_meta(st, "tokenizer_config"), err);
    if (!rc) rc = llm_set_string(&f->training, llm_st_meta(st, "training"), err);
    llm_st_close(st);
    if (rc) llm_model_file_free(f);
    return rc;
}

int llm_model_file_write(const llm_model_file *f, const char *path, llm_err *err)
{
    llm_st_writer *w = llm_st_writer_new();
    char *cfg = llm_config_to_json(&f->cfg);
    int rc = !w || !cfg ? llm_errf(err, "out of memory") : 0;
    if (!rc) rc = llm_st_writer_meta(w, "format", "llmux", err);
    if (!rc) rc = llm_st_writer_meta(w, "llmux.version", "1", err);
    if (!rc) rc = llm_st_writer_meta(w, "config", cfg, err);
    if (!rc && f->tokenizer) rc = llm_st_writer_meta(w, "tokenizer", f->tokenizer, err);
    if (!rc && f->tokenizer_config) rc = llm_st_writer_meta(w, "tokenizer_config", f->tokenizer_config, err);
    if (!rc && f->training) rc = llm_st_writer_meta(w, "training", f->training, err);
    /* the writer borrows names until it writes: keep the moment names here */
    char (*names)[64] = f->m ? calloc(2 * f->nparams, sizeof *names) : NULL;
    if (!rc && f->m && !names) rc = llm_errf(err, "out of memory");
    for (size_t i = 0; !rc && i < f->nparams; i++) {
        const llm_param *p = &f->params[i];
        uint64_t shape[2] = {p->shape[0], p->shape[1]};
        rc = llm_st_writer_add(w, p->name, LLM_F32, p->ndim, shape, f->w + p->offset, p->size * 4, err);
        for (int k = 0; !rc && f->m && k < 2; k++) {
            char *name = names[2 * i + (size_t)k];
            snprintf(name, 64, "optim.%c.%s", k ? 'v' : 'm', p->name);
            rc = llm_st_writer_add(w, name, LLM_F32, p->ndim, shape, (k ? f->v : f->m) + p->offset, p->size * 4, err);
        }
    }
    if (!rc) rc = llm_st_writer_write(w, path, err);
    llm_st_writer_free(w);
    free(names);
    free(cfg);
    return rc;
}
