/* llm.c's GPT-2 checkpoints (train_gpt2.py's write_model, train_gpt2.c's
 * gpt2_build_from_checkpoint) in and out of llm-convert (see cv.h).
 *
 * The file: a header of 256 little-endian int32 (magic 20240326, version 3
 * for float32 or 5 for bfloat16, max_seq_len T, vocab_size V, num_layers L,
 * num_heads NH, channels C, padded_vocab_size Vp, then zeros), and the
 * parameters back to back, each (out, in) as PyTorch's Linear:
 *   wte (Vp, C), wpe (T, C), ln1w (L, C), ln1b (L, C), qkvw (L, 3C, C),
 *   qkvb (L, 3C), attprojw (L, C, C), attprojb (L, C), ln2w (L, C),
 *   ln2b (L, C), fcw (L, 4C, C), fcb (L, 4C), fcprojw (L, C, 4C),
 *   fcprojb (L, C), lnfw (C), lnfb (C).
 * The model is GPT-2 and nothing else: tied embeddings, an MLP of 4C,
 * biases everywhere, LayerNorm with eps 1e-5 (llm.c's constant).
 *
 * Reading: our vocab_size is V, not Vp. The padded rows of wte (V..Vp) are
 * never a token: llm.c computes their logits but its softmax and loss cover
 * V only, so they are dropped (their values are not looked at), and our
 * model is exactly llm.c's. Every tensor is mapped where it lies, q, k and v
 * included: they are the consecutive row blocks [0,C), [C,2C), [2C,3C) of
 * each layer's qkvw (and qkvb), exactly our tensors' bytes. BF16 files
 * (version 5) give BF16 tensors. llm.c keeps its tokenizer in another file
 * (gpt2_tokenizer.bin), so the model has none.
 *
 * Writing: version 3 (float32), or 5 (bfloat16) with --dtype bf16, or
 * without --dtype when every tensor is BF16 already ("as read"); quantized
 * tensors are dequantized. Vp is V rounded up to a multiple of 128 as llm.c
 * pads it, the padded rows zero. The file is written in llm.c's order, one
 * of our tensors at a time through the writer's buffer (a layer's qkvw is
 * its q, k and v in turn), into a temp file renamed into place. The
 * tokenizer and other metadata are not written: llm.c's file has no place
 * for them. */
#include "cv.h"

#include "fileio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define LLMC_MAGIC 20240326
#define LLMC_HEADER_INTS 256
#define LLMC_HEADER_BYTES (LLMC_HEADER_INTS * 4)
#define LLMC_PAD 128   /* llm.c pads the vocabulary to a multiple of 128 */

/* llm.c's parameter tensors, in file order, and the tensors of ours each
 * is made of (per layer when layered), back to back. */
typedef struct {
    const char *name;
    int layered;
    const char *parts[3];
} llmc_group;

static const llmc_group groups[] = {
    {"wte", 0, {"tok_embeddings.weight"}},
    {"wpe", 0, {"pos_embeddings.weight"}},
    {"ln1w", 1, {"attn_norm.weight"}},
    {"ln1b", 1, {"attn_norm.bias"}},
    {"qkvw", 1, {"attn.q.weight", "attn.k.weight", "attn.v.weight"}},
    {"qkvb", 1, {"attn.q.bias", "attn.k.bias", "attn.v.bias"}},
    {"attprojw", 1, {"attn.o.weight"}},
    {"attprojb", 1, {"attn.o.bias"}},
    {"ln2w", 1, {"ffn_norm.weight"}},
    {"ln2b", 1, {"ffn_norm.bias"}},
    {"fcw", 1, {"ffn.up.weight"}},
    {"fcb", 1, {"ffn.up.bias"}},
    {"fcprojw", 1, {"ffn.down.weight"}},
    {"fcprojb", 1, {"ffn.down.bias"}},
    {"lnfw", 0, {"norm.weight"}},
    {"lnfb", 0, {"norm.bias"}},
};
#define N_GROUPS (sizeof groups / sizeof groups[0])

static void part_name(char *out, size_t cap, const llmc_group *g, size_t layer, size_t k)
{
    if (g->layered) snprintf(out, cap, "layers.%zu.%s", layer, g->parts[k]);
    else snprintf(out, cap, "%s", g->parts[k]);
}

static size_t n_parts(const llmc_group *g)
{
    size_t k = 0;
    while (k < 3 && g->parts[k]) k++;
    return k;
}

/* ---- reading ---- */

typedef struct {
    llm_mapped map;
} llmc_owner;

static void release_llmc(void *owner)
{
    llmc_owner *o = owner;
    if (!o) return;
    llm_unmap_file(&o->map);
    free(o);
}

static int32_t le32(const unsigned char *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static const char *const header_fields[8] = {"magic",    "version",   "max_seq_len", "vocab_size",
                                             "num_layers", "num_heads", "channels",    "padded_vocab_size"};

static ssize_t find_param(const llm_param *p, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p[i].name, name)) return (ssize_t)i;
    return -1;
}

int llm_cv_read_llmc(const char *path, llm_cv_model *m, llm_err *err)
{
    memset(m, 0, sizeof *m);
    llmc_owner *own = calloc(1, sizeof *own);
    if (!own) return llm_errf(err, "out of memory");
    m->owner = own;
    m->release = release_llmc;
    if (llm_map_file(&own->map, path, err)) {
        llm_cv_model_free(m);
        return -1;
    }
    const unsigned char *base = own->map.data;
    size_t size = own->map.size;
    int rc = 0;
    if (size < LLMC_HEADER_BYTES) {
        rc = llm_errf(err, "%s: truncated: %zu bytes, shorter than llm.c's header of %d bytes", path, size,
                      LLMC_HEADER_BYTES);
        goto done;
    }
    int32_t h[LLMC_HEADER_INTS];
    for (int i = 0; i < LLMC_HEADER_INTS; i++) h[i] = le32(base + 4 * i);
    if (h[0] != LLMC_MAGIC) {
        rc = llm_errf(err, "%s: header magic %ld is not llm.c's model magic %d", path, (long)h[0], LLMC_MAGIC);
        goto done;
    }
    if (h[1] != 3 && h[1] != 5) {
        rc = llm_errf(err, "%s: header version %ld: llm.c's model files are version 3 (float32) or 5 (bfloat16)", path,
                      (long)h[1]);
        goto done;
    }
    for (int i = 2; i < 8; i++)
        if (h[i] <= 0) {
            rc = llm_errf(err, "%s: header %s is %ld, not a positive size", path, header_fields[i], (long)h[i]);
            goto done;
        }
    for (int i = 8; i < LLMC_HEADER_INTS; i++)
        if (h[i] != 0) {
            rc = llm_errf(err, "%s: header int32 [%d] is %ld; llm.c's header has 0 there", path, i, (long)h[i]);
            goto done;
        }
    size_t T = (size_t)h[2], V = (size_t)h[3], L = (size_t)h[4], NH = (size_t)h[5], C = (size_t)h[6], Vp = (size_t)h[7];
    if (Vp < V) {
        rc = llm_errf(err, "%s: header padded_vocab_size %zu is less than vocab_size %zu", path, Vp, V);
        goto done;
    }
    if (C % NH) {
        rc = llm_errf(err, "%s: header channels %zu is not a multiple of num_heads %zu", path, C, NH);
        goto done;
    }
    llm_config *c = &m->c;
    c->arch = LLM_ARCH_GPT2;
    c->n_layers = L;
    c->n_heads = c->n_kv_heads = NH;
    c->dim = C;
    c->ffn_dim = 4 * C;
    c->vocab_size = V;
    c->ctx_len = T;
    c->norm_eps = 1e-5f;
    c->rope_theta = 0;
    c->tied_embeddings = 1;
    c->qkv_bias = 1;
    if (llm_config_check(c, err)) {   /* the ranges: sizes past them would not fit our model (nor a file) */
        /* name llm.c's field before our config's message */
        static const struct { const char *ours; int field; } names[] = {
            {"config: n_layers ", 4}, {"config: n_heads ", 5}, {"config: dim ", 6},
            {"config: vocab_size ", 3}, {"config: ctx_len ", 2},
        };
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (err && !strncmp(err->msg, names[i].ours, strlen(names[i].ours))) {
                rc = llm_err_prefix(err, "%s: header %s %ld", path, header_fields[names[i].field], (long)h[names[i].field]);
                goto done;
            }
        rc = llm_err_prefix(err, "%s: header", path);
        goto done;
    }
    size_t esize = h[1] == 3 ? 4 : 2;
    llm_dtype dt = h[1] == 3 ? LLM_F32 : LLM_BF16;

    size_t n, total;
    llm_param *p = llm_params_layout(c, &n, &total);
    uint64_t *off = p ? calloc(n + 1, sizeof *off) : NULL;
    m->t = calloc(n + 1, sizeof *m->t);
    if (!p || !off || !m->t) {
        free(p);
        free(off);
        rc = llm_errf(err, "out of memory");
        goto done;
    }
    /* where each of our tensors begins, in elements after the header: the
     * config bounds every size, so none of this overflows 64 bits */
    uint64_t at = 0;
    char name[64];
    for (size_t g = 0; g < N_GROUPS && !rc; g++)
        for (size_t l = 0; l < (groups[g].layered ? L : 1) && !rc; l++)
            for (size_t k = 0; k < n_parts(&groups[g]); k++) {
                part_name(name, sizeof name, &groups[g], l, k);
                ssize_t i = find_param(p, n, name);
                if (i < 0) {   /* cannot happen: the layout of a gpt2 config has them all */
                    rc = llm_errf(err, "%s: no tensor '%s' in a gpt2 model", path, name);
                    break;
                }
                off[i] = at;
                at += p[i].size;
                if (g == 0) at += (uint64_t)(Vp - V) * C;   /* wte's padded rows, dropped */
            }
    uint64_t want = LLMC_HEADER_BYTES + at * esize;
    if (!rc && (uint64_t)size < want)
        rc = llm_errf(err, "%s: truncated: the file size is %zu bytes, the header's sizes (version %d) need %llu", path,
                      size, (int)h[1], (unsigned long long)want);
    else if (!rc && (uint64_t)size > want)
        rc = llm_errf(err, "%s: %llu extra bytes: the file size is %zu bytes, the header's sizes (version %d) need %llu",
                      path, (unsigned long long)((uint64_t)size - want), size, (int)h[1], (unsigned long long)want);
    for (size_t i = 0; i < n && !rc; i++) {
        llm_cv_tensor *t = &m->t[m->n++];
        snprintf(t->name, sizeof t->name, "%s", p[i].name);
        t->dtype = dt;
        t->ndim = p[i].ndim;
        t->shape[0] = p[i].shape[0];
        t->shape[1] = p[i].ndim == 2 ? p[i].shape[1] : 0;
        t->nbytes = (uint64_t)p[i].size * esize;
        t->data = base + LLMC_HEADER_BYTES + off[i] * esize;
    }
    free(off);
    free(p);
    if (!rc) rc = llm_cv_check(m, path, err);
done:
    if (rc) llm_cv_model_free(m);
    return rc;
}

/* ---- writing ---- */

typedef struct {
    int fd;
    const char *out;
    llm_dtype to;
    void *buf;        /* a reader's fill */
    size_t cap;
    float *f;         /* a tensor as floats */
    size_t fcap;
    uint16_t *h;      /* a tensor as bf16 */
    size_t hcap;
} llmc_writer;

static int grow_to(void **p, size_t *cap, size_t need, llm_err *err)
{
    if (need <= *cap) return 0;
    void *b = realloc(*p, need ? need : 1);
    if (!b) return llm_errf(err, "out of memory (%zu bytes)", need);
    *p = b;
    *cap = need;
    return 0;
}

/* One of our tensors, as the file's dtype. */
static int put_tensor(llmc_writer *w, const llm_cv_tensor *t, llm_err *err)
{
    if (!t->quant && t->dtype == w->to) {
        const void *b = llm_cv_bytes(t, &w->buf, &w->cap, err);
        return b ? llm_write_all(w->fd, b, t->nbytes, w->out, err) : -1;
    }
    size_t n = (size_t)llm_cv_nelem(t);
    if (grow_to((void **)&w->f, &w->fcap, n * sizeof *w->f, err)) return -1;
    if (llm_cv_floats(t, w->f, &w->buf, &w->cap, err)) return -1;
    if (w->to == LLM_F32) return llm_write_all(w->fd, w->f, n * sizeof *w->f, w->out, err);
    if (grow_to((void **)&w->h, &w->hcap, n * sizeof *w->h, err)) return -1;
    llmk_f32_to_bf16(w->h, w->f, n);
    return llm_write_all(w->fd, w->h, n * sizeof *w->h, w->out, err);
}

static int put_zeros(llmc_writer *w, uint64_t nbytes, llm_err *err)
{
    static const unsigned char zeros[65536];
    while (nbytes) {
        size_t k = nbytes < sizeof zeros ? (size_t)nbytes : sizeof zeros;
        if (llm_write_all(w->fd, zeros, k, w->out, err)) return -1;
        nbytes -= k;
    }
    return 0;
}

/* What llm.c's GPT-2 cannot hold, as one list ("" when all fits). */
static void misfits(const llm_config *c, char *msg, size_t cap)
{
    size_t len = 0;
    msg[0] = 0;
#define ADD(...)                                                                                                       \
    do {                                                                                                               \
        if (len < cap) len += (size_t)snprintf(msg + len, cap - len, "%s", len ? "; " : "");                          \
        if (len < cap) len += (size_t)snprintf(msg + len, cap - len, __VA_ARGS__);                                     \
    } while (0)
    if (c->arch != LLM_ARCH_GPT2) ADD("arch is llama, llm.c's checkpoints are gpt2");
    if (c->ffn_dim != 4 * c->dim) ADD("ffn_dim %zu is not 4 x dim (%zu)", c->ffn_dim, 4 * c->dim);
    if (!c->tied_embeddings) ADD("the embeddings are untied (output.weight), llm.c ties them");
    if (c->arch != LLM_ARCH_GPT2 && !c->qkv_bias) ADD("no biases, llm.c has them on every linear layer");
    else if (!c->qkv_bias) ADD("no q, k and v biases");
    if (c->n_kv_heads != c->n_heads) ADD("n_kv_heads %zu is not n_heads %zu", c->n_kv_heads, c->n_heads);
    if (c->norm_eps != 1e-5f) ADD("norm_eps %g is not llm.c's 1e-5", (double)c->norm_eps);
#undef ADD
}

int llm_cv_write_llmc(const llm_cv_model *m, const char *out, const llm_cv_options *o, llm_err *err)
{
    const llm_config *c = &m->c;
    char why[400];
    misfits(c, why, sizeof why);
    if (why[0]) return llm_errf(err, "%s: llm.c's GPT-2 checkpoint cannot hold this model: %s", out, why);
    llm_dtype to = LLM_F32;
    if (o && o->dtype_set) {
        if (o->dtype == LLM_F16)
            return llm_errf(err, "%s: --dtype f16: llm.c's checkpoints are float32 (version 3) or bfloat16 (version 5)",
                            out);
        to = o->dtype;
    } else {
        int all_bf16 = m->n > 0;
        for (size_t i = 0; i < m->n; i++)
            if (m->t[i].quant || m->t[i].dtype != LLM_BF16) all_bf16 = 0;
        if (all_bf16) to = LLM_BF16;   /* "as read": bfloat16 stays bfloat16 */
    }
    if (llm_cv_check(m, "the model", err)) return -1;
    size_t V = c->vocab_size, C = c->dim, L = c->n_layers;
    size_t Vp = (V + LLMC_PAD - 1) / LLMC_PAD * LLMC_PAD;
    size_t esize = llm_dtype_size(to);

    unsigned char hdr[LLMC_HEADER_BYTES] = {0};
    int32_t hv[8] = {LLMC_MAGIC, to == LLM_F32 ? 3 : 5, (int32_t)c->ctx_len, (int32_t)V, (int32_t)L,
                     (int32_t)c->n_heads, (int32_t)C, (int32_t)Vp};
    for (int i = 0; i < 8; i++)
        for (int b = 0; b < 4; b++) hdr[4 * i + b] = (unsigned char)((uint32_t)hv[i] >> (8 * b));

    llmc_writer w = {0};
    w.out = out;
    w.to = to;
    llm_atomic a;
    int rc = llm_atomic_open(&a, out, err);
    if (rc) return rc;
    w.fd = a.fd;
    rc = llm_write_all(w.fd, hdr, sizeof hdr, out, err);
    char name[64];
    for (size_t g = 0; g < N_GROUPS && !rc; g++)
        for (size_t l = 0; l < (groups[g].layered ? L : 1) && !rc; l++)
            for (size_t k = 0; k < n_parts(&groups[g]) && !rc; k++) {
                part_name(name, sizeof name, &groups[g], l, k);
                const llm_cv_tensor *t = llm_cv_find(m, name);
                if (!t) rc = llm_errf(err, "%s: the model has no tensor '%s' for llm.c's %s", out, name, groups[g].name);
                else rc = put_tensor(&w, t, err);
                if (!rc && g == 0) rc = put_zeros(&w, (uint64_t)(Vp - V) * C * esize, err);   /* wte's padded rows */
            }
    free(w.buf);
    free(w.f);
    free(w.h);
    if (rc) {
        llm_atomic_abort(&a);
        return rc;
    }
    return llm_atomic_commit(&a, err);
}
