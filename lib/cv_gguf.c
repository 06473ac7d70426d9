/* GGUF (llama.cpp's model files) in and out of llm-convert: see cv.h, and
 * gguf.h for the container.
 *
 * Architectures "llama" and "gpt2", under llama.cpp's tensor names and
 * metadata keys. Our tensors map one to one onto llama.cpp's
 * (token_embd, blk.N.attn_q, ...), but for:
 *  - gpt2's q, k and v, which GGUF keeps as one attn_qkv (rows q, then k,
 *    then v; likewise their biases): concatenated on the way out, and read
 *    back as three views of the one tensor;
 *  - llama's q and k (and their biases), whose rows llama.cpp's converter
 *    permutes, as its RoPE rotates interleaved pairs (2i, 2i+1) where ours
 *    (transformers') rotates (i, i + hd/2): within each head, GGUF row 2i+j
 *    is our row j hd/2 + i. For quantized tensors the rows are rows of
 *    whole blocks, so this reorders bytes and re-quantizes nothing.
 * F32, F16 and BF16 tensors stay as they are (or become --dtype); q8_0,
 * q4_0 and q4_k blocks are llama.cpp's Q8_0, Q4_0 and Q4_K byte for byte and
 * are copied. nf4 has no GGUF type: its tensors are dequantized, to F32 or
 * to --dtype.
 *
 * The tokenizer and the chat template are lib/cv_gguf_tok.c's (cv_gguf.h).
 *
 * Reading checks the keys against each other and against the tensors (every
 * tensor llama.cpp's name for one of ours, with the ne the keys give it, of a
 * type we read; none missing, none left over) and maps the tensors where they
 * lie, but for llama's q and k, whose rows are put back in order one tensor
 * at a time. Unsupported features are refused by key: rope scaling, partial
 * rotary embeddings, other architectures. */
#include "cv_gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ---- */

static const struct {
    const char *ours, *gguf;
} layer_names[] = {
    {"attn_norm.weight", "attn_norm.weight"}, {"attn_norm.bias", "attn_norm.bias"},
    {"attn.q.weight", "attn_q.weight"},       {"attn.k.weight", "attn_k.weight"},
    {"attn.v.weight", "attn_v.weight"},       {"attn.q.bias", "attn_q.bias"},
    {"attn.k.bias", "attn_k.bias"},           {"attn.v.bias", "attn_v.bias"},
    {"attn.o.weight", "attn_output.weight"},  {"attn.o.bias", "attn_output.bias"},
    {"ffn_norm.weight", "ffn_norm.weight"},   {"ffn_norm.bias", "ffn_norm.bias"},
    {"ffn.gate.weight", "ffn_gate.weight"},   {"ffn.up.weight", "ffn_up.weight"},
    {"ffn.up.bias", "ffn_up.bias"},           {"ffn.down.weight", "ffn_down.weight"},
    {"ffn.down.bias", "ffn_down.bias"},
}, top_names[] = {
    {"tok_embeddings.weight", "token_embd.weight"}, {"pos_embeddings.weight", "position_embd.weight"},
    {"norm.weight", "output_norm.weight"},          {"norm.bias", "output_norm.bias"},
    {"output.weight", "output.weight"},
};

/* What our tensor is called in GGUF. *part: for gpt2's q, k and v (0, 1, 2),
 * the slice of the fused attn_qkv; else -1. *permute: llama's q or k. */
static int gguf_name(const char *ours, llm_arch arch, char out[64], int *part, int *permute)
{
    *part = -1;
    *permute = 0;
    for (size_t i = 0; i < sizeof top_names / sizeof top_names[0]; i++)
        if (!strcmp(ours, top_names[i].ours)) return snprintf(out, 64, "%s", top_names[i].gguf), 0;
    size_t l;
    int used = 0;
    if (sscanf(ours, "layers.%zu.%n", &l, &used) != 1 || used <= 0) return -1;
    const char *s = ours + used;
    if (arch == LLM_ARCH_GPT2 && !strncmp(s, "attn.", 5) && strchr("qkv", s[5]) && s[5] && s[6] == '.') {
        *part = s[5] == 'q' ? 0 : s[5] == 'k' ? 1 : 2;
        return snprintf(out, 64, "blk.%zu.attn_qkv.%s", l, s + 7), 0;
    }
    for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++)
        if (!strcmp(s, layer_names[i].ours)) {
            *permute = arch == LLM_ARCH_LLAMA && (!strncmp(s, "attn.q.", 7) || !strncmp(s, "attn.k.", 7));
            return snprintf(out, 64, "blk.%zu.%s", l, layer_names[i].gguf), 0;
        }
    return -1;
}

/* Rows of a q or k tensor (heads of hd rows) between our order and GGUF's:
 * within a head, GGUF row 2i + j is our row j hd/2 + i. to_gguf: src is
 * ours; else src is GGUF's. */
static void permute_rows(unsigned char *dst, const unsigned char *src, uint64_t rows, uint64_t row_bytes, uint64_t heads,
                         int to_gguf)
{
    uint64_t hd = rows / heads;
    for (uint64_t h = 0; h < heads; h++)
        for (uint64_t i = 0; i < hd / 2; i++)
            for (uint64_t j = 0; j < 2; j++) {
                uint64_t g = h * hd + 2 * i + j, o = h * hd + j * (hd / 2) + i;
                if (to_gguf) memcpy(dst + g * row_bytes, src + o * row_bytes, row_bytes);
                else memcpy(dst + o * row_bytes, src + g * row_bytes, row_bytes);
            }
}

static const struct {
    const char *quant;
    uint32_t type;
} quant_types[] = {{"q8_0", LLM_GGML_Q8_0}, {"q4_0", LLM_GGML_Q4_0}, {"q4_k", LLM_GGML_Q4_K}};

static uint32_t float_type(llm_dtype d)
{
    return d == LLM_F32 ? LLM_GGML_F32 : d == LLM_F16 ? LLM_GGML_F16 : LLM_GGML_BF16;
}

/* ==== writing ==== */

typedef struct {
    const llm_cv_tensor *src[3];
    int nsrc;
    const llm_quant_type *quant;   /* blocks copied as they are, or NULL: floats as `to` */
    llm_dtype to;
    uint64_t heads;                /* > 0: permute the rows (llama's q and k) */
    char widened[80];              /* "GGUF-NAME:F16" when a vector of `to` F16 or BF16 goes out as F32 */
    void *buf;
    size_t cap;
} wjob;

/* One source's bytes, as the job's output type, into out. */
static int fill_part(wjob *j, const llm_cv_tensor *t, unsigned char *out, llm_err *err)
{
    uint64_t n = llm_cv_nelem(t);
    if (j->quant || (!t->quant && t->dtype == j->to)) {
        const void *b = llm_cv_bytes(t, &j->buf, &j->cap, err);
        if (!b) return -1;
        memcpy(out, b, t->nbytes);
        return 0;
    }
    float *f = malloc(n * sizeof *f + 4);
    if (!f) return llm_errf(err, "out of memory");
    int rc = llm_cv_floats(t, f, &j->buf, &j->cap, err);
    if (!rc && j->to == LLM_F32) memcpy(out, f, n * 4);
    else if (!rc && j->to == LLM_F16) llmk_f32_to_f16((uint16_t *)(void *)out, f, n);
    else if (!rc) llmk_f32_to_bf16((uint16_t *)(void *)out, f, n);
    free(f);
    return rc;
}

static uint64_t part_bytes(const wjob *j, const llm_cv_tensor *t)
{
    return j->quant ? t->nbytes : llm_cv_nelem(t) * llm_dtype_size(j->to);
}

static int fill_out(void *ctx, void *out, uint64_t nbytes, llm_err *err)
{
    wjob *j = ctx;
    unsigned char *o = out;
    for (int i = 0; i < j->nsrc; i++) {
        if (fill_part(j, j->src[i], o, err)) return llm_err_prefix(err, "'%s'", j->src[i]->name);
        o += part_bytes(j, j->src[i]);
    }
    if (j->heads) {
        unsigned char *copy = malloc(nbytes + 1);
        if (!copy) return llm_errf(err, "out of memory");
        memcpy(copy, out, nbytes);
        uint64_t rows = j->src[0]->shape[0];
        permute_rows(out, copy, rows, nbytes / rows, j->heads, 1);
        free(copy);
    }
    free(j->buf);   /* one tensor in memory at a time: the next job's sources get their own */
    j->buf = NULL;
    j->cap = 0;
    return 0;
}

/* The tensors of one GGUF tensor (gpt2's q, k and v; else one) agree on
 * their type: sets j->quant / j->to. */
static int job_type(wjob *j, const llm_cv_options *o, const char *gname, llm_err *err)
{
    const llm_cv_tensor *t0 = j->src[0];
    int q = t0->quant && strcmp(t0->quant->name, "nf4");
    for (int i = 1; i < j->nsrc; i++) {
        const llm_cv_tensor *t = j->src[i];
        int qi = t->quant && strcmp(t->quant->name, "nf4");
        if (qi != q || (q && t->quant != t0->quant))
            return llm_errf(err, "'%s' is %s but '%s' is %s: GGUF's %s is one tensor of one type", t0->name,
                            t0->quant ? t0->quant->name : llm_dtype_name(t0->dtype), t->name,
                            t->quant ? t->quant->name : llm_dtype_name(t->dtype), gname);
    }
    if (q) {
        j->quant = t0->quant;
        return 0;
    }
    if (o && o->dtype_set) {
        j->to = o->dtype;
        return 0;
    }
    j->to = t0->quant ? LLM_F32 : t0->dtype;   /* nf4: dequantized to F32 */
    for (int i = 1; i < j->nsrc; i++)
        if (j->src[i]->quant || j->src[i]->dtype != j->to) j->to = LLM_F32;   /* mixed floats: F32 holds them all */
    return 0;
}

static int add_tensors(llm_gguf_writer *w, const llm_cv_model *m, const llm_cv_options *o, wjob *jobs, llm_err *err)
{
    const llm_config *c = &m->c;
    size_t nj = 0;
    for (size_t i = 0; i < m->n; i++) {
        const llm_cv_tensor *t = &m->t[i];
        char gname[64];
        int part, permute;
        if (gguf_name(t->name, c->arch, gname, &part, &permute))
            return llm_errf(err, "tensor '%s' has no GGUF name", t->name);
        if (part > 0) continue;   /* k and v go with q */
        wjob *j = &jobs[nj++];
        j->src[0] = t;
        j->nsrc = 1;
        if (part == 0) {
            char kn[64], vn[64];   /* layers.N.attn.q.X -> layers.N.attn.k.X, layers.N.attn.v.X */
            const char *q = strstr(t->name, ".q.");
            snprintf(kn, sizeof kn, "%.*sk%s", (int)(q + 1 - t->name), t->name, q + 2);
            snprintf(vn, sizeof vn, "%.*sv%s", (int)(q + 1 - t->name), t->name, q + 2);
            j->src[1] = llm_cv_find(m, kn);
            j->src[2] = llm_cv_find(m, vn);
            if (!j->src[1] || !j->src[2]) return llm_errf(err, "'%s' comes without '%s' and '%s'", t->name, kn, vn);
            j->nsrc = 3;
        }
        if (permute) j->heads = strstr(t->name, ".q.") ? c->n_heads : c->n_kv_heads;
        if (job_type(j, o, gname, err)) return -1;
        if (t->ndim == 1 && !j->quant && j->to != LLM_F32) {
            /* llama.cpp adds and multiplies by norms and biases in F32 only (ggml's binary ops take no F16
             * or BF16 operand): they go out as F32, exactly, and the key llmux.widened says what they were */
            snprintf(j->widened, sizeof j->widened, "%s:%s", gname, llm_dtype_name(j->to));
            j->to = LLM_F32;
        }
        uint64_t rows = 0, nbytes = 0, cols = t->ndim == 2 ? t->shape[1] : 0;
        for (int k = 0; k < j->nsrc; k++) {
            rows += j->src[k]->shape[0];
            nbytes += part_bytes(j, j->src[k]);
        }
        uint64_t ne[2] = {t->ndim == 2 ? cols : rows, rows};
        uint32_t type = float_type(j->to);
        for (size_t q = 0; j->quant && q < sizeof quant_types / sizeof quant_types[0]; q++)
            if (!strcmp(quant_types[q].quant, j->quant->name)) type = quant_types[q].type;
        int direct = j->nsrc == 1 && !j->heads && t->data && (j->quant || (!t->quant && t->dtype == j->to));
        if (llm_gguf_add_tensor(w, gname, type, (uint32_t)t->ndim, ne, direct ? t->data : NULL, nbytes,
                                direct ? NULL : fill_out, j, err))
            return -1;
    }
    return 0;
}

static int add_config(llm_gguf_writer *w, const llm_cv_model *m, const char *out, llm_err *err)
{
    const llm_config *c = &m->c;
    const char *arch = c->arch == LLM_ARCH_GPT2 ? "gpt2" : "llama";
    const char *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
    size_t blen = strlen(base);
    if (blen > 5 && !strcmp(base + blen - 5, ".gguf")) blen -= 5;
    char k[96];
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    int rc = llm_gguf_add_string(w, "general.architecture", arch, strlen(arch), err);
    if (!rc) rc = llm_gguf_add_string(w, "general.name", base, blen, err);
    if (!rc) rc = llm_gguf_add_u32(w, "general.alignment", LLM_GGUF_DEFAULT_ALIGNMENT, err);
    if (!rc) rc = llm_gguf_add_u32(w, KEY("context_length"), (uint32_t)c->ctx_len, err);
    if (!rc) rc = llm_gguf_add_u32(w, KEY("embedding_length"), (uint32_t)c->dim, err);
    if (!rc) rc = llm_gguf_add_u32(w, KEY("block_count"), (uint32_t)c->n_layers, err);
    if (!rc) rc = llm_gguf_add_u32(w, KEY("feed_forward_length"), (uint32_t)c->ffn_dim, err);
    if (!rc) rc = llm_gguf_add_u32(w, KEY("attention.head_count"), (uint32_t)c->n_heads, err);
    if (!rc) rc = llm_gguf_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads, err);
    if (c->arch == LLM_ARCH_LLAMA) {
        if (!rc) rc = llm_gguf_add_f32(w, KEY("rope.freq_base"), c->rope_theta, err);
        if (!rc) rc = llm_gguf_add_u32(w, KEY("rope.dimension_count"), (uint32_t)llm_config_head_dim(c), err);
        if (!rc) rc = llm_gguf_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->norm_eps, err);
    } else if (!rc) {
        rc = llm_gguf_add_f32(w, KEY("attention.layer_norm_epsilon"), c->norm_eps, err);
    }
    if (!rc) rc = llm_gguf_add_u32(w, KEY("vocab_size"), (uint32_t)c->vocab_size, err);
#undef KEY
    if (!rc) rc = llm_cv_gguf_write_tokenizer(w, m, err);
    return rc;
}

int llm_cv_write_gguf(const llm_cv_model *m, const char *out, const llm_cv_options *o, llm_err *err)
{
    if (llm_config_check(&m->c, err)) return llm_err_prefix(err, "%s", out);
    llm_gguf_writer *w = llm_gguf_writer_new();
    wjob *jobs = calloc(m->n + 1, sizeof *jobs);
    int rc = !w || !jobs ? llm_errf(err, "out of memory") : 0;
    if (!rc && add_config(w, m, out, err)) rc = llm_err_prefix(err, "%s", out);
    if (!rc && add_tensors(w, m, o, jobs, err)) rc = llm_err_prefix(err, "%s", out);
    const char **wide = rc ? NULL : calloc(m->n + 1, sizeof *wide);
    size_t *wlen = rc ? NULL : calloc(m->n + 1, sizeof *wlen), nw = 0;
    if (!rc && (!wide || !wlen)) rc = llm_errf(err, "out of memory");
    for (size_t i = 0; !rc && i < m->n; i++)
        if (jobs[i].widened[0]) wide[nw] = jobs[i].widened, wlen[nw] = strlen(jobs[i].widened), nw++;
    if (!rc && nw) rc = llm_gguf_add_strings(w, "llmux.widened", wide, wlen, nw, err);
    free(wide);
    free(wlen);
    if (!rc) rc = llm_gguf_writer_write(w, out, err);
    for (size_t i = 0; jobs && i < m->n; i++) free(jobs[i].buf);
    free(jobs);
    llm_gguf_writer_free(w);
    return rc;
}

/* ==== reading ==== */

static void release_gguf(void *owner) { llm_gguf_close(owner); }

/* Integer key ARCH.NAME into *v (size_t, at least 1). */
static int get_size(const llm_gguf_file *f, const char *arch, const char *name, int required, size_t *v, llm_err *err)
{
    char k[96];
    snprintf(k, sizeof k, "%s.%s", arch, name);
    uint64_t x;
    int rc = llm_gguf_get_uint(f, k, required, &x, err);
    if (rc) return rc < 0 ? -1 : 1;
    if (x < 1 || x > (1ull << 32))
        return llm_errf(err, "%s: key '%s' is %llu, out of range", f->path, k, (unsigned long long)x);
    *v = (size_t)x;
    return 0;
}

static int get_f(const llm_gguf_file *f, const char *arch, const char *name, int required, float *v, llm_err *err)
{
    char k[96];
    snprintf(k, sizeof k, "%s.%s", arch, name);
    double x;
    int rc = llm_gguf_get_float(f, k, required, &x, err);
    if (rc) return rc < 0 ? -1 : 1;
    *v = (float)x;
    return 0;
}

static int read_config(const llm_gguf_file *f, llm_config *c, llm_err *err)
{
    const char *path = f->path, *a;
    size_t alen;
    if (llm_gguf_get_string(f, "general.architecture", 1, &a, &alen, err)) return -1;
    char arch[16];
    if (alen == 4 && !memcmp(a, "gpt2", 4)) c->arch = LLM_ARCH_GPT2;
    else if (alen == 5 && !memcmp(a, "llama", 5)) c->arch = LLM_ARCH_LLAMA;
    else
        return llm_errf(err, "%s: key 'general.architecture' is '%.*s': llm-convert reads llama and gpt2", path,
                        (int)(alen > 40 ? 40 : alen), a);
    snprintf(arch, sizeof arch, "%s", c->arch == LLM_ARCH_GPT2 ? "gpt2" : "llama");
    int rc = get_size(f, arch, "context_length", 1, &c->ctx_len, err) < 0 ||
             get_size(f, arch, "embedding_length", 1, &c->dim, err) < 0 ||
             get_size(f, arch, "block_count", 1, &c->n_layers, err) < 0 ||
             get_size(f, arch, "feed_forward_length", 1, &c->ffn_dim, err) < 0 ||
             get_size(f, arch, "attention.head_count", 1, &c->n_heads, err) < 0;
    if (rc) return -1;
    c->n_kv_heads = c->n_heads;
    if (get_size(f, arch, "attention.head_count_kv", 0, &c->n_kv_heads, err) < 0) return -1;
    if (c->dim % c->n_heads || c->n_heads % c->n_kv_heads)
        return llm_errf(err, "%s: keys '%s.embedding_length' %zu, '%s.attention.head_count' %zu and "
                             "'%s.attention.head_count_kv' %zu do not divide", path, arch, c->dim, arch, c->n_heads, arch,
                        c->n_kv_heads);
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;   /* llama.cpp's default */
    if (c->arch == LLM_ARCH_LLAMA) {
        if (get_f(f, arch, "attention.layer_norm_rms_epsilon", 1, &c->norm_eps, err) < 0) return -1;
        if (get_f(f, arch, "rope.freq_base", 0, &c->rope_theta, err) < 0) return -1;
        size_t rd = 0, hd = c->dim / c->n_heads;
        if (get_size(f, arch, "rope.dimension_count", 0, &rd, err) < 0) return -1;
        if (rd && rd != hd)
            return llm_errf(err, "%s: key 'llama.rope.dimension_count' is %zu, not the head dimension %zu: partial "
                                 "rotary embeddings are not supported", path, rd, hd);
        const char *st;
        size_t stlen;
        if (llm_gguf_get_string(f, "llama.rope.scaling.type", 0, &st, &stlen, err) < 0) return -1;
        if (llm_gguf_get(f, "llama.rope.scaling.type") && !(stlen == 4 && !memcmp(st, "none", 4)))
            return llm_errf(err, "%s: key 'llama.rope.scaling.type' is '%.*s': rope scaling is not supported", path,
                            (int)(stlen > 40 ? 40 : stlen), st);
        const char *per_head[] = {"attention.key_length", "attention.value_length"};
        for (int i = 0; i < 2; i++) {
            size_t x = 0;
            if (get_size(f, arch, per_head[i], 0, &x, err) < 0) return -1;
            if (x && x != hd)
                return llm_errf(err, "%s: key 'llama.%s' is %zu, not embedding_length / head_count = %zu", path,
                                per_head[i], x, hd);
        }
    } else {
        if (get_f(f, arch, "attention.layer_norm_epsilon", 1, &c->norm_eps, err) < 0) return -1;
    }
    c->tied_embeddings = !llm_gguf_tensor_find(f, "output.weight");
    c->qkv_bias = c->arch == LLM_ARCH_GPT2 || llm_gguf_tensor_find(f, "blk.0.attn_q.bias");
    const llm_gguf_tensor *emb = llm_gguf_tensor_find(f, "token_embd.weight");
    if (!emb) return llm_errf(err, "%s: tensor 'token_embd.weight' is missing", path);
    c->vocab_size = emb->ne[1];
    size_t vs = 0;
    if (get_size(f, arch, "vocab_size", 0, &vs, err) < 0) return -1;
    if (vs && vs != c->vocab_size)
        return llm_errf(err, "%s: key '%s.vocab_size' is %zu but tensor 'token_embd.weight' has %zu rows", path, arch, vs,
                        c->vocab_size);
    if (c->arch == LLM_ARCH_GPT2 && !c->tied_embeddings) {
        /* llama.cpp's converter writes gpt2's output as a copy of token_embd */
        const llm_gguf_tensor *out = llm_gguf_tensor_find(f, "output.weight");
        if (out->type != emb->type || out->nbytes != emb->nbytes || memcmp(out->data, emb->data, emb->nbytes))
            return llm_errf(err, "%s: tensor 'output.weight' differs from 'token_embd.weight': gpt2 ties them", path);
        c->tied_embeddings = 1;
    }
    if (llm_config_check(c, err)) return llm_err_prefix(err, "%s: the keys make an impossible model", path);
    return 0;
}

/* A tensor that needs work on the way in: src is its GGUF bytes; arg[0]
 * the heads when its rows are to be put back in our order (llama's q and
 * k); arg[1] set when it is an F32 vector to narrow back to t->dtype (see
 * llmux.widened). */
static int fill_read(const llm_cv_tensor *t, void *out, llm_err *err)
{
    uint64_t rows = t->shape[0], n = llm_cv_nelem(t);
    const unsigned char *src = t->src;
    unsigned char *narrow = NULL;
    if (t->arg[1]) {
        float *f = malloc(n * sizeof *f + 4);
        narrow = malloc(t->nbytes + 1);
        if (!f || !narrow) {
            free(f);
            free(narrow);
            return llm_errf(err, "out of memory");
        }
        memcpy(f, src, n * sizeof *f);
        if (t->dtype == LLM_F16) llmk_f32_to_f16((uint16_t *)(void *)narrow, f, n);
        else llmk_f32_to_bf16((uint16_t *)(void *)narrow, f, n);
        free(f);
        src = narrow;
    }
    if (t->arg[0]) permute_rows(out, src, rows, t->nbytes / rows, t->arg[0], 0);
    else memcpy(out, src, t->nbytes);
    free(narrow);
    return 0;
}

/* The dtype key llmux.widened gives the GGUF tensor gname (F32 when none);
 * with gname NULL, checks the whole key. */
static int widened(const llm_gguf_file *f, const char *gname, llm_dtype *dt, llm_err *err)
{
    const llm_gguf_kv *kv;
    *dt = LLM_F32;
    int rc = llm_gguf_get_array(f, "llmux.widened", 0, LLM_GGUF_STRING, &kv, err);
    if (rc) return rc < 0 ? -1 : 0;
    const unsigned char *p = kv->val;
    for (uint64_t i = 0; i < kv->count; i++) {
        const char *s, *colon;
        size_t len;
        llm_gguf_next_string(&p, &s, &len);
        colon = memchr(s, ':', len);
        size_t nlen = colon ? (size_t)(colon - s) : len;
        const char *d = colon ? colon + 1 : "";
        size_t dlen = colon ? len - nlen - 1 : 0;
        llm_dtype to = dlen == 3 && !memcmp(d, "F16", 3)    ? LLM_F16
                       : dlen == 4 && !memcmp(d, "BF16", 4) ? LLM_BF16
                                                            : LLM_F32;
        char name[LLM_GGUF_MAX_NAME + 1];
        snprintf(name, sizeof name, "%.*s", (int)(nlen > LLM_GGUF_MAX_NAME ? LLM_GGUF_MAX_NAME : nlen), s);
        const llm_gguf_tensor *g = nlen <= LLM_GGUF_MAX_NAME ? llm_gguf_tensor_find(f, name) : NULL;
        if (to == LLM_F32 || !g || g->type != LLM_GGML_F32 || g->ne[1] != 1)
            return llm_errf(err, "%s: key 'llmux.widened': entry %llu is not 'NAME:F16' or 'NAME:BF16' for an F32 vector "
                                 "NAME of the file", f->path, (unsigned long long)i);
        if (gname && !strcmp(name, gname)) *dt = to;
    }
    return 0;
}

static void fmt_ne(char *buf, size_t n, const uint64_t *ne, int nd)
{
    int at = snprintf(buf, n, "[");
    for (int d = 0; d < nd && at < (int)n; d++)
        at += snprintf(buf + at, n - (size_t)at, "%s%llu", d ? ", " : "", (unsigned long long)ne[d]);
    if (at < (int)n) snprintf(buf + at, n - (size_t)at, "]");
}

static int read_tensors(const llm_gguf_file *f, llm_cv_model *m, llm_err *err)
{
    const llm_config *c = &m->c;
    const char *path = f->path;
    size_t n, total;
    llm_param *p = llm_params_layout(c, &n, &total);
    unsigned char *used = calloc(f->n_tensors + 1, 1);
    m->t = calloc(n + 1, sizeof *m->t);
    int rc = !p || !used || !m->t ? llm_errf(err, "out of memory") : 0;
    llm_dtype narrow;
    if (!rc) rc = widened(f, NULL, &narrow, err);
    for (size_t i = 0; i < n && !rc; i++) {
        char gname[64];
        int part, permute;
        if (gguf_name(p[i].name, c->arch, gname, &part, &permute)) {
            rc = llm_errf(err, "%s: no GGUF name for '%s'", path, p[i].name);
            break;
        }
        const llm_gguf_tensor *g = llm_gguf_tensor_find(f, gname);
        if (!g) {
            rc = llm_errf(err, "%s: tensor '%s' is missing", path, gname);
            break;
        }
        used[g - f->t] = 1;
        uint64_t rows = p[i].shape[0], cols = p[i].ndim == 2 ? p[i].shape[1] : 1;
        uint64_t grows = rows;   /* rows of the GGUF tensor: q, k and v together in gpt2's attn_qkv */
        uint64_t skip = 0;       /* rows before ours in it */
        if (part >= 0) {
            size_t hd = llm_config_head_dim(c);
            grows = (c->n_heads + 2 * c->n_kv_heads) * hd;
            skip = part == 0 ? 0 : part == 1 ? c->n_heads * hd : (c->n_heads + c->n_kv_heads) * hd;
        }
        uint64_t want[LLM_GGUF_MAX_DIMS] = {p[i].ndim == 2 ? cols : grows, p[i].ndim == 2 ? grows : 1, 1, 1};
        if (memcmp(want, g->ne, sizeof want)) {
            char have[96], wants[96];
            fmt_ne(have, sizeof have, g->ne, (int)g->n_dims);
            fmt_ne(wants, sizeof wants, want, (int)p[i].ndim);
            rc = llm_errf(err, "%s: tensor '%s' has ne %s, the keys make it %s", path, gname, have, wants);
            break;
        }
        llm_cv_tensor *t = &m->t[m->n++];
        snprintf(t->name, sizeof t->name, "%s", p[i].name);
        t->ndim = p[i].ndim;
        t->shape[0] = rows;
        t->shape[1] = p[i].ndim == 2 ? cols : 0;
        switch (g->type) {
        case LLM_GGML_F32: t->dtype = LLM_F32; break;
        case LLM_GGML_F16: t->dtype = LLM_F16; break;
        case LLM_GGML_BF16: t->dtype = LLM_BF16; break;
        default:
            t->dtype = LLM_U8;
            for (size_t q = 0; q < sizeof quant_types / sizeof quant_types[0]; q++)
                if (quant_types[q].type == g->type) t->quant = llm_quant_find(quant_types[q].quant);
            if (!t->quant) {
                const char *tn = llm_ggml_type_name(g->type);
                rc = llm_errf(err, "%s: tensor '%s' is %s, which llm-convert does not read (F32, F16, BF16, Q8_0, Q4_0, "
                                   "Q4_K)", path, gname, tn ? tn : "?");
            }
        }
        if (rc || (rc = widened(f, gname, &narrow, err))) break;
        uint64_t row_bytes = g->nbytes / grows;
        t->nbytes = row_bytes * rows;
        const unsigned char *at = g->data + skip * row_bytes;
        if (narrow != LLM_F32) {
            t->dtype = narrow;
            t->nbytes = llm_cv_nelem(t) * 2;
            t->arg[1] = 1;
        }
        if (permute) t->arg[0] = strstr(p[i].name, ".q.") ? c->n_heads : c->n_kv_heads;
        if (t->arg[0] || t->arg[1]) {
            t->src = at;
            t->fill = fill_read;
        } else {
            t->data = at;
        }
    }
    for (size_t i = 0; i < f->n_tensors && !rc; i++) {
        if (used[i]) continue;
        if (c->arch == LLM_ARCH_GPT2 && !strcmp(f->t[i].name, "output.weight")) continue;   /* checked a copy */
        rc = llm_errf(err, "%s: tensor '%s' is not part of the %s model the keys describe", path, f->t[i].name,
                      c->arch == LLM_ARCH_GPT2 ? "gpt2" : "llama");
    }
    free(used);
    free(p);
    return rc;
}

int llm_cv_read_gguf(const char *path, llm_cv_model *m, llm_err *err)
{
    memset(m, 0, sizeof *m);
    llm_gguf_file *f;
    if (llm_gguf_open(path, &f, err)) return -1;
    m->owner = f;
    m->release = release_gguf;
    int rc = read_config(f, &m->c, err);
    if (!rc) rc = read_tensors(f, m, err);
    if (!rc) rc = llm_cv_gguf_read_tokenizer(f, m, err);
    if (!rc) rc = llm_cv_check(m, path, err);
    if (rc) llm_cv_model_free(m);
    return rc;
}
