/* Layer kernel throughput: each fast kernel in GB/s of the bytes it must
 * move (every input read once, every output written once), against a memcpy
 * moving as many bytes (half read, half written) measured in the same run
 * and split over the same thread pool, and against the scalar _ref. Shapes
 * are GPT-2 small / Llama-like training sizes (rows = B*T = 4096 unless
 * given as the first argument). Best of 5 (the _ref: best of 2). Prints one
 * JSON line per kernel; runs in well under 20 s on two cores. */
#include "clock.h"
#include "llmk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static float *buf(size_t n, float scale)
{
    float *x = malloc(n * sizeof *x);
    if (!x) { fprintf(stderr, "bench_layers: out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) x[i] = ((float)rand() / RAND_MAX * 2 - 1) * scale;
    return x;
}

/* ---- the kernels as closures over one set of buffers ---- */
static size_t rows, C, V, F, H, D, N;
static float *x, *y, *z, *w, *b, *mean, *rstd, *big, *big2, *p, *g, *m, *v, *wte;
static uint32_t *ids, *targets;
static llmk_adamw_args adam = {.lr = 3e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f,
                               .grad_scale = 1.0f, .step = 10};
static int use_ref;

static void k_embed_fwd(void) { (use_ref ? llmk_embed_forward_ref : llmk_embed_forward)(y, ids, wte, w, rows, 1024, C); }
static void k_embed_bwd(void) { (use_ref ? llmk_embed_backward_ref : llmk_embed_backward)(wte, z, x, ids, rows, 1024, C); }
static void k_ln_fwd(void) { (use_ref ? llmk_layernorm_forward_ref : llmk_layernorm_forward)(y, mean, rstd, x, w, b, rows, C, 1e-5f); }
static void k_ln_bwd(void)
{
    (use_ref ? llmk_layernorm_backward_ref : llmk_layernorm_backward)(z, p, g, y, x, w, mean, rstd, rows, C);
}
static void k_rms_fwd(void) { (use_ref ? llmk_rmsnorm_forward_ref : llmk_rmsnorm_forward)(y, rstd, x, w, rows, C, 1e-6f); }
static void k_rms_bwd(void) { (use_ref ? llmk_rmsnorm_backward_ref : llmk_rmsnorm_backward)(z, p, y, x, w, rstd, rows, C); }
static void k_gelu_fwd(void) { (use_ref ? llmk_gelu_forward_ref : llmk_gelu_forward)(big2, big, rows * 4 * C); }
static void k_gelu_bwd(void) { (use_ref ? llmk_gelu_backward_ref : llmk_gelu_backward)(big2, big, big, rows * 4 * C); }
static void k_swiglu_fwd(void) { (use_ref ? llmk_swiglu_forward_ref : llmk_swiglu_forward)(big2, big, rows, F); }
static void k_swiglu_bwd(void) { (use_ref ? llmk_swiglu_backward_ref : llmk_swiglu_backward)(big2, big, big, rows, F); }
static void k_rope_fwd(void) { (use_ref ? llmk_rope_forward_ref : llmk_rope_forward)(x, rows, 1024, H, D, H * D, 10000.0f); }
/* rows / 16 rows of a 50257 vocabulary (the logits of B*T/16 positions at a
 * time, as a chunked loss would). The gradient overwrites the logits: later
 * runs see other (finite) values, which costs the same. */
static void k_xent(void) { (use_ref ? llmk_softmax_xent_ref : llmk_softmax_xent)(mean, big, targets, rstd, rows / 16, V); }
static void k_adamw(void) { (use_ref ? llmk_adamw_ref : llmk_adamw)(p, g, m, v, N, &adam); }
static double sink;
static void k_sumsq(void) { sink += (use_ref ? llmk_sumsq_ref : llmk_sumsq)(big, rows * 4 * C); }

/* memcpy of `bytes` of traffic (bytes/2 copied), split over the pool */
static size_t copy_bytes;
static void copy_range(void *ctx, size_t begin, size_t end)
{
    (void)ctx;
    memcpy((char *)big2 + begin, (char *)big + begin, end - begin);
}
static void k_copy(void) { llmk_parallel_for(copy_bytes / 2, 1 << 16, copy_range, NULL); }

static double best(void (*fn)(void), int reps)
{
    double t_best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t = llm_seconds();
        fn();
        t = llm_seconds() - t;
        if (t < t_best) t_best = t;
    }
    return t_best;
}

int main(int argc, char **argv)
{
    rows = argc > 1 ? strtoull(argv[1], NULL, 10) : 4096;
    if (rows < 16) rows = 16;
    C = 768, V = 50257, F = 2048, H = 12, D = 64, N = (size_t)4 << 20;
    srand(1);
    size_t nbig = rows * 4 * C > rows / 16 * V ? rows * 4 * C : rows / 16 * V;
    x = buf(rows * C, 2), y = buf(rows * C, 1), z = buf((rows > 1024 ? rows : 1024) * C, 1), w = buf(1024 * C, 1), b = buf(C, 1);
    mean = buf(rows, 1), rstd = buf(rows, 1), big = buf(nbig, 3), big2 = buf(nbig, 1);
    p = buf(N, 1), g = buf(N, 0.01f), m = buf(N, 0.001f), v = buf(N, 0), wte = buf((size_t)50257 * C, 0.1f);
    for (size_t i = 0; i < N; i++) v[i] = fabsf(v[i]) * 1e-4f + 1e-6f;
    ids = malloc(rows * sizeof *ids), targets = malloc(rows * sizeof *targets);
    for (size_t r = 0; r < rows; r++) ids[r] = (uint32_t)rand() % 50257, targets[r] = (uint32_t)rand() % (uint32_t)V;
    for (size_t r = 0; r < rows; r++) rstd[r] = 1.0f / (float)(rows / 16);
    llmk_layernorm_forward(y, mean, rstd, x, w, b, rows, C, 1e-5f);

    const double fl = sizeof(float);
    struct { const char *name; void (*fn)(void); double bytes; } ks[] = {
        {"embed_forward", k_embed_fwd, fl * rows * C * 3},          /* wte row, wpe row, out */
        {"embed_backward", k_embed_bwd, fl * rows * C * 5},         /* dout; dwte, dwpe read+write */
        {"layernorm_forward", k_ln_fwd, fl * rows * C * 2},
        {"layernorm_backward", k_ln_bwd, fl * rows * C * 4},       /* dout, inp, dinp read+write */
        {"rmsnorm_forward", k_rms_fwd, fl * rows * C * 2},
        {"rmsnorm_backward", k_rms_bwd, fl * rows * C * 4},
        {"gelu_forward", k_gelu_fwd, fl * rows * 4 * C * 2},
        {"gelu_backward", k_gelu_bwd, fl * rows * 4 * C * 4},
        {"swiglu_forward", k_swiglu_fwd, fl * rows * F * 3},
        {"swiglu_backward", k_swiglu_bwd, fl * rows * F * 7},
        {"rope_forward", k_rope_fwd, fl * rows * H * D * 2},
        {"softmax_xent", k_xent, fl * (rows / 16) * V * 2},       /* logits read, gradient written */
        {"adamw", k_adamw, fl * N * 7},                           /* p, g, m, v read; p, m, v written */
        {"sumsq", k_sumsq, fl * rows * 4 * C},
    };
    for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
        use_ref = 0;
        ks[i].fn();   /* warm: first touch, pool start */
        double t = best(ks[i].fn, 5);
        use_ref = 1;
        double tr = best(ks[i].fn, 2);
        use_ref = 0;
        copy_bytes = (size_t)ks[i].bytes;
        if (copy_bytes / 2 > nbig * sizeof(float)) copy_bytes = nbig * sizeof(float) * 2;
        double tc = best(k_copy, 5) * ks[i].bytes / (double)copy_bytes;
        printf("{\"kernel\":\"%s\",\"path\":\"%s\",\"threads\":%d,\"rows\":%zu,\"mbytes\":%.1f,\"ms\":%.3f,"
               "\"gb_per_s\":%.2f,\"memcpy_gb_per_s\":%.2f,\"vs_memcpy\":%.2f,\"ref_ms\":%.3f,\"speedup_vs_ref\":%.1f}\n",
               ks[i].name, llmk_cpu_path(), llmk_threads(), rows, ks[i].bytes / 1e6, t * 1e3, ks[i].bytes / t / 1e9,
               ks[i].bytes / tc / 1e9, tc / t, tr * 1e3, tr / t);
        fflush(stdout);
    }
    return sink == 12345.0;   /* keeps sumsq's result alive */
}
