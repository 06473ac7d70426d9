/* The fp32 multiply-add peak of this processor, for MFU: independent FMA
 * chains that keep both FMA ports busy (latency 4 x 2 ports needs 8 chains;
 * 16 zmm or 12 ymm leave no doubt). Timing is the caller's. */
#include "llmk.h"

#include <immintrin.h>

__attribute__((target("avx512f"))) static float burn_avx512(uint64_t iters)
{
    __m512 a[16], m = _mm512_set1_ps(0.999999f), x = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 16; i++) a[i] = _mm512_set1_ps((float)i);
    for (uint64_t n = 0; n < iters; n++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) a[i] = _mm512_fmadd_ps(a[i], m, x);
    }
    __m512 s = a[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float burn_avx2(uint64_t iters)
{
    __m256 a[12], m = _mm256_set1_ps(0.999999f), x = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
    for (uint64_t n = 0; n < iters; n++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], m, x);
    }
    __m256 s = a[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
    float v[8];
    _mm256_storeu_ps(v, s);
    return v[0] + v[7];
}

static float burn_scalar(uint64_t iters)
{
    float a[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (uint64_t n = 0; n < iters; n++)
        for (int i = 0; i < 8; i++) a[i] = a[i] * 0.999999f + 1e-7f;
    return a[0] + a[7];
}

double llmk_fma_burn(uint64_t iters, float *sink)
{
    const llmk_cpu_features *f = llmk_cpu();
    if (f->avx512f) { *sink = burn_avx512(iters); return (double)iters * 16 * 16 * 2; }
    if (f->avx2 && f->fma) { *sink = burn_avx2(iters); return (double)iters * 12 * 8 * 2; }
    *sink = burn_scalar(iters);
    return (double)iters * 8 * 2;
}
