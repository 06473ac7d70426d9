/* onnx_proto.h — ONNX messages built in memory and packed as protobuf: a
 * graph (nodes, inputs, outputs; initializers are streamed by onnx_file.h),
 * and the small messages a ModelProto written by hand is made of.
 *
 * Packing goes through the C that protoc-c makes at build time from
 * lib/onnx/onnx-subset.proto (build/onnx/), but no protobuf-c type appears
 * here: the files of lib/ include this header without the generated one
 * (t/fuzz/run compiles them with -Ilib alone); only lib/onnx/ sees it.
 *
 * A graph keeps copies of every string and array it is given, in an arena
 * freed with it. A failed allocation is remembered and reported by
 * onnx_graph_pack, so building needs no checks on the way. */
#ifndef LLMUX_ONNX_PROTO_H
#define LLMUX_ONNX_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* TensorProto.DataType values (ONNX's numbers). */
enum {
    ONNX_FLOAT = 1,
    ONNX_UINT8 = 2,
    ONNX_INT8 = 3,
    ONNX_INT32 = 6,
    ONNX_INT64 = 7,
    ONNX_BOOL = 9,
    ONNX_FLOAT16 = 10,
    ONNX_DOUBLE = 11,
    ONNX_BFLOAT16 = 16,
};

/* Bytes per element of a data type above, 0 for another. */
size_t onnx_dtype_size(int elem_type);

typedef struct onnx_graph onnx_graph;
typedef struct onnx_node onnx_node;

/* One dimension of a graph input's or output's shape: a fixed size, or
 * (param not NULL) a symbolic one, the same size wherever the name is. */
typedef struct {
    const char *param;
    int64_t size;
} onnx_dim;

onnx_graph *onnx_graph_new(const char *name);   /* NULL: out of memory */
void onnx_graph_free(onnx_graph *g);
void onnx_graph_doc(onnx_graph *g, const char *doc);
void onnx_graph_input(onnx_graph *g, const char *name, int elem_type, size_t ndim, const onnx_dim *dims);
void onnx_graph_output(onnx_graph *g, const char *name, int elem_type, size_t ndim, const onnx_dim *dims);

/* A node of the default domain, appended (nodes are kept in the order they
 * are added: add them in topological order). An input "" is an optional
 * input left out. Returns the node for its attributes (NULL after a failed
 * allocation: the attribute calls then do nothing). */
onnx_node *onnx_graph_node(onnx_graph *g, const char *op_type, const char *name, size_t nin, const char *const *in,
                           size_t nout, const char *const *out);
void onnx_node_int(onnx_graph *g, onnx_node *n, const char *attr, int64_t v);
void onnx_node_float(onnx_graph *g, onnx_node *n, const char *attr, float v);
void onnx_node_ints(onnx_graph *g, onnx_node *n, const char *attr, size_t k, const int64_t *v);
/* A TENSOR attribute (Constant's "value"): raw little-endian bytes. */
void onnx_node_tensor(onnx_graph *g, onnx_node *n, const char *attr, int elem_type, size_t ndim, const int64_t *dims,
                      const void *raw, size_t nbytes);
size_t onnx_graph_nodes(const onnx_graph *g);

/* The GraphProto packed (malloc'd into *out), without initializers: a
 * writer appends those as field 5 entries. */
int onnx_graph_pack(onnx_graph *g, uint8_t **out, size_t *len, llm_err *err);

/* A TensorProto without its bytes (malloc'd): dims, data_type, name; with
 * location (not NULL), data_location EXTERNAL and external_data "location",
 * "offset", "length". Inline, the caller appends raw_data (field 9). */
int onnx_tensor_header(const char *name, int elem_type, size_t ndim, const int64_t *dims, const char *location,
                       uint64_t offset, uint64_t length, uint8_t **out, size_t *len, llm_err *err);
/* An OperatorSetIdProto; a StringStringEntryProto (malloc'd). */
int onnx_opset_pack(const char *domain, int64_t version, uint8_t **out, size_t *len, llm_err *err);
int onnx_entry_pack(const char *key, const char *value, uint8_t **out, size_t *len, llm_err *err);

/* ---- protobuf's wire format, for messages written by hand ---- */
enum { ONNX_WIRE_VARINT = 0, ONNX_WIRE_LEN = 2 };
/* Encodes v as a varint into b (10 bytes at most); returns its length. */
size_t onnx_varint(uint8_t *b, uint64_t v);
size_t onnx_varint_len(uint64_t v);
/* A field's key: (field << 3) | wire type, as a varint. */
size_t onnx_key(uint8_t *b, unsigned field, unsigned wire);

#endif
