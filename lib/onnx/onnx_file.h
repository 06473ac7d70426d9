/* onnx_file.h — an ONNX model file written with its initializers streamed.
 *
 * protobuf-c packs a message whole, in memory: a ModelProto holding a
 * model's weights would be the model a second time. So the ModelProto is
 * written here field by field in protobuf's wire format: the small fields
 * (ir_version, producer, doc_string, opset_import, metadata_props) packed by
 * onnx_proto.h, then the graph as one length-delimited field whose length is
 * known beforehand: the packed GraphProto without initializers, followed by
 * each initializer as a GraphProto field 5 entry (repeated fields may come
 * in any order), each a TensorProto header (dims, data_type, name) and its
 * raw_data, the bytes written as the caller fills them, one tensor at a
 * time.
 *
 * Protobuf messages are limited to 2 GiB (what ONNX's and onnxruntime's
 * parsers accept), so a model whose file would pass INT32_MAX bytes, or one
 * written with external set, keeps its tensors in a second file, PATH.data
 * beside PATH (ONNX's external data: each TensorProto says data_location
 * EXTERNAL, location "NAME.data", offset and length; offsets aligned to 4096
 * bytes so that runtimes can map them). Both files are written as temp files
 * and renamed into place at the end (the data first); a failure leaves
 * neither. */
#ifndef LLMUX_ONNX_FILE_H
#define LLMUX_ONNX_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct {
    const char *name;
    int elem_type;       /* ONNX_FLOAT, ... (onnx_proto.h) */
    size_t ndim;         /* 1 or 2 */
    int64_t dims[2];
    const void *data;    /* the little-endian bytes, or NULL: the model's fill gives them */
} onnx_init;

/* Fills out with initializer i's bytes (product of dims times the element size). */
typedef int (*onnx_fill_fn)(void *ctx, size_t i, void *out, llm_err *err);

typedef struct {
    int64_t ir_version, opset_version;   /* the default domain's operator set */
    const char *producer_name, *producer_version, *doc_string;
    const char *const *meta_key, *const *meta_value;   /* metadata_props (n_meta) */
    size_t n_meta;
    const uint8_t *graph;                /* a GraphProto without initializers (onnx_graph_pack) */
    size_t graph_len;
    const onnx_init *init;               /* (n_init) */
    size_t n_init;
    onnx_fill_fn fill;
    void *ctx;
    int external;                        /* 1: tensors in PATH.data whatever the size */
} onnx_model;

/* Writes m to path (and PATH.data when the tensors go there). *external_out
 * (may be NULL) says whether they did. */
int onnx_model_write(const onnx_model *m, const char *path, int *external_out, llm_err *err);

#endif
