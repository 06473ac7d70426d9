/* Element conversion throughput: the dispatched kernels against their scalar
 * _ref, on N elements (default 16M), best of 5. Prints one JSON line per
 * kernel; bench/run adds numpy's astype as the outside reference. */
#include "clock.h"
#include "llmk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void (*half_to_f32)(float *, const uint16_t *, size_t);
typedef void (*f32_to_half)(uint16_t *, const float *, size_t);

static double best_h2f(half_to_f32 fn, float *out, const uint16_t *in, size_t n)
{
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t = llm_seconds();
        fn(out, in, n);
        t = llm_seconds() - t;
        if (t < best) best = t;
    }
    return best;
}

static double best_f2h(f32_to_half fn, uint16_t *out, const float *in, size_t n)
{
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t = llm_seconds();
        fn(out, in, n);
        t = llm_seconds() - t;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : (size_t)16 << 20;
    float *f = malloc(n * 4);
    uint16_t *h = malloc(n * 2);
    if (!f || !h) return 1;
    srand(1);
    for (size_t i = 0; i < n; i++) {
        f[i] = (float)rand() / RAND_MAX * 200.0f - 100.0f;
        h[i] = (uint16_t)(rand() & 0x7bff);   /* finite f16 and bf16 values */
    }
    struct { const char *name; double fast, ref; } rows[4] = {
        {"f16_to_f32", best_h2f(llmk_f16_to_f32, f, h, n), best_h2f(llmk_f16_to_f32_ref, f, h, n)},
        {"bf16_to_f32", best_h2f(llmk_bf16_to_f32, f, h, n), best_h2f(llmk_bf16_to_f32_ref, f, h, n)},
        {"f32_to_f16", best_f2h(llmk_f32_to_f16, h, f, n), best_f2h(llmk_f32_to_f16_ref, h, f, n)},
        {"f32_to_bf16", best_f2h(llmk_f32_to_bf16, h, f, n), best_f2h(llmk_f32_to_bf16_ref, h, f, n)},
    };
    for (int i = 0; i < 4; i++)
        printf("{\"kernel\":\"%s\",\"path\":\"%s\",\"elements\":%zu,\"ns_per_element\":%.4f,"
               "\"ref_ns_per_element\":%.4f,\"speedup_vs_ref\":%.2f}\n",
               rows[i].name, llmk_cpu_path(), n, rows[i].fast / (double)n * 1e9, rows[i].ref / (double)n * 1e9,
               rows[i].ref / rows[i].fast);
    free(f);
    free(h);
    return 0;
}
