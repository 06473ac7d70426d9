#include "safetensors.h"
#include "fileio.h"
#include "strbuf.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct llm_st_file {
    llm_mapped map;            /* zeroed for llm_st_open_mem */
    const unsigned char *base;
    uint64_t size, header_len;
    json_t *root;              /* owns the name and metadata strings */
    json_t *quant_root;        /* parsed "quantization" metadata, or NULL */
    size_t count;
    llm_st_tensor *tensors;    /* (count) in offset order */
    uint64_t *shapes;          /* all shapes, back to back */
    uint64_t *quant_shapes;    /* (count * LLM_QUANT_MAX_DIMS) logical shapes of quantized blobs */
    const llm_st_tensor **by_name;  /* (count) sorted by name */
    int has_meta;              /* "__metadata__" present, perhaps empty */
    size_t nmeta;
    const char **meta_keys, **meta_values;  /* (nmeta) sorted by key */
};

static uint64_t read_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int cmp_offsets(const void *a, const void *b)
{
    const llm_st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_tensor_names(const void *a, const void *b)
{
    return strcmp((*(const llm_st_tensor *const *)a)->name, (*(const llm_st_tensor *const *)b)->name);
}

static int cmp_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Reads a JSON array of non-negative integers into out (capacity cap). */
static int read_u64_array(const json_t *a, uint64_t *out, size_t *n)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
        out[i] = (uint64_t)json_integer_value(v);
    }
    *n = json_array_size(a);
    return 0;
}

static int parse_tensor(llm_st_file *f, const char *fname, const char *name, json_t *info,
                        llm_st_tensor *t, uint64_t *shape_store, uint64_t data_size, llm_err *err)
{
    if (!json_is_object(info)) return llm_errf(err, "%s: tensor '%s': entry is not an object", fname, name);
    const char *key;
    json_t *v;
    json_object_foreach(info, key, v)
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return llm_errf(err, "%s: tensor '%s': unknown field '%s'", fname, name, key);
    json_t *jd = json_object_get(info, "dtype"), *js = json_object_get(info, "shape"),
           *jo = json_object_get(info, "data_offsets");
    if (!json_is_string(jd)) return llm_errf(err, "%s: tensor '%s': missing or non-string dtype", fname, name);
    if (llm_dtype_parse(json_string_value(jd), &t->dtype))
        return llm_errf(err, "%s: tensor '%s': unsupported dtype '%s'", fname, name, json_string_value(jd));
    if (!json_is_array(js)) return llm_errf(err, "%s: tensor '%s': missing or non-array shape", fname, name);
    if (read_u64_array(js, shape_store, &t->ndim))
        return llm_errf(err, "%s: tensor '%s': shape holds something other than a non-negative integer", fname, name);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return llm_errf(err, "%s: tensor '%s': data_offsets is not a pair [begin, end]", fname, name);
    uint64_t off[2];
    size_t two;
    if (read_u64_array(jo, off, &two))
        return llm_errf(err, "%s: tensor '%s': data_offsets holds something other than a non-negative integer", fname, name);
    t->name = name;
    t->shape = shape_store;
    t->begin = off[0];
    t->end = off[1];
    uint64_t n = 1, bytes;
    for (size_t i = 0; i < t->ndim; i++)
        if (__builtin_mul_overflow(n, shape_store[i], &n))
            return llm_errf(err, "%s: tensor '%s': shape product overflows 64 bits", fname, name);
    if (__builtin_mul_overflow(n, (uint64_t)llm_dtype_size(t->dtype), &bytes))
        return llm_errf(err, "%s: tensor '%s': byte size overflows 64 bits", fname, name);
    t->nelem = n;
    if (t->begin > t->end)
        return llm_errf(err, "%s: tensor '%s': data_offsets [%llu, %llu) run backwards", fname, name,
                        (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > data_size)
        return llm_errf(err, "%s: tensor '%s': data_offsets end %llu is past the data section (%llu bytes)",
                        fname, name, (unsigned long long)t->end, (unsigned long long)data_size);
    if (t->end - t->begin != bytes)
        return llm_errf(err, "%s: tensor '%s': data_offsets [%llu, %llu) hold %llu bytes but %s with %llu elements needs %llu",
                        fname, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)(t->end - t->begin), llm_dtype_name(t->dtype),
                        (unsigned long long)n, (unsigned long long)bytes);
    t->data = f->base + 8 + f->header_len + t->begin;
    return 0;
}

static int parse_metadata(llm_st_file *f, const char *fname, json_t *meta, llm_err *err)
{
    if (!json_is_object(meta)) return llm_errf(err, "%s: __metadata__ is not an object", fname);
    f->has_meta = 1;
    f->nmeta = json_object_size(meta);
    f->meta_keys = calloc(f->nmeta + 1, sizeof *f->meta_keys);
    f->meta_values = calloc(f->nmeta + 1, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values) return llm_errf(err, "%s: out of memory", fname);
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(meta, key, v) {
        if (!json_is_string(v)) return llm_errf(err, "%s: __metadata__ value of '%s' is not a string", fname, key);
        f->meta_keys[i++] = key;
    }
    qsort(f->meta_keys, f->nmeta, sizeof *f->meta_keys, cmp_strings);
    for (i = 0; i < f->nmeta; i++) f->meta_values[i] = json_string_value(json_object_get(meta, f->meta_keys[i]));
    return 0;
}

/* Checks the "quantization" metadata: {"tensor": {"type": "q4_0", "shape": [..]}, ...}. */
static int parse_quantization(llm_st_file *f, const char *fname, llm_err *err)
{
    const char *text = llm_st_meta(f, "quantization");
    if (!text) return 0;
    json_error_t jerr;
    f->quant_root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!f->quant_root || !json_is_object(f->quant_root))
        return llm_errf(err, "%s: metadata 'quantization' is not a JSON object", fname);
    const char *name;
    json_t *q;
    json_object_foreach(f->quant_root, name, q) {
        llm_st_tensor *t = (llm_st_tensor *)llm_st_find(f, name);
        if (!t) return llm_errf(err, "%s: metadata 'quantization' names tensor '%s', which is not in the file", fname, name);
        json_t *jt = json_object_get(q, "type"), *js = json_object_get(q, "shape");
        if (!json_is_object(q) || !json_is_string(jt) || !json_is_array(js) || json_array_size(js) == 0 ||
            json_array_size(js) > LLM_QUANT_MAX_DIMS || json_object_size(q) != 2)
            return llm_errf(err, "%s: tensor '%s': quantization entry must be {\"type\": NAME, \"shape\": [1 to 8 dims]}", fname, name);
        const llm_quant_type *qt = llm_quant_find(json_string_value(jt));
        if (!qt) return llm_errf(err, "%s: tensor '%s': unknown quantization type '%s'", fname, name, json_string_value(jt));
        if (t->dtype != LLM_U8 || t->ndim != 1)
            return llm_errf(err, "%s: tensor '%s': quantized data must be a 1-D U8 tensor", fname, name);
        uint64_t *shape = f->quant_shapes + (size_t)(t - f->tensors) * LLM_QUANT_MAX_DIMS;
        size_t nd;
        uint64_t need;
        if (read_u64_array(js, shape, &nd))
            return llm_errf(err, "%s: tensor '%s': quantization shape holds something other than a non-negative integer", fname, name);
        if (llm_quant_nbytes(qt, nd, shape, &need))
            return llm_errf(err, "%s: tensor '%s': %s needs a last dimension that is a multiple of %u and a size that fits 64 bits",
                            fname, name, qt->name, qt->block_elems);
        if (need != t->nelem)
            return llm_errf(err, "%s: tensor '%s': %s of that shape takes %llu bytes, the blob has %llu",
                            fname, name, qt->name, (unsigned long long)need, (unsigned long long)t->nelem);
        t->quant = qt;
        t->quant_ndim = nd;
        t->quant_shape = shape;
    }
    return 0;
}

static int validate(llm_st_file *f, const char *name, llm_err *err)
{
    if (f->size == 0) return llm_errf(err, "%s: empty file, not safetensors", name);
    if (f->size < 8)
        return llm_errf(err, "%s: %llu bytes is too short for a safetensors header length (8 bytes)", name,
                        (unsigned long long)f->size);
    uint64_t n = read_le64(f->base);
    f->header_len = n;
    if (n > LLM_ST_MAX_HEADER)
        return llm_errf(err, "%s: header length %llu exceeds the limit of %llu bytes", name,
                        (unsigned long long)n, LLM_ST_MAX_HEADER);
    if (n > f->size - 8)
        return llm_errf(err, "%s: header length %llu runs past the end of the file (%llu bytes)", name,
                        (unsigned long long)n, (unsigned long long)f->size);
    const char *hdr = (const char *)f->base + 8;
    if (n < 2 || hdr[0] != '{') return llm_errf(err, "%s: header does not start with '{'", name);
    json_error_t jerr;
    f->root = json_loadb(hdr, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!f->root)
        return llm_errf(err, "%s: invalid JSON header at byte %d: %s", name, 8 + jerr.position, jerr.text);
    if (!json_is_object(f->root)) return llm_errf(err, "%s: header is not a JSON object", name);

    uint64_t data_size = f->size - 8 - n;
    size_t total = json_object_size(f->root), ndims = 0;
    const char *key;
    json_t *v;
    json_object_foreach(f->root, key, v) {
        json_t *shape = json_is_object(v) ? json_object_get(v, "shape") : NULL;
        if (json_is_array(shape)) ndims += json_array_size(shape);
    }
    f->tensors = calloc(total + 1, sizeof *f->tensors);
    f->shapes = calloc(ndims + 1, sizeof *f->shapes);
    f->by_name = calloc(total + 1, sizeof *f->by_name);
    f->quant_shapes = calloc((total + 1) * LLM_QUANT_MAX_DIMS, sizeof *f->quant_shapes);
    if (!f->tensors || !f->shapes || !f->by_name || !f->quant_shapes) return llm_errf(err, "%s: out of memory", name);
    uint64_t *shape_store = f->shapes;
    json_object_foreach(f->root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (parse_metadata(f, name, v, err)) return -1;
            continue;
        }
        llm_st_tensor *t = &f->tensors[f->count];
        if (parse_tensor(f, name, key, v, t, shape_store, data_size, err)) return -1;
        shape_store += t->ndim;
        f->count++;
    }
    qsort(f->tensors, f->count, sizeof *f->tensors, cmp_offsets);
    uint64_t expect = 0;
    for (size_t i = 0; i < f->count; i++) {
        const llm_st_tensor *t = &f->tensors[i];
        if (t->begin < expect)
            return llm_errf(err, "%s: tensor '%s' at [%llu, %llu) overlaps tensor '%s'", name, t->name,
                            (unsigned long long)t->begin, (unsigned long long)t->end, f->tensors[i - 1].name);
        if (t->begin > expect)
            return llm_errf(err, "%s: hole in the data section: bytes [%llu, %llu) before tensor '%s' belong to no tensor",
                            name, (unsigned long long)expect, (unsigned long long)t->begin, t->name);
        expect = t->end;
        f->by_name[i] = t;
    }
    if (expect != data_size)
        return llm_errf(err, "%s: %llu bytes after the last tensor belong to no tensor", name,
                        (unsigned long long)(data_size - expect));
    qsort(f->by_name, f->count, sizeof *f->by_name, cmp_tensor_names);
    return parse_quantization(f, name, err);
}

int llm_st_open_mem(const void *buf, size_t len, const char *name, llm_st_file **out, llm_err *err)
{
    *out = NULL;
    llm_st_file *f = calloc(1, sizeof *f);
    if (!f) return llm_errf(err, "%s: out of memory", name);
    f->base = buf;
    f->size = len;
    if (validate(f, name, err)) { llm_st_close(f); return -1; }
    *out = f;
    return 0;
}

int llm_st_open(const char *path, llm_st_file **out, llm_err *err)
{
    *out = NULL;
    llm_mapped m;
    if (llm_map_file(&m, path, err)) return -1;
    if (llm_st_open_mem(m.data, m.size, path, out, err)) { llm_unmap_file(&m); return -1; }
    (*out)->map = m;
    return 0;
}

void llm_st_close(llm_st_file *f)
{
    if (!f) return;
    json_decref(f->quant_root);
    json_decref(f->root);
    free(f->tensors);
    free(f->shapes);
    free(f->quant_shapes);
    free(f->by_name);
    free(f->meta_keys);
    free(f->meta_values);
    llm_unmap_file(&f->map);
    free(f);
}

uint64_t llm_st_header_len(const llm_st_file *f) { return f->header_len; }
uint64_t llm_st_file_size(const llm_st_file *f) { return f->size; }
size_t llm_st_count(const llm_st_file *f) { return f->count; }
const llm_st_tensor *llm_st_at(const llm_st_file *f, size_t i) { return i < f->count ? &f->tensors[i] : NULL; }
size_t llm_st_meta_count(const llm_st_file *f) { return f->nmeta; }
int llm_st_has_metadata(const llm_st_file *f) { return f->has_meta; }
const char *llm_st_meta_key(const llm_st_file *f, size_t i) { return i < f->nmeta ? f->meta_keys[i] : NULL; }
const char *llm_st_meta_value(const llm_st_file *f, size_t i) { return i < f->nmeta ? f->meta_values[i] : NULL; }

const llm_st_tensor *llm_st_find(const llm_st_file *f, const char *name)
{
    size_t lo = 0, hi = f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->by_name[mid]->name);
        if (!c) return f->by_name[mid];
        if (c < 0) hi = mid; else lo = mid + 1;
    }
    return NULL;
}

const char *llm_st_meta(const llm_st_file *f, const char *key)
{
    if (!f->nmeta) return NULL;
    const char **hit = bsearch(&key, f->meta_keys, f->nmeta, sizeof *f->meta_keys, cmp_strings);
    return hit ? f->meta_values[hit - f->meta_keys] : NULL;
}
