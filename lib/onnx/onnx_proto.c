/* ONNX messages built and packed through protobuf-c: see onnx_proto.h. */
#include "onnx_proto.h"

#include "onnx-subset.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the arena: every string and array a graph holds ---- */

typedef struct chunk {
    struct chunk *next;
    size_t used, size;
    max_align_t data[];
} chunk;

struct onnx_node {
    Onnx__NodeProto p;
    size_t cap_attr;
};

struct onnx_graph {
    Onnx__GraphProto p;
    size_t cap_node, cap_in, cap_out;
    chunk *chunks;
    int failed;
};

static void *take(onnx_graph *g, size_t n)
{
    if (g->failed) return NULL;
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    chunk *c = g->chunks;
    if (!c || c->size - c->used < n) {
        size_t size = n > 65536 ? n : 65536;
        c = malloc(sizeof *c + size);
        if (!c) {
            g->failed = 1;
            return NULL;
        }
        c->next = g->chunks;
        c->used = 0;
        c->size = size;
        g->chunks = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

static char *dup(onnx_graph *g, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = take(g, n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Makes room for one more element of an array of pointers held in the
 * arena (doubling; the old array is left in the arena). */
static int grow(onnx_graph *g, void ***arr, size_t n, size_t *cap)
{
    if (n < *cap) return 0;
    size_t nc = *cap ? 2 * *cap : 8;
    void **na = take(g, nc * sizeof *na);
    if (!na) return -1;
    if (n) memcpy(na, *arr, n * sizeof *na);
    *arr = na;
    *cap = nc;
    return 0;
}

size_t onnx_dtype_size(int elem_type)
{
    switch (elem_type) {
    case ONNX_FLOAT: case ONNX_INT32: return 4;
    case ONNX_UINT8: case ONNX_INT8: case ONNX_BOOL: return 1;
    case ONNX_INT64: case ONNX_DOUBLE: return 8;
    case ONNX_FLOAT16: case ONNX_BFLOAT16: return 2;
    default: return 0;
    }
}

onnx_graph *onnx_graph_new(const char *name)
{
    onnx_graph *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    Onnx__GraphProto init = ONNX__GRAPH_PROTO__INIT;
    g->p = init;
    g->p.name = dup(g, name);
    if (g->failed) {
        onnx_graph_free(g);
        return NULL;
    }
    return g;
}

void onnx_graph_free(onnx_graph *g)
{
    if (!g) return;
    for (chunk *c = g->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(g);
}

void onnx_graph_doc(onnx_graph *g, const char *doc) { g->p.doc_string = dup(g, doc); }

static Onnx__ValueInfoProto *value_info(onnx_graph *g, const char *name, int elem_type, size_t ndim,
                                        const onnx_dim *dims)
{
    Onnx__ValueInfoProto *v = take(g, sizeof *v);
    Onnx__TypeProto *t = take(g, sizeof *t);
    Onnx__TypeProto__Tensor *tt = take(g, sizeof *tt);
    Onnx__TensorShapeProto *sh = take(g, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **d = take(g, (ndim + 1) * sizeof *d);
    if (!v || !t || !tt || !sh || !d) return NULL;
    Onnx__ValueInfoProto vi = ONNX__VALUE_INFO_PROTO__INIT;
    Onnx__TypeProto ti = ONNX__TYPE_PROTO__INIT;
    Onnx__TypeProto__Tensor tti = ONNX__TYPE_PROTO__TENSOR__INIT;
    Onnx__TensorShapeProto shi = ONNX__TENSOR_SHAPE_PROTO__INIT;
    *v = vi, *t = ti, *tt = tti, *sh = shi;
    for (size_t i = 0; i < ndim; i++) {
        Onnx__TensorShapeProto__Dimension di = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
        if (!(d[i] = take(g, sizeof *d[i]))) return NULL;
        *d[i] = di;
        if (dims[i].param) {
            d[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d[i]->dim_param = dup(g, dims[i].param);
        } else {
            d[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d[i]->dim_value = dims[i].size;
        }
    }
    sh->n_dim = ndim;
    sh->dim = d;
    tt->has_elem_type = 1;
    tt->elem_type = elem_type;
    tt->shape = sh;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    t->tensor_type = tt;
    v->name = dup(g, name);
    v->type = t;
    return g->failed ? NULL : v;
}

void onnx_graph_input(onnx_graph *g, const char *name, int elem_type, size_t ndim, const onnx_dim *dims)
{
    Onnx__ValueInfoProto *v = value_info(g, name, elem_type, ndim, dims);
    if (v && !grow(g, (void ***)&g->p.input, g->p.n_input, &g->cap_in)) g->p.input[g->p.n_input++] = v;
}

void onnx_graph_output(onnx_graph *g, const char *name, int elem_type, size_t ndim, const onnx_dim *dims)
{
    Onnx__ValueInfoProto *v = value_info(g, name, elem_type, ndim, dims);
    if (v && !grow(g, (void ***)&g->p.output, g->p.n_output, &g->cap_out)) g->p.output[g->p.n_output++] = v;
}

static char **strings(onnx_graph *g, size_t n, const char *const *s)
{
    char **a = take(g, (n + 1) * sizeof *a);
    for (size_t i = 0; a && i < n; i++) a[i] = dup(g, s[i]);
    return g->failed ? NULL : a;
}

onnx_node *onnx_graph_node(onnx_graph *g, const char *op_type, const char *name, size_t nin, const char *const *in,
                           size_t nout, const char *const *out)
{
    onnx_node *n = take(g, sizeof *n);
    if (!n) return NULL;
    Onnx__NodeProto ni = ONNX__NODE_PROTO__INIT;
    n->p = ni;
    n->p.op_type = dup(g, op_type);
    n->p.name = dup(g, name);
    n->p.input = strings(g, nin, in);
    n->p.n_input = nin;
    n->p.output = strings(g, nout, out);
    n->p.n_output = nout;
    if (g->failed || grow(g, (void ***)&g->p.node, g->p.n_node, &g->cap_node)) return NULL;
    g->p.node[g->p.n_node++] = &n->p;
    return n;
}

size_t onnx_graph_nodes(const onnx_graph *g) { return g->p.n_node; }

static Onnx__AttributeProto *attr(onnx_graph *g, onnx_node *n, const char *name, Onnx__AttributeProto__AttributeType type)
{
    if (!n) return NULL;
    Onnx__AttributeProto *a = take(g, sizeof *a);
    if (!a || grow(g, (void ***)&n->p.attribute, n->p.n_attribute, &n->cap_attr)) return NULL;
    Onnx__AttributeProto ai = ONNX__ATTRIBUTE_PROTO__INIT;
    *a = ai;
    a->name = dup(g, name);
    a->has_type = 1;
    a->type = type;
    n->p.attribute[n->p.n_attribute++] = a;
    return a;
}

void onnx_node_int(onnx_graph *g, onnx_node *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a) a->has_i = 1, a->i = v;
}

void onnx_node_float(onnx_graph *g, onnx_node *n, const char *name, float v)
{
    Onnx__AttributeProto *a = attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a) a->has_f = 1, a->f = v;
}

void onnx_node_ints(onnx_graph *g, onnx_node *n, const char *name, size_t k, const int64_t *v)
{
    Onnx__AttributeProto *a = attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *c = a ? take(g, (k + 1) * sizeof *c) : NULL;
    if (!c) return;
    memcpy(c, v, k * sizeof *c);
    a->ints = c;
    a->n_ints = k;
}

void onnx_node_tensor(onnx_graph *g, onnx_node *n, const char *name, int elem_type, size_t ndim, const int64_t *dims,
                      const void *raw, size_t nbytes)
{
    Onnx__AttributeProto *a = attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    Onnx__TensorProto *t = a ? take(g, sizeof *t) : NULL;
    int64_t *d = t ? take(g, (ndim + 1) * sizeof *d) : NULL;
    uint8_t *b = d ? take(g, nbytes + 1) : NULL;
    if (!b) return;
    Onnx__TensorProto ti = ONNX__TENSOR_PROTO__INIT;
    *t = ti;
    memcpy(d, dims, ndim * sizeof *d);
    memcpy(b, raw, nbytes);
    t->n_dims = ndim;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = elem_type;
    t->has_raw_data = 1;
    t->raw_data.data = b;
    t->raw_data.len = nbytes;
    a->t = t;
}

static int pack(const ProtobufCMessage *m, uint8_t **out, size_t *len, llm_err *err)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    if (!b) return llm_errf(err, "out of memory (%zu bytes of ONNX protobuf)", n);
    if (protobuf_c_message_pack(m, b) != n) {
        free(b);
        return llm_errf(err, "internal: protobuf-c packed a different size than it measured");
    }
    *out = b;
    *len = n;
    return 0;
}

int onnx_graph_pack(onnx_graph *g, uint8_t **out, size_t *len, llm_err *err)
{
    if (g->failed) return llm_errf(err, "out of memory building the ONNX graph");
    return pack(&g->p.base, out, len, err);
}

int onnx_tensor_header(const char *name, int elem_type, size_t ndim, const int64_t *dims, const char *location,
                       uint64_t offset, uint64_t length, uint8_t **out, size_t *len, llm_err *err)
{
    Onnx__TensorProto t = ONNX__TENSOR_PROTO__INIT;
    int64_t d[8];
    if (ndim > 8) return llm_errf(err, "internal: a tensor of %zu dimensions", ndim);
    memcpy(d, dims, ndim * sizeof *d);
    t.n_dims = ndim;
    t.dims = d;
    t.has_data_type = 1;
    t.data_type = elem_type;
    t.name = (char *)name;
    char off[24], lenb[24];
    Onnx__StringStringEntryProto e[3] = {ONNX__STRING_STRING_ENTRY_PROTO__INIT, ONNX__STRING_STRING_ENTRY_PROTO__INIT,
                                         ONNX__STRING_STRING_ENTRY_PROTO__INIT};
    Onnx__StringStringEntryProto *ep[3] = {&e[0], &e[1], &e[2]};
    if (location) {
        snprintf(off, sizeof off, "%llu", (unsigned long long)offset);
        snprintf(lenb, sizeof lenb, "%llu", (unsigned long long)length);
        e[0].key = "location", e[0].value = (char *)location;
        e[1].key = "offset", e[1].value = off;
        e[2].key = "length", e[2].value = lenb;
        t.n_external_data = 3;
        t.external_data = ep;
        t.has_data_location = 1;
        t.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    }
    return pack(&t.base, out, len, err);
}

int onnx_opset_pack(const char *domain, int64_t version, uint8_t **out, size_t *len, llm_err *err)
{
    Onnx__OperatorSetIdProto o = ONNX__OPERATOR_SET_ID_PROTO__INIT;
    o.domain = (char *)domain;
    o.has_version = 1;
    o.version = version;
    return pack(&o.base, out, len, err);
}

int onnx_entry_pack(const char *key, const char *value, uint8_t **out, size_t *len, llm_err *err)
{
    Onnx__StringStringEntryProto e = ONNX__STRING_STRING_ENTRY_PROTO__INIT;
    e.key = (char *)key;
    e.value = (char *)value;
    return pack(&e.base, out, len, err);
}

size_t onnx_varint(uint8_t *b, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        b[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b[n++] = (uint8_t)v;
    return n;
}

size_t onnx_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}

size_t onnx_key(uint8_t *b, unsigned field, unsigned wire) { return onnx_varint(b, (uint64_t)field << 3 | wire); }
