/* A model file to a quantized one: see quantize.h. */
#include "quantize.h"
#include "dtype.h"
#include "llmk.h"
#include "quant.h"
#include "safetensors.h"

#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Why a tensor stays as it is, or NULL when it is quantized. */
static const char *why_kept(const llm_st_tensor *t, const llmk_qtraits *q, const char *const *keep, size_t nkeep)
{
    size_t len = strlen(t->name);
    if (t->dtype != LLM_F32 && t->dtype != LLM_F16 && t->dtype != LLM_BF16) return "not a float tensor";
    if (t->ndim != 2 || len < 7 || strcmp(t->name + len - 7, ".weight")) return "not a matrix";
    if (!strcmp(t->name, "tok_embeddings.weight") || !strcmp(t->name, "pos_embeddings.weight")) return "an embedding";
    for (size_t i = 0; i < nkeep; i++)
        if (fnmatch(keep[i], t->name, 0) == 0) return "--keep";
    if (t->shape[1] % q->block_elems) return "rows are not whole blocks";
    return NULL;
}

static float *to_f32(const llm_st_tensor *t)
{
    size_t n = (size_t)t->nelem;
    float *x = malloc(n * sizeof *x + 1);
    uint16_t *h = t->dtype == LLM_F32 ? NULL : malloc(n * 2 + 1);
    if (!x || (t->dtype != LLM_F32 && !h)) { free(x); free(h); return NULL; }
    if (t->dtype == LLM_F32) memcpy(x, t->data, n * 4);
    else {
        memcpy(h, t->data, n * 2);   /* the data is not aligned */
        if (t->dtype == LLM_F16) llmk_f16_to_f32(x, h, n);
        else llmk_bf16_to_f32(x, h, n);
    }
    free(h);
    return x;
}

int llm_quantize_file(const char *in, const char *out, const char *type, const char *const *keep, size_t nkeep,
                      llm_quant_report_fn fn, void *ctx, llm_err *err)
{
    llmk_qtype kt;
    const llm_quant_type *qt = llm_quant_find(type);
    if (llmk_qtype_find(type, &kt) || !qt) return llm_errf(err, "unknown quantization type '%s' (q8_0, q4_0, q4_k, nf4)", type);
    const llmk_qtraits *q = llmk_qtype_traits(kt);
    llm_st_file *st;
    if (llm_st_open(in, &st, err)) return -1;
    if (!llm_st_meta(st, "config")) {
        llm_st_close(st);
        return llm_errf(err, "%s: no \"config\" in the metadata: not an llmux model", in);
    }
    if (llm_st_meta(st, "quantization")) {
        llm_st_close(st);
        return llm_errf(err, "%s: already quantized (quantize the original model instead)", in);
    }
    llm_st_writer *w = llm_st_writer_new();
    size_t n = llm_st_count(st);
    void **blobs = calloc(n + 1, sizeof *blobs);
    int rc = w && blobs ? 0 : llm_errf(err, "out of memory");
    for (size_t i = 0; !rc && i < llm_st_meta_count(st); i++) {
        const char *k = llm_st_meta_key(st, i);
        if (strcmp(k, "training") && strcmp(k, "quantization")) rc = llm_st_writer_meta(w, k, llm_st_meta_value(st, i), err);
    }
    for (size_t i = 0; !rc && i < n; i++) {
        const llm_st_tensor *t = llm_st_at(st, i);
        if (!strncmp(t->name, "optim.", 6)) continue;   /* optimizer moments: not for inference */
        llm_quant_report r = {t->name, llm_dtype_name(t->dtype), why_kept(t, q, keep, nkeep), t->nelem,
                              t->end - t->begin, t->end - t->begin, 0, 0};
        if (r.why_kept) {
            rc = llm_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->end - t->begin, err);
            if (!rc && fn) fn(ctx, &r);
            continue;
        }
        size_t elems = (size_t)t->nelem, bytes = llmk_qbytes(kt, elems);
        float *x = to_f32(t), *back = malloc(elems * sizeof *back + 1);
        blobs[i] = malloc(bytes);
        if (!x || !back || !blobs[i]) {
            rc = llm_errf(err, "out of memory quantizing '%s'", t->name);
        } else {
            llmk_quantize_ref(kt, blobs[i], x, elems);
            llmk_dequantize(kt, back, blobs[i], elems);
            double sq = 0, mx = 0;
            for (size_t j = 0; j < elems; j++) {
                double d = fabs((double)back[j] - x[j]);
                sq += d * d;
                if (d > mx || isnan(d)) mx = d;
            }
            r.type = q->name;
            r.bytes_after = bytes;
            r.rmse = elems ? sqrt(sq / (double)elems) : 0;
            r.max_abs = mx;
            rc = llm_st_writer_add_quant(w, t->name, qt, t->ndim, t->shape, blobs[i], bytes, err);
            if (!rc && fn) fn(ctx, &r);
        }
        free(x);
        free(back);
    }
    if (!rc) rc = llm_st_writer_write(w, out, err);
    llm_st_writer_free(w);
    for (size_t i = 0; blobs && i < n; i++) free(blobs[i]);
    free(blobs);
    llm_st_close(st);
    return rc;
}
