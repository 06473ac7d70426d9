/* The forward pass for generation, over a KV cache: see infer.h. Shapes:
 * n new rows; C = dim; QD = n_heads * head_dim; KVD = n_kv_heads * head_dim;
 * F = ffn_dim. */
#include "infer.h"
#include "llmk.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const float *f;          /* fp32 (rows, cols), or NULL */
    const void *q;           /* quantized blocks, or NULL */
    llmk_qtype qt;
} matrix;

typedef struct {
    const float *attn_norm_w, *attn_norm_b, *ffn_norm_w, *ffn_norm_b;
    const float *q_b, *k_b, *v_b, *o_b, *up_b, *down_b;
    matrix q, k, v, o, gate, up, down;
} layer;

struct llm_infer {
    llm_config c;
    llm_st_file *st;
    float *fp;               /* the float tensors, converted */
    const float *tok_emb, *pos_emb, *norm_w, *norm_b;
    matrix output;
    layer *layers;
    uint64_t weight_bytes;
    float *kv;               /* (L, ctx, 2, KVD): keys then values of each layer */
    size_t pos;
    /* scratch for up to ctx rows */
    float *x, *h, *mean, *rstd, *q, *att, *proj, *f1, *f2;
};

const llm_config *llm_infer_config(const llm_infer *m) { return &m->c; }
const char *llm_infer_meta(const llm_infer *m, const char *key) { return llm_st_meta(m->st, key); }
uint64_t llm_infer_weight_bytes(const llm_infer *m) { return m->weight_bytes; }
void llm_infer_reset(llm_infer *m) { m->pos = 0; }
size_t llm_infer_pos(const llm_infer *m) { return m->pos; }

/* Binds the tensor named `name` of the layout entry p: a matrix may be
 * quantized; everything else is converted to floats at fp + p->offset. */
static int bind(llm_infer *m, const char *path, const llm_param *p, matrix *mat, const float **vec, llm_err *err)
{
    const llm_st_tensor *t = llm_st_find(m->st, p->name);
    if (!t) return llm_errf(err, "%s: tensor '%s' is missing", path, p->name);
    if (t->quant) {
        if (!mat) return llm_errf(err, "%s: tensor '%s' is quantized; only matrices of linear layers may be", path, p->name);
        if (t->quant_ndim != 2 || t->quant_shape[0] != p->shape[0] || t->quant_shape[1] != p->shape[1])
            return llm_errf(err, "%s: tensor '%s' does not have the shape the config says", path, p->name);
        if (llmk_qtype_find(t->quant->name, &mat->qt)) return llm_errf(err, "%s: tensor '%s': unsupported block type", path, p->name);
        mat->q = t->data;
        m->weight_bytes += t->end - t->begin;
        return 0;
    }
    int shape_ok = t->ndim == p->ndim && t->shape[0] == p->shape[0] && (p->ndim == 1 || t->shape[1] == p->shape[1]);
    if (!shape_ok) return llm_errf(err, "%s: tensor '%s' does not have the shape the config says", path, p->name);
    float *dst = m->fp + p->offset;
    if (t->dtype == LLM_F32) memcpy(dst, t->data, p->size * 4);
    else if (t->dtype == LLM_F16 || t->dtype == LLM_BF16) {
        uint16_t *tmp = malloc(p->size * 2 + 1);
        if (!tmp) return llm_errf(err, "out of memory");
        memcpy(tmp, t->data, p->size * 2);
        if (t->dtype == LLM_F16) llmk_f16_to_f32(dst, tmp, p->size);
        else llmk_bf16_to_f32(dst, tmp, p->size);
        free(tmp);
    } else {
        return llm_errf(err, "%s: tensor '%s' is %s, not a float type", path, p->name, llm_dtype_name(t->dtype));
    }
    if (mat) mat->f = dst;
    if (vec) *vec = dst;
    if (mat) m->weight_bytes += p->size * 4;
    return 0;
}

static void *alloc_floats(size_t n) { return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64 + 64); }

int llm_infer_open(llm_infer **out, const char *path, llm_err *err)
{
    *out = NULL;
    llm_infer *m = calloc(1, sizeof *m);
    if (!m) return llm_errf(err, "out of memory");
    if (llm_st_open(path, &m->st, err)) { free(m); return -1; }
    const char *cfg = llm_st_meta(m->st, "config");
    int rc = 0;
    if (!cfg) rc = llm_errf(err, "%s: no \"config\" in the metadata: not an llmux model", path);
    else if (llm_config_from_json(&m->c, cfg, err)) rc = llm_err_prefix(err, "%s", path);
    size_t n = 0, total = 0;
    llm_param *params = rc ? NULL : llm_params_layout(&m->c, &n, &total);
    const llm_config *c = &m->c;
    size_t C = c->dim, D = c->dim / (c->n_heads ? c->n_heads : 1), QD = c->n_heads * D, KVD = c->n_kv_heads * D;
    size_t F = c->ffn_dim, ctx = c->ctx_len;
    if (!rc && (!params || !(m->fp = alloc_floats(total)) || !(m->layers = calloc(c->n_layers, sizeof *m->layers))))
        rc = llm_errf(err, "out of memory for the model");
    double kv_bytes = rc ? 0 : (double)c->n_layers * ctx * 2 * KVD * 4;
    if (!rc && !(m->kv = alloc_floats(c->n_layers * ctx * 2 * KVD)))
        rc = llm_errf(err, "%s: out of memory for the KV cache (%.2f GB for a context of %zu)", path, kv_bytes / 1e9, ctx);
    if (!rc) {
        m->x = alloc_floats(ctx * C);
        m->h = alloc_floats(ctx * C);
        m->mean = alloc_floats(ctx);
        m->rstd = alloc_floats(ctx);
        m->q = alloc_floats(ctx * QD);
        m->att = alloc_floats(ctx * QD);
        m->proj = alloc_floats(ctx * C);
        m->f1 = alloc_floats(ctx * F);
        m->f2 = alloc_floats(ctx * F);
        if (!m->x || !m->h || !m->mean || !m->rstd || !m->q || !m->att || !m->proj || !m->f1 || !m->f2)
            rc = llm_errf(err, "out of memory for the activations");
    }
    for (size_t i = 0; !rc && i < n; i++) {
        const llm_param *p = &params[i];
        const char *name = p->name;
        size_t l;
        int used = 0;
        if (sscanf(name, "layers.%zu.%n", &l, &used) == 1 && used > 0 && l < c->n_layers) {
            layer *L = &m->layers[l];
            const char *s = name + used;
            struct { const char *n; matrix *m; const float **v; } map[] = {
                {"attn_norm.weight", NULL, &L->attn_norm_w}, {"attn_norm.bias", NULL, &L->attn_norm_b},
                {"ffn_norm.weight", NULL, &L->ffn_norm_w},   {"ffn_norm.bias", NULL, &L->ffn_norm_b},
                {"attn.q.weight", &L->q, NULL}, {"attn.k.weight", &L->k, NULL}, {"attn.v.weight", &L->v, NULL},
                {"attn.q.bias", NULL, &L->q_b}, {"attn.k.bias", NULL, &L->k_b}, {"attn.v.bias", NULL, &L->v_b},
                {"attn.o.weight", &L->o, NULL}, {"attn.o.bias", NULL, &L->o_b},
                {"ffn.gate.weight", &L->gate, NULL}, {"ffn.up.weight", &L->up, NULL}, {"ffn.up.bias", NULL, &L->up_b},
                {"ffn.down.weight", &L->down, NULL}, {"ffn.down.bias", NULL, &L->down_b},
            };
            for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
                if (!strcmp(s, map[k].n)) { rc = bind(m, path, p, map[k].m, map[k].v, err); break; }
        } else if (!strcmp(name, "tok_embeddings.weight")) {
            rc = bind(m, path, p, NULL, &m->tok_emb, err);
        } else if (!strcmp(name, "pos_embeddings.weight")) {
            rc = bind(m, path, p, NULL, &m->pos_emb, err);
        } else if (!strcmp(name, "norm.weight")) {
            rc = bind(m, path, p, NULL, &m->norm_w, err);
        } else if (!strcmp(name, "norm.bias")) {
            rc = bind(m, path, p, NULL, &m->norm_b, err);
        } else if (!strcmp(name, "output.weight")) {
            rc = bind(m, path, p, &m->output, NULL, err);
        }
    }
    if (!rc && c->tied_embeddings) {
        m->output.f = m->tok_emb;
        m->weight_bytes += (uint64_t)c->vocab_size * C * 4;
    }
    free(params);
    if (rc) { llm_infer_close(m); return -1; }
    *out = m;
    return 0;
}

void llm_infer_close(llm_infer *m)
{
    if (!m) return;
    llm_st_close(m->st);
    free(m->fp);
    free(m->layers);
    free(m->kv);
    free(m->x);
    free(m->h);
    free(m->mean);
    free(m->rstd);
    free(m->q);
    free(m->att);
    free(m->proj);
    free(m->f1);
    free(m->f2);
    free(m);
}

/* out (n, oc) = x (n, ic) @ W^T + bias */
static void linear(float *out, const float *x, const matrix *w, const float *bias, size_t n, size_t ic, size_t oc)
{
    if (w->q) {
        llmk_qlinear(w->qt, out, x, w->q, n, ic, oc);
        if (bias)
            for (size_t r = 0; r < n; r++)
                for (size_t j = 0; j < oc; j++) out[r * oc + j] += bias[j];
    } else {
        llmk_linear_forward(out, x, w->f, bias, n, ic, oc);
    }
}

int llm_infer_step(llm_infer *m, const uint32_t *tokens, size_t n, float *logits, int all_logits, llm_err *err)
{
    const llm_config *c = &m->c;
    size_t C = c->dim, H = c->n_heads, KVH = c->n_kv_heads, D = C / H, QD = H * D, KVD = KVH * D, F = c->ffn_dim;
    size_t V = c->vocab_size, ctx = c->ctx_len, pos0 = m->pos;
    int llama = c->arch == LLM_ARCH_LLAMA;
    if (n == 0) return llm_errf(err, "no tokens to run");
    if (pos0 + n > ctx)
        return llm_errf(err, "%zu tokens at position %zu do not fit the context of %zu tokens", n, pos0, ctx);
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] >= V) return llm_errf(err, "token %u is outside the vocabulary of %zu", tokens[i], V);
        memcpy(m->x + i * C, m->tok_emb + (size_t)tokens[i] * C, C * sizeof(float));
        if (!llama)
            for (size_t j = 0; j < C; j++) m->x[i * C + j] += m->pos_emb[(pos0 + i) * C + j];
    }
    for (size_t l = 0; l < c->n_layers; l++) {
        const layer *L = &m->layers[l];
        float *kc = m->kv + l * ctx * 2 * KVD, *vc = kc + ctx * KVD;
        llm_norm_forward(c, m->h, m->mean, m->rstd, m->x, L->attn_norm_w, L->attn_norm_b, n);
        linear(m->q, m->h, &L->q, L->q_b, n, C, QD);
        linear(kc + pos0 * KVD, m->h, &L->k, L->k_b, n, C, KVD);
        linear(vc + pos0 * KVD, m->h, &L->v, L->v_b, n, C, KVD);
        if (llama) {
            llmk_rope_at(m->q, n, pos0, H, D, QD, c->rope_theta);
            llmk_rope_at(kc + pos0 * KVD, n, pos0, KVH, D, KVD, c->rope_theta);
        }
        llmk_attention_cached(m->att, m->q, QD, kc, vc, KVD, n, pos0, H, KVH, D);
        linear(m->proj, m->att, &L->o, L->o_b, n, QD, C);
        for (size_t i = 0; i < n * C; i++) m->x[i] += m->proj[i];
        llm_norm_forward(c, m->h, m->mean, m->rstd, m->x, L->ffn_norm_w, L->ffn_norm_b, n);
        if (llama) {
            linear(m->f1, m->h, &L->gate, NULL, n, C, F);
            linear(m->f2, m->h, &L->up, NULL, n, C, F);
            for (size_t i = 0; i < n * F; i++) {   /* silu(gate) * up */
                float g = m->f1[i];
                m->f1[i] = g / (1.0f + expf(-g)) * m->f2[i];
            }
        } else {
            linear(m->f2, m->h, &L->up, L->up_b, n, C, F);
            llmk_gelu_forward(m->f1, m->f2, n * F);
        }
        linear(m->proj, m->f1, &L->down, L->down_b, n, F, C);
        for (size_t i = 0; i < n * C; i++) m->x[i] += m->proj[i];
    }
    size_t first = all_logits ? 0 : n - 1, rows = n - first;
    llm_norm_forward(c, m->h, m->mean, m->rstd, m->x + first * C, m->norm_w, m->norm_b, rows);
    linear(logits, m->h, &m->output, NULL, rows, C, V);
    m->pos += n;
    return 0;
}
