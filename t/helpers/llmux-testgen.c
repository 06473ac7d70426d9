/* llmux-testgen: writes known files with our writers, for tests and the demo.
 *
 *   llmux-testgen safetensors OUT      one tensor of every dtype, metadata, a q8_0 blob
 *   llmux-testgen stream OUT [WIDTH [RECORDS]]   a doc stream ("-" = stdout)
 *   llmux-testgen copy IN OUT          read IN with our reader, write OUT with our writer
 *
 * Tensor k (in dtype order, named "t_<DTYPE>", shape [3, 5]) holds the bytes
 * (31*j + 17*k + 7) & 0xff for j = 0..; BOOL holds (j + k) & 1. The q8_0 blob
 * "q_weight" has logical shape [2, 64] and bytes (13*j + 1) & 0xff.
 * Stream record i (type "doc", fields id, tokens, mask) has i % 7 + 1 tokens,
 * token j being (i * 1000 + j * 37) % (WIDTH == 2 ? 65536 : 200000), and a
 * mask byte (i + j) & 1 per token. */
#include "cli.h"
#include "fileio.h"
#include "safetensors.h"
#include "stream.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int gen_safetensors(const char *out)
{
    llm_err err;
    llm_st_writer *w = llm_st_writer_new();
    static unsigned char data[LLM_DTYPE_COUNT][15 * 8];
    uint64_t shape[2] = {3, 5};
    for (int k = 0; k < LLM_DTYPE_COUNT; k++) {
        size_t bytes = 15 * llm_dtype_size((llm_dtype)k);
        for (size_t j = 0; j < bytes; j++)
            data[k][j] = k == LLM_BOOL ? (unsigned char)((j + (size_t)k) & 1) : (unsigned char)((31 * j + 17 * (size_t)k + 7) & 0xff);
        char name[32];
        snprintf(name, sizeof name, "t_%s", llm_dtype_name((llm_dtype)k));
        if (llm_st_writer_add(w, name, (llm_dtype)k, 2, shape, data[k], bytes, &err)) llm_die_err(&err);
    }
    static unsigned char q[2 * 2 * 34];
    for (size_t j = 0; j < sizeof q; j++) q[j] = (unsigned char)((13 * j + 1) & 0xff);
    uint64_t qshape[2] = {2, 64};
    if (llm_st_writer_add_quant(w, "q_weight", llm_quant_find("q8_0"), 2, qshape, q, sizeof q, &err)) llm_die_err(&err);
    uint64_t scalar_shape[1];
    static const float scalar = 1.5f;
    if (llm_st_writer_add(w, "scalar", LLM_F32, 0, scalar_shape, &scalar, 4, &err)) llm_die_err(&err);
    if (llm_st_writer_add(w, "empty", LLM_F32, 1, (uint64_t[]){0}, "", 0, &err)) llm_die_err(&err);
    if (llm_st_writer_meta(w, "format", "llmux", &err) || llm_st_writer_meta(w, "note", "written by llmux-testgen: é\n\"q\"", &err))
        llm_die_err(&err);
    if (llm_st_writer_write(w, out, &err)) llm_die_err(&err);
    llm_st_writer_free(w);
    return 0;
}

static int gen_stream(const char *out, int width, long records)
{
    llm_err err;
    int fd = strcmp(out, "-") ? open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : STDOUT_FILENO;
    if (fd < 0) llm_die("%s: cannot create", out);
    llm_stream_writer *w;
    if (llm_sw_open(&w, fd, out, &err)) llm_die_err(&err);
    llm_sw_header(w, "docs", width, 2);
    llm_sw_kv_str(w, "tokenizer", "testgen");
    llm_sw_kv_u64(w, "vocab_size", width == 2 ? 65536 : 200000);
    uint32_t ids[8];
    unsigned char mask[8];
    for (long i = 0; i < records; i++) {
        size_t n = (size_t)(i % 7 + 1);
        for (size_t j = 0; j < n; j++) {
            ids[j] = (uint32_t)(((uint64_t)i * 1000 + j * 37) % (width == 2 ? 65536u : 200000u));
            mask[j] = (unsigned char)((i + (long)j) & 1);
        }
        llm_sw_record(w, "doc", 3);
        llm_sw_kv_u64(w, "id", (uint64_t)i);
        llm_sw_kv_tokens(w, "tokens", ids, n);
        llm_sw_kv_bin(w, "mask", mask, n);
    }
    if (llm_sw_finish(w, &err)) llm_die_err(&err);
    llm_sw_free(w);
    if (fd != STDOUT_FILENO && close(fd) != 0) llm_die("%s: close failed", out);
    return 0;
}

static int copy(const char *in, const char *out)
{
    llm_err err;
    llm_st_file *f;
    if (llm_st_open(in, &f, &err)) llm_die_err(&err);
    llm_st_writer *w = llm_st_writer_new();
    if (llm_st_has_metadata(f)) llm_st_writer_always_metadata(w);
    for (size_t i = 0; i < llm_st_meta_count(f); i++)
        if (strcmp(llm_st_meta_key(f, i), "quantization") &&
            llm_st_writer_meta(w, llm_st_meta_key(f, i), llm_st_meta_value(f, i), &err))
            llm_die_err(&err);
    for (size_t i = 0; i < llm_st_count(f); i++) {
        const llm_st_tensor *t = llm_st_at(f, i);
        int rc = t->quant ? llm_st_writer_add_quant(w, t->name, t->quant, t->quant_ndim, t->quant_shape, t->data,
                                                    t->end - t->begin, &err)
                          : llm_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->end - t->begin, &err);
        if (rc) llm_die_err(&err);
    }
    if (llm_st_writer_write(w, out, &err)) llm_die_err(&err);
    llm_st_writer_free(w);
    llm_st_close(f);
    return 0;
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    if (argc >= 3 && !strcmp(argv[1], "safetensors")) return gen_safetensors(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "stream"))
        return gen_stream(argv[2], argc > 3 ? atoi(argv[3]) : 4, argc > 4 ? atol(argv[4]) : 10);
    if (argc == 4 && !strcmp(argv[1], "copy")) return copy(argv[2], argv[3]);
    llm_usage_error("usage: llmux-testgen safetensors OUT | stream OUT [WIDTH [RECORDS]] | copy IN OUT");
}
