/* The GGUF reader: see gguf.h. Everything is checked against the mapped
 * file before llm_gguf_open returns. */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ggml's types: name, weights per block, bytes per block (ggml.h, and
 * GGML_QUANT_SIZES in gguf-py). Numbers 4, 5 and 31..33, 36..38 are retired. */
static const struct {
    uint32_t type;
    const char *name;
    uint32_t elems, bytes;
} ggml_types[] = {
    {0, "F32", 1, 4},        {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},      {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},     {7, "Q5_1", 32, 24},      {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 40},
    {10, "Q2_K", 256, 84},   {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},  {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},  {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},  {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},       {27, "I64", 1, 8},        {28, "F64", 1, 8},        {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},      {34, "TQ1_0", 256, 54},   {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
    {40, "NVFP4", 64, 36},   {41, "Q1_0", 128, 18},
};

static int type_index(uint32_t type)
{
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
        if (ggml_types[i].type == type) return (int)i;
    return -1;
}

const char *llm_ggml_type_name(uint32_t type)
{
    int i = type_index(type);
    return i < 0 ? NULL : ggml_types[i].name;
}

int llm_ggml_type_size(uint32_t type, uint64_t *block_elems, uint64_t *block_bytes)
{
    int i = type_index(type);
    if (i < 0) return -1;
    *block_elems = ggml_types[i].elems;
    *block_bytes = ggml_types[i].bytes;
    return 0;
}

static const char *const value_type_names[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                               "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};

const char *llm_gguf_value_type_name(uint32_t type) { return type <= 12 ? value_type_names[type] : "?"; }

/* Bytes of a scalar of the type; 0 for strings and arrays, -1 unknown. */
static int scalar_size(uint32_t type)
{
    static const int sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type <= 12 ? sizes[type] : -1;
}

/* ---- a cursor over the map ---- */

typedef struct {
    const unsigned char *p;
    uint64_t pos, size;
    const char *path;
    llm_err *err;
} cursor;

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* `what` names the thing being read when the file ends in it. */
static int need(cursor *c, uint64_t n, const char *what)
{
    if (n > c->size - c->pos)
        return llm_errf(c->err, "%s: truncated: %s runs past the end of the file (%llu bytes needed at byte %llu of %llu)",
                        c->path, what, (unsigned long long)n, (unsigned long long)c->pos, (unsigned long long)c->size);
    return 0;
}

static int past_end(cursor *c, const char *what, uint64_t count)
{
    return llm_errf(c->err, "%s: truncated: %s, an array of %llu, runs past the end of the file (%llu bytes)", c->path,
                    what, (unsigned long long)count, (unsigned long long)c->size);
}

static int get_u32(cursor *c, uint32_t *v, const char *what)
{
    if (need(c, 4, what)) return -1;
    *v = (uint32_t)le(c->p + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int get_u64(cursor *c, uint64_t *v, const char *what)
{
    if (need(c, 8, what)) return -1;
    *v = le(c->p + c->pos, 8);
    c->pos += 8;
    return 0;
}

/* A string: its bytes in the map. */
static int get_str(cursor *c, const unsigned char **s, uint64_t *len, const char *what)
{
    if (get_u64(c, len, what) || need(c, *len, what)) return -1;
    *s = c->p + c->pos;
    c->pos += *len;
    return 0;
}

static char *dup_name(const unsigned char *s, uint64_t len)
{
    char *d = malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = 0;
    return d;
}

/* Skips a value of the type (arrays nested up to depth 4), checking it. */
static int skip_value(cursor *c, uint32_t type, const char *key, int depth)
{
    char what[160];
    snprintf(what, sizeof what, "key '%.100s'", key);
    int sz = scalar_size(type);
    if (sz < 0) return llm_errf(c->err, "%s: key '%s' has unknown value type %u", c->path, key, type);
    if (sz > 0) {
        if (need(c, (uint64_t)sz, what)) return -1;
        if (type == LLM_GGUF_BOOL && c->p[c->pos] > 1)
            return llm_errf(c->err, "%s: key '%s': a BOOL of %u, not 0 or 1", c->path, key, c->p[c->pos]);
        c->pos += (uint64_t)sz;
        return 0;
    }
    if (type == LLM_GGUF_STRING) {
        const unsigned char *s;
        uint64_t len;
        return get_str(c, &s, &len, what);
    }
    uint32_t et;
    uint64_t n;
    if (depth >= 4) return llm_errf(c->err, "%s: key '%s': arrays nested too deep", c->path, key);
    if (get_u32(c, &et, what) || get_u64(c, &n, what)) return -1;
    int esz = scalar_size(et);
    if (esz < 0) return llm_errf(c->err, "%s: key '%s' is an array of unknown value type %u", c->path, key, et);
    if (esz > 0) {
        if (n > (c->size - c->pos) / (uint64_t)esz) return past_end(c, what, n);
        if (et == LLM_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (c->p[c->pos + i] > 1)
                    return llm_errf(c->err, "%s: key '%s': element %llu is a BOOL of %u, not 0 or 1", c->path, key,
                                    (unsigned long long)i, c->p[c->pos + i]);
        c->pos += n * (uint64_t)esz;
        return 0;
    }
    /* strings take at least 8 bytes, arrays 12: a count past that is truncation */
    if (n > (c->size - c->pos) / 8) return past_end(c, what, n);
    for (uint64_t i = 0; i < n; i++)
        if (skip_value(c, et, key, depth + 1)) return -1;
    return 0;
}

void llm_gguf_close(llm_gguf_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_kv; i++) free(f->kv[i].key);
    for (size_t i = 0; i < f->n_tensors; i++) free(f->t[i].name);
    free(f->kv);
    free(f->t);
    llm_unmap_file(&f->map);
    free(f->path);
    free(f);
}

static int cmp_offset(const void *a, const void *b)
{
    const llm_gguf_tensor *x = *(const llm_gguf_tensor *const *)a, *y = *(const llm_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int read_kvs(llm_gguf_file *f, cursor *c, uint64_t n_kv)
{
    const char *path = f->path;
    for (uint64_t i = 0; i < n_kv; i++) {
        char what[64];
        snprintf(what, sizeof what, "the name of key %llu", (unsigned long long)i);
        const unsigned char *s;
        uint64_t len;
        if (get_str(c, &s, &len, what)) return -1;
        if (len == 0 || len > 65535 || memchr(s, 0, len))
            return llm_errf(c->err, "%s: key %llu has a name of %llu bytes%s", path, (unsigned long long)i,
                            (unsigned long long)len, len && len <= 65535 ? " with a NUL byte in it" : "");
        llm_gguf_kv *kv = &f->kv[f->n_kv];
        if (!(kv->key = dup_name(s, len))) return llm_errf(c->err, "out of memory");
        f->n_kv++;
        if (llm_gguf_get(f, kv->key) != kv) return llm_errf(c->err, "%s: key '%s' appears twice", path, kv->key);
        snprintf(what, sizeof what, "key '%.40s'", kv->key);
        if (get_u32(c, &kv->type, what)) return -1;
        uint64_t start = c->pos;
        if (kv->type == LLM_GGUF_ARRAY) {
            if (get_u32(c, &kv->elem_type, what) || get_u64(c, &kv->count, what)) return -1;
            c->pos -= 12;
            start = c->pos + 12;
        }
        if (skip_value(c, kv->type, kv->key, 0)) return -1;
        kv->val = c->p + start;
        kv->len = c->pos - start;
    }
    return 0;
}

static int read_tensor_infos(llm_gguf_file *f, cursor *c, uint64_t n_tensors)
{
    const char *path = f->path;
    for (uint64_t i = 0; i < n_tensors; i++) {
        char what[96];
        snprintf(what, sizeof what, "the name of tensor %llu", (unsigned long long)i);
        const unsigned char *s;
        uint64_t len;
        if (get_str(c, &s, &len, what)) return -1;
        if (len == 0 || len > LLM_GGUF_MAX_NAME || memchr(s, 0, len))
            return llm_errf(c->err, "%s: tensor %llu has a name of %llu bytes (1 to %d, no NUL)", path,
                            (unsigned long long)i, (unsigned long long)len, LLM_GGUF_MAX_NAME);
        llm_gguf_tensor *t = &f->t[f->n_tensors];
        if (!(t->name = dup_name(s, len))) return llm_errf(c->err, "out of memory");
        f->n_tensors++;
        if (llm_gguf_tensor_find(f, t->name) != t) return llm_errf(c->err, "%s: tensor '%s' appears twice", path, t->name);
        snprintf(what, sizeof what, "tensor '%s'", t->name);
        if (get_u32(c, &t->n_dims, what)) return -1;
        if (t->n_dims < 1 || t->n_dims > LLM_GGUF_MAX_DIMS)
            return llm_errf(c->err, "%s: tensor '%s' has %u dimensions (1 to %d)", path, t->name, t->n_dims,
                            LLM_GGUF_MAX_DIMS);
        for (int d = 0; d < LLM_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if (get_u64(c, &t->ne[d], what)) return -1;
        if (get_u32(c, &t->type, what) || get_u64(c, &t->offset, what)) return -1;
        uint64_t be, bb;
        if (llm_ggml_type_size(t->type, &be, &bb))
            return llm_errf(c->err, "%s: tensor '%s' has unknown type %u", path, t->name, t->type);
        uint64_t n = 1;
        for (int d = 0; d < LLM_GGUF_MAX_DIMS; d++) {
            if (t->ne[d] >> 62 || (t->ne[d] && n > (UINT64_MAX >> 2) / t->ne[d]))
                return llm_errf(c->err, "%s: tensor '%s': its dimensions overflow", path, t->name);
            n *= t->ne[d];
        }
        if (t->ne[0] % be)
            return llm_errf(c->err, "%s: tensor '%s' is %s, whose blocks of %llu do not divide ne[0] = %llu", path,
                            t->name, llm_ggml_type_name(t->type), (unsigned long long)be, (unsigned long long)t->ne[0]);
        if (n / be > UINT64_MAX / bb) return llm_errf(c->err, "%s: tensor '%s': its size overflows", path, t->name);
        t->nbytes = n / be * bb;
    }
    return 0;
}

int llm_gguf_open(const char *path, llm_gguf_file **out, llm_err *err)
{
    *out = NULL;
    llm_gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return llm_errf(err, "out of memory");
    }
    if (llm_map_file(&f->map, path, err)) {
        llm_gguf_close(f);
        return -1;
    }
    cursor c = {f->map.data, 0, f->map.size, path, err};
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    int rc = 0;
    if (f->map.size < 4 || memcmp(f->map.data, "GGUF", 4)) {
        rc = llm_errf(err, "%s: not a GGUF file (the magic is not \"GGUF\")", path);
    } else if (get_u32(&c, &magic, "the header") || get_u32(&c, &f->version, "the header")) {
        rc = -1;
    } else if (f->version != 2 && f->version != 3) {
        rc = llm_errf(err, "%s: GGUF version %u is not supported (2 and 3 are)%s", path, f->version,
                      f->version > 0xffff ? ": a big-endian file?" : "");
    } else if (get_u64(&c, &n_tensors, "the header") || get_u64(&c, &n_kv, "the header")) {
        rc = -1;
    } else if (n_kv > (c.size - c.pos) / 13 + 1 || n_tensors > (c.size - c.pos) / 25 + 1) {
        /* a key takes at least 13 bytes (8 + 1 + 4), a tensor info 25 */
        rc = llm_errf(err, "%s: truncated: the header counts %llu keys and %llu tensors, more than %llu bytes hold", path,
                      (unsigned long long)n_kv, (unsigned long long)n_tensors, (unsigned long long)c.size);
    } else if (!(f->kv = calloc(n_kv + 1, sizeof *f->kv)) || !(f->t = calloc(n_tensors + 1, sizeof *f->t))) {
        rc = llm_errf(err, "out of memory");
    }
    if (!rc) rc = read_kvs(f, &c, n_kv);
    f->alignment = LLM_GGUF_DEFAULT_ALIGNMENT;
    const llm_gguf_kv *al = rc ? NULL : llm_gguf_get(f, "general.alignment");
    if (al) {
        if (al->type != LLM_GGUF_U32)
            rc = llm_errf(err, "%s: key 'general.alignment' is %s, not UINT32", path, llm_gguf_value_type_name(al->type));
        else if (!(f->alignment = le(al->val, 4)) || (f->alignment & (f->alignment - 1)))
            rc = llm_errf(err, "%s: key 'general.alignment' is %llu, not a power of two", path,
                          (unsigned long long)f->alignment);
    }
    if (!rc) rc = read_tensor_infos(f, &c, n_tensors);
    if (!rc) {
        f->data_offset = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
        if (f->data_offset > c.size && n_tensors)
            rc = llm_errf(err, "%s: truncated: the data section would begin at byte %llu, past the end (%llu bytes)",
                          path, (unsigned long long)f->data_offset, (unsigned long long)c.size);
    }
    uint64_t data_size = rc || f->data_offset > c.size ? 0 : c.size - f->data_offset;
    for (size_t i = 0; i < f->n_tensors && !rc; i++) {
        llm_gguf_tensor *t = &f->t[i];
        if (t->offset % f->alignment)
            rc = llm_errf(err, "%s: tensor '%s': offset %llu is not a multiple of the alignment %llu", path, t->name,
                          (unsigned long long)t->offset, (unsigned long long)f->alignment);
        else if (t->offset > data_size || t->nbytes > data_size - t->offset)
            rc = llm_errf(err, "%s: tensor '%s': bytes [%llu, %llu) of the data section lie past its end (%llu bytes)",
                          path, t->name, (unsigned long long)t->offset, (unsigned long long)(t->offset + t->nbytes),
                          (unsigned long long)data_size);
        else
            t->data = f->map.data + f->data_offset + t->offset;
    }
    if (!rc && f->n_tensors > 1) {   /* no two tensors share bytes */
        llm_gguf_tensor **by = malloc(f->n_tensors * sizeof *by);
        if (!by) rc = llm_errf(err, "out of memory");
        for (size_t i = 0; by && i < f->n_tensors; i++) by[i] = &f->t[i];
        if (by) qsort(by, f->n_tensors, sizeof *by, cmp_offset);
        for (size_t i = 1; by && i < f->n_tensors && !rc; i++)
            if (by[i - 1]->offset + by[i - 1]->nbytes > by[i]->offset && by[i - 1]->nbytes && by[i]->nbytes)
                rc = llm_errf(err, "%s: tensors '%s' and '%s' overlap in the data section", path, by[i - 1]->name,
                              by[i]->name);
        free(by);
    }
    if (rc) {
        llm_gguf_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

const llm_gguf_kv *llm_gguf_get(const llm_gguf_file *f, const char *key)
{
    for (size_t i = 0; i < f->n_kv; i++)
        if (!strcmp(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const llm_gguf_tensor *llm_gguf_tensor_find(const llm_gguf_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

static int lookup(const llm_gguf_file *f, const char *key, int required, const llm_gguf_kv **kv, llm_err *err)
{
    *kv = llm_gguf_get(f, key);
    if (*kv) return 0;
    return required ? llm_errf(err, "%s: key '%s' is missing", f->path, key) : 1;
}

static int wrong_type(const llm_gguf_file *f, const llm_gguf_kv *kv, const char *want, llm_err *err)
{
    return llm_errf(err, "%s: key '%s' is %s, not %s", f->path, kv->key, llm_gguf_value_type_name(kv->type), want);
}

static int64_t scalar_int(uint32_t type, const unsigned char *p)
{
    switch (type) {
    case LLM_GGUF_U8: return p[0];
    case LLM_GGUF_I8: return (int8_t)p[0];
    case LLM_GGUF_U16: return (uint16_t)le(p, 2);
    case LLM_GGUF_I16: return (int16_t)le(p, 2);
    case LLM_GGUF_U32: return (uint32_t)le(p, 4);
    case LLM_GGUF_I32: return (int32_t)le(p, 4);
    case LLM_GGUF_BOOL: return p[0];
    default: return (int64_t)le(p, 8);
    }
}

static int is_int(uint32_t type)
{
    return type <= LLM_GGUF_I32 || type == LLM_GGUF_U64 || type == LLM_GGUF_I64;
}

int llm_gguf_get_uint(const llm_gguf_file *f, const char *key, int required, uint64_t *v, llm_err *err)
{
    const llm_gguf_kv *kv;
    int rc = lookup(f, key, required, &kv, err);
    if (rc) return rc;
    if (!is_int(kv->type)) return wrong_type(f, kv, "an integer", err);
    int64_t x = scalar_int(kv->type, kv->val);
    if (kv->type != LLM_GGUF_U64 && x < 0)
        return llm_errf(err, "%s: key '%s' is negative (%lld)", f->path, key, (long long)x);
    *v = kv->type == LLM_GGUF_U64 ? le(kv->val, 8) : (uint64_t)x;
    return 0;
}

int llm_gguf_get_float(const llm_gguf_file *f, const char *key, int required, double *v, llm_err *err)
{
    const llm_gguf_kv *kv;
    int rc = lookup(f, key, required, &kv, err);
    if (rc) return rc;
    if (kv->type == LLM_GGUF_F32) {
        uint32_t u = (uint32_t)le(kv->val, 4);
        float x;
        memcpy(&x, &u, 4);
        *v = x;
    } else if (kv->type == LLM_GGUF_F64) {
        uint64_t u = le(kv->val, 8);
        memcpy(v, &u, 8);
    } else {
        return wrong_type(f, kv, "FLOAT32 or FLOAT64", err);
    }
    return 0;
}

int llm_gguf_get_bool(const llm_gguf_file *f, const char *key, int required, int *v, llm_err *err)
{
    const llm_gguf_kv *kv;
    int rc = lookup(f, key, required, &kv, err);
    if (rc) return rc;
    if (kv->type != LLM_GGUF_BOOL) return wrong_type(f, kv, "BOOL", err);
    *v = kv->val[0];
    return 0;
}

int llm_gguf_get_string(const llm_gguf_file *f, const char *key, int required, const char **s, size_t *len,
                        llm_err *err)
{
    const llm_gguf_kv *kv;
    int rc = lookup(f, key, required, &kv, err);
    if (rc) return rc;
    if (kv->type != LLM_GGUF_STRING) return wrong_type(f, kv, "STRING", err);
    *s = (const char *)kv->val + 8;
    *len = (size_t)(kv->len - 8);
    return 0;
}

int llm_gguf_get_array(const llm_gguf_file *f, const char *key, int required, int elem_type, const llm_gguf_kv **out,
                       llm_err *err)
{
    const llm_gguf_kv *kv;
    int rc = lookup(f, key, required, &kv, err);
    if (rc) return rc;
    if (kv->type != LLM_GGUF_ARRAY) return wrong_type(f, kv, "ARRAY", err);
    if (elem_type >= 0 && kv->elem_type != (uint32_t)elem_type)
        return llm_errf(err, "%s: key '%s' is an array of %s, not of %s", f->path, key,
                        llm_gguf_value_type_name(kv->elem_type), llm_gguf_value_type_name((uint32_t)elem_type));
    *out = kv;
    return 0;
}

int64_t llm_gguf_array_int(const llm_gguf_kv *kv, uint64_t i)
{
    int sz = scalar_size(kv->elem_type);
    return scalar_int(kv->elem_type, kv->val + i * (uint64_t)sz);
}
