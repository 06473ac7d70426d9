#include "describe.h"
#include "llmk.h"
#include "strbuf.h"
#include "unicode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static json_t *u64_json(uint64_t v)
{
    return v <= INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v);
}

static json_t *shape_json(size_t ndim, const uint64_t *shape)
{
    json_t *a = json_array();
    for (size_t i = 0; i < ndim; i++) json_array_append_new(a, u64_json(shape[i]));
    return a;
}

static json_t *float_json(double v)
{
    if (isnan(v)) return json_string("nan");
    if (isinf(v)) return json_string(v > 0 ? "inf" : "-inf");
    return json_real(v);
}

/* Converts a float tensor to f32 in chunks and summarises it. Returns 0 when
 * the dtype has no summary. */
static int tensor_stats(const llm_st_tensor *t, llmk_stats *s)
{
    enum { CHUNK = 1 << 16 };
    if (t->quant || (t->dtype != LLM_F32 && t->dtype != LLM_F16 && t->dtype != LLM_BF16))
        return 0;
    float *buf = malloc(CHUNK * sizeof *buf);
    if (!buf) return 0;
    memset(s, 0, sizeof *s);
    s->min = INFINITY;
    s->max = -INFINITY;
    const unsigned char *p = t->data;
    size_t esize = llm_dtype_size(t->dtype);
    for (uint64_t done = 0; done < t->nelem;) {
        size_t n = t->nelem - done < CHUNK ? (size_t)(t->nelem - done) : CHUNK;
        const void *src = p + done * esize;
        if (t->dtype == LLM_F32) memcpy(buf, src, n * 4);
        else if (t->dtype == LLM_F16) llmk_f16_to_f32(buf, src, n);
        else llmk_bf16_to_f32(buf, src, n);
        llmk_stats part;
        llmk_stats_f32(&part, buf, n);
        s->count += part.count;
        s->nan += part.nan;
        s->inf += part.inf;
        if (part.count && part.min < s->min) s->min = part.min;
        if (part.count && part.max > s->max) s->max = part.max;
        s->sum += part.sum;
        s->sumsq += part.sumsq;
        done += n;
    }
    free(buf);
    return 1;
}

json_t *llm_describe_safetensors(const llm_st_file *f, const char *path, int with_stats)
{
    json_t *doc = json_object(), *meta = json_object(), *tensors = json_array();
    json_object_set_new(doc, "file", json_string(path));
    json_object_set_new(doc, "format", json_string("safetensors"));
    json_object_set_new(doc, "file_bytes", u64_json(llm_st_file_size(f)));
    json_object_set_new(doc, "header_bytes", u64_json(llm_st_header_len(f)));
    for (size_t i = 0; i < llm_st_meta_count(f); i++)
        json_object_set_new(meta, llm_st_meta_key(f, i), json_string(llm_st_meta_value(f, i)));
    json_object_set_new(doc, "metadata", meta);
    uint64_t params = 0;
    for (size_t i = 0; i < llm_st_count(f); i++) {
        const llm_st_tensor *t = llm_st_at(f, i);
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(t->name));
        json_object_set_new(o, "dtype", json_string(llm_dtype_name(t->dtype)));
        json_object_set_new(o, "shape", shape_json(t->ndim, t->shape));
        json_t *offs = json_array();
        json_array_append_new(offs, u64_json(t->begin));
        json_array_append_new(offs, u64_json(t->end));
        json_object_set_new(o, "data_offsets", offs);
        json_object_set_new(o, "bytes", u64_json(t->end - t->begin));
        uint64_t elems = t->nelem;
        if (t->quant) {
            json_t *q = json_object();
            json_object_set_new(q, "type", json_string(t->quant->name));
            json_object_set_new(q, "shape", shape_json(t->quant_ndim, t->quant_shape));
            json_object_set_new(o, "quantization", q);
            elems = 1;
            for (size_t d = 0; d < t->quant_ndim; d++) elems *= t->quant_shape[d];
        }
        params += elems;
        llmk_stats s;
        if (with_stats && tensor_stats(t, &s)) {
            json_t *st = json_object();
            json_object_set_new(st, "min", s.count ? float_json(s.min) : json_null());
            json_object_set_new(st, "max", s.count ? float_json(s.max) : json_null());
            json_object_set_new(st, "mean", s.count ? float_json(s.sum / (double)s.count) : json_null());
            json_object_set_new(st, "rms", s.count ? float_json(sqrt(s.sumsq / (double)s.count)) : json_null());
            json_object_set_new(st, "nan", u64_json(s.nan));
            json_object_set_new(st, "inf", u64_json(s.inf));
            json_object_set_new(o, "stats", st);
        }
        json_array_append_new(tensors, o);
    }
    json_object_set_new(doc, "tensor_count", u64_json(llm_st_count(f)));
    json_object_set_new(doc, "parameter_count", u64_json(params));
    json_object_set_new(doc, "tensors", tensors);
    return doc;
}

/* s as a JSON string: U+FFFD for each byte that is not valid UTF-8, and
 * NUL (which jansson strings cannot hold) as the two characters \0. */
static json_t *string_json(const char *s, size_t n)
{
    llm_strbuf b = {0};
    for (size_t i = 0; i < n;) {
        size_t valid = llm_utf8_valid_prefix(s + i, n - i);
        for (size_t k = 0; k < valid; k++) {
            if (s[i + k]) llm_sb_add(&b, s + i + k, 1);
            else llm_sb_add(&b, "\\0", 2);
        }
        i += valid;
        if (i < n) { llm_sb_add(&b, "\xef\xbf\xbd", 3); i++; }
    }
    json_t *j = json_stringn(b.data ? b.data : "", b.len);
    llm_sb_free(&b);
    return j;
}

static json_t *bin_json(const unsigned char *p, size_t n, int width)
{
    json_t *a = json_array();
    if (width > 1 && n % (size_t)width == 0) {
        for (size_t i = 0; i < n; i += (size_t)width) {
            uint32_t v = (uint32_t)p[i] | (uint32_t)p[i + 1] << 8;
            if (width == 4) v |= (uint32_t)p[i + 2] << 16 | (uint32_t)p[i + 3] << 24;
            json_array_append_new(a, json_integer(v));
        }
    } else {
        for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(p[i]));
    }
    return a;
}

/* in_key: o is (inside) a map key being rendered */
static json_t *object_json(const llm_stream_reader *r, const msgpack_object *o, int token_width, int in_key)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return u64_json(o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return float_json(o->via.f64);
    case MSGPACK_OBJECT_STR: return string_json(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return bin_json((const unsigned char *)o->via.bin.ptr, o->via.bin.size, token_width);
    case MSGPACK_OBJECT_EXT: {
        json_t *e = json_object();
        json_object_set_new(e, "ext", json_integer(o->via.ext.type));
        json_object_set_new(e, "data", bin_json((const unsigned char *)o->via.ext.ptr, o->via.ext.size, 1));
        return e;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, object_json(r, &o->via.array.ptr[i], 1, in_key));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
            /* a key that is a map or array shows as its JSON text; one inside
             * such a key only as a placeholder, or nesting would escape the
             * quotes of every level again: exponential text */
            int container = k->type == MSGPACK_OBJECT_MAP || k->type == MSGPACK_OBJECT_ARRAY;
            json_t *key = k->type == MSGPACK_OBJECT_STR ? string_json(k->via.str.ptr, k->via.str.size)
                          : container && in_key    ? json_string(k->type == MSGPACK_OBJECT_MAP ? "<map>" : "<array>")
                                                   : object_json(r, k, 1, 1);
            char *text = json_is_string(key) ? strdup(json_string_value(key)) : json_dumps(key, JSON_ENCODE_ANY | JSON_COMPACT);
            json_decref(key);
            if (!text) continue;
            int width = 1;
            if (r && k->type == MSGPACK_OBJECT_STR && v->type == MSGPACK_OBJECT_BIN &&
                llm_sr_is_token_field(r, k->via.str.ptr, k->via.str.size))
                width = llm_sr_token_width(r);
            json_object_set_new(m, text, object_json(NULL, v, width, in_key));
            free(text);
        }
        return m;
    }
    }
    return json_null();
}

json_t *llm_describe_record(const llm_stream_reader *r, const msgpack_object *rec)
{
    return object_json(r, rec, 1, 0);
}
