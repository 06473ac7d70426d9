/* llm-convert --to onnx: our decoder as an ONNX graph (opset 17, IR version
 * 8) that generates with a KV cache, its weights as initializers, written
 * streamed by lib/onnx/onnx_file.c.
 *
 * The graph's interface (also in the model's doc_string):
 *   inputs   input_ids                  int64 [batch, seq]
 *            past_key_values.N.key      float [batch, kv_heads, past_seq, head_dim]
 *            past_key_values.N.value    the same, for every layer N
 *   outputs  logits                     float [batch, seq, vocab]
 *            present.N.key / .value     float [batch, kv_heads, past_seq + seq, head_dim]:
 *                                       the past with this call's keys and values appended
 * There is no position input: the new tokens are at positions past_seq ..
 * past_seq + seq - 1 (the past's length read from past_key_values.0.key), so
 * every sequence of a batch has the same length (no padding). Start with
 * pasts of past_seq 0, then give back the presents as the next call's pasts.
 * Token t attends to the past and to the new tokens up to itself (the causal
 * mask over past + new). gpt2 positions must stay below ctx_len (the learned
 * position table's size); llama's rotary positions have no such bound here.
 *
 * The math is lib/model.c's: gpt2 with learned positions, LayerNorm (with
 * biases; LayerNormalization), GELU's tanh form written out, biases on
 * every linear layer; llama with RoPE (rotate_half; inv_freq computed here
 * exactly as kernels/layers_ref.c does, the angle p * inv_freq in float32 in
 * the graph), RMSNorm written out (x / sqrt(mean(x^2) + eps) * w), SwiGLU,
 * grouped-query attention (queries as [batch, kv_heads, group, seq,
 * head_dim] against keys [batch, kv_heads, 1, head_dim, total], a MatMul
 * that broadcasts, so the cache is never repeated per head), optional q/k/v
 * biases, tied (the embedding table itself) or untied output. Linear layers
 * are Gemm(x, W, b, transB=1) on [batch * seq, features], so the weights are
 * our tensors under our names and in our (out, in) layout (llm-tensors(5)).
 *
 * Weights are float32, or float16 / bfloat16 when read so or with --dtype
 * f16|bf16: those are stored in that type and Cast to float32 in the graph
 * (computation is float32 throughout). Quantized tensors are dequantized to
 * float32 (or to --dtype). Metadata strings (config, tokenizer, ...) go into
 * the model's metadata_props under their llmux names.
 *
 * The environment variable LLMUX_ONNX_EXTERNAL=1 puts the tensors in
 * OUT.data whatever the size (onnx_file.h does so by itself past 2 GiB). */
#include "cv.h"

#include "onnx/onnx_file.h"
#include "onnx/onnx_proto.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPSET 17
#define IR_VERSION 8

/* ---- building the graph ---- */

typedef struct name_chunk {
    struct name_chunk *next;
    size_t used;
    char data[16384];
} name_chunk;

typedef struct {
    onnx_graph *g;
    onnx_node *last;       /* the node just added, for its attributes */
    name_chunk *names;     /* value names, alive until the graph is packed */
    int failed;
    const llm_cv_model *m;
    const int *elem;       /* (m->n) each tensor's initializer type */
} gb;

/* A value name, printf-style, kept until gb_free. */
static const char *nm(gb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *nm(gb *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        b->failed = 1;
        return "";
    }
    name_chunk *c = b->names;
    if (!c || sizeof c->data - c->used < (size_t)n + 1) {
        if (!(c = malloc(sizeof *c))) {
            b->failed = 1;
            return "";
        }
        c->next = b->names;
        c->used = 0;
        b->names = c;
    }
    char *s = c->data + c->used;
    memcpy(s, tmp, (size_t)n + 1);
    c->used += (size_t)n + 1;
    return s;
}

static void gb_free(gb *b)
{
    for (name_chunk *c = b->names, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    onnx_graph_free(b->g);
}

/* A node with one output, named out (also the node's name); returns out. */
static const char *node(gb *b, const char *op, const char *out, size_t nin, const char *const *in)
{
    b->last = onnx_graph_node(b->g, op, out, nin, in, 1, &out);
    if (!b->last) b->failed = 1;
    return out;
}
#define OP(op, out, ...) \
    node(b, op, out, sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *), (const char *[]){__VA_ARGS__})

static void attr_i(gb *b, const char *name, int64_t v) { onnx_node_int(b->g, b->last, name, v); }
static void attr_f(gb *b, const char *name, float v) { onnx_node_float(b->g, b->last, name, v); }
static void attr_ints(gb *b, const char *name, size_t n, const int64_t *v) { onnx_node_ints(b->g, b->last, name, n, v); }
#define PERM(...) attr_ints(b, "perm", sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t), (int64_t[]){__VA_ARGS__})

/* Constants: a Constant node whose value is a small tensor. */
static const char *const_i64(gb *b, const char *name, size_t n, const int64_t *v, int scalar)
{
    node(b, "Constant", name, 0, NULL);
    int64_t dims[1] = {(int64_t)n};
    onnx_node_tensor(b->g, b->last, "value", ONNX_INT64, scalar ? 0 : 1, dims, v, n * sizeof *v);
    return name;
}

static const char *const_f32(gb *b, const char *name, size_t n, const float *v, int scalar)
{
    node(b, "Constant", name, 0, NULL);
    int64_t dims[1] = {(int64_t)n};
    onnx_node_tensor(b->g, b->last, "value", ONNX_FLOAT, scalar ? 0 : 1, dims, v, n * sizeof *v);
    return name;
}

static const char *scalar_f32(gb *b, const char *name, float v) { return const_f32(b, name, 1, &v, 1); }

/* The graph's value holding our tensor `ours` as float32 ("" for a tensor
 * the model does not have: an optional input left out). */
static const char *weight(gb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *weight(gb *b, const char *fmt, ...)
{
    char ours[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ours, sizeof ours, fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < b->m->n; i++) {
        if (strcmp(b->m->t[i].name, ours)) continue;
        return b->elem[i] == ONNX_FLOAT ? nm(b, "%s", ours) : nm(b, "%s/f32", ours);
    }
    return "";
}

typedef struct {
    const char *ids_shape, *q_shape, *kv_shape, *flat_c, *flat_qd, *logits_shape;
    const char *axes1, *axes2, *future, *scale, *neg_inf, *eps, *cos, *sin;
    const char *half, *one_f, *gelu_a, *gelu_k;
} shared;

static const char *norm(gb *b, const shared *s, const char *x, const char *w, const char *bias, const char *at)
{
    const llm_config *c = &b->m->c;
    if (c->arch == LLM_ARCH_GPT2) {
        OP("LayerNormalization", nm(b, "%s/out", at), x, w, bias);
        attr_i(b, "axis", -1);
        attr_f(b, "epsilon", c->norm_eps);
        return nm(b, "%s/out", at);
    }
    const char *sq = OP("Mul", nm(b, "%s/sq", at), x, x);
    const char *ms = OP("ReduceMean", nm(b, "%s/mean_sq", at), sq);
    attr_ints(b, "axes", 1, (int64_t[]){-1});
    attr_i(b, "keepdims", 1);
    const char *r = OP("Sqrt", nm(b, "%s/rms", at), OP("Add", nm(b, "%s/mean_sq_eps", at), ms, s->eps));
    const char *inv = OP("Reciprocal", nm(b, "%s/inv_rms", at), r);
    return OP("Mul", nm(b, "%s/out", at), OP("Mul", nm(b, "%s/normed", at), x, inv), w);
}

/* x (rows, in) times W^T (W our (out, in) tensor) plus the bias, if any. */
static const char *linear(gb *b, const char *x, const char *w, const char *bias, const char *out)
{
    if (*bias) OP("Gemm", out, x, w, bias);
    else OP("Gemm", out, x, w);
    attr_i(b, "transB", 1);
    return out;
}

/* HF's apply_rotary_pos_emb: x cos + rotate_half(x) sin, rotate_half(x) =
 * [-x2, x1] for the halves x1, x2 of the last axis; cos and sin (seq, D). */
static const char *rope(gb *b, const shared *s, const char *x, const char *at)
{
    const char *halves[2] = {nm(b, "%s/x1", at), nm(b, "%s/x2", at)};
    b->last = onnx_graph_node(b->g, "Split", nm(b, "%s/split", at), 1, &x, 2, halves);
    if (!b->last) b->failed = 1;
    attr_i(b, "axis", -1);
    const char *rot = OP("Concat", nm(b, "%s/rotated", at), OP("Neg", nm(b, "%s/neg_x2", at), halves[1]), halves[0]);
    attr_i(b, "axis", -1);
    return OP("Add", nm(b, "%s/out", at), OP("Mul", nm(b, "%s/x_cos", at), x, s->cos),
              OP("Mul", nm(b, "%s/rot_sin", at), rot, s->sin));
}

static const char *gelu_tanh(gb *b, const shared *s, const char *u, const char *at)
{
    const char *u3 = OP("Mul", nm(b, "%s/u3", at), OP("Mul", nm(b, "%s/u2", at), u, u), u);
    const char *inner = OP("Add", nm(b, "%s/inner", at), u, OP("Mul", nm(b, "%s/a_u3", at), u3, s->gelu_a));
    const char *t = OP("Tanh", nm(b, "%s/tanh", at), OP("Mul", nm(b, "%s/k_inner", at), inner, s->gelu_k));
    return OP("Mul", nm(b, "%s/out", at), OP("Mul", nm(b, "%s/half_u", at), u, s->half),
              OP("Add", nm(b, "%s/one_tanh", at), t, s->one_f));
}

static const char *layer(gb *b, const shared *s, size_t l, const char *x)
{
    const llm_config *c = &b->m->c;
    int gpt2 = c->arch == LLM_ARCH_GPT2;
    const char *h = norm(b, s, x, weight(b, "layers.%zu.attn_norm.weight", l), weight(b, "layers.%zu.attn_norm.bias", l),
                         nm(b, "/layers.%zu/attn_norm", l));
    const char *q = linear(b, h, weight(b, "layers.%zu.attn.q.weight", l), weight(b, "layers.%zu.attn.q.bias", l),
                           nm(b, "/layers.%zu/attn/q", l));
    const char *k = linear(b, h, weight(b, "layers.%zu.attn.k.weight", l), weight(b, "layers.%zu.attn.k.bias", l),
                           nm(b, "/layers.%zu/attn/k", l));
    const char *v = linear(b, h, weight(b, "layers.%zu.attn.v.weight", l), weight(b, "layers.%zu.attn.v.bias", l),
                           nm(b, "/layers.%zu/attn/v", l));
    /* q: [N, QD] -> [B, S, KVH, group, D] -> [B, KVH, group, S, D]; k, v: -> [B, KVH, S, D] */
    q = OP("Transpose", nm(b, "/layers.%zu/attn/q_heads", l), OP("Reshape", nm(b, "/layers.%zu/attn/q_5d", l), q, s->q_shape));
    PERM(0, 2, 3, 1, 4);
    k = OP("Transpose", nm(b, "/layers.%zu/attn/k_heads", l), OP("Reshape", nm(b, "/layers.%zu/attn/k_4d", l), k, s->kv_shape));
    PERM(0, 2, 1, 3);
    v = OP("Transpose", nm(b, "/layers.%zu/attn/v_heads", l), OP("Reshape", nm(b, "/layers.%zu/attn/v_4d", l), v, s->kv_shape));
    PERM(0, 2, 1, 3);
    if (!gpt2) {
        q = rope(b, s, q, nm(b, "/layers.%zu/attn/q_rope", l));
        k = rope(b, s, k, nm(b, "/layers.%zu/attn/k_rope", l));
    }
    const char *pk = OP("Concat", nm(b, "present.%zu.key", l), nm(b, "past_key_values.%zu.key", l), k);
    attr_i(b, "axis", 2);
    const char *pv = OP("Concat", nm(b, "present.%zu.value", l), nm(b, "past_key_values.%zu.value", l), v);
    attr_i(b, "axis", 2);
    const char *kt = OP("Transpose", nm(b, "/layers.%zu/attn/k_t", l), pk);
    PERM(0, 1, 3, 2);
    kt = OP("Unsqueeze", nm(b, "/layers.%zu/attn/k_t5", l), kt, s->axes2);       /* [B, KVH, 1, D, T] */
    const char *sc = OP("MatMul", nm(b, "/layers.%zu/attn/qk", l), q, kt);       /* [B, KVH, group, S, T] */
    sc = OP("Mul", nm(b, "/layers.%zu/attn/scores", l), sc, s->scale);
    sc = OP("Where", nm(b, "/layers.%zu/attn/masked", l), s->future, s->neg_inf, sc);
    const char *p = OP("Softmax", nm(b, "/layers.%zu/attn/probs", l), sc);
    attr_i(b, "axis", -1);
    const char *v5 = OP("Unsqueeze", nm(b, "/layers.%zu/attn/v5", l), pv, s->axes2);   /* [B, KVH, 1, T, D] */
    const char *y = OP("MatMul", nm(b, "/layers.%zu/attn/pv", l), p, v5);        /* [B, KVH, group, S, D] */
    y = OP("Transpose", nm(b, "/layers.%zu/attn/y_t", l), y);
    PERM(0, 3, 1, 2, 4);
    y = OP("Reshape", nm(b, "/layers.%zu/attn/y", l), y, s->flat_qd);
    const char *o = linear(b, y, weight(b, "layers.%zu.attn.o.weight", l), weight(b, "layers.%zu.attn.o.bias", l),
                           nm(b, "/layers.%zu/attn/o", l));
    x = OP("Add", nm(b, "/layers.%zu/res1", l), x, o);
    h = norm(b, s, x, weight(b, "layers.%zu.ffn_norm.weight", l), weight(b, "layers.%zu.ffn_norm.bias", l),
             nm(b, "/layers.%zu/ffn_norm", l));
    const char *a;
    if (gpt2) {
        const char *u = linear(b, h, weight(b, "layers.%zu.ffn.up.weight", l), weight(b, "layers.%zu.ffn.up.bias", l),
                               nm(b, "/layers.%zu/ffn/up", l));
        a = gelu_tanh(b, s, u, nm(b, "/layers.%zu/ffn/gelu", l));
    } else {
        const char *g = linear(b, h, weight(b, "layers.%zu.ffn.gate.weight", l), "", nm(b, "/layers.%zu/ffn/gate", l));
        const char *u = linear(b, h, weight(b, "layers.%zu.ffn.up.weight", l), "", nm(b, "/layers.%zu/ffn/up", l));
        const char *silu = OP("Mul", nm(b, "/layers.%zu/ffn/silu", l), g, OP("Sigmoid", nm(b, "/layers.%zu/ffn/sigmoid", l), g));
        a = OP("Mul", nm(b, "/layers.%zu/ffn/swiglu", l), silu, u);
    }
    const char *d = linear(b, a, weight(b, "layers.%zu.ffn.down.weight", l), weight(b, "layers.%zu.ffn.down.bias", l),
                           nm(b, "/layers.%zu/ffn/down", l));
    return OP("Add", nm(b, "/layers.%zu/res2", l), x, d);
}

static void build(gb *b)
{
    const llm_config *c = &b->m->c;
    int gpt2 = c->arch == LLM_ARCH_GPT2;
    int64_t C = (int64_t)c->dim, H = (int64_t)c->n_heads, KVH = (int64_t)c->n_kv_heads, D = C / H,
            V = (int64_t)c->vocab_size;
    onnx_graph *g = b->g;
    onnx_dim ids_dims[2] = {{"batch", 0}, {"seq", 0}};
    onnx_dim past_dims[4] = {{"batch", 0}, {NULL, KVH}, {"past_seq", 0}, {NULL, D}};
    onnx_dim present_dims[4] = {{"batch", 0}, {NULL, KVH}, {"total_seq", 0}, {NULL, D}};
    onnx_dim logits_dims[3] = {{"batch", 0}, {"seq", 0}, {NULL, V}};
    onnx_graph_input(g, "input_ids", ONNX_INT64, 2, ids_dims);
    for (size_t l = 0; l < c->n_layers; l++) {
        onnx_graph_input(g, nm(b, "past_key_values.%zu.key", l), ONNX_FLOAT, 4, past_dims);
        onnx_graph_input(g, nm(b, "past_key_values.%zu.value", l), ONNX_FLOAT, 4, past_dims);
    }
    onnx_graph_output(g, "logits", ONNX_FLOAT, 3, logits_dims);
    for (size_t l = 0; l < c->n_layers; l++) {
        onnx_graph_output(g, nm(b, "present.%zu.key", l), ONNX_FLOAT, 4, present_dims);
        onnx_graph_output(g, nm(b, "present.%zu.value", l), ONNX_FLOAT, 4, present_dims);
    }

    /* weights stored as float16 / bfloat16: cast once, up front */
    for (size_t i = 0; i < b->m->n; i++) {
        if (b->elem[i] == ONNX_FLOAT) continue;
        OP("Cast", nm(b, "%s/f32", b->m->t[i].name), b->m->t[i].name);
        attr_i(b, "to", ONNX_FLOAT);
    }

    shared s = {0};
    const char *zero = const_i64(b, "/const/zero", 1, (int64_t[]){0}, 1);
    const char *one = const_i64(b, "/const/one", 1, (int64_t[]){1}, 1);
    const char *axes0 = const_i64(b, "/const/axes0", 1, (int64_t[]){0}, 0);
    s.axes1 = const_i64(b, "/const/axes1", 1, (int64_t[]){1}, 0);
    s.axes2 = const_i64(b, "/const/axes2", 1, (int64_t[]){2}, 0);
    s.flat_c = const_i64(b, "/const/flat_dim", 2, (int64_t[]){-1, C}, 0);
    s.flat_qd = const_i64(b, "/const/flat_q_dim", 2, (int64_t[]){-1, H * D}, 0);
    s.scale = scalar_f32(b, "/const/attn_scale", (float)(1.0 / sqrt((double)D)));
    s.neg_inf = scalar_f32(b, "/const/neg_inf", -INFINITY);
    /* shapes, positions and the causal mask from input_ids and the first past */
    s.ids_shape = OP("Shape", "/shape/ids", "input_ids");
    const char *seq = OP("Shape", "/shape/seq", "input_ids");
    attr_i(b, "start", 1);
    attr_i(b, "end", 2);
    const char *past = OP("Shape", "/shape/past", "past_key_values.0.key");
    attr_i(b, "start", 2);
    attr_i(b, "end", 3);
    const char *total = OP("Add", "/shape/total", past, seq);
    const char *past0 = OP("Squeeze", "/pos/past", past, axes0);
    const char *total0 = OP("Squeeze", "/pos/total", total, axes0);
    const char *qpos = OP("Range", "/pos/q", past0, total0, one);     /* [S]: past .. total - 1 */
    const char *kpos = OP("Range", "/pos/k", zero, total0, one);      /* [T] */
    s.future = OP("Greater", "/mask/future", kpos, OP("Unsqueeze", "/pos/q_col", qpos, s.axes1));   /* [S, T] */
    s.q_shape = OP("Concat", "/shape/q", s.ids_shape, const_i64(b, "/const/q_heads", 3, (int64_t[]){KVH, H / KVH, D}, 0));
    attr_i(b, "axis", 0);
    s.kv_shape = OP("Concat", "/shape/kv", s.ids_shape, const_i64(b, "/const/kv_heads", 2, (int64_t[]){KVH, D}, 0));
    attr_i(b, "axis", 0);
    s.logits_shape = OP("Concat", "/shape/logits", s.ids_shape, const_i64(b, "/const/vocab", 1, (int64_t[]){V}, 0));
    attr_i(b, "axis", 0);
    if (gpt2) {
        s.half = scalar_f32(b, "/const/half", 0.5f);
        s.one_f = scalar_f32(b, "/const/one_f", 1.0f);
        s.gelu_a = scalar_f32(b, "/const/gelu_a", 0.044715f);
        s.gelu_k = scalar_f32(b, "/const/gelu_k", (float)sqrt(2.0 / M_PI));
    } else {
        s.eps = scalar_f32(b, "/const/norm_eps", c->norm_eps);
        /* inv_freq as kernels/layers_ref.c (and transformers) compute it */
        float *inv = malloc((size_t)D / 2 * sizeof *inv);
        if (!inv) {
            b->failed = 1;
            return;
        }
        for (int64_t i = 0; i < D / 2; i++)
            inv[i] = 1.0f / (float)pow((double)c->rope_theta, (double)((float)(2 * i) / (float)D));
        const char *inv_freq = const_f32(b, "/const/inv_freq", (size_t)D / 2, inv, 0);
        free(inv);
        const char *pf = OP("Cast", "/rope/pos", qpos);
        attr_i(b, "to", ONNX_FLOAT);
        const char *freqs = OP("Mul", "/rope/freqs", OP("Unsqueeze", "/rope/pos_col", pf, s.axes1), inv_freq);
        const char *emb = OP("Concat", "/rope/angles", freqs, freqs);   /* [S, D] */
        attr_i(b, "axis", -1);
        s.cos = OP("Cos", "/rope/cos", emb);
        s.sin = OP("Sin", "/rope/sin", emb);
    }

    const char *tok = weight(b, "tok_embeddings.weight");
    const char *x = OP("Gather", "/embed/tok", tok, "input_ids");        /* [B, S, C] */
    attr_i(b, "axis", 0);
    if (gpt2) {
        const char *pe = OP("Gather", "/embed/pos", weight(b, "pos_embeddings.weight"), qpos);   /* [S, C] */
        attr_i(b, "axis", 0);
        x = OP("Add", "/embed/sum", x, pe);
    }
    x = OP("Reshape", "/embed/out", x, s.flat_c);                        /* [B * S, C] */
    for (size_t l = 0; l < c->n_layers; l++) x = layer(b, &s, l, x);
    const char *h = norm(b, &s, x, weight(b, "norm.weight"), weight(b, "norm.bias"), "/norm");
    const char *out = c->tied_embeddings ? tok : weight(b, "output.weight");
    const char *lg = linear(b, h, out, "", "/output/logits");
    OP("Reshape", "logits", lg, s.logits_shape);
}

/* ---- the initializers ---- */

typedef struct {
    const llm_cv_model *m;
    const int *elem;
    void *buf;
    size_t cap;
    float *f;
    size_t fcap;
} fill_ctx;

static int fill(void *ctx, size_t i, void *out, llm_err *err)
{
    fill_ctx *fc = ctx;
    const llm_cv_tensor *t = &fc->m->t[i];
    int to = fc->elem[i];
    uint64_t n = llm_cv_nelem(t);
    int same = !t->quant && ((to == ONNX_FLOAT && t->dtype == LLM_F32) || (to == ONNX_FLOAT16 && t->dtype == LLM_F16) ||
                             (to == ONNX_BFLOAT16 && t->dtype == LLM_BF16));
    if (same) {
        const void *b = llm_cv_bytes(t, &fc->buf, &fc->cap, err);
        if (!b) return -1;
        memcpy(out, b, t->nbytes);
        return 0;
    }
    if (to == ONNX_FLOAT) return llm_cv_floats(t, out, &fc->buf, &fc->cap, err);
    if (n > fc->fcap) {
        free(fc->f);
        if (!(fc->f = malloc(n * sizeof *fc->f))) {
            fc->fcap = 0;
            return llm_errf(err, "out of memory");
        }
        fc->fcap = n;
    }
    if (llm_cv_floats(t, fc->f, &fc->buf, &fc->cap, err)) return -1;
    if (to == ONNX_FLOAT16) llmk_f32_to_f16(out, fc->f, n);
    else llmk_f32_to_bf16(out, fc->f, n);
    return 0;
}

static int elem_type(const llm_cv_tensor *t, const llm_cv_options *o)
{
    llm_dtype d = o && o->dtype_set ? o->dtype : t->quant ? LLM_F32 : t->dtype;
    return d == LLM_F16 ? ONNX_FLOAT16 : d == LLM_BF16 ? ONNX_BFLOAT16 : ONNX_FLOAT;
}

static char *doc_string(const llm_config *c)
{
    size_t D = llm_config_head_dim(c);
    char *s = NULL;
    if (asprintf(&s,
                 "llmux %s decoder with a KV cache (llm-convert --to onnx). Inputs: input_ids int64 [batch, seq]; "
                 "past_key_values.N.key and .value float [batch, %zu, past_seq, %zu] for N in 0..%zu (past_seq 0 to "
                 "start). Outputs: logits float [batch, seq, %zu]; present.N.key and .value float [batch, %zu, "
                 "past_seq + seq, %zu], the past with the new keys and values appended: the next call's past. The new "
                 "tokens are at positions past_seq .. past_seq + seq - 1 (no position input, no padding); each "
                 "attends to the past and to the new tokens up to itself.",
                 c->arch == LLM_ARCH_GPT2 ? "gpt2" : "llama", c->n_kv_heads, D, c->n_layers - 1, c->vocab_size,
                 c->n_kv_heads, D) < 0)
        return NULL;
    return s;
}

int llm_cv_write_onnx(const llm_cv_model *m, const char *out, const llm_cv_options *o, llm_err *err)
{
    if (m->c.n_layers < 1) return llm_errf(err, "%s: a model without layers has no ONNX decoder", out);
    int *elem = calloc(m->n + 1, sizeof *elem);
    onnx_init *init = calloc(m->n + 1, sizeof *init);
    char *cfg = llm_config_to_json(&m->c), *doc = doc_string(&m->c);
    gb b = {0};
    b.m = m;
    b.elem = elem;
    b.g = onnx_graph_new("llmux");
    int rc = !elem || !init || !cfg || !doc || !b.g ? llm_errf(err, "%s: out of memory", out) : 0;
    for (size_t i = 0; i < m->n && !rc; i++) {
        const llm_cv_tensor *t = &m->t[i];
        elem[i] = elem_type(t, o);
        init[i].name = t->name;
        init[i].elem_type = elem[i];
        init[i].ndim = t->ndim;
        for (size_t d = 0; d < t->ndim; d++) init[i].dims[d] = (int64_t)t->shape[d];
        /* bytes as they lie go straight to the file */
        if (t->data && !t->quant && elem[i] == ONNX_FLOAT && t->dtype == LLM_F32) init[i].data = t->data;
    }
    uint8_t *graph = NULL;
    size_t graph_len = 0;
    if (!rc) {
        build(&b);
        if (b.failed) rc = llm_errf(err, "%s: out of memory building the ONNX graph", out);
        else if (onnx_graph_pack(b.g, &graph, &graph_len, err)) rc = llm_err_prefix(err, "%s", out);
    }
    if (!rc) {
        const char *keys[6], *values[6];
        size_t nm_ = 0;
        keys[nm_] = "config", values[nm_++] = cfg;
        if (m->tokenizer) keys[nm_] = "tokenizer", values[nm_++] = m->tokenizer;
        if (m->tokenizer_config) keys[nm_] = "tokenizer_config", values[nm_++] = m->tokenizer_config;
        if (m->chat_template) keys[nm_] = "chat_template", values[nm_++] = m->chat_template;
        if (m->generation_config) keys[nm_] = "generation_config", values[nm_++] = m->generation_config;
        fill_ctx fc = {.m = m, .elem = elem};
        const char *ext = getenv("LLMUX_ONNX_EXTERNAL");
        onnx_model om = {
            .ir_version = IR_VERSION,
            .opset_version = OPSET,
            .producer_name = "llmux",
            .producer_version = "0.1.0",
            .doc_string = doc,
            .meta_key = keys,
            .meta_value = values,
            .n_meta = nm_,
            .graph = graph,
            .graph_len = graph_len,
            .init = init,
            .n_init = m->n,
            .fill = fill,
            .ctx = &fc,
            .external = ext && !strcmp(ext, "1"),
        };
        rc = onnx_model_write(&om, out, NULL, err);
        free(fc.buf);
        free(fc.f);
    }
    free(graph);
    gb_free(&b);
    free(elem);
    free(init);
    free(cfg);
    free(doc);
    return rc;
}
