/* SIMD element conversions and float summary (AVX-512, AVX2 + F16C), each
 * compared to its _ref in t/unit/test_kernels.c. Tails go to the _ref code. */
#include "llmk.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f,avx512bw")))
#define AVX2 __attribute__((target("avx2,f16c,fma")))

static int use_avx512(void) { const llmk_cpu_features *f = llmk_cpu(); return f->avx512f && f->avx512bw; }
static int use_avx2(void) { return llmk_cpu()->avx2; }

/* ---- f16 -> f32 ---- */
AVX512 static size_t f16_to_f32_avx512(float *out, const uint16_t *in, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(in + i))));
    return i;
}

AVX2 static size_t f16_to_f32_avx2(float *out, const uint16_t *in, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + i))));
    return i;
}

void llmk_f16_to_f32(float *out, const uint16_t *in, size_t n)
{
    size_t done = use_avx512() ? f16_to_f32_avx512(out, in, n) : use_avx2() ? f16_to_f32_avx2(out, in, n) : 0;
    llmk_f16_to_f32_ref(out + done, in + done, n - done);
}

/* ---- f32 -> f16 ---- */
AVX512 static size_t f32_to_f16_avx512(uint16_t *out, const float *in, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(out + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return i;
}

AVX2 static size_t f32_to_f16_avx2(uint16_t *out, const float *in, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return i;
}

void llmk_f32_to_f16(uint16_t *out, const float *in, size_t n)
{
    size_t done = use_avx512() ? f32_to_f16_avx512(out, in, n) : use_avx2() ? f32_to_f16_avx2(out, in, n) : 0;
    llmk_f32_to_f16_ref(out + done, in + done, n - done);
}

/* ---- bf16 -> f32: a 16-bit shift ---- */
AVX512 static size_t bf16_to_f32_avx512(float *out, const uint16_t *in, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(in + i)));
        _mm512_storeu_si512(out + i, _mm512_slli_epi32(w, 16));
    }
    return i;
}

AVX2 static size_t bf16_to_f32_avx2(float *out, const uint16_t *in, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(in + i)));
        _mm256_storeu_si256((__m256i *)(out + i), _mm256_slli_epi32(w, 16));
    }
    return i;
}

void llmk_bf16_to_f32(float *out, const uint16_t *in, size_t n)
{
    size_t done = use_avx512() ? bf16_to_f32_avx512(out, in, n) : use_avx2() ? bf16_to_f32_avx2(out, in, n) : 0;
    llmk_bf16_to_f32_ref(out + done, in + done, n - done);
}

/* ---- f32 -> bf16, nearest even, NaN kept quiet. Integer arithmetic rather
 * than VCVTNEPS2BF16, which flushes subnormal inputs to zero. ---- */
AVX512 static size_t f32_to_bf16_avx512(uint16_t *out, const float *in, size_t n)
{
    const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1),
                  absmask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000),
                  quiet = _mm512_set1_epi32(0x40);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512(in + i);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
        __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, absmask), inf);
        __m512i r = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), quiet));
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtepi32_epi16(r));
    }
    return i;
}

void llmk_f32_to_bf16(uint16_t *out, const float *in, size_t n)
{
    size_t done = use_avx512() ? f32_to_bf16_avx512(out, in, n) : 0;
    llmk_f32_to_bf16_ref(out + done, in + done, n - done);
}

/* ---- summary ---- */
AVX512 static size_t stats_avx512(llmk_stats *s, const float *x, size_t n)
{
    const __m512i expmask = _mm512_set1_epi32(0x7f800000), manmask = _mm512_set1_epi32(0x007fffff);
    __m512 vmin = _mm512_set1_ps(INFINITY), vmax = _mm512_set1_ps(-INFINITY);
    __m512d sum = _mm512_setzero_pd(), sumsq = _mm512_setzero_pd();
    uint64_t count = 0, nan = 0, inf = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512(x + i);
        __mmask16 special = _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, expmask), expmask);
        __mmask16 isnan = special & _mm512_test_epi32_mask(u, manmask);
        __mmask16 fin = (__mmask16)~special;
        nan += (uint64_t)__builtin_popcount(isnan);
        inf += (uint64_t)__builtin_popcount(special & (__mmask16)~isnan);
        count += (uint64_t)__builtin_popcount(fin);
        __m512 v = _mm512_maskz_mov_ps(fin, _mm512_castsi512_ps(u));
        vmin = _mm512_mask_min_ps(vmin, fin, vmin, v);
        vmax = _mm512_mask_max_ps(vmax, fin, vmax, v);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        sum = _mm512_add_pd(sum, _mm512_add_pd(lo, hi));
        sumsq = _mm512_fmadd_pd(lo, lo, _mm512_fmadd_pd(hi, hi, sumsq));
    }
    s->count = count;
    s->nan = nan;
    s->inf = inf;
    s->min = _mm512_reduce_min_ps(vmin);
    s->max = _mm512_reduce_max_ps(vmax);
    s->sum = _mm512_reduce_add_pd(sum);
    s->sumsq = _mm512_reduce_add_pd(sumsq);
    return i;
}

void llmk_stats_f32(llmk_stats *s, const float *x, size_t n)
{
    size_t done = use_avx512() ? stats_avx512(s, x, n) : 0;
    if (!done) { llmk_stats_f32_ref(s, x, n); return; }
    llmk_stats tail;
    llmk_stats_f32_ref(&tail, x + done, n - done);
    s->count += tail.count;
    s->nan += tail.nan;
    s->inf += tail.inf;
    if (tail.count) {
        if (tail.min < s->min) s->min = tail.min;
        if (tail.max > s->max) s->max = tail.max;
    }
    s->sum += tail.sum;
    s->sumsq += tail.sumsq;
}
