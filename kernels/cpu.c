/* Which SIMD path this processor takes; read once. */
#include "llmk.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static llmk_cpu_features features;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void detect(void)
{
    __builtin_cpu_init();
    features.avx2 = __builtin_cpu_supports("avx2");
    features.fma = __builtin_cpu_supports("fma");
    features.f16c = features.avx2;   /* every AVX2 processor has F16C */
    features.avx512f = __builtin_cpu_supports("avx512f");
    features.avx512bw = __builtin_cpu_supports("avx512bw");
    features.avx512vnni = __builtin_cpu_supports("avx512vnni");
    features.avx512bf16 = __builtin_cpu_supports("avx512bf16");
    /* LLMK_CPU=avx2 or =scalar restricts the paths taken, so tests and
     * benchmarks can exercise each one on a machine that has them all. */
    const char *force = getenv("LLMK_CPU");
    if (force && (!strcmp(force, "avx2") || !strcmp(force, "scalar")))
        features.avx512f = features.avx512bw = features.avx512vnni = features.avx512bf16 = 0;
    if (force && !strcmp(force, "scalar")) features.avx2 = features.fma = features.f16c = 0;
}

const llmk_cpu_features *llmk_cpu(void)
{
    pthread_once(&once, detect);
    return &features;
}

const char *llmk_cpu_path(void)
{
    const llmk_cpu_features *f = llmk_cpu();
    if (f->avx512f && f->avx512bw) return "avx512";
    if (f->avx2) return "avx2";
    return "scalar";
}
