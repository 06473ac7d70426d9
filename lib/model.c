/* The transformer's parameters, activations, forward and backward passes:
 * see model.h. The arithmetic is all in kernels/ (llmk.h); this file wires
 * the layers together. Shapes: BT = B * T rows; C = dim; QKV = qkv_dim;
 * QD = n_heads * head_dim; F = ffn_dim; FC = F (gpt2) or 2F (llama). */
#include "model.h"
#include "llmk.h"
#include "sample.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters ---- */

typedef struct {
    llm_param *p;
    size_t n, cap, total;
} table;

static void add(table *t, const char *name, size_t rows, size_t cols, int decay)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        llm_param *np = realloc(t->p, t->cap * sizeof *np);
        if (!np) { free(t->p); t->p = NULL; t->cap = t->n = 0; return; }
        t->p = np;
    }
    if (!t->p) return;
    llm_param *p = &t->p[t->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = cols ? 2 : 1;
    p->shape[0] = rows;
    p->shape[1] = cols;
    p->size = rows * (cols ? cols : 1);
    p->offset = t->total;
    p->decay = decay;
    t->total += p->size;
}

llm_param *llm_params_layout(const llm_config *c, size_t *n, size_t *total)
{
    table t = {0};
    int gpt2 = c->arch == LLM_ARCH_GPT2;
    size_t C = c->dim, D = llm_config_head_dim(c), QD = c->n_heads * D, KVD = c->n_kv_heads * D, F = c->ffn_dim;
    char name[48];
    add(&t, "tok_embeddings.weight", c->vocab_size, C, 1);
    if (gpt2) add(&t, "pos_embeddings.weight", c->ctx_len, C, 1);
    for (size_t l = 0; l < c->n_layers; l++) {
#define NAME(s) (snprintf(name, sizeof name, "layers.%zu.%s", l, s), name)
        add(&t, NAME("attn_norm.weight"), C, 0, 0);
        if (gpt2) add(&t, NAME("attn_norm.bias"), C, 0, 0);
        /* q, k, v back to back: one (QKV, C) matrix; their biases likewise */
        add(&t, NAME("attn.q.weight"), QD, C, 1);
        add(&t, NAME("attn.k.weight"), KVD, C, 1);
        add(&t, NAME("attn.v.weight"), KVD, C, 1);
        if (c->qkv_bias) {
            add(&t, NAME("attn.q.bias"), QD, 0, 0);
            add(&t, NAME("attn.k.bias"), KVD, 0, 0);
            add(&t, NAME("attn.v.bias"), KVD, 0, 0);
        }
        add(&t, NAME("attn.o.weight"), C, QD, 1);
        if (gpt2) add(&t, NAME("attn.o.bias"), C, 0, 0);
        add(&t, NAME("ffn_norm.weight"), C, 0, 0);
        if (gpt2) add(&t, NAME("ffn_norm.bias"), C, 0, 0);
        if (!gpt2) add(&t, NAME("ffn.gate.weight"), F, C, 1);   /* gate then up: one (2F, C) matrix */
        add(&t, NAME("ffn.up.weight"), F, C, 1);
        if (gpt2) add(&t, NAME("ffn.up.bias"), F, 0, 0);
        add(&t, NAME("ffn.down.weight"), C, F, 1);
        if (gpt2) add(&t, NAME("ffn.down.bias"), C, 0, 0);
#undef NAME
    }
    add(&t, "norm.weight", C, 0, 0);
    if (gpt2) add(&t, "norm.bias", C, 0, 0);
    if (!c->tied_embeddings) add(&t, "output.weight", c->vocab_size, C, 1);
    *n = t.n;
    *total = t.total;
    return t.p;
}

int llm_weights_bind(llm_weights *w, const llm_config *c, float *base, llm_err *err)
{
    memset(w, 0, sizeof *w);
    size_t n, total;
    llm_param *p = llm_params_layout(c, &n, &total);
    w->layers = calloc(c->n_layers, sizeof *w->layers);
    if (!p || !w->layers) {
        free(p);
        free(w->layers);
        w->layers = NULL;
        return llm_errf(err, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        float *at = base + p[i].offset;
        const char *name = p[i].name;
        size_t l;
        int used = 0;
        if (sscanf(name, "layers.%zu.%n", &l, &used) == 1 && used > 0 && l < c->n_layers) {
            llm_layer_weights *L = &w->layers[l];
            const char *s = name + used;
            if (!strcmp(s, "attn_norm.weight")) L->attn_norm_w = at;
            else if (!strcmp(s, "attn_norm.bias")) L->attn_norm_b = at;
            else if (!strcmp(s, "attn.q.weight")) L->qkv_w = at;
            else if (!strcmp(s, "attn.q.bias")) L->qkv_b = at;
            else if (!strcmp(s, "attn.o.weight")) L->o_w = at;
            else if (!strcmp(s, "attn.o.bias")) L->o_b = at;
            else if (!strcmp(s, "ffn_norm.weight")) L->ffn_norm_w = at;
            else if (!strcmp(s, "ffn_norm.bias")) L->ffn_norm_b = at;
            else if (!strcmp(s, "ffn.gate.weight")) L->fc_w = at;
            else if (!strcmp(s, "ffn.up.weight") && !L->fc_w) L->fc_w = at;
            else if (!strcmp(s, "ffn.up.bias")) L->fc_b = at;
            else if (!strcmp(s, "ffn.down.weight")) L->down_w = at;
            else if (!strcmp(s, "ffn.down.bias")) L->down_b = at;
        } else if (!strcmp(name, "tok_embeddings.weight")) w->tok_emb = at;
        else if (!strcmp(name, "pos_embeddings.weight")) w->pos_emb = at;
        else if (!strcmp(name, "norm.weight")) w->norm_w = at;
        else if (!strcmp(name, "norm.bias")) w->norm_b = at;
        else if (!strcmp(name, "output.weight")) w->output = at;
    }
    if (c->tied_embeddings) w->output = w->tok_emb;
    free(p);
    return 0;
}

void llm_weights_free(llm_weights *w)
{
    free(w->layers);
    w->layers = NULL;
}

/* Each tensor's generator: the seed mixed with the tensor's name (FNV-1a
 * style), so initialisation does not depend on the order of the tensors. */
static void rng_for(llm_rng *r, uint64_t seed, const char *name)
{
    uint64_t x = seed;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) x = (x ^ *p) * 0x100000001b3ull;
    llm_rng_seed(r, x);
}

void llm_params_init(float *base, const llm_config *c, const llm_param *params, size_t n, uint64_t seed)
{
    double resid_std = 0.02 / sqrt(2.0 * (double)c->n_layers);
    for (size_t i = 0; i < n; i++) {
        const llm_param *p = &params[i];
        float *x = base + p->offset;
        const char *dot = strrchr(p->name, '.');
        int is_bias = dot && !strcmp(dot, ".bias");
        int is_norm = strstr(p->name, "norm.") != NULL;
        if (is_norm && !is_bias) {
            for (size_t j = 0; j < p->size; j++) x[j] = 1.0f;
            continue;
        }
        if (is_bias) {
            memset(x, 0, p->size * sizeof *x);
            continue;
        }
        double std = 0.02;
        if (c->arch == LLM_ARCH_GPT2 && (strstr(p->name, "attn.o.weight") || strstr(p->name, "ffn.down.weight")))
            std = resid_std;
        llm_rng r;
        rng_for(&r, seed, p->name);
        for (size_t j = 0; j < p->size; j += 2) {   /* Box-Muller: two normals per two uniforms */
            /* u in (0, 1] for the log */
            double u = 1.0 - llm_rng_uniform(&r), v = llm_rng_uniform(&r), rad = sqrt(-2.0 * log(u));
            x[j] = (float)(std * rad * cos(2 * M_PI * v));
            if (j + 1 < p->size) x[j + 1] = (float)(std * rad * sin(2 * M_PI * v));
        }
    }
}

/* ---- activations ---- */

typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd;   /* (BT, C), (BT), (BT) */
    float *qkv;                         /* (BT, QKV), q and k rotated (llama) */
    float *att;                         /* (B, H, T, T) */
    float *atty;                        /* (BT, QD) */
    float *res1;                        /* (BT, C): input + attention */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fch;                         /* (BT, FC) */
    float *fca;                         /* (BT, F) */
    float *res2;                        /* (BT, C): the layer's output */
} layer_acts;

struct llm_acts {
    size_t B, T, L;
    int training;
    float *mem;
    float *x0;                          /* (BT, C): embeddings */
    layer_acts *layers;                 /* (L); without training all share one set */
    float *proj;                        /* (BT, C): a projection before its residual add */
    float *lnf, *lnf_mean, *lnf_rstd;
    float *logits;                      /* (BT, V) */
    /* backward only */
    float *dres, *dx;                   /* (BT, C) */
    float *dqkv, *datty, *datt;         /* (BT, QKV), (BT, QD), (B, H, T, T) */
    float *dfch, *dfca;                 /* (BT, FC), (BT, F) */
};

typedef struct {
    size_t x0, layer, shared, back;
} acts_sizes;

static acts_sizes sizes(const llm_config *c, size_t B, size_t T)
{
    size_t BT = B * T, C = c->dim, QKV = llm_config_qkv_dim(c), QD = c->n_heads * llm_config_head_dim(c);
    size_t F = c->ffn_dim, FC = c->arch == LLM_ARCH_LLAMA ? 2 * F : F, att = B * c->n_heads * T * T;
    acts_sizes s;
    s.x0 = BT * C;
    s.layer = BT * C * 4 + BT * 4 + BT * QKV + att + BT * QD + BT * FC + BT * F;
    s.shared = BT * C /* proj */ + BT * C + 2 * BT /* lnf */ + BT * c->vocab_size;
    s.back = 2 * BT * C + BT * QKV + BT * QD + att + BT * FC + BT * F;
    return s;
}

size_t llm_acts_floats(const llm_config *c, size_t B, size_t T, int training)
{
    acts_sizes s = sizes(c, B, T);
    return s.x0 + s.layer * (training ? c->n_layers : 1) + s.shared + (training ? s.back : 0);
}

llm_acts *llm_acts_new(const llm_config *c, size_t B, size_t T, int training, llm_err *err)
{
    llm_acts *a = calloc(1, sizeof *a);
    size_t total = llm_acts_floats(c, B, T, training);
    if (!a || !(a->layers = calloc(c->n_layers, sizeof *a->layers)) ||
        !(a->mem = aligned_alloc(64, (total * sizeof(float) + 63) / 64 * 64))) {
        if (a) free(a->layers);
        free(a);
        llm_errf(err, "out of memory for the activations (%.1f GB for B=%zu, T=%zu)", total * 4.0 / 1e9, B, T);
        return NULL;
    }
    a->B = B;
    a->T = T;
    a->L = c->n_layers;
    a->training = training;
    size_t BT = B * T, C = c->dim, QKV = llm_config_qkv_dim(c), QD = c->n_heads * llm_config_head_dim(c);
    size_t F = c->ffn_dim, FC = c->arch == LLM_ARCH_LLAMA ? 2 * F : F, att = B * c->n_heads * T * T;
    float *p = a->mem;
#define TAKE(n) (p += (n), p - (n))
    a->x0 = TAKE(BT * C);
    for (size_t l = 0; l < c->n_layers; l++) {
        layer_acts *la = &a->layers[l];
        if (!training && l > 0) {
            *la = a->layers[0];
            continue;
        }
        la->ln1 = TAKE(BT * C);
        la->ln1_mean = TAKE(BT);
        la->ln1_rstd = TAKE(BT);
        la->qkv = TAKE(BT * QKV);
        la->att = TAKE(att);
        la->atty = TAKE(BT * QD);
        la->res1 = TAKE(BT * C);
        la->ln2 = TAKE(BT * C);
        la->ln2_mean = TAKE(BT);
        la->ln2_rstd = TAKE(BT);
        la->fch = TAKE(BT * FC);
        la->fca = TAKE(BT * F);
        la->res2 = TAKE(BT * C);
    }
    a->proj = TAKE(BT * C);
    a->lnf = TAKE(BT * C);
    a->lnf_mean = TAKE(BT);
    a->lnf_rstd = TAKE(BT);
    a->logits = TAKE(BT * c->vocab_size);
    if (training) {
        a->dres = TAKE(BT * C);
        a->dx = TAKE(BT * C);
        a->dqkv = TAKE(BT * QKV);
        a->datty = TAKE(BT * QD);
        a->datt = TAKE(att);
        a->dfch = TAKE(BT * FC);
        a->dfca = TAKE(BT * F);
    }
#undef TAKE
    return a;
}

void llm_acts_free(llm_acts *a)
{
    if (!a) return;
    free(a->mem);
    free(a->layers);
    free(a);
}

float *llm_acts_logits(llm_acts *a) { return a->logits; }

/* ---- forward ---- */

static void add_into(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void llm_norm_forward(const llm_config *c, float *out, float *mean, float *rstd, const float *x, const float *w,
                      const float *b, size_t rows)
{
    if (c->arch == LLM_ARCH_GPT2) llmk_layernorm_forward(out, mean, rstd, x, w, b, rows, c->dim, c->norm_eps);
    else llmk_rmsnorm_forward(out, rstd, x, w, rows, c->dim, c->norm_eps);
}

static void norm_backward(const llm_config *c, float *dx, float *dw, float *db, const float *dout, const float *x,
                          const float *w, const float *mean, const float *rstd, size_t rows)
{
    if (c->arch == LLM_ARCH_GPT2) llmk_layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, rows, c->dim);
    else llmk_rmsnorm_backward(dx, dw, dout, x, w, rstd, rows, c->dim);
}

void llm_forward(const llm_config *c, const llm_weights *w, llm_acts *a, const uint32_t *inputs, size_t B, size_t T)
{
    size_t BT = B * T, C = c->dim, H = c->n_heads, KVH = c->n_kv_heads, D = llm_config_head_dim(c);
    size_t QKV = llm_config_qkv_dim(c), QD = H * D, F = c->ffn_dim;
    int llama = c->arch == LLM_ARCH_LLAMA;
    size_t FC = llama ? 2 * F : F;
    llmk_embed_forward(a->x0, inputs, w->tok_emb, llama ? NULL : w->pos_emb, BT, T, C);
    const float *x = a->x0;
    for (size_t l = 0; l < c->n_layers; l++) {
        const llm_layer_weights *L = &w->layers[l];
        layer_acts *la = &a->layers[l];
        llm_norm_forward(c, la->ln1, la->ln1_mean, la->ln1_rstd, x, L->attn_norm_w, L->attn_norm_b, BT);
        llmk_linear_forward(la->qkv, la->ln1, L->qkv_w, L->qkv_b, BT, C, QKV);
        if (llama) {
            llmk_rope_forward(la->qkv, BT, T, H, D, QKV, c->rope_theta);
            llmk_rope_forward(la->qkv + QD, BT, T, KVH, D, QKV, c->rope_theta);
        }
        llmk_attention_forward(la->atty, la->att, la->qkv, B, T, H, KVH, D);
        llmk_linear_forward(a->proj, la->atty, L->o_w, L->o_b, BT, QD, C);
        add_into(la->res1, x, a->proj, BT * C);
        llm_norm_forward(c, la->ln2, la->ln2_mean, la->ln2_rstd, la->res1, L->ffn_norm_w, L->ffn_norm_b, BT);
        llmk_linear_forward(la->fch, la->ln2, L->fc_w, L->fc_b, BT, C, FC);
        if (llama) llmk_swiglu_forward(la->fca, la->fch, BT, F);
        else llmk_gelu_forward(la->fca, la->fch, BT * F);
        llmk_linear_forward(a->proj, la->fca, L->down_w, L->down_b, BT, F, C);
        add_into(la->res2, la->res1, a->proj, BT * C);
        x = la->res2;
    }
    llm_norm_forward(c, a->lnf, a->lnf_mean, a->lnf_rstd, x, w->norm_w, w->norm_b, BT);
    llmk_linear_forward(a->logits, a->lnf, w->output, NULL, BT, C, c->vocab_size);
}

void llm_loss(const llm_config *c, llm_acts *a, const uint32_t *targets, const float *grad_scale, float *loss, size_t B,
              size_t T)
{
    llmk_softmax_xent(loss, a->logits, targets, grad_scale, B * T, c->vocab_size);
}

/* ---- backward ---- */

void llm_backward(const llm_config *c, const llm_weights *w, const llm_weights *g, llm_acts *a, const uint32_t *inputs,
                  size_t B, size_t T)
{
    size_t BT = B * T, C = c->dim, H = c->n_heads, KVH = c->n_kv_heads, D = llm_config_head_dim(c);
    size_t QKV = llm_config_qkv_dim(c), QD = H * D, F = c->ffn_dim;
    int llama = c->arch == LLM_ARCH_LLAMA;
    size_t FC = llama ? 2 * F : F;
    const float *x_last = c->n_layers ? a->layers[c->n_layers - 1].res2 : a->x0;
    /* classifier: dlogits (in a->logits) to the final norm's output */
    memset(a->dx, 0, BT * C * sizeof(float));
    llmk_linear_backward(a->dx, g->output, NULL, a->logits, a->lnf, w->output, BT, C, c->vocab_size);
    memset(a->dres, 0, BT * C * sizeof(float));
    norm_backward(c, a->dres, g->norm_w, g->norm_b, a->dx, x_last, w->norm_w, a->lnf_mean, a->lnf_rstd, BT);
    /* a->dres: the gradient of the residual stream, carried down the layers */
    for (size_t l = c->n_layers; l-- > 0;) {
        const llm_layer_weights *L = &w->layers[l], *G = &g->layers[l];
        layer_acts *la = &a->layers[l];
        const float *x = l ? a->layers[l - 1].res2 : a->x0;
        /* res2 = res1 + down(act(fc(norm(res1)))) */
        memset(a->dfca, 0, BT * F * sizeof(float));
        llmk_linear_backward(a->dfca, G->down_w, G->down_b, a->dres, la->fca, L->down_w, BT, F, C);
        memset(a->dfch, 0, BT * FC * sizeof(float));
        if (llama) llmk_swiglu_backward(a->dfch, la->fch, a->dfca, BT, F);
        else llmk_gelu_backward(a->dfch, la->fch, a->dfca, BT * F);
        memset(a->dx, 0, BT * C * sizeof(float));
        llmk_linear_backward(a->dx, G->fc_w, G->fc_b, a->dfch, la->ln2, L->fc_w, BT, C, FC);
        norm_backward(c, a->dres, G->ffn_norm_w, G->ffn_norm_b, a->dx, la->res1, L->ffn_norm_w, la->ln2_mean,
                      la->ln2_rstd, BT);
        /* res1 = x + o(attention(rope(qkv(norm(x))))) */
        memset(a->datty, 0, BT * QD * sizeof(float));
        llmk_linear_backward(a->datty, G->o_w, G->o_b, a->dres, la->atty, L->o_w, BT, QD, C);
        memset(a->dqkv, 0, BT * QKV * sizeof(float));
        llmk_attention_backward(a->dqkv, a->datt, a->datty, la->qkv, la->att, B, T, H, KVH, D);
        if (llama) {
            llmk_rope_backward(a->dqkv, BT, T, H, D, QKV, c->rope_theta);
            llmk_rope_backward(a->dqkv + QD, BT, T, KVH, D, QKV, c->rope_theta);
        }
        memset(a->dx, 0, BT * C * sizeof(float));
        llmk_linear_backward(a->dx, G->qkv_w, G->qkv_b, a->dqkv, la->ln1, L->qkv_w, BT, C, QKV);
        norm_backward(c, a->dres, G->attn_norm_w, G->attn_norm_b, a->dx, x, L->attn_norm_w, la->ln1_mean, la->ln1_rstd,
                      BT);
    }
    llmk_embed_backward(g->tok_emb, llama ? NULL : g->pos_emb, a->dres, inputs, BT, T, C);
}

double llm_model_flops_per_token(const llm_config *c, size_t T)
{
    double C = (double)c->dim, F = (double)c->ffn_dim, per_layer =
        (double)llm_config_qkv_dim(c) * C + (double)c->n_heads * llm_config_head_dim(c) * C +
        (c->arch == LLM_ARCH_LLAMA ? 3 : 2) * F * C;
    double matrices = per_layer * (double)c->n_layers + (double)c->vocab_size * C;
    return 6 * matrices + 12.0 * (double)c->n_layers * C * (double)T;
}
