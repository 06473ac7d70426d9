/* describe.h — files and records as JSON (jansson) for people and jq. */
#ifndef LLMUX_DESCRIBE_H
#define LLMUX_DESCRIBE_H

#include <jansson.h>

#include "safetensors.h"
#include "stream.h"

/* {"file","format":"safetensors","file_bytes","header_bytes","metadata":{..},
 *  "tensor_count","parameter_count","tensors":[{"name","dtype","shape",
 *  "data_offsets","bytes"[,"quantization"][,"stats"]}]} in data order.
 * With stats, F16, BF16 and F32 tensors get
 * {"min","max","mean","rms","nan","inf"} over their finite values. */
json_t *llm_describe_safetensors(const llm_st_file *f, const char *path, int with_stats);

/* A stream record (or the header) as a JSON object. Token fields (see
 * llm_sr_is_token_field) and other bin values become arrays of integers;
 * strings that are not UTF-8 get U+FFFD for each bad byte; NaN and
 * infinities become the strings "nan", "inf", "-inf". */
json_t *llm_describe_record(const llm_stream_reader *r, const msgpack_object *rec);

#endif
