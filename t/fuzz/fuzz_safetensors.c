/* fuzz_safetensors.c — libFuzzer target for the safetensors reader.
 *
 * The input is a whole file image. It goes to llm_st_open_mem (the buffer
 * libFuzzer hands over is exactly `size` bytes on the heap, so ASan sees any
 * read past it). When the reader accepts the file, every promise the API
 * makes is checked by touching it: every data byte of every tensor, every
 * shape entry, the quantized logical shapes, llm_st_find on every name,
 * every metadata key and value; then llm_describe_safetensors with stats on,
 * rendered to text. A broken promise is __builtin_trap.
 *
 * Build and run: t/fuzz/run SECONDS. */
#include "describe.h"
#include "safetensors.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llm_err err;
    llm_st_file *f = NULL;
    err.msg[0] = 0;
    if (llm_st_open_mem(data, size, "fuzz.safetensors", &f, &err)) {
        /* a refusal: no file, and a one-line message that names the file */
        CHECK(f == NULL);
        CHECK(memchr(err.msg, 0, sizeof err.msg) != NULL);
        CHECK(strncmp(err.msg, "fuzz.safetensors", 16) == 0);
#ifndef FUZZ_LAX_MESSAGES   /* err.h promises one line; -DFUZZ_LAX_MESSAGES waives it */
        CHECK(strchr(err.msg, '\n') == NULL);
#endif
        return 0;
    }
    CHECK(f != NULL);
    uint64_t hlen = llm_st_header_len(f);
    CHECK(llm_st_file_size(f) == size);
    CHECK(hlen <= size - 8);
    const uint8_t *data_section = data + 8 + hlen;
    uint64_t data_size = size - 8 - hlen, expect = 0;
    unsigned acc = 0;

    size_t count = llm_st_count(f);
    CHECK(llm_st_at(f, count) == NULL);
    for (size_t i = 0; i < count; i++) {
        const llm_st_tensor *t = llm_st_at(f, i);
        CHECK(t != NULL && t->name != NULL);
        /* tensors tile the data section in order */
        CHECK(t->begin == expect && t->begin <= t->end && t->end <= data_size);
        expect = t->end;
        CHECK((const uint8_t *)t->data == data_section + t->begin);
        const uint8_t *p = t->data;
        for (uint64_t j = 0; j < t->end - t->begin; j++) acc += p[j];
        uint64_t n = 1;
        for (size_t d = 0; d < t->ndim; d++) { acc += (unsigned)t->shape[d]; n *= t->shape[d]; }
        CHECK(n == t->nelem);
        CHECK(t->nelem * llm_dtype_size(t->dtype) == t->end - t->begin);
        CHECK(llm_dtype_name(t->dtype) != NULL);
        if (t->quant) {
            CHECK(t->dtype == LLM_U8 && t->ndim == 1 && t->quant_shape != NULL);
            CHECK(t->quant_ndim >= 1 && t->quant_ndim <= LLM_QUANT_MAX_DIMS);
            for (size_t d = 0; d < t->quant_ndim; d++) acc += (unsigned)t->quant_shape[d];
            acc += (unsigned)strlen(t->quant->name);
        }
        acc += (unsigned)strlen(t->name);
        const llm_st_tensor *found = llm_st_find(f, t->name);
        CHECK(found == t);
    }
    CHECK(expect == data_size);
    CHECK(llm_st_find(f, "__metadata__") == NULL);

    size_t nmeta = llm_st_meta_count(f);
    CHECK(llm_st_meta_key(f, nmeta) == NULL);
    for (size_t i = 0; i < nmeta; i++) {
        const char *k = llm_st_meta_key(f, i), *v = llm_st_meta_value(f, i);
        CHECK(k != NULL && v != NULL);
        if (i) CHECK(strcmp(llm_st_meta_key(f, i - 1), k) < 0);
        acc += (unsigned)strlen(k) + (unsigned)strlen(v);
        CHECK(llm_st_meta(f, k) == v);
    }

    json_t *doc = llm_describe_safetensors(f, "fuzz.safetensors", 1);
    CHECK(doc != NULL);
    CHECK(json_array_size(json_object_get(doc, "tensors")) == count);
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    CHECK(text != NULL);
    acc += (unsigned)strlen(text);
    free(text);
    json_decref(doc);
    llm_st_close(f);
    sink = acc;
    return 0;
}
