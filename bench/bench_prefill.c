/* Prefill throughput: a prompt of 512 tokens through lib/infer in one
 * llm_infer_step (n = 512, the last token's logits), for a Llama-shaped
 * model with random weights (the llama-1b preset: the shape of Llama 3.2 1B,
 * context cut to the prompt) in F32, Q8_0 and Q4_0, against two fp32
 * ceilings measured in the same run: the FMA peak (llm_fp32_peak_gflops,
 * what llm-train's MFU is against) and the fp32 GEMM on the model's largest
 * Linear at the prompt's rows (llmk_linear_forward, 512 x dim -> ffn_dim),
 * the practical ceiling of a pass made of such products (quantized weights
 * pass it a little: fewer bytes to read and pack).
 *
 * FLOPs of the prompt: 2 per weight of every Linear of every layer per token
 * (q, k, v, o, gate, up, down), 2 per weight of the output layer once (the
 * last token's logits), and causal attention's scores and weighted sum, 4
 * head_dim per (query, key) pair and head: 2 q_dim n (n + 1) per layer.
 * Norms, RoPE, SwiGLU and softmax are left out (well under 1%).
 *
 * Next to each format's prefill: its Linear layers alone, the seven products
 * of one layer at the prompt's rows (llmk_linear_forward, or llmk_qlinear on
 * the same random weights quantized), best of 3, to tell the matrix products
 * from the rest of the pass (attention over the cache, mostly).
 *
 *   bench_prefill [PRESET [TOKENS]]   (default llama-1b 512)
 *
 * The three model files (8.6 GB for llama-1b: its embeddings stay F32) are
 * written to a temporary directory (TMPDIR) and removed at the end. Each
 * format runs the prompt 3 times (a fresh KV cache each time) and reports
 * the fastest: the machine is shared, and other work only ever slows a run
 * down. About 3 minutes on 2 cores, half of it making the models. */
#include "clock.h"
#include "infer.h"
#include "llmk.h"
#include "model.h"
#include "model_file.h"
#include "peak.h"
#include "quantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *formats[3] = {"f32", "q8_0", "q4_0"};
static char dir[4096], paths[3][4200];

/* at exit: the model files and their directory */
static void cleanup(void)
{
    for (int f = 0; f < 3; f++)
        if (paths[f][0]) unlink(paths[f]);
    if (dir[0]) rmdir(dir);
}

static void die(const char *what, const llm_err *err)
{
    fprintf(stderr, "bench_prefill: %s: %s\n", what, err->msg);
    exit(1);
}

/* the prompt's floating-point operations (see the top) */
static double prompt_flops(const llm_config *c, size_t n)
{
    double C = (double)c->dim, F = (double)c->ffn_dim, QD = (double)c->n_heads * llm_config_head_dim(c);
    double linear = (double)llm_config_qkv_dim(c) * C + QD * C + 3 * F * C;
    double attention = 2 * QD * (double)n * (double)(n + 1);
    return (double)c->n_layers * (2 * linear * (double)n + attention) + 2 * (double)c->vocab_size * C;
}

/* GFLOP/s of the fp32 Linear (rows, ic) -> oc, best of 3 */
static double gemm_gflops(size_t rows, size_t ic, size_t oc)
{
    float *x = malloc(rows * ic * sizeof(float)), *w = malloc(oc * ic * sizeof(float));
    float *out = malloc(rows * oc * sizeof(float));
    if (!x || !w || !out) { fprintf(stderr, "bench_prefill: out of memory\n"); exit(1); }
    for (size_t i = 0; i < rows * ic; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (size_t i = 0; i < oc * ic; i++) w[i] = ((float)rand() / RAND_MAX - 0.5f) * 0.04f;
    double best = 1e30;
    for (int r = 0; r < 4; r++) {   /* the first warms the pages and pack buffers */
        double t = llm_seconds();
        llmk_linear_forward(out, x, w, NULL, rows, ic, oc);
        t = llm_seconds() - t;
        if (r && t < best) best = t;
    }
    free(x), free(w), free(out);
    return 2.0 * (double)rows * ic * oc / best * 1e-9;
}

/* GFLOP/s of one layer's seven Linear products at n rows, in format f
 * (0: F32, else q8_0, q4_0), each the best of 3 */
static double layer_gflops(const llm_config *c, size_t n, int f)
{
    size_t C = c->dim, QD = c->n_heads * llm_config_head_dim(c), KVD = c->n_kv_heads * llm_config_head_dim(c);
    size_t F = c->ffn_dim, shapes[7][2] = {{C, QD}, {C, KVD}, {C, KVD}, {QD, C}, {C, F}, {C, F}, {F, C}};
    size_t big = F * C > QD * C ? F * C : QD * C, wide = F > QD ? F : QD;
    wide = wide > C ? wide : C;
    llmk_qtype t = f == 1 ? LLMK_Q8_0 : LLMK_Q4_0;
    float *x = malloc(n * wide * sizeof(float)), *out = malloc(n * wide * sizeof(float));
    float *w = malloc(big * sizeof(float));
    void *q = malloc(llmk_qbytes(t, big));
    if (!x || !w || !out || !q) { fprintf(stderr, "bench_prefill: out of memory\n"); exit(1); }
    for (size_t i = 0; i < n * wide; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    double flops = 0, secs = 0;
    for (int s = 0; s < 7; s++) {
        size_t ic = shapes[s][0], oc = shapes[s][1];
        for (size_t i = 0; i < ic * oc; i++) w[i] = ((float)rand() / RAND_MAX - 0.5f) * 0.04f;
        if (f) llmk_quantize_ref(t, q, w, ic * oc);
        double best = 1e30;
        for (int r = 0; r < 4; r++) {   /* the first warms the pages and pack buffers */
            double t0 = llm_seconds();
            if (f) llmk_qlinear(t, out, x, q, n, ic, oc);
            else llmk_linear_forward(out, x, w, NULL, n, ic, oc);
            t0 = llm_seconds() - t0;
            if (r && t0 < best) best = t0;
        }
        flops += 2.0 * (double)n * ic * oc;
        secs += best;
    }
    free(x), free(w), free(out), free(q);
    return flops / secs * 1e-9;
}

int main(int argc, char **argv)
{
    const char *preset = argc > 1 ? argv[1] : "llama-1b";
    size_t n = argc > 2 ? (size_t)atol(argv[2]) : 512;
    llm_err err;
    llm_config c;
    if (llm_config_preset(&c, preset, &err)) die("preset", &err);
    if (c.arch != LLM_ARCH_LLAMA || n == 0) {
        fprintf(stderr, "bench_prefill: wants a llama preset and a positive number of tokens\n");
        return 1;
    }
    c.ctx_len = n;

    const char *tmp = getenv("TMPDIR");
    char d[sizeof dir];
    snprintf(d, sizeof d, "%s/llmux-bench-prefill.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(d)) { perror("bench_prefill: mkdtemp"); return 1; }
    memcpy(dir, d, sizeof dir);
    atexit(cleanup);
    for (int f = 0; f < 3; f++) snprintf(paths[f], sizeof paths[f], "%s/%s.safetensors", dir, formats[f]);

    llm_model_file mf;
    if (llm_model_file_new(&mf, &c, &err)) die("model", &err);
    llm_params_init(mf.w, &c, mf.params, mf.nparams, 1);
    if (llm_model_file_write(&mf, paths[0], &err)) die("writing the model", &err);
    llm_model_file_free(&mf);
    for (int f = 1; f < 3; f++)
        if (llm_quantize_file(paths[0], paths[f], formats[f], NULL, 0, NULL, NULL, &err)) die("quantizing", &err);

    int threads = llmk_threads();
    double peak = llm_fp32_peak_gflops(threads);
    double gemm = gemm_gflops(n, c.dim, c.ffn_dim);
    double flops = prompt_flops(&c, n);
    uint32_t *tokens = malloc(n * sizeof *tokens);
    float *logits = malloc(c.vocab_size * sizeof *logits);
    if (!tokens || !logits) { fprintf(stderr, "bench_prefill: out of memory\n"); return 1; }
    srand(1);
    for (size_t i = 0; i < n; i++) tokens[i] = (uint32_t)((unsigned)rand() % c.vocab_size);

    double tps[3], layer[3];
    for (int f = 0; f < 3; f++) {
        layer[f] = layer_gflops(&c, n, f);
        llm_infer *m;
        if (llm_infer_open(&m, paths[f], &err)) die("opening the model", &err);
        double best = 1e30;
        for (int r = 0; r < 3; r++) {
            llm_infer_reset(m);
            double t = llm_seconds();
            if (llm_infer_step(m, tokens, n, logits, 0, &err)) die("prefill", &err);
            t = llm_seconds() - t;
            if (t < best) best = t;
        }
        llm_infer_close(m);
        tps[f] = (double)n / best;
    }

    printf("# prefill: a %zu-token prompt, %s shape (random weights), %d threads, best of 3; fp32 ceilings in the "
           "same run: FMA peak %.1f GFLOP/s, GEMM %zu x %zu -> %zu %.1f GFLOP/s; %.1f GFLOP per prompt\n",
           n, preset, threads, peak, n, c.dim, c.ffn_dim, gemm, flops * 1e-9);
    for (int f = 0; f < 3; f++) {
        double g = tps[f] * flops / (double)n * 1e-9;
        printf("prefill %s: %.1f tokens/s, %.1f GFLOP/s: %.2f of the FMA peak, %.2f of the GEMM; a layer's Linear "
               "products alone: %.1f GFLOP/s, %.2f of the GEMM\n",
               formats[f], tps[f], g, g / peak, g / gemm, layer[f], layer[f] / gemm);
    }
    free(tokens), free(logits);
    return 0;
}
