/* llmux-quant: the quantized-block kernels on files, for the conformance
 * tests (t/conformance/test_quant_gguf.py).
 *
 *   llmux-quant TYPE IN.f32 OUT.bin       quantize (llmk_quantize_ref)
 *   llmux-quant -d TYPE IN.bin OUT.f32    dequantize (llmk_dequantize)
 *
 * TYPE is q8_0, q4_0, q4_k or nf4. .f32 files are raw little-endian float32;
 * .bin files are the blocks back to back, as in a GGUF tensor (nf4: the
 * whole tensor, its tail of scales included, llm-tensors(5)). A count of
 * floats (or bytes) that is not a whole number of blocks is an error. */
#include "cli.h"
#include "llmk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) llm_die("%s: cannot open", path);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) llm_die("%s: out of memory", path);
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        buf = realloc(buf, cap *= 2);
    }
    if (ferror(f)) llm_die("%s: read error", path);
    fclose(f);
    *n = len;
    return buf;
}

static void write_all(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) llm_die("%s: cannot create", path);
    if (fwrite(p, 1, n, f) != n || fclose(f) != 0) llm_die("%s: write error", path);
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    int dequant = argc > 1 && !strcmp(argv[1], "-d");
    if (argc != 4 + dequant) llm_usage_error("usage: llmux-quant [-d] TYPE IN OUT");
    const char *name = argv[1 + dequant], *in = argv[2 + dequant], *out = argv[3 + dequant];
    int t = 0;
    while (t < LLMK_QTYPE_COUNT && strcmp(llmk_qtype_traits((llmk_qtype)t)->name, name)) t++;
    if (t == LLMK_QTYPE_COUNT) llm_usage_error("unknown type '%s' (q8_0, q4_0, q4_k, nf4)", name);
    const llmk_qtraits *q = llmk_qtype_traits((llmk_qtype)t);
    size_t n;
    void *data = read_all(in, &n);
    if (dequant) {
        /* the weights whose tensor takes n bytes (nf4's tail makes it less than n / block bytes blocks) */
        size_t elems = n / q->block_bytes * q->block_elems;
        while (elems && llmk_qbytes((llmk_qtype)t, elems) > n) elems -= q->block_elems;
        if (llmk_qbytes((llmk_qtype)t, elems) != n)
            llm_die("%s: %zu bytes is not a whole number of %s blocks", in, n, q->name);
        float *f = malloc(elems * sizeof(float) + 1);
        if (!f) llm_die("out of memory");
        llmk_dequantize((llmk_qtype)t, f, data, elems);
        write_all(out, f, elems * sizeof(float));
        free(f);
    } else {
        if (n % (4 * q->block_elems))
            llm_die("%s: %zu bytes is not a whole number of %s blocks of floats", in, n, q->name);
        size_t elems = n / 4, bytes = llmk_qbytes((llmk_qtype)t, elems);
        float *f = malloc(n + 1);   /* an aligned copy of the floats */
        void *b = malloc(bytes + 1);
        if (!f || !b) llm_die("out of memory");
        memcpy(f, data, n);
        llmk_quantize_ref((llmk_qtype)t, b, f, elems);
        write_all(out, b, bytes);
        free(f);
        free(b);
    }
    free(data);
    return 0;
}
