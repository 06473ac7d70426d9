/* attn_simd.h — SIMD helpers of the attention kernels (attention_cpu.c,
 * attention_cached.c): e^x on vectors for the softmaxes, and 16 x 16 and
 * 8 x 8 transposes. Internal to kernels/: one copy, compiled into each
 * caller with its target attributes. */
#ifndef LLMUX_ATTN_SIMD_H
#define LLMUX_ATTN_SIMD_H

#include <immintrin.h>

#define ATTN_EXP_INLINE512 static inline __attribute__((always_inline, target("avx512f,avx512bw,fma")))
#define ATTN_EXP_INLINE2 static inline __attribute__((always_inline, target("avx2,fma")))
/* out of line in each including file (static) */
#define ATTN_SIMD512 static __attribute__((unused, target("avx512f,avx512bw,fma")))
#define ATTN_SIMD2 static __attribute__((unused, target("avx2,fma")))

/* e^x for x <= 0, the softmax's arguments (-inf and NaN allowed): x = n ln2
 * + r with |r| <= ln2/2, e^r by Cephes' expf polynomial (about 1 ulp),
 * times 2^n by scalef. Below ln(FLT_MIN) it returns 0 where expf gives a
 * subnormal: an absolute difference under 1.2e-38. NaN stays NaN (max and
 * min return their second operand when either is NaN). */
ATTN_EXP_INLINE512 __m512 exp512(__m512 x)
{
    const __m512 lo = _mm512_set1_ps(-87.33654475f), hi = _mm512_set1_ps(88.3762626647949f);
    __mmask16 tiny = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);   /* ln2 in two parts */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_mov_ps((__mmask16)~tiny, _mm512_scalef_ps(p, n));
}

/* as exp512; 2^n built in the exponent field (n in [-126, 127] after the
 * clamp, so it is a normal float) */
ATTN_EXP_INLINE2 __m256 exp256(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.33654475f), hi = _mm256_set1_ps(88.3762626647949f);
    __m256 tiny = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256 pow2n = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
    return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, pow2n));
}


/* dst[c * ldd + r] = src[r * lds + c] for r, c < 16: four rounds of
 * shuffles (32-bit, 64-bit, then two of 128-bit lanes). */
ATTN_SIMD512 void transpose16_512(float *dst, size_t ldd, const float *src, size_t lds)
{
    __m512 a[16], t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) a[i] = _mm512_loadu_ps(src + (size_t)i * lds);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]);
    }
    /* a[4g + k]: rows 4g .. 4g+3 of columns k, k+4, k+8, k+12 (one per 128-bit lane) */
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        a[4 * g + 0] = _mm512_shuffle_ps(t[4 * g + 0], t[4 * g + 2], 0x44);
        a[4 * g + 1] = _mm512_shuffle_ps(t[4 * g + 0], t[4 * g + 2], 0xee);
        a[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        a[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        __m512 v = _mm512_shuffle_f32x4(a[k], a[4 + k], 0x88), w = _mm512_shuffle_f32x4(a[k], a[4 + k], 0xdd);
        __m512 v2 = _mm512_shuffle_f32x4(a[8 + k], a[12 + k], 0x88), w2 = _mm512_shuffle_f32x4(a[8 + k], a[12 + k], 0xdd);
        _mm512_storeu_ps(dst + (size_t)k * ldd, _mm512_shuffle_f32x4(v, v2, 0x88));
        _mm512_storeu_ps(dst + (size_t)(k + 8) * ldd, _mm512_shuffle_f32x4(v, v2, 0xdd));
        _mm512_storeu_ps(dst + (size_t)(k + 4) * ldd, _mm512_shuffle_f32x4(w, w2, 0x88));
        _mm512_storeu_ps(dst + (size_t)(k + 12) * ldd, _mm512_shuffle_f32x4(w, w2, 0xdd));
    }
}


/* dst[c * ldd + r] = src[r * lds + c] for r, c < 8 */
ATTN_SIMD2 void transpose8_256(float *dst, size_t ldd, const float *src, size_t lds)
{
    __m256 a[8], t[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) a[i] = _mm256_loadu_ps(src + (size_t)i * lds);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]);
    }
    /* a[4g + k]: rows 4g .. 4g+3 of columns k and k+4 (one per 128-bit lane) */
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++) {
        a[4 * g + 0] = _mm256_shuffle_ps(t[4 * g + 0], t[4 * g + 2], 0x44);
        a[4 * g + 1] = _mm256_shuffle_ps(t[4 * g + 0], t[4 * g + 2], 0xee);
        a[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        a[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_ps(dst + (size_t)k * ldd, _mm256_permute2f128_ps(a[k], a[4 + k], 0x20));
        _mm256_storeu_ps(dst + (size_t)(k + 4) * ldd, _mm256_permute2f128_ps(a[k], a[4 + k], 0x31));
    }
}

#endif
