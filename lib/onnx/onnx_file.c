/* An ONNX model file with streamed initializers: see onnx_file.h. */
#include "onnx_file.h"

#include "fileio.h"
#include "onnx_proto.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ModelProto's and GraphProto's field numbers (lib/onnx/onnx-subset.proto). */
enum {
    MODEL_IR_VERSION = 1, MODEL_PRODUCER_NAME = 2, MODEL_PRODUCER_VERSION = 3, MODEL_DOC_STRING = 6,
    MODEL_GRAPH = 7, MODEL_OPSET_IMPORT = 8, MODEL_METADATA_PROPS = 14,
    GRAPH_INITIALIZER = 5, TENSOR_RAW_DATA = 9,
};

#define EXTERNAL_ALIGN 4096

/* Small writes gathered, so that a field's key and length are not a syscall each. */
typedef struct {
    int fd;
    const char *name;
    size_t n;
    uint8_t b[1 << 16];
} out_buf;

static int flush(out_buf *o, llm_err *err)
{
    int rc = o->n ? llm_write_all(o->fd, o->b, o->n, o->name, err) : 0;
    o->n = 0;
    return rc;
}

static int put(out_buf *o, const void *p, size_t n, llm_err *err)
{
    if (n > sizeof o->b - o->n) {
        if (flush(o, err)) return -1;
        if (n > sizeof o->b) return llm_write_all(o->fd, p, n, o->name, err);
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
    return 0;
}

static int put_key_len(out_buf *o, unsigned field, uint64_t len, llm_err *err)
{
    uint8_t b[24];
    size_t n = onnx_key(b, field, ONNX_WIRE_LEN);
    n += onnx_varint(b + n, len);
    return put(o, b, n, err);
}

static uint64_t field_size(unsigned field, uint64_t len)
{
    return onnx_varint_len((uint64_t)field << 3) + onnx_varint_len(len) + len;
}

typedef struct {
    uint8_t *hdr;        /* the TensorProto without raw_data */
    size_t hdr_len;
    uint64_t nbytes, offset;
} init_out;

static void free_headers(init_out *io, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(io[i].hdr);
        io[i].hdr = NULL;
    }
}

/* Each initializer's header, inline or pointing into location; returns the
 * bytes the graph field takes. */
static int headers(const onnx_model *m, init_out *io, const char *location, uint64_t *graph_field, llm_err *err)
{
    uint64_t glen = m->graph_len, pos = 0;
    for (size_t i = 0; i < m->n_init; i++) {
        const onnx_init *t = &m->init[i];
        if (location) {
            pos = (pos + EXTERNAL_ALIGN - 1) / EXTERNAL_ALIGN * EXTERNAL_ALIGN;
            io[i].offset = pos;
            pos += io[i].nbytes;
        }
        if (onnx_tensor_header(t->name, t->elem_type, t->ndim, t->dims, location, io[i].offset, io[i].nbytes,
                               &io[i].hdr, &io[i].hdr_len, err))
            return -1;
        uint64_t tp = io[i].hdr_len + (location ? 0 : field_size(TENSOR_RAW_DATA, io[i].nbytes));
        glen += field_size(GRAPH_INITIALIZER, tp);
    }
    *graph_field = glen;
    return 0;
}

/* The fields before the graph, packed: returns their size, or -1. */
static int top_fields(const onnx_model *m, uint8_t **out, size_t *len, llm_err *err)
{
    size_t cap = 256 + (m->producer_name ? strlen(m->producer_name) : 0) +
                 (m->producer_version ? strlen(m->producer_version) : 0) + (m->doc_string ? strlen(m->doc_string) : 0);
    uint8_t *opset = NULL;
    size_t opset_len = 0;
    if (onnx_opset_pack("", m->opset_version, &opset, &opset_len, err)) return -1;
    cap += opset_len;
    uint8_t **meta = calloc(m->n_meta + 1, sizeof *meta);
    size_t *meta_len = calloc(m->n_meta + 1, sizeof *meta_len);
    int rc = !meta || !meta_len ? llm_errf(err, "out of memory") : 0;
    for (size_t i = 0; i < m->n_meta && !rc; i++) {
        rc = onnx_entry_pack(m->meta_key[i], m->meta_value[i], &meta[i], &meta_len[i], err);
        cap += 16 + meta_len[i];
    }
    uint8_t *b = rc ? NULL : malloc(cap);
    if (!rc && !b) rc = llm_errf(err, "out of memory");
    size_t n = 0;
#define BYTES(field, p, l) (n += onnx_key(b + n, field, ONNX_WIRE_LEN), n += onnx_varint(b + n, l), memcpy(b + n, p, l), n += l)
    if (!rc) {
        n += onnx_key(b + n, MODEL_IR_VERSION, ONNX_WIRE_VARINT);
        n += onnx_varint(b + n, (uint64_t)m->ir_version);
        if (m->producer_name) BYTES(MODEL_PRODUCER_NAME, m->producer_name, strlen(m->producer_name));
        if (m->producer_version) BYTES(MODEL_PRODUCER_VERSION, m->producer_version, strlen(m->producer_version));
        if (m->doc_string) BYTES(MODEL_DOC_STRING, m->doc_string, strlen(m->doc_string));
        BYTES(MODEL_OPSET_IMPORT, opset, opset_len);
        for (size_t i = 0; i < m->n_meta; i++) BYTES(MODEL_METADATA_PROPS, meta[i], meta_len[i]);
    }
#undef BYTES
    for (size_t i = 0; meta && i < m->n_meta; i++) free(meta[i]);
    free(meta);
    free(meta_len);
    free(opset);
    if (rc) return -1;
    *out = b;
    *len = n;
    return 0;
}

static int write_zeros(out_buf *o, uint64_t n, llm_err *err)
{
    static const uint8_t zeros[EXTERNAL_ALIGN];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (put(o, zeros, k, err)) return -1;
        n -= k;
    }
    return 0;
}

int onnx_model_write(const onnx_model *m, const char *path, int *external_out, llm_err *err)
{
    init_out *io = calloc(m->n_init + 1, sizeof *io);
    char *data_path = malloc(strlen(path) + 8);
    out_buf *mo = malloc(sizeof *mo), *dout = malloc(sizeof *dout);
    uint8_t *top = NULL;
    size_t top_len = 0;
    void *buf = NULL;
    int rc = !io || !data_path || !mo || !dout ? llm_errf(err, "%s: out of memory", path) : 0;
    uint64_t most = 0;
    for (size_t i = 0; i < m->n_init && !rc; i++) {
        const onnx_init *t = &m->init[i];
        uint64_t n = onnx_dtype_size(t->elem_type);
        if (!n || t->ndim < 1 || t->ndim > 2)
            rc = llm_errf(err, "%s: internal: initializer '%s' has no byte size", path, t->name);
        for (size_t d = 0; d < t->ndim && !rc; d++) n *= (uint64_t)t->dims[d];
        io[i].nbytes = n;
        if (!t->data && n > most) most = n;
    }
    if (!rc && most && !(buf = malloc(most))) rc = llm_errf(err, "%s: out of memory (%llu bytes)", path, (unsigned long long)most);
    if (!rc) rc = top_fields(m, &top, &top_len, err);
    /* inline when the file stays under protobuf's 2 GiB, else (or when asked) external */
    const char *base = NULL;
    char *location = NULL;
    int external = m->external;
    uint64_t graph_field = 0;
    if (!rc) {
        strcpy(data_path, path);
        strcat(data_path, ".data");
        base = strrchr(data_path, '/');
        base = base ? base + 1 : data_path;
        if (!external) {
            rc = headers(m, io, NULL, &graph_field, err);
            if (!rc && top_len + field_size(MODEL_GRAPH, graph_field) > (uint64_t)INT32_MAX) {
                free_headers(io, m->n_init);
                external = 1;
            }
        }
        if (!rc && external) {
            location = strdup(base);
            if (!location) rc = llm_errf(err, "%s: out of memory", path);
            else rc = headers(m, io, location, &graph_field, err);
        }
        if (rc) llm_err_prefix(err, "%s", path);
    }
    llm_atomic ma = {0}, da = {0};
    ma.fd = da.fd = -1;
    int m_open = 0, d_open = 0;
    if (!rc && !(rc = llm_atomic_open(&ma, path, err))) m_open = 1;
    if (!rc && external && !(rc = llm_atomic_open(&da, data_path, err))) d_open = 1;
    if (!rc) {
        mo->fd = ma.fd, mo->name = path, mo->n = 0;
        if (d_open) dout->fd = da.fd, dout->name = data_path, dout->n = 0;
        rc = put(mo, top, top_len, err);
        if (!rc) rc = put_key_len(mo, MODEL_GRAPH, graph_field, err);
        if (!rc) rc = put(mo, m->graph, m->graph_len, err);
    }
    uint64_t data_pos = 0;
    for (size_t i = 0; i < m->n_init && !rc; i++) {
        const onnx_init *t = &m->init[i];
        uint64_t tp = io[i].hdr_len + (external ? 0 : field_size(TENSOR_RAW_DATA, io[i].nbytes));
        rc = put_key_len(mo, GRAPH_INITIALIZER, tp, err);
        if (!rc) rc = put(mo, io[i].hdr, io[i].hdr_len, err);
        if (!rc && !external) rc = put_key_len(mo, TENSOR_RAW_DATA, io[i].nbytes, err);
        const void *bytes = t->data;
        if (!rc && !bytes) {
            rc = m->fill(m->ctx, i, buf, err);
            if (rc) llm_err_prefix(err, "%s: tensor '%s'", path, t->name);
            bytes = buf;
        }
        if (rc) break;
        if (external) {
            rc = write_zeros(dout, io[i].offset - data_pos, err);
            if (!rc) rc = put(dout, bytes, io[i].nbytes, err);
            data_pos = io[i].offset + io[i].nbytes;
        } else {
            rc = put(mo, bytes, io[i].nbytes, err);
        }
    }
    if (!rc) rc = flush(mo, err);
    if (!rc && d_open) rc = flush(dout, err);
    /* the data first: a model file never names data that is not there */
    if (!rc && d_open) {
        d_open = 0;
        rc = llm_atomic_commit(&da, err);
    }
    if (!rc) {
        m_open = 0;
        rc = llm_atomic_commit(&ma, err);
        if (rc && external) unlink(data_path);
    }
    if (m_open) llm_atomic_abort(&ma);
    if (d_open) llm_atomic_abort(&da);
    if (!rc && external_out) *external_out = external;
    if (io) free_headers(io, m->n_init);
    free(io);
    free(location);
    free(data_path);
    free(mo);
    free(dout);
    free(top);
    free(buf);
    return rc;
}
