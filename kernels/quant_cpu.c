/* Quantized-block kernels on the CPU: dequantize and the quantized Linear
 * layer with AVX-512 (VNNI where present) and AVX2 paths, tested against
 * quant_ref.c in t/unit/test_quant.c.
 *
 * llmk_qlinear quantizes x once per call with quant_ref.c's own block
 * quantizers (so both paths see the same codes), then splits the output
 * channels over the thread pool. Each weight block's dot with x's codes is
 * an exact integer here as in the ref; what may differ is the float part:
 * for q8_0 and q4_0 the block terms (integer sum x d_w*d_x) are summed in
 * 16 (8 with AVX2) lanes with a fused multiply-add and then added across
 * lanes, where the ref adds them one after the other. q4_k keeps the ref's
 * scalar float sequence per block and so gives the ref's result bit for bit.
 * That is below LLMK_QLINEAR_GEMM_ROWS rows of x; from there on (prefill)
 * it is gemm_cpu.c's fp32 GEMM on x unquantized and W dequantized as the
 * GEMM packs it: the float product of x and the dequantized weights.
 *
 * Dequantization is the ref's arithmetic on vectors (code x d, and for q4_k
 * (d x sc) x code - dmin x m in two roundings), so it is bit for bit the ref;
 * contraction is off for this file, or gcc would fuse those intrinsics
 * (explicit _fmadd_ intrinsics still fuse). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "llmk.h"
#include "nf4.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

/* quant_ref.c: x's blocks as the dot products want them (codes, returns d) */
float llmk__quantize_x32(int8_t *q, const float *x);
float llmk__quantize_x256(int8_t *q, const float *x);

#define AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma,f16c")))
#define AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")))
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))
/* the small fixed loops over vector registers must unroll, or their arrays
 * of vectors live on the stack */
#if defined(__clang__)
#define UNROLL _Pragma("unroll 16")
#else
#define UNROLL _Pragma("GCC unroll 16")
#endif

static int use_avx512(void) { const llmk_cpu_features *f = llmk_cpu(); return f->avx512f && f->avx512bw; }
static int use_avx2(void) { const llmk_cpu_features *f = llmk_cpu(); return f->avx2 && f->fma && f->f16c; }

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* q4_k's eight 6-bit scales (*sc) and minimums (*m), one per byte, from the
 * 12 packed bytes (llm-tensors(5)): runs 0-3 are the low 6 bits of words 0
 * (scales) and 1 (mins); runs 4-7 take the nibbles of word 2 and the top 2
 * bits of words 0 and 1. */
static inline void unpack_scales(const uint8_t *s, uint64_t *sc, uint64_t *m)
{
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    *sc = (u0 & 0x3f3f3f3fu) | (uint64_t)((u2 & 0x0f0f0f0fu) | ((u0 >> 6) & 0x03030303u) << 4) << 32;
    *m = (u1 & 0x3f3f3f3fu) | (uint64_t)(((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 6) & 0x03030303u) << 4) << 32;
}

/* ==== dequantize ==== */

AVX512 static void dequantize_avx512(llmk_qtype t, float *out, const uint8_t *p, size_t n)
{
    const __m512i m4 = _mm512_set1_epi32(15), eight = _mm512_set1_epi32(8);
    switch (t) {
    case LLMK_Q8_0:
        for (size_t b = 0; b < n / 32; b++, p += 34, out += 32) {
            __m512 d = _mm512_set1_ps(_cvtsh_ss(rd16(p)));
            for (int h = 0; h < 2; h++) {
                __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2 + 16 * h)));
                _mm512_storeu_ps(out + 16 * h, _mm512_mul_ps(_mm512_cvtepi32_ps(q), d));
            }
        }
        break;
    case LLMK_Q4_0:
        for (size_t b = 0; b < n / 32; b++, p += 18, out += 32) {
            __m512 d = _mm512_set1_ps(_cvtsh_ss(rd16(p)));
            __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 2)));
            __m512i lo = _mm512_sub_epi32(_mm512_and_si512(q, m4), eight);
            __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight);
            _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_cvtepi32_ps(lo), d));
            _mm512_storeu_ps(out + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d));
        }
        break;
    case LLMK_Q4_K:
        for (size_t b = 0; b < n / 256; b++, p += 144, out += 256) {
            float d = _cvtsh_ss(rd16(p)), dmin = _cvtsh_ss(rd16(p + 2));
            uint64_t sc, m;
            unpack_scales(p + 4, &sc, &m);
            for (int c = 0; c < 4; c++) {   /* 32 bytes: runs 2c (low nibbles) and 2c+1 (high) */
                for (int h = 0; h < 2; h++) {
                    __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16 + 32 * c + 16 * h)));
                    for (int k = 0; k < 2; k++) {
                        int j = 2 * c + k;
                        __m512 dj = _mm512_set1_ps(d * (float)(uint8_t)(sc >> 8 * j));
                        __m512 mj = _mm512_set1_ps(dmin * (float)(uint8_t)(m >> 8 * j));
                        __m512i code = k ? _mm512_srli_epi32(q, 4) : _mm512_and_si512(q, m4);
                        _mm512_storeu_ps(out + 32 * j + 16 * h,
                                         _mm512_sub_ps(_mm512_mul_ps(dj, _mm512_cvtepi32_ps(code)), mj));
                    }
                }
            }
        }
        break;
    default:
        break;
    }
}

AVX2 static void dequantize_avx2(llmk_qtype t, float *out, const uint8_t *p, size_t n)
{
    const __m256i m4 = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
    switch (t) {
    case LLMK_Q8_0:
        for (size_t b = 0; b < n / 32; b++, p += 34, out += 32) {
            __m256 d = _mm256_set1_ps(_cvtsh_ss(rd16(p)));
            for (int h = 0; h < 4; h++) {
                __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 + 8 * h)));
                _mm256_storeu_ps(out + 8 * h, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
            }
        }
        break;
    case LLMK_Q4_0:
        for (size_t b = 0; b < n / 32; b++, p += 18, out += 32) {
            __m256 d = _mm256_set1_ps(_cvtsh_ss(rd16(p)));
            for (int h = 0; h < 2; h++) {
                __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 + 8 * h)));
                __m256i lo = _mm256_sub_epi32(_mm256_and_si256(q, m4), eight);
                __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(q, 4), eight);
                _mm256_storeu_ps(out + 8 * h, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d));
                _mm256_storeu_ps(out + 16 + 8 * h, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d));
            }
        }
        break;
    case LLMK_Q4_K:
        for (size_t b = 0; b < n / 256; b++, p += 144, out += 256) {
            float d = _cvtsh_ss(rd16(p)), dmin = _cvtsh_ss(rd16(p + 2));
            uint64_t sc, m;
            unpack_scales(p + 4, &sc, &m);
            for (int c = 0; c < 4; c++) {
                for (int h = 0; h < 4; h++) {
                    __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 16 + 32 * c + 8 * h)));
                    for (int k = 0; k < 2; k++) {
                        int j = 2 * c + k;
                        __m256 dj = _mm256_set1_ps(d * (float)(uint8_t)(sc >> 8 * j));
                        __m256 mj = _mm256_set1_ps(dmin * (float)(uint8_t)(m >> 8 * j));
                        __m256i code = k ? _mm256_srli_epi32(q, 4) : _mm256_and_si256(q, m4);
                        _mm256_storeu_ps(out + 32 * j + 8 * h,
                                         _mm256_sub_ps(_mm256_mul_ps(dj, _mm256_cvtepi32_ps(code)), mj));
                    }
                }
            }
        }
        break;
    default:
        break;
    }
}

void llmk_dequantize(llmk_qtype t, float *out, const void *in, size_t n)
{
    if (t == LLMK_NF4) { llmk__nf4_dequantize(out, in, n); return; }
    if (use_avx512()) dequantize_avx512(t, out, in, n);
    else if (use_avx2()) dequantize_avx2(t, out, in, n);
    else llmk_dequantize_ref(t, out, in, n);
}

void llmk_dequantize_rows(llmk_qtype t, float *out, const void *w, size_t ic, size_t oc, size_t r0, size_t r1)
{
    if (t == LLMK_NF4) { llmk__nf4_dequantize_rows(out, w, ic, oc, r0, r1); return; }
    (void)oc;
    size_t rb = llmk_qbytes(t, ic);
    llmk_dequantize(t, out, (const uint8_t *)w + r0 * rb, (r1 - r0) * ic);
}

/* ==== dot products of one weight row with one row of quantized x ====
 * x arrives quantized (see qctx): codes xq, per-block d xd, and sums of
 * codes xs (int32 per 32-block) or xr (int16 per run of 32 in a 256-block).
 * Every function returns the row's dot, nb weight blocks long. */

/* ---- AVX-512, q8_0 and q4_0: 16 blocks a step ----
 * A product vector covers 2 blocks: 16 int32 lanes, each the sum of 4 code
 * products, lanes 0-7 the first block and 8-15 the second (dpbusd, or
 * maddubs + madd without VNNI). reduce_pairs adds 8 such vectors to the 16
 * block sums, transposing as it goes; they come out in the order perm
 * (in GROUP32_BODY) names, and the block scales are read in that order to match.
 * maddubs takes unsigned x signed bytes: q4_0's codes are its unsigned
 * nibbles (the -8 comes back as 8 x sum of x's codes); q8_0's are made
 * unsigned as |w| against x with w's sign (|w| <= 128, |x| <= 127: a pair
 * of products stays inside int16). */

AVX512 INLINE __m512i reduce_pairs(const __m512i v[8])
{
    __m512i a[4], b[2];
    UNROLL for (int k = 0; k < 4; k++)   /* per 128-bit lane: [v2k, v2k+1, v2k, v2k+1] partial sums */
        a[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * k], v[2 * k + 1]),
                                _mm512_unpackhi_epi32(v[2 * k], v[2 * k + 1]));
    UNROLL for (int k = 0; k < 2; k++)   /* per 128-bit lane: the lane's sum of v4k .. v4k+3 */
        b[k] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * k], a[2 * k + 1]),
                                _mm512_unpackhi_epi64(a[2 * k], a[2 * k + 1]));
    /* lanes 0+1 of a vector are its first block, 2+3 its second */
    return _mm512_add_epi32(_mm512_shuffle_i32x4(b[0], b[1], 0x88), _mm512_shuffle_i32x4(b[0], b[1], 0xdd));
}

/* weights of blocks k and k+1 (of those present, n) as unsigned codes
 * against x's 64 bytes; for q8_0 also x with w's sign (*xsigned) */
AVX512 INLINE __m512i load_pair(int q4, const uint8_t *p, int k, int n, __m512i x, __m512i *xsigned)
{
    const size_t bb = q4 ? 18 : 34;
    if (q4) {   /* [q_k, q_k, q_k+1, q_k+1] (16 bytes each), odd lanes shifted to their high nibbles */
        __m256i a = k < n ? _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + bb * k + 2)))
                          : _mm256_setzero_si256();
        __m256i b = k + 1 < n ? _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + bb * (k + 1) + 2)))
                              : _mm256_setzero_si256();
        __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
        v = _mm512_mask_srli_epi16(v, 0xff00ff00u, v, 4);
        *xsigned = x;
        return _mm512_and_si512(v, _mm512_set1_epi8(15));
    }
    __m256i a = k < n ? _mm256_loadu_si256((const __m256i *)(p + bb * k + 2)) : _mm256_setzero_si256();
    __m256i b = k + 1 < n ? _mm256_loadu_si256((const __m256i *)(p + bb * (k + 1) + 2)) : _mm256_setzero_si256();
    __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
    *xsigned = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
    return _mm512_abs_epi8(w);
}

/* One step of 16 blocks (n present) added into acc. */
#define GROUP32_BODY(DOT4)                                                                                        \
    const size_t bb = q4 ? 18 : 34;                                                                               \
    const __m512i perm = _mm512_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);                   \
    __m512i v[8];                                                                                                 \
    UNROLL for (int j = 0; j < 8; j++) {                                                                         \
        __m512i xv = _mm512_loadu_si512(x + 64 * j), xsg;                                                         \
        __m512i u = load_pair(q4, p, 2 * j, n, xv, &xsg);                                                         \
        v[j] = DOT4(u, xsg);                                                                                      \
    }                                                                                                             \
    __m512i isum = reduce_pairs(v);                                                                               \
    if (q4) /* q4_0's codes less 8 */                                                                            \
        isum = _mm512_sub_epi32(isum, _mm512_slli_epi32(_mm512_permutexvar_epi32(perm, _mm512_loadu_si512(xs)), 3)); \
    /* the 16 f16 d in perm's order; scalar loads, as gathers are slow (microcode) on many Xeons */              \
    uint16_t h[16];                                                                                               \
    UNROLL for (int e = 0; e < 16; e++) {                                                                        \
        int k = (e & 3) * 2 + (e >> 2 & 1) + (e >> 3) * 8;   /* perm[e] */                                         \
        h[e] = k < n ? rd16(p + bb * (size_t)k) : 0;                                                              \
    }                                                                                                             \
    __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));                                          \
    __m512 dx = _mm512_permutexvar_ps(perm, _mm512_loadu_ps(xd));                                                 \
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, dx), acc);

#define ROWDOT32_BODY(GROUP)                                                                                      \
    const size_t bb = q4 ? 18 : 34;                                                                               \
    __m512 acc = _mm512_setzero_ps();                                                                             \
    size_t g = 0;                                                                                                 \
    for (; g + 16 <= nb; g += 16) acc = GROUP(q4, w + bb * g, xq + 32 * g, xd + g, xs + g, 16, acc);             \
    if (g < nb) acc = GROUP(q4, w + bb * g, xq + 32 * g, xd + g, xs + g, (int)(nb - g), acc);                    \
    return _mm512_reduce_add_ps(acc);

AVX512 INLINE __m512i dot4_madd(__m512i u, __m512i s)
{
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
}
AVX512VNNI INLINE __m512i dot4_vnni(__m512i u, __m512i s)
{
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
}

AVX512 INLINE __m512 group32_madd(int q4, const uint8_t *p, const int8_t *x, const float *xd, const int32_t *xs, int n,
                                  __m512 acc)
{
    GROUP32_BODY(dot4_madd)
}
AVX512VNNI INLINE __m512 group32_vnni(int q4, const uint8_t *p, const int8_t *x, const float *xd, const int32_t *xs,
                                      int n, __m512 acc)
{
    GROUP32_BODY(dot4_vnni)
}

AVX512 INLINE float rowdot32_madd(int q4, const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                  size_t nb)
{
    ROWDOT32_BODY(group32_madd)
}
AVX512VNNI INLINE float rowdot32_vnni(int q4, const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                      size_t nb)
{
    ROWDOT32_BODY(group32_vnni)
}

/* ---- AVX-512, q4_k: one 256-block a step ----
 * 32 bytes of codes broadcast to both halves, the upper half shifted to its
 * high nibbles: runs 2c and 2c+1 against x's 64 bytes at 64c. maddubs
 * gives int16 pair sums (<= 2 x 15 x 127), which are multiplied by the
 * run's 6-bit scale (vpermw spreads the scales over the lanes) and summed
 * in int32: sum_j sc_j <codes_j, x_j> <= 8 x 63 x 32 x 15 x 127, exact. The
 * minimums take sum_j m_j x (sum of x's codes in run j). */
#define ROWDOT_Q4K_BODY(ACC_SCALED)                                                                               \
    const __m512i m4 = _mm512_set1_epi8(15);                                                                      \
    __m512i sel[4];                                                                                               \
    for (int c = 0; c < 4; c++)                                                                                   \
        sel[c] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)(2 * c))),                    \
                                    _mm256_set1_epi16((short)(2 * c + 1)), 1);                                   \
    float sum = 0.0f;                                                                                             \
    for (size_t b = 0; b < nb; b++) {                                                                             \
        const uint8_t *blk = w + 144 * b;                                                                         \
        const int8_t *x = xq + 256 * b;                                                                           \
        uint64_t sc, m;                                                                                           \
        unpack_scales(blk + 4, &sc, &m);                                                                          \
        __m512i sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));             \
        __m512i acc = _mm512_setzero_si512();                                                                     \
        UNROLL for (int c = 0; c < 4; c++) {                                                                     \
            __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c)));         \
            q = _mm512_and_si512(_mm512_mask_srli_epi16(q, 0xffff0000u, q, 4), m4);                               \
            __m512i pr = _mm512_maddubs_epi16(q, _mm512_loadu_si512(x + 64 * c));                                 \
            acc = ACC_SCALED(acc, pr, _mm512_permutexvar_epi16(sel[c], sc16));                                    \
        }                                                                                                         \
        int32_t isum = _mm512_reduce_add_epi32(acc);                                                              \
        __m128i mm = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)m)),                           \
                                    _mm_loadu_si128((const __m128i *)(xr + 8 * b)));                               \
        mm = _mm_add_epi32(mm, _mm_shuffle_epi32(mm, 0x4e));                                                      \
        mm = _mm_add_epi32(mm, _mm_shuffle_epi32(mm, 0xb1));                                                      \
        int32_t imin = _mm_cvtsi128_si32(mm);                                                                     \
        /* the ref's float steps, in its order */                                                                 \
        sum += _cvtsh_ss(rd16(blk)) * xd[b] * (float)isum;                                                        \
        sum -= _cvtsh_ss(rd16(blk + 2)) * xd[b] * (float)imin;                                                    \
    }                                                                                                             \
    return sum;

AVX512 INLINE __m512i accsc_madd(__m512i acc, __m512i p, __m512i s)
{
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p, s));
}
AVX512VNNI INLINE __m512i accsc_vnni(__m512i acc, __m512i p, __m512i s)
{
    return _mm512_dpwssd_epi32(acc, p, s);
}

/* the entry points, one per type and instruction set */
AVX512 static float dot_q8_0_avx512(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                    const int16_t *xr, size_t nb)
{
    return rowdot32_madd(0, w, xq, xd, xs, nb);
}
AVX512 static float dot_q4_0_avx512(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                    const int16_t *xr, size_t nb)
{
    return rowdot32_madd(1, w, xq, xd, xs, nb);
}
AVX512 static float dot_q4_K_avx512(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                    const int16_t *xr, size_t nb)
{
    ROWDOT_Q4K_BODY(accsc_madd)
}
AVX512VNNI static float dot_q8_0_vnni(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                      const int16_t *xr, size_t nb)
{
    return rowdot32_vnni(0, w, xq, xd, xs, nb);
}
AVX512VNNI static float dot_q4_0_vnni(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                      const int16_t *xr, size_t nb)
{
    return rowdot32_vnni(1, w, xq, xd, xs, nb);
}
AVX512VNNI static float dot_q4_K_vnni(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                      const int16_t *xr, size_t nb)
{
    ROWDOT_Q4K_BODY(accsc_vnni)
}

/* ---- AVX2, q8_0 and q4_0: 8 blocks a step ----
 * One product vector per block (8 int32 lanes, maddubs + madd: sign trick
 * for q8_0, unsigned nibbles and 8 x sum of x for q4_0, as above); hadd and
 * a lane swap turn 8 of them into the 8 block sums in order. */
AVX2 INLINE __m256i reduce8_avx2(const __m256i v[8])
{
    __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
}

AVX2 INLINE __m256 group32_avx2(int q4, const uint8_t *p, const int8_t *x, const float *xd, const int32_t *xs, int n,
                                __m256 acc)
{
    const size_t bb = q4 ? 18 : 34;
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(15);
    __m256i v[8];
    UNROLL for (int k = 0; k < 8; k++) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(x + 32 * k));
        if (k >= n) {
            v[k] = _mm256_setzero_si256();
        } else if (q4) {
            __m128i q = _mm_loadu_si128((const __m128i *)(p + bb * k + 2));
            __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m4);
            v[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), ones);
        } else {
            __m256i wv = _mm256_loadu_si256((const __m256i *)(p + bb * k + 2));
            v[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv)), ones);
        }
    }
    __m256i isum = reduce8_avx2(v);
    if (q4) isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)xs), 3));
    uint16_t h[8];   /* the blocks' f16 d (scalar loads: gathers are slow on many processors) */
    UNROLL for (int k = 0; k < 8; k++) h[k] = k < n ? rd16(p + bb * k) : 0;
    __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_loadu_ps(xd)), acc);
}

AVX2 INLINE float hsum8_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 INLINE float rowdot32_avx2(int q4, const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                size_t nb)
{
    const size_t bb = q4 ? 18 : 34;
    __m256 acc = _mm256_setzero_ps();
    size_t g = 0;
    for (; g + 8 <= nb; g += 8) acc = group32_avx2(q4, w + bb * g, xq + 32 * g, xd + g, xs + g, 8, acc);
    if (g < nb) acc = group32_avx2(q4, w + bb * g, xq + 32 * g, xd + g, xs + g, (int)(nb - g), acc);
    return hsum8_avx2(acc);
}

AVX2 static float dot_q8_0_avx2(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                const int16_t *xr, size_t nb)
{
    return rowdot32_avx2(0, w, xq, xd, xs, nb);
}
AVX2 static float dot_q4_0_avx2(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                const int16_t *xr, size_t nb)
{
    return rowdot32_avx2(1, w, xq, xd, xs, nb);
}

/* ---- AVX2, q4_k: per 32 bytes of codes, runs 2c and 2c+1 against x at
 * 64c and 64c+32; the scale reaches each run's int16 lanes by pshufb from
 * the 8 scales widened to int16 ---- */
AVX2 static float dot_q4_K_avx2(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs,
                                const int16_t *xr, size_t nb)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256i sel[8];
    for (int j = 0; j < 8; j++) sel[j] = _mm256_set1_epi16((short)(2 * j | (2 * j + 1) << 8));
    float sum = 0.0f;
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + 144 * b;
        const int8_t *x = xq + 256 * b;
        uint64_t sc, m;
        unpack_scales(blk + 4, &sc, &m);
        __m128i s16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc));
        __m256i sc16 = _mm256_set_m128i(s16, s16);
        __m256i acc = _mm256_setzero_si256();
        UNROLL for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x + 64 * c)));
            __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 64 * c + 32)));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(plo, _mm256_shuffle_epi8(sc16, sel[2 * c])));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(phi, _mm256_shuffle_epi8(sc16, sel[2 * c + 1])));
        }
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
        int32_t isum = _mm_cvtsi128_si32(s);
        __m128i mm = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)m)),
                                    _mm_loadu_si128((const __m128i *)(xr + 8 * b)));
        mm = _mm_add_epi32(mm, _mm_shuffle_epi32(mm, 0x4e));
        mm = _mm_add_epi32(mm, _mm_shuffle_epi32(mm, 0xb1));
        int32_t imin = _mm_cvtsi128_si32(mm);
        sum += _cvtsh_ss(rd16(blk)) * xd[b] * (float)isum;
        sum -= _cvtsh_ss(rd16(blk + 2)) * xd[b] * (float)imin;
    }
    return sum;
}

/* ==== the quantized Linear layer ==== */

typedef float (*rowdot_fn)(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs, const int16_t *xr,
                           size_t nb);

typedef struct {
    llmk_qtype t;
    rowdot_fn dot;
    float *out;           /* (rows, oc) */
    const float *x;       /* (rows, ic) */
    const uint8_t *w;     /* (oc, rb bytes) */
    size_t rows, ic, oc, rb;
    size_t nb, nbp;       /* weight blocks per row; x's blocks per row padded to 16 (q8_0, q4_0) */
    size_t tile;          /* weight rows whose dots run over all x rows in turn */
    int8_t *xq;           /* (rows, nbp * block elems) x's codes, padding 0 */
    float *xd;            /* (rows, nbp) x's block d, padding 0 */
    int32_t *xs;          /* (rows, nbp) q8_0, q4_0: sum of each block's 32 codes */
    int16_t *xr;          /* (rows, nb * 8) q4_k: sum of the codes of each run of 32 */
} qctx;

static void quantize_rows(void *arg, size_t r0, size_t r1)
{
    qctx *c = arg;
    for (size_t r = r0; r < r1; r++) {
        const float *x = c->x + r * c->ic;
        if (c->t == LLMK_Q4_K) {
            int8_t *q = c->xq + r * c->nbp * 256;
            for (size_t b = 0; b < c->nb; b++) {
                c->xd[r * c->nbp + b] = llmk__quantize_x256(q + 256 * b, x + 256 * b);
                for (int j = 0; j < 8; j++) {
                    int s = 0;
                    for (int l = 0; l < 32; l++) s += q[256 * b + 32 * j + l];
                    c->xr[(r * c->nb + b) * 8 + j] = (int16_t)s;
                }
            }
        } else {
            int8_t *q = c->xq + r * c->nbp * 32;
            for (size_t b = 0; b < c->nbp; b++) {
                int s = 0;
                if (b < c->nb) {
                    c->xd[r * c->nbp + b] = llmk__quantize_x32(q + 32 * b, x + 32 * b);
                    for (int l = 0; l < 32; l++) s += q[32 * b + l];
                } else {
                    memset(q + 32 * b, 0, 32);
                    c->xd[r * c->nbp + b] = 0.0f;
                }
                c->xs[r * c->nbp + b] = s;
            }
        }
    }
}

/* Output channels [o0, o1): a tile of weight rows (kept in L2) against
 * every row of x in turn, so prefill reads each weight byte from memory
 * once per call. */
static void qlinear_range(void *arg, size_t o0, size_t o1)
{
    const qctx *c = arg;
    const size_t be = c->t == LLMK_Q4_K ? 256 : 32;
    for (size_t t0 = o0; t0 < o1; t0 += c->tile) {
        size_t t1 = t0 + c->tile < o1 ? t0 + c->tile : o1;
        for (size_t r = 0; r < c->rows; r++) {
            const int8_t *xq = c->xq + r * c->nbp * be;
            const float *xd = c->xd + r * c->nbp;
            const int32_t *xs = c->xs ? c->xs + r * c->nbp : NULL;
            const int16_t *xr = c->xr ? c->xr + r * c->nb * 8 : NULL;
            float *out = c->out + r * c->oc;
            for (size_t o = t0; o < t1; o++) out[o] = c->dot(c->w + o * c->rb, xq, xd, xs, xr, c->nb);
        }
    }
}

/* x's quantized rows live in a per-thread buffer kept for the next call (a
 * buffer freed every call would come back as fresh zeroed pages). */
static void *act_buffer(size_t bytes)
{
    static __thread void *buf;
    static __thread size_t cap;
    if (bytes > cap) {
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes) != 0) return NULL;
        free(buf);
        buf = p;
        cap = bytes;
    }
    return buf;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* ==== prefill: rows >= LLMK_QLINEAR_GEMM_ROWS ====
 * gemm_cpu.c's blocked fp32 GEMM on x as it is and W^T, which it never
 * stores: where a thread packs a block of W^T (a K block of up to 512
 * columns by 256 output channels), the functions below write its panels of
 * NR output channels (NR floats per k) straight from the quantized blocks:
 * dequantized vectors of 16 (AVX-512; 8 with AVX2) rows transposed in
 * registers. So the weights are read once per call, in their quantized
 * bytes, and dequantized once; at these row counts the GEMM's register
 * tiles beat one dot per (weight row, x row) pair. The values are the ref's
 * dequantization bit for bit (the arithmetic of dequantize_avx512 above). */
typedef struct {
    const uint8_t *w;
    size_t rb;            /* bytes per weight row */
} wpanel;

/* gemm_cpu.c: C (M, N) = A (M, K) @ op(B) with op(B)'s panels of nr columns
 * written by pack; -1 when the GEMM's path does not take such panels */
int llmk__sgemm_bpack(size_t M, size_t N, size_t K, const float *A, size_t lda, size_t nr,
                      void (*pack)(void *ctx, float *bp, size_t j0, size_t n, size_t k0, size_t kc), void *ctx,
                      size_t kalign, float *C, size_t ldc);

#define BLOCK_ELEMS(t) ((t) == LLMK_Q4_K ? 256u : 32u)
#define BLOCK_BYTES(t) ((t) == LLMK_Q8_0 ? 34u : (t) == LLMK_Q4_0 ? 18u : 144u)

/* q4_k's eight run scales d x sc (s) and minimums dmin x m (m) of a block */
AVX2 INLINE void q4k_runs(const uint8_t *blk, float s[8], float m[8])
{
    float d = _cvtsh_ss(rd16(blk)), dmin = _cvtsh_ss(rd16(blk + 2));
    uint64_t sc, mn;
    unpack_scales(blk + 4, &sc, &mn);
    for (int j = 0; j < 8; j++) {
        s[j] = d * (float)(uint8_t)(sc >> 8 * j);
        m[j] = dmin * (float)(uint8_t)(mn >> 8 * j);
    }
}

/* 16 x 16 floats transposed in registers: r[i] lane j <-> r[j] lane i */
AVX512 INLINE void transpose16(__m512 r[16])
{
    __m512 t[16];
    UNROLL for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    UNROLL for (int i = 0; i < 16; i += 4)
        UNROLL for (int h = 0; h < 2; h++) {
            __m512d lo = _mm512_castps_pd(t[i + h]), hi = _mm512_castps_pd(t[i + 2 + h]);
            r[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi));
            r[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi));
        }
    UNROLL for (int i = 0; i < 16; i += 8)
        UNROLL for (int h = 0; h < 4; h++) {
            t[i + h] = _mm512_shuffle_f32x4(r[i + h], r[i + 4 + h], 0x88);
            t[i + 4 + h] = _mm512_shuffle_f32x4(r[i + h], r[i + 4 + h], 0xdd);
        }
    UNROLL for (int h = 0; h < 8; h++) {
        r[h] = _mm512_shuffle_f32x4(t[h], t[h + 8], 0x88);
        r[h + 8] = _mm512_shuffle_f32x4(t[h], t[h + 8], 0xdd);
    }
}

/* the 16 weights from element e (a multiple of 16) of block blk; s, m: its
 * q4_k runs */
AVX512 INLINE __m512 weights16(llmk_qtype t, const uint8_t *blk, size_t e, const float *s, const float *m)
{
    if (t == LLMK_Q8_0) {
        __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2 + e)));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(_cvtsh_ss(rd16(blk))));
    }
    size_t off = t == LLMK_Q4_0 ? 2 : 16 + e / 64 * 32 + (e & 31);   /* q4_k: 32 bytes for runs 2c and 2c + 1 */
    __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + off)));
    int high = t == LLMK_Q4_0 ? e >= 16 : (e / 32) & 1;   /* q4_0: j, j + 16 share byte j; q4_k: runs 2c, 2c + 1 */
    __m512i code = high ? _mm512_srli_epi32(q, 4) : _mm512_and_si512(q, _mm512_set1_epi32(15));
    if (t == LLMK_Q4_0)
        return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(code, _mm512_set1_epi32(8))),
                             _mm512_set1_ps(_cvtsh_ss(rd16(blk))));
    return _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(s[e / 32]), _mm512_cvtepi32_ps(code)), _mm512_set1_ps(m[e / 32]));
}

/* W's rows [j0, j0 + n) (n <= 32), columns [k0, k0 + kc), as bp[k * 32 + x] */
AVX512 INLINE void panel_avx512(llmk_qtype t, const wpanel *f, float *bp, size_t j0, size_t n, size_t k0, size_t kc)
{
    const size_t be = BLOCK_ELEMS(t), bb = BLOCK_BYTES(t);
    const uint8_t *w = f->w + j0 * f->rb + k0 / be * bb;
    for (size_t kb = 0; kb < kc; kb += be, w += bb)
        for (size_t h = 0; h < 32; h += 16) {
            size_t rows = n <= h ? 0 : n - h < 16 ? n - h : 16;
            float s[16][8], m[16][8];
            if (t == LLMK_Q4_K)
                for (size_t x = 0; x < rows; x++) q4k_runs(w + (h + x) * f->rb, s[x], m[x]);
            for (size_t e = 0; e < be; e += 16) {
                __m512 r[16];
                UNROLL for (size_t x = 0; x < 16; x++)
                    r[x] = x < rows ? weights16(t, w + (h + x) * f->rb, e, s[x], m[x]) : _mm512_setzero_ps();
                transpose16(r);
                float *d = bp + (kb + e) * 32 + h;
                UNROLL for (size_t i = 0; i < 16; i++) _mm512_store_ps(d + 32 * i, r[i]);
            }
        }
}

AVX512 static void panel_q8_0_avx512(void *f, float *bp, size_t j0, size_t n, size_t k0, size_t kc)
{
    panel_avx512(LLMK_Q8_0, f, bp, j0, n, k0, kc);
}
AVX512 static void panel_q4_0_avx512(void *f, float *bp, size_t j0, size_t n, size_t k0, size_t kc)
{
    panel_avx512(LLMK_Q4_0, f, bp, j0, n, k0, kc);
}
AVX512 static void panel_q4_K_avx512(void *f, float *bp, size_t j0, size_t n, size_t k0, size_t kc)
{
    panel_avx512(LLMK_Q4_K, f, bp, j0, n, k0, kc);
}

/* ---- AVX2: panels of 16, 8 x 8 transposes ---- */
AVX2 INLINE void transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    UNROLL for (int i = 0; i < 8; i += 2) {   /* t[i]: r[i][0] r[i+1][0] r[i][1] r[i+1][1] | the same for 4, 5 */
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    UNROLL for (int i = 0; i < 8; i += 4) {   /* u[i + c]: element c (| c + 4) of rows i .. i + 3 */
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    UNROLL for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[c + 4], 0x20);
        r[c + 4] = _mm256_permute2f128_ps(u[c], u[c + 4], 0x31);
    }
}

/* the 8 weights from element e (a multiple of 8) of block blk */
AVX2 INLINE __m256 weights8(llmk_qtype t, const uint8_t *blk, size_t e, const float *s, const float *m)
{
    if (t == LLMK_Q8_0) {
        __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + e)));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(_cvtsh_ss(rd16(blk))));
    }
    size_t off = t == LLMK_Q4_0 ? 2 + (e & 15) : 16 + e / 64 * 32 + (e & 31);   /* as in weights16 */
    __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(blk + off)));
    int high = t == LLMK_Q4_0 ? e >= 16 : (e / 32) & 1;
    __m256i code = high ? _mm256_srli_epi32(q, 4) : _mm256_and_si256(q, _mm256_set1_epi32(15));
    if (t == LLMK_Q4_0)
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(code, _mm256_set1_epi32(8))),
                             _mm256_set1_ps(_cvtsh_ss(rd16(blk))));
    return _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(s[e / 32]), _mm256_cvtepi32_ps(code)), _mm256_set1_ps(m[e / 32]));
}

AVX2 INLINE void panel_avx2(llmk_qtype t, const wpanel *f, float *bp, size_t j0, size_t n, size_t k0, size_t kc)
{
    const size_t be = BLOCK_ELEMS(t), bb = BLOCK_BYTES(t);
    const uint8_t *w = f->w + j0 * f->rb + k0 / be * bb;
    for (size_t kb = 0; kb < kc; kb += be, w += bb)
        for (size_t h = 0; h < 16; h += 8) {
            size_t rows = n <= h ? 0 : n - h < 8 ? n - h : 8;
            float s[8][8], m[8][8];
            if (t == LLMK_Q4_K)
                for (size_t x = 0; x < rows; x++) q4k_runs(w + (h + x) * f->rb, s[x], m[x]);
            for (size_t e = 0; e < be; e += 8) {
                __m256 r[8];
                UNROLL for (size_t x = 0; x < 8; x++)
                    r[x] = x < rows ? weights8(t, w + (h + x) * f->rb, e, s[x], m[x]) : _mm256_setzero_ps();
                transpose8(r);
                float *d = bp + (kb + e) * 16 + h;
                UNROLL for (size_t i = 0; i < 8; i++) _mm256_store_ps(d + 16 * i, r[i]);
            }
        }
}

AVX2 static void panel_q8_0_avx2(void *f, float *bp, size_t j0, size_t n, size_t k0, size_t kc)
{
    panel_avx2(LLMK_Q8_0, f, bp, j0, n, k0, kc);
}
AVX2 static void panel_q4_0_avx2(void *f, float *bp, size_t j0, size_t n, size_t k0, size_t kc)
{
    panel_avx2(LLMK_Q4_0, f, bp, j0, n, k0, kc);
}
AVX2 static void panel_q4_K_avx2(void *f, float *bp, size_t j0, size_t n, size_t k0, size_t kc)
{
    panel_avx2(LLMK_Q4_K, f, bp, j0, n, k0, kc);
}

/* gemm_ok: from LLMK_QLINEAR_GEMM_ROWS rows, the prefill GEMM; else the
 * int8 path at any row count */
static void qlinear(llmk_qtype t, float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc,
                    int gemm_ok)
{
    if (t == LLMK_NF4) { llmk__nf4_qlinear(out, x, w, rows, ic, oc); return; }
    const llmk_qtraits *q = llmk_qtype_traits(t);
    if (!q || rows == 0 || oc == 0) return;
    static const rowdot_fn dots[3][LLMK_QTYPE_COUNT] = {
        {dot_q8_0_avx2, dot_q4_0_avx2, dot_q4_K_avx2},
        {dot_q8_0_avx512, dot_q4_0_avx512, dot_q4_K_avx512},
        {dot_q8_0_vnni, dot_q4_0_vnni, dot_q4_K_vnni},
    };
    int path = use_avx512() ? (llmk_cpu()->avx512vnni ? 2 : 1) : use_avx2() ? 0 : -1;
    if (path < 0) {
        llmk_qlinear_ref(t, out, x, w, rows, ic, oc);
        return;
    }
    if (gemm_ok && rows >= LLMK_QLINEAR_GEMM_ROWS) {   /* prefill: the fp32 GEMM (above) */
        typedef void (*panel_fn)(void *, float *, size_t, size_t, size_t, size_t);
        static const panel_fn panels[2][3] = {
            {panel_q8_0_avx2, panel_q4_0_avx2, panel_q4_K_avx2},
            {panel_q8_0_avx512, panel_q4_0_avx512, panel_q4_K_avx512},
        };
        wpanel f = {w, llmk_qbytes(t, ic)};
        if (!llmk__sgemm_bpack(rows, oc, ic, x, ic, path ? 32 : 16, panels[path > 0][t], &f, q->block_elems, out, oc))
            return;
        /* the GEMM takes other panels here, or has no memory for its packs: the int8 path */
    }
    qctx c = {.t = t, .dot = dots[path][t], .out = out, .x = x, .w = w, .rows = rows, .ic = ic, .oc = oc};
    const size_t be = q->block_elems;
    c.rb = llmk_qbytes(t, ic);
    c.nb = ic / be;
    c.nbp = t == LLMK_Q4_K ? c.nb : (c.nb + 15) / 16 * 16;   /* whole 16-block steps of x to load */
    size_t bq = align64(rows * c.nbp * be), bd = align64(rows * c.nbp * sizeof(float));
    size_t bs = t == LLMK_Q4_K ? align64(rows * c.nb * 8 * sizeof(int16_t)) : align64(rows * c.nbp * sizeof(int32_t));
    uint8_t *buf = act_buffer(bq + bd + bs + 64);
    if (!buf) {   /* no memory for x's codes: the oracle needs none */
        llmk_qlinear_ref(t, out, x, w, rows, ic, oc);
        return;
    }
    c.xq = (int8_t *)buf;
    c.xd = (float *)(buf + bq);
    if (t == LLMK_Q4_K) c.xr = (int16_t *)(buf + bq + bd);
    else c.xs = (int32_t *)(buf + bq + bd);

    if (rows >= 4) llmk_parallel_for(rows, 1, quantize_rows, &c);
    else quantize_rows(&c, 0, rows);

    /* a tile of about 256 KiB of weights; a task gets at least 64 KiB of
     * weight-row x x-row work */
    size_t rb = c.rb ? c.rb : 1;
    c.tile = rows == 1 ? oc : (256u << 10) / rb ? (256u << 10) / rb : 1;
    size_t grain = (64u << 10) / (rb * rows);
    llmk_parallel_for(oc, grain ? grain : 1, qlinear_range, &c);
}

void llmk_qlinear(llmk_qtype t, float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc)
{
    qlinear(t, out, x, w, rows, ic, oc, 1);
}

void llmk_qlinear_rowwise(llmk_qtype t, float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc)
{
    qlinear(t, out, x, w, rows, ic, oc, 0);
}
