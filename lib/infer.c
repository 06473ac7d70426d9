/* The forward pass for generation, over KV caches: see infer.h. Shapes:
 * N new rows (of all sequences in a pass); C = dim; QD = n_heads * head_dim;
 * KVD = n_kv_heads * head_dim; F = ffn_dim. */
#include "infer.h"
#include "kvpool.h"
#include "llmk.h"
#include "safetensors.h"
#include "sysmem.h"

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

/* A sequence: a block table into the model's pool (lib/kvpool.h); block
 * i holds positions i B .. i B + B - 1 (B = LLM_KV_BLOCK) of every layer,
 * (L, 2, B, KVD): per layer the keys, then the values. */
struct llm_infer_seq {
    llm_infer *m;
    uint32_t *blocks;        /* (max_blocks) */
    size_t nblocks;
    uint32_t *tokens;        /* (ctx) the token at each position: the blocks' prefix keys */
    uint64_t *keys;          /* (max_blocks) prefix keys of the first nkeyed (full) blocks */
    size_t nkeyed;
    size_t pos;
};

struct llm_infer {
    llm_config c;
    llm_st_file *st;
    float *fp;               /* the converted float tensors (layout offsets), or NULL */
    const float *tok_emb, *pos_emb, *norm_w, *norm_b;
    matrix output;
    layer *layers;
    uint64_t weight_bytes;
    llm_infer_seq *own;      /* llm_infer_step's sequence */
    llm_kvpool *kv;          /* the KV cache's blocks */
    size_t seq_blocks;       /* blocks of a whole context */
    int share;               /* full blocks registered for prefix sharing */
    const float **kb, **vb;  /* (seq_blocks) one sequence's block rows of one layer */
    /* scratch for up to cap rows */
    size_t cap;
    float *x, *h, *mean, *rstd, *q, *k, *v, *att, *proj, *f1, *f2;
};

const llm_config *llm_infer_config(const llm_infer *m) { return &m->c; }
const char *llm_infer_meta(const llm_infer *m, const char *key) { return llm_st_meta(m->st, key); }
uint64_t llm_infer_weight_bytes(const llm_infer *m) { return m->weight_bytes; }
void llm_infer_reset(llm_infer *m) { llm_infer_seq_truncate(m->own, 0); }
size_t llm_infer_pos(const llm_infer *m) { return m->own->pos; }

static size_t kv_dim(const llm_config *c) { return c->n_kv_heads * (c->dim / c->n_heads); }
static size_t block_floats(const llm_config *c) { return c->n_layers * 2 * LLM_KV_BLOCK * kv_dim(c); }
uint64_t llm_infer_seq_bytes(const llm_infer *m)
{
    return (uint64_t)m->seq_blocks * block_floats(&m->c) * sizeof(float);
}
uint64_t llm_infer_kv_block_bytes(const llm_infer *m) { return (uint64_t)block_floats(&m->c) * sizeof(float); }

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
    const float *dst = m->fp + p->offset;
    if (t->dtype == LLM_F32 && !((uintptr_t)t->data & 3)) {
        dst = t->data;   /* read where it lies */
    } else if (t->dtype == LLM_F32) {
        memcpy(m->fp + p->offset, t->data, p->size * 4);
    } else if (t->dtype == LLM_F16 || t->dtype == LLM_BF16) {
        uint16_t *tmp = malloc(p->size * 2 + 1);
        if (!tmp) return llm_errf(err, "out of memory");
        memcpy(tmp, t->data, p->size * 2);
        if (t->dtype == LLM_F16) llmk_f16_to_f32(m->fp + p->offset, tmp, p->size);
        else llmk_bf16_to_f32(m->fp + p->offset, tmp, p->size);
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

/* Scratch for `rows` rows of every activation (grows, never shrinks). */
static int reserve_rows(llm_infer *m, size_t rows)
{
    if (rows <= m->cap) return 0;
    const llm_config *c = &m->c;
    size_t C = c->dim, QD = c->n_heads * (C / c->n_heads), KVD = kv_dim(c), F = c->ffn_dim;
    float **bufs[] = {&m->x, &m->h, &m->mean, &m->rstd, &m->q, &m->k, &m->v, &m->att, &m->proj, &m->f1, &m->f2};
    size_t widths[] = {C, C, 1, 1, QD, KVD, KVD, QD, C, F, F};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        if (!(*bufs[i] = alloc_floats(rows * widths[i]))) { m->cap = 0; return -1; }
    }
    m->cap = rows;
    return 0;
}

static uint64_t scratch_bytes(const llm_config *c, size_t rows)
{
    size_t C = c->dim, QD = c->n_heads * (C / c->n_heads);
    return (uint64_t)rows * (3 * C + 2 + 2 * QD + 2 * kv_dim(c) + 2 * c->ffn_dim) * sizeof(float);
}

/* Whether a tensor must be converted to floats in memory (not read in place). */
static int converted(const llm_st_tensor *t)
{
    return t && !t->quant && (t->dtype != LLM_F32 || ((uintptr_t)t->data & 3));
}

/* Fails when the model cannot fit: the file's bytes (read in through the
 * mapping), the converted tensors, one KV cache and the prefill scratch. */
static int check_memory(const llm_infer *m, const char *path, const llm_param *params, size_t n, size_t total,
                        int convert, llm_err *err)
{
    uint64_t file = 0;
    for (size_t i = 0; i < n; i++) {
        const llm_st_tensor *t = llm_st_find(m->st, params[i].name);
        if (t) file += t->end - t->begin;
    }
    uint64_t weights = file + (convert ? (uint64_t)total * sizeof(float) : 0), kv = llm_infer_seq_bytes(m),
             acts = scratch_bytes(&m->c, m->c.ctx_len), need = weights + kv + acts;
    const char *what;
    uint64_t avail = llm_mem_available(&what);
    if (need > avail)
        return llm_errf(err, "%s: the model needs %.2f GB (weights %.2f, KV cache %.2f for a context of %zu, "
                             "activations %.2f) but %s leaves %.2f GB: quantize it (llm-quantize) or free memory",
                        path, need / 1e9, weights / 1e9, kv / 1e9, m->c.ctx_len, acts / 1e9, what, avail / 1e9);
    return 0;
}

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
    if (!rc && !params) rc = llm_errf(err, "out of memory for the model");
    int convert = 0;
    for (size_t i = 0; !rc && i < n; i++) convert |= converted(llm_st_find(m->st, params[i].name));
    if (!rc) {
        m->seq_blocks = (c->ctx_len + LLM_KV_BLOCK - 1) / LLM_KV_BLOCK;
        rc = check_memory(m, path, params, n, total, convert, err);
    }
    if (!rc && (!(m->kv = llm_kvpool_new(block_floats(c), LLM_KV_BLOCK, 0)) ||
                !(m->kb = malloc(m->seq_blocks * sizeof *m->kb)) || !(m->vb = malloc(m->seq_blocks * sizeof *m->vb))))
        rc = llm_errf(err, "out of memory for the model");
    if (!rc && ((convert && !(m->fp = alloc_floats(total))) || !(m->layers = calloc(c->n_layers, sizeof *m->layers))))
        rc = llm_errf(err, "out of memory for the model");
    if (!rc && !(m->own = llm_infer_seq_new(m, err))) rc = llm_err_prefix(err, "%s", path);
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
        m->weight_bytes += (uint64_t)c->vocab_size * c->dim * 4;
    }
    free(params);
    if (rc) { llm_infer_close(m); return -1; }
    *out = m;
    return 0;
}

void llm_infer_close(llm_infer *m)
{
    if (!m) return;
    llm_infer_seq_free(m->own);
    llm_kvpool_free(m->kv);
    free(m->kb);
    free(m->vb);
    llm_st_close(m->st);
    free(m->fp);
    free(m->layers);
    float *bufs[] = {m->x, m->h, m->mean, m->rstd, m->q, m->k, m->v, m->att, m->proj, m->f1, m->f2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(m);
}

int llm_infer_kv_limit(llm_infer *m, size_t max_blocks, llm_err *err)
{
    if (llm_kvpool_used(m->kv)) return llm_errf(err, "internal: the KV cache's budget is set before it is used");
    uint64_t bytes = (uint64_t)max_blocks * llm_infer_kv_block_bytes(m);
    const char *what;
    uint64_t avail = llm_mem_available(&what);
    if (bytes > avail)
        return llm_errf(err, "a KV cache of %zu blocks takes %.2f GB but %s leaves %.2f GB", max_blocks, bytes / 1e9,
                        what, avail / 1e9);
    llm_kvpool *p = llm_kvpool_new(block_floats(&m->c), LLM_KV_BLOCK, max_blocks);
    if (!p) return llm_errf(err, "out of memory");
    llm_kvpool_free(m->kv);
    m->kv = p;
    return 0;
}

void llm_infer_share_prefixes(llm_infer *m, int on) { m->share = on; }

void llm_infer_kv_stats(const llm_infer *m, llm_infer_kv *st)
{
    st->used = llm_kvpool_used(m->kv);
    st->max = llm_kvpool_max(m->kv);
    st->available = llm_kvpool_available(m->kv);
    st->block_bytes = llm_infer_kv_block_bytes(m);
}

llm_infer_seq *llm_infer_seq_new(llm_infer *m, llm_err *err)
{
    llm_infer_seq *s = calloc(1, sizeof *s);
    if (s) {
        s->blocks = malloc(m->seq_blocks * sizeof *s->blocks);
        s->keys = malloc(m->seq_blocks * sizeof *s->keys);
        s->tokens = malloc(m->c.ctx_len * sizeof *s->tokens);
    }
    if (!s || !s->blocks || !s->keys || !s->tokens) {
        if (s) free(s->blocks), free(s->keys), free(s->tokens);
        free(s);
        llm_errf(err, "out of memory for a sequence");
        return NULL;
    }
    s->m = m;
    return s;
}

void llm_infer_seq_free(llm_infer_seq *s)
{
    if (!s) return;
    llm_infer_seq_truncate(s, 0);
    free(s->blocks);
    free(s->keys);
    free(s->tokens);
    free(s);
}

void llm_infer_seq_copy(llm_infer_seq *dst, const llm_infer_seq *src)
{
    if (dst == src) return;
    llm_infer_seq_truncate(dst, 0);
    for (size_t i = 0; i < src->nblocks; i++) llm_kvpool_ref(src->m->kv, src->blocks[i]);
    memcpy(dst->blocks, src->blocks, src->nblocks * sizeof *dst->blocks);
    memcpy(dst->keys, src->keys, src->nkeyed * sizeof *dst->keys);
    memcpy(dst->tokens, src->tokens, src->pos * sizeof *dst->tokens);
    dst->nblocks = src->nblocks, dst->nkeyed = src->nkeyed, dst->pos = src->pos;
}

void llm_infer_seq_truncate(llm_infer_seq *s, size_t pos)
{
    if (pos >= s->pos) return;
    llm_kvpool *p = s->m->kv;
    size_t keep = (pos + LLM_KV_BLOCK - 1) / LLM_KV_BLOCK;
    while (s->nblocks > keep) llm_kvpool_unref(p, s->blocks[--s->nblocks]);
    if (s->nkeyed > pos / LLM_KV_BLOCK) s->nkeyed = pos / LLM_KV_BLOCK;
    /* a block now partly ours will be written: not a prefix of anything */
    if (pos % LLM_KV_BLOCK) {
        uint32_t b = s->blocks[pos / LLM_KV_BLOCK];
        if (llm_kvpool_refs(p, b) == 1) llm_kvpool_unregister(p, b);
    }
    s->pos = pos;
}

size_t llm_infer_seq_reuse(llm_infer_seq *s, const uint32_t *tokens, size_t n)
{
    llm_infer *m = s->m;
    if (!m->share || s->pos || n == 0) return 0;
    uint64_t parent = 0;
    size_t k = 0;
    while ((k + 1) * LLM_KV_BLOCK <= n - 1) {   /* at least the last token is left to run */
        const uint32_t *t = tokens + k * LLM_KV_BLOCK;
        uint64_t key = llm_kvpool_key(m->kv, parent, t);
        uint32_t b = llm_kvpool_lookup(m->kv, key, parent, t);
        if (b == LLM_KVPOOL_NONE) break;
        s->blocks[k] = b;
        s->keys[k] = key;
        parent = key;
        k++;
    }
    s->nblocks = s->nkeyed = k;
    s->pos = k * LLM_KV_BLOCK;
    memcpy(s->tokens, tokens, s->pos * sizeof *tokens);
    return s->pos;
}

/* The block s writes its next position into when that block is already
 * there and shared (it will be copied first), else LLM_KVPOOL_NONE. */
static uint32_t shared_write_block(const llm_infer_seq *s)
{
    if (!(s->pos % LLM_KV_BLOCK)) return LLM_KVPOOL_NONE;
    uint32_t b = s->blocks[s->pos / LLM_KV_BLOCK];
    return llm_kvpool_refs(s->m->kv, b) > 1 ? b : LLM_KVPOOL_NONE;
}

/* Blocks a pass needs: new ones for every sequence's next positions, and
 * copies of shared blocks written into. k sequences writing into a block of
 * r references make min(k, r - 1) copies: the last holder writes in place. */
static size_t blocks_needed(llm_infer_seq *const *seqs, const size_t *counts, size_t nseq)
{
    size_t need = 0;
    for (size_t i = 0; i < nseq; i++) {
        const llm_infer_seq *s = seqs[i];
        size_t want = (s->pos + counts[i] + LLM_KV_BLOCK - 1) / LLM_KV_BLOCK;
        if (want > s->nblocks) need += want - s->nblocks;
        uint32_t b = shared_write_block(s);
        if (b == LLM_KVPOOL_NONE) continue;
        size_t k = 0, first = 1;
        for (size_t j = 0; j < nseq; j++)
            if (shared_write_block(seqs[j]) == b) {
                if (j < i) first = 0;
                k++;
            }
        if (!first) continue;   /* counted at its first writer */
        size_t r = llm_kvpool_refs(s->m->kv, b);
        need += k < r - 1 ? k : r - 1;
    }
    return need;
}

/* Gives s the blocks of its next count positions (blocks_needed of them
 * are available): copies a shared block it writes into, the positions it
 * holds, then adds new ones. */
static void take_blocks(llm_infer_seq *s, size_t count)
{
    llm_kvpool *p = s->m->kv;
    size_t off = s->pos % LLM_KV_BLOCK, KVD = kv_dim(&s->m->c), L = s->m->c.n_layers;
    if (off && llm_kvpool_refs(p, s->blocks[s->pos / LLM_KV_BLOCK]) > 1) {
        uint32_t old = s->blocks[s->pos / LLM_KV_BLOCK], nb = llm_kvpool_alloc(p);
        const float *from = llm_kvpool_data(p, old);
        float *to = llm_kvpool_data(p, nb);
        for (size_t lk = 0; lk < L * 2; lk++)
            memcpy(to + lk * LLM_KV_BLOCK * KVD, from + lk * LLM_KV_BLOCK * KVD, off * KVD * sizeof(float));
        llm_kvpool_unref(p, old);
        s->blocks[s->pos / LLM_KV_BLOCK] = nb;
    }
    while (s->nblocks * LLM_KV_BLOCK < s->pos + count) s->blocks[s->nblocks++] = llm_kvpool_alloc(p);
}

/* Registers the blocks of s that are full and not yet keyed. */
static void register_full(llm_infer_seq *s)
{
    llm_kvpool *p = s->m->kv;
    while ((s->nkeyed + 1) * LLM_KV_BLOCK <= s->pos) {
        size_t k = s->nkeyed;
        uint64_t parent = k ? s->keys[k - 1] : 0;
        const uint32_t *t = s->tokens + k * LLM_KV_BLOCK;
        s->keys[k] = llm_kvpool_key(p, parent, t);
        llm_kvpool_register(p, s->blocks[k], s->keys[k], parent, t);
        s->nkeyed++;
    }
}

size_t llm_infer_seq_pos(const llm_infer_seq *s) { return s->pos; }

/* out (n, oc) = x (n, ic) @ W^T + bias. A decoding pass (one row per
 * sequence) takes the kernels' rowwise paths, so that a row's result does
 * not depend on how many sequences are decoding. */
static void linear(float *out, const float *x, const matrix *w, const float *bias, size_t n, size_t ic, size_t oc,
                   int decoding)
{
    if (!w->q && decoding) {
        llmk_linear_forward_rowwise(out, x, w->f, bias, n, ic, oc);
    } else if (w->q) {
        if (decoding) llmk_qlinear_rowwise(w->qt, out, x, w->q, n, ic, oc);
        else llmk_qlinear(w->qt, out, x, w->q, n, ic, oc);
        if (bias)
            for (size_t r = 0; r < n; r++)
                for (size_t j = 0; j < oc; j++) out[r * oc + j] += bias[j];
    } else {
        llmk_linear_forward(out, x, w->f, bias, n, ic, oc);
    }
}

/* One pass: the N = sum of counts rows of nseq sequences through every
 * layer; logits of each sequence's last row, or of all rows. */
static void forward(llm_infer *m, llm_infer_seq *const *seqs, const uint32_t *tokens, const size_t *counts, size_t nseq,
                    float *logits, int all_logits)
{
    const llm_config *c = &m->c;
    size_t C = c->dim, H = c->n_heads, KVH = c->n_kv_heads, D = C / H, QD = H * D, KVD = KVH * D, F = c->ffn_dim;
    size_t V = c->vocab_size, N = 0;
    int llama = c->arch == LLM_ARCH_LLAMA, dec = 1;
    for (size_t s = 0; s < nseq; s++) dec &= counts[s] == 1;
    for (size_t s = 0; s < nseq; s++)
        for (size_t i = 0; i < counts[s]; i++, N++) {
            seqs[s]->tokens[seqs[s]->pos + i] = tokens[N];
            memcpy(m->x + N * C, m->tok_emb + (size_t)tokens[N] * C, C * sizeof(float));
            if (!llama)
                for (size_t j = 0; j < C; j++) m->x[N * C + j] += m->pos_emb[(seqs[s]->pos + i) * C + j];
        }
    for (size_t l = 0; l < c->n_layers; l++) {
        const layer *L = &m->layers[l];
        llm_norm_forward(c, m->h, m->mean, m->rstd, m->x, L->attn_norm_w, L->attn_norm_b, N);
        linear(m->q, m->h, &L->q, L->q_b, N, C, QD, dec);
        linear(m->k, m->h, &L->k, L->k_b, N, C, KVD, dec);
        linear(m->v, m->h, &L->v, L->v_b, N, C, KVD, dec);
        for (size_t s = 0, r = 0; s < nseq; r += counts[s++]) {
            const llm_infer_seq *sq = seqs[s];
            size_t n = counts[s], pos0 = sq->pos, layer_at = l * 2 * LLM_KV_BLOCK * KVD;
            if (llama) {
                llmk_rope_at(m->q + r * QD, n, pos0, H, D, QD, c->rope_theta);
                llmk_rope_at(m->k + r * KVD, n, pos0, KVH, D, KVD, c->rope_theta);
            }
            for (size_t b = 0; b * LLM_KV_BLOCK < pos0 + n; b++) {
                float *kb = llm_kvpool_data(m->kv, sq->blocks[b]) + layer_at;
                m->kb[b] = kb, m->vb[b] = kb + LLM_KV_BLOCK * KVD;
            }
            for (size_t i = 0; i < n; i++) {   /* the new rows into their blocks */
                size_t p = pos0 + i, at = p % LLM_KV_BLOCK * KVD;
                memcpy((float *)m->kb[p / LLM_KV_BLOCK] + at, m->k + (r + i) * KVD, KVD * sizeof(float));
                memcpy((float *)m->vb[p / LLM_KV_BLOCK] + at, m->v + (r + i) * KVD, KVD * sizeof(float));
            }
            llmk_attention_paged(m->att + r * QD, m->q + r * QD, QD, m->kb, m->vb, LLM_KV_BLOCK, KVD, n, pos0, H, KVH, D);
        }
        linear(m->proj, m->att, &L->o, L->o_b, N, QD, C, dec);
        for (size_t i = 0; i < N * C; i++) m->x[i] += m->proj[i];
        llm_norm_forward(c, m->h, m->mean, m->rstd, m->x, L->ffn_norm_w, L->ffn_norm_b, N);
        if (llama) {
            linear(m->f1, m->h, &L->gate, NULL, N, C, F, dec);
            linear(m->f2, m->h, &L->up, NULL, N, C, F, dec);
            for (size_t i = 0; i < N * F; i++) {   /* silu(gate) * up */
                float g = m->f1[i];
                m->f1[i] = g / (1.0f + expf(-g)) * m->f2[i];
            }
        } else {
            linear(m->f2, m->h, &L->up, L->up_b, N, C, F, dec);
            llmk_gelu_forward(m->f1, m->f2, N * F);
        }
        linear(m->proj, m->f1, &L->down, L->down_b, N, F, C, dec);
        for (size_t i = 0; i < N * C; i++) m->x[i] += m->proj[i];
    }
    size_t rows = all_logits ? N : nseq;
    if (!all_logits)   /* gather each sequence's last row */
        for (size_t s = 0, r = 0; s < nseq; s++) {
            r += counts[s];
            if (s != r - 1) memmove(m->x + s * C, m->x + (r - 1) * C, C * sizeof(float));
        }
    llm_norm_forward(c, m->h, m->mean, m->rstd, m->x, m->norm_w, m->norm_b, rows);
    linear(logits, m->h, &m->output, NULL, rows, C, V, dec);
    for (size_t s = 0; s < nseq; s++) {
        seqs[s]->pos += counts[s];
        if (m->share) register_full(seqs[s]);
    }
}

int llm_infer_batch(llm_infer *m, llm_infer_seq *const *seqs, const uint32_t *tokens, const size_t *counts, size_t nseq,
                    float *logits, int all_logits, llm_err *err)
{
    const llm_config *c = &m->c;
    size_t V = c->vocab_size, N = 0;
    if (nseq == 0) return llm_errf(err, "no sequences to run");
    for (size_t s = 0; s < nseq; s++) {
        if (counts[s] == 0) return llm_errf(err, "sequence %zu of the batch has no tokens to run", s);
        if (seqs[s]->m != m) return llm_errf(err, "sequence %zu of the batch belongs to another model", s);
        if (seqs[s]->pos + counts[s] > c->ctx_len)
            return llm_errf(err, "%zu tokens at position %zu do not fit the context of %zu tokens", counts[s],
                            seqs[s]->pos, c->ctx_len);
        for (size_t t = 0; t < s; t++)
            if (seqs[t] == seqs[s]) return llm_errf(err, "a sequence appears twice in the batch");
        for (size_t i = 0; i < counts[s]; i++, N++)
            if (tokens[N] >= V) return llm_errf(err, "token %u is outside the vocabulary of %zu", tokens[N], V);
    }
    size_t need = blocks_needed(seqs, counts, nseq), avail = llm_kvpool_available(m->kv);
    if (need > avail)
        return llm_errf(err, "the KV cache is full: the batch needs %zu more blocks, %zu are free", need, avail);
    for (size_t s = 0; s < nseq; s++) take_blocks(seqs[s], counts[s]);
    /* Passes whose results for a sequence do not depend on the others: a
     * sequence with several tokens (a prompt) runs alone, at its own row
     * count; single tokens (decoding) run together, through the kernels'
     * rowwise paths (see linear). */
    size_t first = 0, row = 0, out_row = 0;
    while (first < nseq) {
        size_t end = first + 1, rows = counts[first];
        if (counts[first] == 1)
            while (end < nseq && counts[end] == 1) end++, rows++;
        if (reserve_rows(m, rows)) return llm_errf(err, "out of memory for the activations of %zu rows", rows);
        forward(m, seqs + first, tokens + row, counts + first, end - first, logits + out_row * V, all_logits);
        row += rows;
        out_row += all_logits ? rows : end - first;
        first = end;
    }
    return 0;
}

int llm_infer_step(llm_infer *m, const uint32_t *tokens, size_t n, float *logits, int all_logits, llm_err *err)
{
    if (n == 0) return llm_errf(err, "no tokens to run");
    return llm_infer_batch(m, &m->own, tokens, &n, 1, logits, all_logits, err);
}
