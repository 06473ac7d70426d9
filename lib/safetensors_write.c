/* The safetensors writer: see safetensors.h. */
#include "fileio.h"
#include "safetensors.h"
#include "strbuf.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;
    llm_dtype dtype;
    size_t ndim;
    uint64_t shape[LLM_QUANT_MAX_DIMS > 16 ? LLM_QUANT_MAX_DIMS : 16];
    const void *data;
    uint64_t nbytes;
    const llm_quant_type *quant;   /* with quant: shape is the logical shape */
    llm_st_fill_fn fill;           /* or the bytes come from here, at write time */
    void *fill_ctx;
} entry;

struct llm_st_writer {
    entry *entries;
    size_t count, cap;
    char **keys, **values;
    size_t nmeta;
    int always_metadata;
};

llm_st_writer *llm_st_writer_new(void) { return calloc(1, sizeof(llm_st_writer)); }

void llm_st_writer_free(llm_st_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->count; i++) free(w->entries[i].name);
    for (size_t i = 0; i < w->nmeta; i++) { free(w->keys[i]); free(w->values[i]); }
    free(w->entries);
    free(w->keys);
    free(w->values);
    free(w);
}

void llm_st_writer_always_metadata(llm_st_writer *w) { w->always_metadata = 1; }

int llm_st_writer_meta(llm_st_writer *w, const char *key, const char *value, llm_err *err)
{
    if (!strcmp(key, "quantization"))
        return llm_errf(err, "metadata key 'quantization' is written from the quantized tensors themselves");
    for (size_t i = 0; i < w->nmeta; i++)
        if (!strcmp(w->keys[i], key)) {
            char *v = strdup(value);
            if (!v) return llm_errf(err, "out of memory");
            free(w->values[i]);
            w->values[i] = v;
            return 0;
        }
    char **k = realloc(w->keys, (w->nmeta + 1) * sizeof *k);
    if (k) w->keys = k;
    char **v = realloc(w->values, (w->nmeta + 1) * sizeof *v);
    if (v) w->values = v;
    if (!k || !v) return llm_errf(err, "out of memory");
    w->keys[w->nmeta] = strdup(key);
    w->values[w->nmeta] = strdup(value);
    if (!w->keys[w->nmeta] || !w->values[w->nmeta]) {
        free(w->keys[w->nmeta]); free(w->values[w->nmeta]);
        return llm_errf(err, "out of memory");
    }
    w->nmeta++;
    return 0;
}

static int add_entry(llm_st_writer *w, const char *name, llm_dtype dtype, size_t ndim, const uint64_t *shape,
                     const void *data, uint64_t nbytes, const llm_quant_type *q, llm_err *err)
{
    if (!*name || !strcmp(name, "__metadata__")) return llm_errf(err, "tensor name '%s' is reserved", name);
    if (ndim > sizeof w->entries->shape / sizeof w->entries->shape[0])
        return llm_errf(err, "tensor '%s': %zu dimensions is more than this writer takes", name, ndim);
    for (size_t i = 0; i < w->count; i++)
        if (!strcmp(w->entries[i].name, name)) return llm_errf(err, "tensor '%s' added twice", name);
    uint64_t need;
    if (q) {
        if (llm_quant_nbytes(q, ndim, shape, &need))
            return llm_errf(err, "tensor '%s': shape does not fit %s blocks of %u", name, q->name, q->block_elems);
    } else {
        need = llm_dtype_size(dtype);
        for (size_t i = 0; i < ndim; i++)
            if (__builtin_mul_overflow(need, shape[i], &need))
                return llm_errf(err, "tensor '%s': byte size overflows 64 bits", name);
    }
    if (need != nbytes)
        return llm_errf(err, "tensor '%s': %llu bytes given, the shape needs %llu", name,
                        (unsigned long long)nbytes, (unsigned long long)need);
    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        entry *e = realloc(w->entries, cap * sizeof *e);
        if (!e) return llm_errf(err, "out of memory");
        w->entries = e;
        w->cap = cap;
    }
    entry *e = &w->entries[w->count];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name))) return llm_errf(err, "out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    if (ndim) memcpy(e->shape, shape, ndim * sizeof *shape);
    e->data = data;
    e->nbytes = nbytes;
    e->quant = q;
    w->count++;
    return 0;
}

int llm_st_writer_add(llm_st_writer *w, const char *name, llm_dtype dtype, size_t ndim,
                      const uint64_t *shape, const void *data, uint64_t nbytes, llm_err *err)
{
    if (dtype >= LLM_DTYPE_COUNT) return llm_errf(err, "tensor '%s': unknown dtype", name);
    return add_entry(w, name, dtype, ndim, shape, data, nbytes, NULL, err);
}

int llm_st_writer_add_quant(llm_st_writer *w, const char *name, const llm_quant_type *q, size_t ndim,
                            const uint64_t *shape, const void *data, uint64_t nbytes, llm_err *err)
{
    if (ndim == 0 || ndim > LLM_QUANT_MAX_DIMS)
        return llm_errf(err, "tensor '%s': a quantized tensor has 1 to %d dimensions", name, LLM_QUANT_MAX_DIMS);
    return add_entry(w, name, LLM_U8, ndim, shape, data, nbytes, q, err);
}

/* The safetensors crate's order: dtype descending (in its enum order, which
 * llm_dtype follows), then name ascending. */
static int cmp_layout(const void *a, const void *b)
{
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_index_by_key(const void *a, const void *b, void *keys)
{
    char **k = keys;
    return strcmp(k[*(const size_t *)a], k[*(const size_t *)b]);
}

static void add_shape(llm_strbuf *sb, size_t ndim, const uint64_t *shape)
{
    llm_sb_puts(sb, "[");
    for (size_t d = 0; d < ndim; d++) llm_sb_printf(sb, d ? ",%llu" : "%llu", (unsigned long long)shape[d]);
    llm_sb_puts(sb, "]");
}

/* The "quantization" metadata value: {"name":{"type":"q4_0","shape":[..]},...} by name. */
static void quant_json(llm_strbuf *sb, entry **order, size_t n)
{
    int first = 1;
    llm_sb_puts(sb, "{");
    for (size_t i = 0; i < n; i++) {
        const entry *e = order[i];
        if (!e->quant) continue;
        if (!first) llm_sb_puts(sb, ",");
        first = 0;
        llm_sb_json_string(sb, e->name);
        llm_sb_puts(sb, ":{\"type\":");
        llm_sb_json_string(sb, e->quant->name);
        llm_sb_puts(sb, ",\"shape\":");
        add_shape(sb, e->ndim, e->shape);
        llm_sb_puts(sb, "}");
    }
    llm_sb_puts(sb, "}");
}

static int build_header(llm_st_writer *w, entry **order, llm_strbuf *hdr, llm_err *err)
{
    int has_quant = 0;
    for (size_t i = 0; i < w->count; i++) has_quant |= w->entries[i].quant != NULL;

    /* metadata, keys sorted; "quantization" joins them when any tensor is quantized */
    size_t nmeta = w->nmeta + (size_t)has_quant;
    char **keys = calloc(nmeta + 1, sizeof *keys), **vals = calloc(nmeta + 1, sizeof *vals);
    size_t *idx = calloc(nmeta + 1, sizeof *idx);
    llm_strbuf qjson = {0};
    if (!keys || !vals || !idx) { free(keys); free(vals); free(idx); return llm_errf(err, "out of memory"); }
    memcpy(keys, w->keys, w->nmeta * sizeof *keys);
    memcpy(vals, w->values, w->nmeta * sizeof *vals);
    if (has_quant) {
        entry **by_name = malloc(w->count * sizeof *by_name);
        if (by_name) {
            memcpy(by_name, order, w->count * sizeof *by_name);
            for (size_t i = 1; i < w->count; i++)   /* insertion sort by name; counts are small */
                for (size_t j = i; j > 0 && strcmp(by_name[j - 1]->name, by_name[j]->name) > 0; j--) {
                    entry *t = by_name[j]; by_name[j] = by_name[j - 1]; by_name[j - 1] = t;
                }
            quant_json(&qjson, by_name, w->count);
            free(by_name);
        } else {
            qjson.failed = 1;
        }
        keys[w->nmeta] = "quantization";
        vals[w->nmeta] = qjson.data;
    }
    for (size_t i = 0; i < nmeta; i++) idx[i] = i;
    qsort_r(idx, nmeta, sizeof *idx, cmp_index_by_key, keys);

    llm_sb_puts(hdr, "{");
    int first = 1;
    if (nmeta || w->always_metadata) {
        llm_sb_puts(hdr, "\"__metadata__\":{");
        for (size_t i = 0; i < nmeta; i++) {
            if (i) llm_sb_puts(hdr, ",");
            llm_sb_json_string(hdr, keys[idx[i]]);
            llm_sb_puts(hdr, ":");
            llm_sb_json_string(hdr, vals[idx[i]] ? vals[idx[i]] : "");
        }
        llm_sb_puts(hdr, "}");
        first = 0;
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->count; i++) {
        const entry *e = order[i];
        if (!first) llm_sb_puts(hdr, ",");
        first = 0;
        llm_sb_json_string(hdr, e->name);
        llm_sb_printf(hdr, ":{\"dtype\":\"%s\",\"shape\":", llm_dtype_name(e->dtype));
        if (e->quant) {
            uint64_t n = e->nbytes;
            add_shape(hdr, 1, &n);
        } else {
            add_shape(hdr, e->ndim, e->shape);
        }
        llm_sb_printf(hdr, ",\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                      (unsigned long long)(offset + e->nbytes));
        offset += e->nbytes;
    }
    llm_sb_puts(hdr, "}");
    while (hdr->len % 8) llm_sb_puts(hdr, " ");
    int failed = hdr->failed || qjson.failed;
    llm_sb_free(&qjson);
    free(keys);
    free(vals);
    free(idx);
    return failed ? llm_errf(err, "out of memory") : 0;
}

int llm_st_writer_add_fill(llm_st_writer *w, const char *name, llm_dtype dtype, size_t ndim, const uint64_t *shape,
                           uint64_t nbytes, llm_st_fill_fn fill, void *ctx, llm_err *err)
{
    static const char placeholder;
    if (llm_st_writer_add(w, name, dtype, ndim, shape, &placeholder, nbytes, err)) return -1;
    w->entries[w->count - 1].data = NULL;
    w->entries[w->count - 1].fill = fill;
    w->entries[w->count - 1].fill_ctx = ctx;
    return 0;
}

int llm_st_writer_add_quant_fill(llm_st_writer *w, const char *name, const llm_quant_type *q, size_t ndim,
                                 const uint64_t *shape, uint64_t nbytes, llm_st_fill_fn fill, void *ctx, llm_err *err)
{
    static const char placeholder;
    if (llm_st_writer_add_quant(w, name, q, ndim, shape, &placeholder, nbytes, err)) return -1;
    w->entries[w->count - 1].data = NULL;
    w->entries[w->count - 1].fill = fill;
    w->entries[w->count - 1].fill_ctx = ctx;
    return 0;
}

/* Writes entry e: its bytes, or what its fill gives, through buf (grown to
 * the largest filled tensor). */
static int write_entry(int fd, const entry *e, void **buf, uint64_t *cap, const char *path, llm_err *err)
{
    if (!e->fill) return llm_write_all(fd, e->data, e->nbytes, path, err);
    if (e->nbytes > *cap) {
        void *nb = realloc(*buf, e->nbytes);
        if (!nb) return llm_errf(err, "%s: out of memory for tensor '%s' (%llu bytes)", path, e->name,
                                 (unsigned long long)e->nbytes);
        *buf = nb;
        *cap = e->nbytes;
    }
    if (e->fill(e->fill_ctx, *buf, e->nbytes, err)) return llm_err_prefix(err, "%s: tensor '%s'", path, e->name);
    return llm_write_all(fd, *buf, e->nbytes, path, err);
}

int llm_st_writer_write(llm_st_writer *w, const char *path, llm_err *err)
{
    entry **order = malloc((w->count + 1) * sizeof *order);
    if (!order) return llm_errf(err, "%s: out of memory", path);
    for (size_t i = 0; i < w->count; i++) order[i] = &w->entries[i];
    qsort(order, w->count, sizeof *order, cmp_layout);

    llm_strbuf hdr = {0};
    if (build_header(w, order, &hdr, err)) { free(order); llm_sb_free(&hdr); return llm_err_prefix(err, "%s", path); }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));

    llm_atomic out;
    int rc = llm_atomic_open(&out, path, err);
    if (!rc) rc = llm_write_all(out.fd, len8, 8, path, err);
    if (!rc) rc = llm_write_all(out.fd, hdr.data, hdr.len, path, err);
    void *buf = NULL;
    uint64_t cap = 0;
    for (size_t i = 0; i < w->count && !rc; i++) rc = write_entry(out.fd, order[i], &buf, &cap, path, err);
    free(buf);
    if (rc) {
        if (out.fd >= 0 || out.tmp) llm_atomic_abort(&out);
    } else {
        rc = llm_atomic_commit(&out, err);
    }
    llm_sb_free(&hdr);
    free(order);
    return rc;
}
