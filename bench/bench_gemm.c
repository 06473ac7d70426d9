/* fp32 GEMM throughput on GPT-2 124M training shapes, against the fp32 FMA
 * peak of this machine measured in the same run (llmk_fma_burn on every
 * thread of the pool), so the ratio says how much of the hardware the
 * kernels use. rows = B*T = 1024 (B=4, T=256). For each Linear
 * (ic, oc) it times the forward (out = inp @ w^T + bias) and the two
 * backward products (dinp += dout @ w: rows x ic x oc; dw += dout^T @ inp:
 * oc x ic x rows), best of a few runs. One line per product, then the lowest
 * ratio. `bench_gemm 1` times one thread; LLMK_CPU=avx2 the AVX2 path. */
#include "clock.h"
#include "llmk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- peak: llmk_fma_burn (independent FMA chains in registers) on every
 * thread of the pool at once ---- */
#define PEAK_ITERS 5000000   /* ~20 ms */
#define MAX_THREADS 256

static double burn_flops[MAX_THREADS];
static float burn_sink[MAX_THREADS];

static void peak_task(void *ctx, size_t begin, size_t end)
{
    for (size_t t = begin; t < end && t < MAX_THREADS; t++) burn_flops[t] = llmk_fma_burn(PEAK_ITERS, &burn_sink[t]);
}

/* flops per second of all threads together in one short run */
static double peak_sample(int threads)
{
    double t = llm_seconds(), flops = 0;
    llmk_parallel_for((size_t)threads, 1, peak_task, NULL);
    t = llm_seconds() - t;
    for (int i = 0; i < threads && i < MAX_THREADS; i++) flops += burn_flops[i];
    return flops / t;
}

static float *rand_buf(size_t n)
{
    float *p = malloc(n * sizeof(float));
    if (!p) { fprintf(stderr, "bench_gemm: out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) p[i] = (float)((double)rand() / RAND_MAX - 0.5);
    return p;
}

enum { FWD, DINP, DW };

/* the product's M, N, K for a Linear (ic, oc) over `rows` rows */
static void dims(int which, size_t rows, size_t ic, size_t oc, size_t mnk[3])
{
    mnk[0] = which == DW ? oc : rows;
    mnk[1] = which == FWD ? oc : ic;
    mnk[2] = which == FWD ? ic : which == DINP ? oc : rows;
}

static void run(int which, float *out, float *inp, float *w, float *bias, float *dout, float *dinp, float *dw,
                size_t rows, size_t ic, size_t oc)
{
    if (which == FWD) llmk_linear_forward(out, inp, w, bias, rows, ic, oc);
    else if (which == DINP) llmk_sgemm(0, 0, rows, ic, oc, 1.0f, dout, oc, w, ic, 1.0f, dinp, ic);
    else llmk_sgemm(1, 0, oc, ic, rows, 1.0f, dout, oc, inp, ic, 1.0f, dw, ic);
}

/* Other work on the machine only ever slows a run down, so the best of
 * several runs estimates the quiet machine, for the GEMMs and for the peak
 * alike; peak samples are taken between the GEMM runs, and every ratio is
 * against the highest peak seen in the whole run. */
int main(int argc, char **argv)
{
    if (argc > 1) llmk_set_threads(atoi(argv[1]));
    int threads = llmk_threads();
    if (!strcmp(llmk_cpu_path(), "scalar")) { printf("# scalar path: no FMA peak to compare against\n"); return 0; }
    srand(1);
    const size_t rows = 1024;
    const size_t shapes[][2] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}, {768, 50257}};
    enum { NSHAPES = sizeof shapes / sizeof shapes[0] };
    const char *names[] = {"forward", "dinp", "dw"};
    double gflops[NSHAPES][3], peak = 0, low = 1e300;
    for (int r = 0; r < 3; r++) {
        double p = peak_sample(threads);
        if (p > peak) peak = p;
        if (p < low) low = p;
    }
    for (size_t s = 0; s < NSHAPES; s++) {
        size_t ic = shapes[s][0], oc = shapes[s][1];
        float *inp = rand_buf(rows * ic), *w = rand_buf(oc * ic), *bias = oc == 50257 ? NULL : rand_buf(oc);
        float *out = rand_buf(rows * oc), *dout = rand_buf(rows * oc), *dinp = rand_buf(rows * ic),
              *dw = rand_buf(oc * ic);
        for (int which = FWD; which <= DW; which++) {
            size_t mnk[3];
            dims(which, rows, ic, oc, mnk);
            double flops = 2.0 * (double)mnk[0] * mnk[1] * mnk[2], best = 1e9;
            int reps = flops > 2e10 ? 3 : 8;
            run(which, out, inp, w, bias, dout, dinp, dw, rows, ic, oc);   /* warm: pages, pack buffers */
            for (int r = 0; r < reps; r++) {
                double p = peak_sample(threads);
                if (p > peak) peak = p;
                if (p < low) low = p;
                double t = llm_seconds();
                run(which, out, inp, w, bias, dout, dinp, dw, rows, ic, oc);
                t = llm_seconds() - t;
                if (t < best) best = t;
            }
            gflops[s][which] = flops / best * 1e-9;
        }
        free(inp), free(w), free(bias), free(out), free(dout), free(dinp), free(dw);
    }
    printf("# fp32 GEMM, path %s, %d threads; measured FMA peak %.1f GFLOP/s (%.1f per thread)\n", llmk_cpu_path(),
           threads, peak * 1e-9, peak * 1e-9 / threads);
    if (low < 0.8 * peak)
        printf("# the machine was busy (peak samples %.0f..%.0f GFLOP/s): the ratios are low estimates\n", low * 1e-9,
               peak * 1e-9);
    printf("# %-8s %6s %6s %6s  %8s  %s\n", "product", "M", "N", "K", "GFLOP/s", "of peak");
    double worst = 1e9;
    for (size_t s = 0; s < NSHAPES; s++)
        for (int which = FWD; which <= DW; which++) {
            size_t mnk[3];
            dims(which, rows, shapes[s][0], shapes[s][1], mnk);
            double ratio = gflops[s][which] * 1e9 / peak;
            if (ratio < worst) worst = ratio;
            printf("%-9s %6zu %6zu %6zu  %8.1f  %.3f\n", names[which], mnk[0], mnk[1], mnk[2], gflops[s][which], ratio);
        }
    printf("min ratio to peak: %.3f\n", worst);
    return 0;
}
