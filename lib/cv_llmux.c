/* Our own model files in and out of llm-convert (see cv.h, llm-tensors(5)):
 * tensors read where they lie; written in order, converted to --dtype on
 * the way through the writer's buffer. */
#include "cv.h"

#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void release_st(void *owner) { llm_st_close(owner); }

static char *dup_meta(const llm_st_file *f, const char *key, int *oom)
{
    const char *v = llm_st_meta(f, key);
    char *d = v ? strdup(v) : NULL;
    if (v && !d) *oom = 1;
    return d;
}

int llm_cv_read_llmux(const char *path, llm_cv_model *m, llm_err *err)
{
    memset(m, 0, sizeof *m);
    llm_st_file *f;
    if (llm_st_open(path, &f, err)) return -1;
    m->owner = f;
    m->release = release_st;
    const char *cfg = llm_st_meta(f, "config");
    if (!cfg) {
        llm_cv_model_free(m);
        return llm_errf(err, "%s: no \"config\" in the metadata: not an llmux model", path);
    }
    if (llm_config_from_json(&m->c, cfg, err)) {
        llm_cv_model_free(m);
        return llm_err_prefix(err, "%s", path);
    }
    int oom = 0;
    m->tokenizer = dup_meta(f, "tokenizer", &oom);
    m->tokenizer_config = dup_meta(f, "tokenizer_config", &oom);
    m->chat_template = dup_meta(f, "chat_template", &oom);
    m->generation_config = dup_meta(f, "generation_config", &oom);
    size_t n, total;
    llm_param *p = llm_params_layout(&m->c, &n, &total);
    m->t = calloc(n + 1, sizeof *m->t);
    if (oom || !p || !m->t) {
        free(p);
        llm_cv_model_free(m);
        return llm_errf(err, "out of memory");
    }
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const llm_st_tensor *st = llm_st_find(f, p[i].name);
        if (!st) continue;   /* llm_cv_check names it */
        llm_cv_tensor *t = &m->t[m->n++];
        snprintf(t->name, sizeof t->name, "%s", p[i].name);
        t->dtype = st->dtype;
        t->quant = st->quant;
        t->ndim = st->quant ? st->quant_ndim : st->ndim;
        if (t->ndim < 1 || t->ndim > 2) {
            rc = llm_errf(err, "%s: tensor '%s' has %zu dimensions", path, p[i].name, t->ndim);
            break;
        }
        for (size_t d = 0; d < t->ndim; d++) t->shape[d] = st->quant ? st->quant_shape[d] : st->shape[d];
        if (!st->quant && st->dtype != LLM_F32 && st->dtype != LLM_F16 && st->dtype != LLM_BF16)
            rc = llm_errf(err, "%s: tensor '%s' is %s, not F32, F16, BF16 or quantized", path, p[i].name,
                          llm_dtype_name(st->dtype));
        t->data = st->data;
        t->nbytes = st->end - st->begin;
    }
    free(p);
    for (size_t i = 0; i < llm_st_count(f) && !rc; i++)   /* llm-train's optimizer state is left behind */
        if (strncmp(llm_st_at(f, i)->name, "optim.", 6) && !llm_cv_find(m, llm_st_at(f, i)->name))
            rc = llm_errf(err, "%s: tensor '%s' is not part of the model its config describes", path, llm_st_at(f, i)->name);
    if (!rc) rc = llm_cv_check(m, path, err);
    if (rc) llm_cv_model_free(m);
    return rc;
}

/* ---- writing ---- */

typedef struct {
    const llm_cv_tensor *t;
    llm_dtype to;
    void *buf;
    size_t cap;
} fill_job;

/* A float tensor converted to another float type. */
static int fill_converted(void *ctx, void *out, uint64_t nbytes, llm_err *err)
{
    fill_job *j = ctx;
    uint64_t n = llm_cv_nelem(j->t);
    int rc;
    if (j->to == LLM_F32 && j->t->dtype != LLM_F32) {
        rc = llm_cv_floats(j->t, out, &j->buf, &j->cap, err);
    } else {
        float *f = malloc(n * sizeof *f + 4);
        rc = f ? llm_cv_floats(j->t, f, &j->buf, &j->cap, err) : llm_errf(err, "out of memory");
        if (!rc && j->to == LLM_F32) memcpy(out, f, nbytes);
        else if (!rc && j->to == LLM_F16) llmk_f32_to_f16(out, f, n);
        else if (!rc) llmk_f32_to_bf16(out, f, n);
        free(f);
    }
    free(j->buf);   /* one tensor at a time: the source's bytes go with it */
    j->buf = NULL, j->cap = 0;
    return rc;
}

/* The same bytes, made by the reader's fill. */
static int fill_same(void *ctx, void *out, uint64_t nbytes, llm_err *err)
{
    fill_job *j = ctx;
    (void)nbytes;
    return j->t->fill(j->t, out, err);
}

int llm_cv_write_llmux(const llm_cv_model *m, const char *out, const llm_cv_options *o, llm_err *err)
{
    llm_st_writer *w = llm_st_writer_new();
    fill_job *jobs = calloc(m->n + 1, sizeof *jobs);
    char *cfg = llm_config_to_json(&m->c);
    int rc = !w || !jobs || !cfg ? llm_errf(err, "out of memory") : 0;
    if (!rc) rc = llm_st_writer_meta(w, "format", "llmux", err);
    if (!rc) rc = llm_st_writer_meta(w, "llmux.version", "1", err);
    if (!rc) rc = llm_st_writer_meta(w, "config", cfg, err);
    if (!rc && m->tokenizer) rc = llm_st_writer_meta(w, "tokenizer", m->tokenizer, err);
    if (!rc && m->tokenizer_config) rc = llm_st_writer_meta(w, "tokenizer_config", m->tokenizer_config, err);
    if (!rc && m->chat_template) rc = llm_st_writer_meta(w, "chat_template", m->chat_template, err);
    if (!rc && m->generation_config) rc = llm_st_writer_meta(w, "generation_config", m->generation_config, err);
    for (size_t i = 0; i < m->n && !rc; i++) {
        const llm_cv_tensor *t = &m->t[i];
        fill_job *j = &jobs[i];
        j->t = t;
        if (t->quant) {   /* blocks are copied as they are, whatever --dtype says */
            if (t->data) rc = llm_st_writer_add_quant(w, t->name, t->quant, t->ndim, t->shape, t->data, t->nbytes, err);
            else rc = llm_st_writer_add_quant_fill(w, t->name, t->quant, t->ndim, t->shape, t->nbytes, fill_same, j, err);
            continue;
        }
        j->to = o && o->dtype_set ? o->dtype : t->dtype;
        uint64_t nbytes = llm_cv_nelem(t) * llm_dtype_size(j->to);
        if (j->to == t->dtype && t->data)
            rc = llm_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes, err);
        else
            rc = llm_st_writer_add_fill(w, t->name, j->to, t->ndim, t->shape, nbytes,
                                        j->to == t->dtype ? fill_same : fill_converted, j, err);
    }
    if (!rc) rc = llm_st_writer_write(w, out, err);
    for (size_t i = 0; jobs && i < m->n; i++) free(jobs[i].buf);
    free(jobs);
    free(cfg);
    llm_st_writer_free(w);
    return rc;
}
