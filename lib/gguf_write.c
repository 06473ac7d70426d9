/* The GGUF writer: see gguf.h. Metadata is serialized as it is added; the
 * tensors' offsets are known from their sizes before any data is written,
 * so the file is written front to back, one tensor at a time. */
#include "gguf.h"
#include "strbuf.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[LLM_GGUF_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
    llm_gguf_fill_fn fill;
    void *ctx;
} entry;

struct llm_gguf_writer {
    llm_strbuf kv;        /* the key/value section as it will be written */
    uint64_t n_kv;
    char **keys;
    uint32_t alignment;
    entry *t;
    size_t n, cap;
};

llm_gguf_writer *llm_gguf_writer_new(void)
{
    llm_gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = LLM_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void llm_gguf_writer_free(llm_gguf_writer *w)
{
    if (!w) return;
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->keys);
    free(w->t);
    llm_sb_free(&w->kv);
    free(w);
}

static void put_le(llm_strbuf *b, uint64_t v, int n)
{
    unsigned char x[8];
    for (int i = 0; i < n; i++) x[i] = (unsigned char)(v >> (8 * i));
    llm_sb_add(b, x, (size_t)n);
}

static void put_str(llm_strbuf *b, const char *s, size_t len)
{
    put_le(b, len, 8);
    llm_sb_add(b, s, len);
}

/* Starts a key: its name and value type. */
static int key(llm_gguf_writer *w, const char *k, uint32_t type, llm_err *err)
{
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], k)) return llm_errf(err, "GGUF key '%s' added twice", k);
    char **ks = realloc(w->keys, (w->n_kv + 1) * sizeof *ks);
    if (!ks) return llm_errf(err, "out of memory");
    w->keys = ks;
    if (!(ks[w->n_kv] = strdup(k))) return llm_errf(err, "out of memory");
    w->n_kv++;
    put_str(&w->kv, k, strlen(k));
    put_le(&w->kv, type, 4);
    return 0;
}

static int done(llm_gguf_writer *w, llm_err *err) { return w->kv.failed ? llm_errf(err, "out of memory") : 0; }

int llm_gguf_add_u32(llm_gguf_writer *w, const char *k, uint32_t v, llm_err *err)
{
    if (key(w, k, LLM_GGUF_U32, err)) return -1;
    put_le(&w->kv, v, 4);
    if (!strcmp(k, "general.alignment")) {
        if (!v || (v & (v - 1))) return llm_errf(err, "general.alignment %u is not a power of two", v);
        w->alignment = v;
    }
    return done(w, err);
}

int llm_gguf_add_i32(llm_gguf_writer *w, const char *k, int32_t v, llm_err *err)
{
    if (key(w, k, LLM_GGUF_I32, err)) return -1;
    put_le(&w->kv, (uint32_t)v, 4);
    return done(w, err);
}

int llm_gguf_add_f32(llm_gguf_writer *w, const char *k, float v, llm_err *err)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    if (key(w, k, LLM_GGUF_F32, err)) return -1;
    put_le(&w->kv, u, 4);
    return done(w, err);
}

int llm_gguf_add_bool(llm_gguf_writer *w, const char *k, int v, llm_err *err)
{
    if (key(w, k, LLM_GGUF_BOOL, err)) return -1;
    put_le(&w->kv, v ? 1 : 0, 1);
    return done(w, err);
}

int llm_gguf_add_string(llm_gguf_writer *w, const char *k, const char *s, size_t len, llm_err *err)
{
    if (key(w, k, LLM_GGUF_STRING, err)) return -1;
    put_str(&w->kv, s, len);
    return done(w, err);
}

int llm_gguf_add_strings(llm_gguf_writer *w, const char *k, const char *const *s, const size_t *len, uint64_t n,
                         llm_err *err)
{
    if (key(w, k, LLM_GGUF_ARRAY, err)) return -1;
    put_le(&w->kv, LLM_GGUF_STRING, 4);
    put_le(&w->kv, n, 8);
    for (uint64_t i = 0; i < n; i++) put_str(&w->kv, s[i], len[i]);
    return done(w, err);
}

int llm_gguf_add_i32s(llm_gguf_writer *w, const char *k, const int32_t *v, uint64_t n, llm_err *err)
{
    if (key(w, k, LLM_GGUF_ARRAY, err)) return -1;
    put_le(&w->kv, LLM_GGUF_I32, 4);
    put_le(&w->kv, n, 8);
    for (uint64_t i = 0; i < n; i++) put_le(&w->kv, (uint32_t)v[i], 4);
    return done(w, err);
}

int llm_gguf_add_tensor(llm_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims, const uint64_t *ne,
                        const void *data, uint64_t nbytes, llm_gguf_fill_fn fill, void *ctx, llm_err *err)
{
    size_t len = strlen(name);
    if (!len || len > LLM_GGUF_MAX_NAME) return llm_errf(err, "GGUF tensor name '%s' is empty or too long", name);
    if (n_dims < 1 || n_dims > LLM_GGUF_MAX_DIMS) return llm_errf(err, "tensor '%s': %u dimensions", name, n_dims);
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return llm_errf(err, "GGUF tensor '%s' added twice", name);
    uint64_t be, bb, n = 1;
    if (llm_ggml_type_size(type, &be, &bb)) return llm_errf(err, "tensor '%s': unknown ggml type %u", name, type);
    for (uint32_t d = 0; d < n_dims; d++) n *= ne[d];
    if (ne[0] % be || n / be * bb != nbytes)
        return llm_errf(err, "tensor '%s': %llu bytes do not make a %s tensor of ne[0] = %llu and %llu elements", name,
                        (unsigned long long)nbytes, llm_ggml_type_name(type), (unsigned long long)ne[0],
                        (unsigned long long)n);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        entry *t = realloc(w->t, cap * sizeof *t);
        if (!t) return llm_errf(err, "out of memory");
        w->t = t;
        w->cap = cap;
    }
    entry *e = &w->t[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name))) return llm_errf(err, "out of memory");
    w->n++;
    e->type = type;
    e->n_dims = n_dims;
    for (uint32_t d = 0; d < LLM_GGUF_MAX_DIMS; d++) e->ne[d] = d < n_dims ? ne[d] : 1;
    e->data = data;
    e->nbytes = nbytes;
    e->fill = fill;
    e->ctx = ctx;
    return 0;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static const unsigned char zeros[256];

static int pad(int fd, uint64_t n, const char *path, llm_err *err)
{
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (llm_write_all(fd, zeros, k, path, err)) return -1;
        n -= k;
    }
    return 0;
}

int llm_gguf_writer_write(llm_gguf_writer *w, const char *path, llm_err *err)
{
    llm_strbuf h = {0};
    llm_sb_add(&h, "GGUF", 4);
    put_le(&h, 3, 4);
    put_le(&h, w->n, 8);
    put_le(&h, w->n_kv, 8);
    llm_sb_add(&h, w->kv.data, w->kv.len);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const entry *e = &w->t[i];
        put_str(&h, e->name, strlen(e->name));
        put_le(&h, e->n_dims, 4);
        for (uint32_t d = 0; d < e->n_dims; d++) put_le(&h, e->ne[d], 8);
        put_le(&h, e->type, 4);
        put_le(&h, off, 8);
        off = align_up(off + e->nbytes, w->alignment);
    }
    if (h.failed || w->kv.failed) {
        llm_sb_free(&h);
        return llm_errf(err, "%s: out of memory", path);
    }
    llm_atomic out;
    int rc = llm_atomic_open(&out, path, err);
    if (!rc) rc = llm_write_all(out.fd, h.data, h.len, path, err);
    if (!rc) rc = pad(out.fd, align_up(h.len, w->alignment) - h.len, path, err);
    void *buf = NULL;
    uint64_t cap = 0;
    for (size_t i = 0; i < w->n && !rc; i++) {
        const entry *e = &w->t[i];
        const void *bytes = e->data;
        if (!bytes) {
            if (e->nbytes > cap) {
                void *nb = realloc(buf, e->nbytes);
                if (!nb) {
                    rc = llm_errf(err, "%s: out of memory for tensor '%s' (%llu bytes)", path, e->name,
                                  (unsigned long long)e->nbytes);
                    break;
                }
                buf = nb;
                cap = e->nbytes;
            }
            if (e->fill(e->ctx, buf, e->nbytes, err)) {
                rc = llm_err_prefix(err, "%s: tensor '%s'", path, e->name);
                break;
            }
            bytes = buf;
        }
        rc = llm_write_all(out.fd, bytes, e->nbytes, path, err);
        if (!rc) rc = pad(out.fd, align_up(e->nbytes, w->alignment) - e->nbytes, path, err);
    }
    free(buf);
    llm_sb_free(&h);
    if (rc) {
        if (out.fd >= 0 || out.tmp) llm_atomic_abort(&out);
        return -1;
    }
    return llm_atomic_commit(&out, err);
}
