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
 * From 2 rows the int8 path (llmk_qlinear_rowwise at any row count, for
 * decoding a batch) takes several rows of x per weight row, sharing the
 * weights' loads and unpacking among them, each row's float steps those of
 * the one-row dot, so a row's result never depends on the others (see
 * "several rows of x" below).
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

/* ==== several rows of x against one weight row (decoding a batch) ====
 * llmk_qlinear_rowwise from 2 rows on: per weight block, the loads, the
 * unpacking and the scales are done once for all the rows of x in a pass,
 * and each row then runs its own integer dot and float steps. A block's
 * integer dot is exact in whatever order it is summed, so that part is
 * reorganised freely; each row's float part is the rows = 1 function's
 * float steps on the same values in the same order (the same lanes, the
 * same final reduction), so every row comes out bit for bit as it does
 * alone, whichever rows share its call.
 *
 * The rows = 1 dots end every step of blocks with a horizontal reduction
 * of each row's products (reduce_pairs, reduce8_avx2, and the q4_k block
 * sums). Here most of it is moved onto the weights: the lane moves that
 * reduce the products are made instead on the weight vectors (once for all
 * rows) and, once per call, on x (as it is packed, below), so that every
 * lane of a product vector belongs to one block (q4_k: one run of 32) and a
 * row's block sums come out of a plain chain of dot instructions,
 * accumulated lane by lane, in the lanes the rows = 1 function has them.
 * The sums stay in range: with |x code| <= 128, a lane of q4_0 or q4_k
 * codes (<= 15) summed over 16 products is at most 30720, inside int16; a
 * q8_0 weight is taken as w + 128 (0 .. 255, for dpbusd's unsigned side)
 * and the 128 x (sum of x's codes) taken off again through the
 * accumulator's starting value, as q4_0's -8 is. That is the one-row dots'
 * sum (|w| against x with w's sign) because x's q8_0 codes are within
 * +-127 (round_i8 clamps there, non-finite input included), so negating one
 * never wraps. */

/* rows of x a pass takes at most (a multiple of 4) */
#define MR_ROWS 16

/* x packed, per row and step of 16 blocks (AVX-512; 8 with AVX2): the codes
 * moved as route512 (route256) moves the weights, then per block the
 * starting value of its integer sum (-k x sum of its codes: k = 128 for
 * q8_0 under VNNI, 0 for q8_0 without, 8 for q4_0) and x's d, both in the
 * order the block sums come out in (perm; natural with AVX2). */
#define MR32_STEP512 (512 + 64 + 64)
#define MR32_STEP256 (256 + 32 + 32)
/* q4_k: per 4 rows (a quad) and block, the 4 rows' 256 codes moved as the
 * weights are (at 256 r), their 8 run sums each (int16, at MR_Q4K_XR: run
 * j of row r in word 2 (4 (j / 2) + r) + j % 2, so that one madd with the
 * minimums leaves row r's sums in lane r of each 128 bits) and their d (at
 * MR_Q4K_XD), 64-byte aligned */
#define MR_Q4K_XR 1024
#define MR_Q4K_XD (1024 + 64)
#define MR_Q4K_BLOCK (1024 + 64 + 64)

typedef void (*mrowdot_fn)(const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb, float *out,
                           size_t ostride);

/* perm[e] of GROUP32_BODY: the block whose sum lands in lane e */
static int perm16(int e) { return (e & 3) * 2 + (e >> 2 & 1) + (e >> 3) * 8; }

/* ---- AVX-512, q8_0 and q4_0 ----
 * reduce_pairs(v) adds up lanes of the 8 product vectors in three stages,
 * each stage one pair of lane moves (unpacklo/hi of 32 bits, of 64 bits,
 * shuffle_i32x4 0x88/0xdd) and an add. A lane move of a sum is the sum of
 * the lane moves and a product vector's lanes are products of the same
 * lanes of w and x, so making each stage's moves on both halves of the
 * inputs instead (8 vectors in, 8 out) gives 8 vectors whose products add
 * up, lane by lane, to reduce_pairs' result. */
AVX512 INLINE void route512(__m512i v[8])
{
    __m512i a[8], b[8];
    UNROLL for (int k = 0; k < 4; k++) {
        a[2 * k] = _mm512_unpacklo_epi32(v[2 * k], v[2 * k + 1]);
        a[2 * k + 1] = _mm512_unpackhi_epi32(v[2 * k], v[2 * k + 1]);
    }
    UNROLL for (int k = 0; k < 2; k++) {
        b[4 * k] = _mm512_unpacklo_epi64(a[4 * k], a[4 * k + 2]);
        b[4 * k + 1] = _mm512_unpacklo_epi64(a[4 * k + 1], a[4 * k + 3]);
        b[4 * k + 2] = _mm512_unpackhi_epi64(a[4 * k], a[4 * k + 2]);
        b[4 * k + 3] = _mm512_unpackhi_epi64(a[4 * k + 1], a[4 * k + 3]);
    }
    UNROLL for (int i = 0; i < 4; i++) {
        v[2 * i] = _mm512_shuffle_i32x4(b[i], b[4 + i], 0x88);
        v[2 * i + 1] = _mm512_shuffle_i32x4(b[i], b[4 + i], 0xdd);
    }
}

/* blocks k and k+1 (of n present) as load_pair lays them out: q4_0's
 * unsigned codes, q8_0's signed ones */
AVX512 INLINE __m512i wpair512(int q4, const uint8_t *p, int k, int n)
{
    const size_t bb = q4 ? 18 : 34;
    if (q4) {
        __m256i a = k < n ? _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + bb * k + 2)))
                          : _mm256_setzero_si256();
        __m256i b = k + 1 < n ? _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + bb * (k + 1) + 2)))
                              : _mm256_setzero_si256();
        __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
        v = _mm512_mask_srli_epi16(v, 0xff00ff00u, v, 4);
        return _mm512_and_si512(v, _mm512_set1_epi8(15));
    }
    __m256i a = k < n ? _mm256_loadu_si256((const __m256i *)(p + bb * k + 2)) : _mm256_setzero_si256();
    __m256i b = k + 1 < n ? _mm256_loadu_si256((const __m256i *)(p + bb * (k + 1) + 2)) : _mm256_setzero_si256();
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

/* the 16 blocks' f16 d in perm's order, as GROUP32_BODY reads them */
AVX512 INLINE __m512 dw16(int q4, const uint8_t *p, int n)
{
    const size_t bb = q4 ? 18 : 34;
    uint16_t h[16];
    UNROLL for (int e = 0; e < 16; e++) {
        int k = (e & 3) * 2 + (e >> 2 & 1) + (e >> 3) * 8;
        h[e] = k < n ? rd16(p + bb * (size_t)k) : 0;
    }
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
}

/* one row's 16 block sums: its packed step xg against the moved weights */
AVX512VNNI INLINE __m512i isum16_vnni(const __m512i wv[8], const __mmask64 neg[8], const uint8_t *xg)
{
    (void)neg;
    __m512i s0 = _mm512_load_si512(xg + 512), s1 = _mm512_setzero_si512();
    UNROLL for (int j = 0; j < 8; j += 2) {
        s0 = _mm512_dpbusd_epi32(s0, wv[j], _mm512_load_si512(xg + 64 * j));
        s1 = _mm512_dpbusd_epi32(s1, wv[j + 1], _mm512_load_si512(xg + 64 * j + 64));
    }
    return _mm512_add_epi32(s0, s1);
}
/* without VNNI, q8_0: |w| against x with w's sign (neg), as load_pair */
AVX512 INLINE __m512i isum16_madd_q8(const __m512i wv[8], const __mmask64 neg[8], const uint8_t *xg)
{
    const __m512i ones = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
    __m512i s0 = _mm512_load_si512(xg + 512), s1 = zero;
    UNROLL for (int j = 0; j < 8; j++) {
        __m512i x = _mm512_load_si512(xg + 64 * j);
        __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(wv[j], _mm512_mask_sub_epi8(x, neg[j], zero, x)), ones);
        if (j & 1) s1 = _mm512_add_epi32(s1, p);
        else s0 = _mm512_add_epi32(s0, p);
    }
    return _mm512_add_epi32(s0, s1);
}
/* without VNNI, q4_0: the 8 vectors' pair sums added in int16 (16 products
 * of codes <= 15 a lane) before they are widened */
AVX512 INLINE __m512i isum16_madd_q4(const __m512i wv[8], const __mmask64 neg[8], const uint8_t *xg)
{
    (void)neg;
    __m512i p0 = _mm512_maddubs_epi16(wv[0], _mm512_load_si512(xg));
    __m512i p1 = _mm512_maddubs_epi16(wv[1], _mm512_load_si512(xg + 64));
    UNROLL for (int j = 2; j < 8; j += 2) {
        p0 = _mm512_add_epi16(p0, _mm512_maddubs_epi16(wv[j], _mm512_load_si512(xg + 64 * j)));
        p1 = _mm512_add_epi16(p1, _mm512_maddubs_epi16(wv[j + 1], _mm512_load_si512(xg + 64 * j + 64)));
    }
    __m512i p = _mm512_madd_epi16(_mm512_add_epi16(p0, p1), _mm512_set1_epi16(1));
    return _mm512_add_epi32(_mm512_load_si512(xg + 512), p);
}

/* n rows of x packed (row r at x + r xstride) against one weight row, nb
 * blocks: per step of 16 blocks, GROUP32_BODY's float step on each row */
#define MDOT32_STEP(ISUM, BIAS, M)                                                                                \
    do {                                                                                                          \
        __m512i wv[8];                                                                                            \
        __mmask64 neg[8];                                                                                         \
        UNROLL for (int j = 0; j < 8; j++) wv[j] = wpair512(q4, p, 2 * j, M);                                     \
        route512(wv);                                                                                             \
        UNROLL for (int j = 0; j < 8; j++) {                                                                     \
            neg[j] = 0;                                                                                           \
            if (q4) continue;                                                                                     \
            if (BIAS) {   /* w + 128 */                                                                           \
                wv[j] = _mm512_xor_si512(wv[j], _mm512_set1_epi8(-128));                                          \
            } else {                                                                                              \
                neg[j] = _mm512_movepi8_mask(wv[j]);                                                              \
                wv[j] = _mm512_abs_epi8(wv[j]);                                                                   \
            }                                                                                                     \
        }                                                                                                         \
        __m512 dw = dw16(q4, p, M);                                                                               \
        for (size_t r = 0; r < n; r++, xg += xstride) {                                                           \
            __m512i isum = ISUM(wv, neg, xg);                                                                     \
            __m512 dx = _mm512_load_ps((const float *)(xg + 576));                                                \
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, dx), acc[r]);                    \
        }                                                                                                         \
    } while (0)

/* n rows of x packed (row r at x + r xstride) against one weight row, nb
 * blocks: per step of 16 blocks, GROUP32_BODY's float step on each row
 * (whole steps with n = 16 written out, as ROWDOT32_BODY does) */
#define MDOT32_BODY(ISUM, BIAS)                                                                                   \
    const size_t bb = q4 ? 18 : 34;                                                                               \
    __m512 acc[MR_ROWS];                                                                                          \
    for (size_t r = 0; r < n; r++) acc[r] = _mm512_setzero_ps();                                                  \
    size_t g = 0;                                                                                                 \
    for (; g + 16 <= nb; g += 16) {                                                                               \
        const uint8_t *p = w + bb * g, *xg = x + MR32_STEP512 * (g / 16);                                         \
        MDOT32_STEP(ISUM, BIAS, 16);                                                                              \
    }                                                                                                             \
    if (g < nb) {                                                                                                 \
        const uint8_t *p = w + bb * g, *xg = x + MR32_STEP512 * (g / 16);                                         \
        MDOT32_STEP(ISUM, BIAS, (int)(nb - g));                                                                   \
    }                                                                                                             \
    for (size_t r = 0; r < n; r++) out[r * ostride] = _mm512_reduce_add_ps(acc[r]);

AVX512VNNI static void mdot_q8_0_vnni(const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb,
                                      float *out, size_t ostride)
{
    const int q4 = 0;
    MDOT32_BODY(isum16_vnni, 1)
}
AVX512VNNI static void mdot_q4_0_vnni(const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb,
                                      float *out, size_t ostride)
{
    const int q4 = 1;
    MDOT32_BODY(isum16_vnni, 0)
}
AVX512 static void mdot_q8_0_avx512(const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb,
                                    float *out, size_t ostride)
{
    const int q4 = 0;
    MDOT32_BODY(isum16_madd_q8, 0)
}
AVX512 static void mdot_q4_0_avx512(const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb,
                                    float *out, size_t ostride)
{
    const int q4 = 1;
    MDOT32_BODY(isum16_madd_q4, 0)
}

/* ---- AVX-512, q4_k ----
 * The 4 vectors of a block's codes (runs 2c and 2c+1 in lanes 0-7 and
 * 8-15 of vector c) rearranged so that every lane holds one run in all 4:
 * run q4k_run[e] in lane e. A row's 4 dpbusd then leave per lane a sum of
 * 16 products of that run (inside int16), which one madd multiplies by the
 * run's scale (zero high words: the lane's value is its low word). */
AVX512 INLINE void route_q4k512(__m512i v[4])
{
    __m512i a0 = _mm512_unpacklo_epi64(v[0], v[1]), a1 = _mm512_unpackhi_epi64(v[0], v[1]);
    __m512i b0 = _mm512_unpacklo_epi64(v[2], v[3]), b1 = _mm512_unpackhi_epi64(v[2], v[3]);
    v[0] = _mm512_shuffle_i32x4(a0, b0, 0x88);
    v[1] = _mm512_shuffle_i32x4(a0, b0, 0xdd);
    v[2] = _mm512_shuffle_i32x4(a1, b1, 0x88);
    v[3] = _mm512_shuffle_i32x4(a1, b1, 0xdd);
}

/* The float steps of 4 rows (lanes) for one block, ROWDOT_Q4K_BODY's (the
 * ref's) in its order: sum += d xd isum; sum -= dmin xd imin. v holds the
 * 4 rows' isum and then their imin, dd d 4 times and then dmin. */
AVX2 INLINE __m128 q4k_float4(__m128 sum, __m256 dd, const float *xd4, __m256i v)
{
    __m256 t = _mm256_mul_ps(_mm256_mul_ps(dd, _mm256_broadcast_ps((const __m128 *)xd4)), _mm256_cvtepi32_ps(v));
    sum = _mm_add_ps(sum, _mm256_castps256_ps128(t));
    return _mm_sub_ps(sum, _mm256_extractf128_ps(t, 1));
}

/* n rows of x packed in quads (quad i at x + i xstride) against one weight
 * row: per block the codes, scales and minimums once, then per quad the 4
 * rows' sums (rows past n skipped: their lanes are dropped). Under VNNI a
 * row's lanes (<= 30720) fit int16, so packs puts two rows in a vector and
 * one madd scales both (sw: a lane's run scale in each word); without VNNI
 * the maddubs sums (8 products a word) take the scales in a madd per row.
 * Either way each 128 bits then hold the 4 rows' partial sums in order (X),
 * as one madd leaves the minimums' (Y), and the 4 lanes of 128 bits are
 * added for both at once. */
#define MDOT_Q4K512_BODY(VNNI)                                                                                    \
    static const int16_t widx[32] = {0, 0, 2, 2, 0, 0, 2, 2, 1, 1, 3, 3, 1, 1, 3, 3,                             \
                                     4, 4, 6, 6, 4, 4, 6, 6, 5, 5, 7, 7, 5, 5, 7, 7};                             \
    const __m512i m4 = _mm512_set1_epi8(15);                                                                      \
    const __m512i runs = _mm512_setr_epi32(0, 0, 2, 2, 1, 1, 3, 3, 4, 4, 6, 6, 5, 5, 7, 7);                      \
    const __m512i pairs = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);                     \
    const __m512i wruns = _mm512_loadu_si512(widx);                                                               \
    const size_t nq = (n + 3) / 4;                                                                                \
    __m128 sum[MR_ROWS / 4];                                                                                      \
    for (size_t q = 0; q < nq; q++) sum[q] = _mm_setzero_ps();                                                    \
    for (size_t b = 0; b < nb; b++) {                                                                             \
        const uint8_t *blk = w + 144 * b;                                                                         \
        uint64_t sc, mn;                                                                                          \
        unpack_scales(blk + 4, &sc, &mn);                                                                         \
        __m512i qv[4];                                                                                            \
        UNROLL for (int c = 0; c < 4; c++) {                                                                     \
            __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c)));         \
            qv[c] = _mm512_and_si512(_mm512_mask_srli_epi16(q, 0xffff0000u, q, 4), m4);                           \
        }                                                                                                         \
        route_q4k512(qv);                                                                                         \
        __m512i s;                                                                                                \
        if (VNNI) {                                                                                               \
            s = _mm512_permutexvar_epi16(                                                                         \
                wruns, _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc))));             \
        } else {                                                                                                  \
            s = _mm512_permutexvar_epi32(                                                                         \
                runs, _mm512_castsi256_si512(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc))));           \
            s = _mm512_or_si512(s, _mm512_slli_epi32(s, 16));                                                     \
        }                                                                                                         \
        __m512i mins = _mm512_permutexvar_epi32(                                                                  \
            pairs, _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn))));                 \
        __m256 dd = _mm256_set_m128(_mm_set1_ps(_cvtsh_ss(rd16(blk + 2))), _mm_set1_ps(_cvtsh_ss(rd16(blk))));     \
        const uint8_t *xb = x + MR_Q4K_BLOCK * b;                                                                 \
        for (size_t q = 0; q < nq; q++, xb += xstride) {                                                          \
            size_t nr = n - 4 * q;                                                                                \
            __m512i a[4], X;                                                                                      \
            UNROLL for (int r = 0; r < 4; r++) {                                                                 \
                a[r] = _mm512_setzero_si512();                                                                    \
                if ((size_t)r >= nr) continue;                                                                    \
                const uint8_t *xr = xb + 256 * r;                                                                 \
                if (VNNI) {                                                                                       \
                    UNROLL for (int c = 0; c < 4; c++)                                                           \
                        a[r] = DPBUSD(a[r], qv[c], _mm512_load_si512(xr + 64 * c));                               \
                } else {                                                                                          \
                    a[r] = _mm512_maddubs_epi16(qv[0], _mm512_load_si512(xr));                                    \
                    UNROLL for (int c = 1; c < 4; c++)                                                           \
                        a[r] = _mm512_add_epi16(a[r], _mm512_maddubs_epi16(qv[c], _mm512_load_si512(xr + 64 * c))); \
                    a[r] = _mm512_madd_epi16(a[r], s);                                                            \
                }                                                                                                 \
            }                                                                                                     \
            if (VNNI) {   /* per 128 bits [r0, r0, r1, r1] and [r2, r2, r3, r3] */                              \
                __m512 p01 = _mm512_castsi512_ps(_mm512_madd_epi16(_mm512_packs_epi32(a[0], a[1]), s));          \
                __m512 p23 = _mm512_castsi512_ps(_mm512_madd_epi16(_mm512_packs_epi32(a[2], a[3]), s));          \
                X = _mm512_add_epi32(_mm512_castps_si512(_mm512_shuffle_ps(p01, p23, 0x88)),                      \
                                     _mm512_castps_si512(_mm512_shuffle_ps(p01, p23, 0xdd)));                     \
            } else {                                                                                              \
                __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(a[0], a[1]), _mm512_unpackhi_epi32(a[0], a[1])); \
                __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2], a[3]), _mm512_unpackhi_epi32(a[2], a[3])); \
                X = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));               \
            }                                                                                                     \
            __m512i Y = _mm512_madd_epi16(mins, _mm512_load_si512(xb + MR_Q4K_XR));                               \
            __m512i Z = _mm512_add_epi32(_mm512_shuffle_i32x4(X, Y, 0x44), _mm512_shuffle_i32x4(X, Y, 0xee));     \
            __m256i v = _mm256_add_epi32(_mm512_castsi512_si256(_mm512_shuffle_i32x4(Z, Z, 0x08)),                \
                                         _mm512_castsi512_si256(_mm512_shuffle_i32x4(Z, Z, 0x0d)));               \
            sum[q] = q4k_float4(sum[q], dd, (const float *)(xb + MR_Q4K_XD), v);                                  \
        }                                                                                                         \
    }                                                                                                             \
    for (size_t r = 0; r < n; r++) {                                                                              \
        float f[4];                                                                                               \
        _mm_storeu_ps(f, sum[r / 4]);                                                                             \
        out[r * ostride] = f[r % 4];                                                                              \
    }

#define DPBUSD(a, u, s) _mm512_dpbusd_epi32(a, u, s)
AVX512VNNI static void mdot_q4_K_vnni(const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb,
                                      float *out, size_t ostride)
{
    MDOT_Q4K512_BODY(1)
}
#undef DPBUSD
#define DPBUSD(a, u, s) (a)   /* not taken */
AVX512 static void mdot_q4_K_avx512(const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb,
                                    float *out, size_t ostride)
{
    MDOT_Q4K512_BODY(0)
}
#undef DPBUSD

/* ---- AVX2, q8_0 and q4_0: route256 is reduce8_avx2's stages (hadd as
 * even + odd lanes, then the 128-bit halves) made on the inputs ---- */
AVX2 INLINE __m256i lanes_even(__m256i a, __m256i b)
{
    return _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), 0x88));
}
AVX2 INLINE __m256i lanes_odd(__m256i a, __m256i b)
{
    return _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), 0xdd));
}
AVX2 INLINE void route256(__m256i v[8])
{
    __m256i e[8], f[8];
    UNROLL for (int k = 0; k < 4; k++) {   /* hadd(v2k, v2k+1) */
        e[2 * k] = lanes_even(v[2 * k], v[2 * k + 1]);
        e[2 * k + 1] = lanes_odd(v[2 * k], v[2 * k + 1]);
    }
    UNROLL for (int h = 0; h < 2; h++) {   /* hadd of those two hadds */
        f[4 * h] = lanes_even(e[4 * h], e[4 * h + 2]);
        f[4 * h + 1] = lanes_even(e[4 * h + 1], e[4 * h + 3]);
        f[4 * h + 2] = lanes_odd(e[4 * h], e[4 * h + 2]);
        f[4 * h + 3] = lanes_odd(e[4 * h + 1], e[4 * h + 3]);
    }
    UNROLL for (int i = 0; i < 4; i++) {
        v[2 * i] = _mm256_permute2x128_si256(f[i], f[4 + i], 0x20);
        v[2 * i + 1] = _mm256_permute2x128_si256(f[i], f[4 + i], 0x31);
    }
}

/* one step of 8 blocks (m present) of mdot32_avx2 */
AVX2 INLINE void mdot32_step_avx2(int q4, const uint8_t *p, int m, const uint8_t *xg, size_t xstride, size_t n,
                                  __m256 *acc)
{
    const size_t bb = q4 ? 18 : 34;
    const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(15);
    __m256i wv[8], ws[8];
    UNROLL for (int k = 0; k < 8; k++) {
        if (k >= m) {
            wv[k] = _mm256_setzero_si256();
        } else if (q4) {
            __m128i q = _mm_loadu_si128((const __m128i *)(p + bb * k + 2));
            wv[k] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m4);
        } else {
            wv[k] = _mm256_loadu_si256((const __m256i *)(p + bb * k + 2));
        }
    }
    route256(wv);
    if (!q4)
        UNROLL for (int k = 0; k < 8; k++) {   /* |w| against x with w's sign, as group32_avx2 */
            ws[k] = wv[k];
            wv[k] = _mm256_sign_epi8(wv[k], wv[k]);
        }
    uint16_t h[8];
    UNROLL for (int k = 0; k < 8; k++) h[k] = k < m ? rd16(p + bb * k) : 0;
    __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
    for (size_t r = 0; r < n; r++, xg += xstride) {
        __m256i isum = _mm256_load_si256((const __m256i *)(xg + 256));
        if (q4) {   /* pair sums added in int16, as isum16_madd_q4 */
            __m256i p0 = _mm256_maddubs_epi16(wv[0], _mm256_load_si256((const __m256i *)xg));
            __m256i p1 = _mm256_maddubs_epi16(wv[1], _mm256_load_si256((const __m256i *)(xg + 32)));
            UNROLL for (int k = 2; k < 8; k += 2) {
                p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(wv[k], _mm256_load_si256((const __m256i *)(xg + 32 * k))));
                p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(wv[k + 1],
                                                               _mm256_load_si256((const __m256i *)(xg + 32 * k + 32))));
            }
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_add_epi16(p0, p1), ones));
        } else {
            __m256i s1 = _mm256_setzero_si256();
            UNROLL for (int k = 0; k < 8; k++) {
                __m256i xv = _mm256_load_si256((const __m256i *)(xg + 32 * k));
                __m256i pk = _mm256_madd_epi16(_mm256_maddubs_epi16(wv[k], _mm256_sign_epi8(xv, ws[k])), ones);
                if (k & 1) s1 = _mm256_add_epi32(s1, pk);
                else isum = _mm256_add_epi32(isum, pk);
            }
            isum = _mm256_add_epi32(isum, s1);
        }
        __m256 xd = _mm256_load_ps((const float *)(xg + 288));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, xd), acc[r]);
    }
}

AVX2 INLINE void mdot32_avx2(int q4, const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb,
                             float *out, size_t ostride)
{
    const size_t bb = q4 ? 18 : 34;
    __m256 acc[MR_ROWS];
    for (size_t r = 0; r < n; r++) acc[r] = _mm256_setzero_ps();
    size_t g = 0;
    for (; g + 8 <= nb; g += 8) mdot32_step_avx2(q4, w + bb * g, 8, x + MR32_STEP256 * (g / 8), xstride, n, acc);
    if (g < nb) mdot32_step_avx2(q4, w + bb * g, (int)(nb - g), x + MR32_STEP256 * (g / 8), xstride, n, acc);
    for (size_t r = 0; r < n; r++) out[r * ostride] = hsum8_avx2(acc[r]);
}

AVX2 static void mdot_q8_0_avx2(const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb, float *out,
                                size_t ostride)
{
    mdot32_avx2(0, w, x, xstride, n, nb, out, ostride);
}
AVX2 static void mdot_q4_0_avx2(const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb, float *out,
                                size_t ostride)
{
    mdot32_avx2(1, w, x, xstride, n, nb, out, ostride);
}

/* ---- AVX2, q4_k: the 8 runs (one a vector of 8 lanes) transposed, so
 * that lane j of every vector is run j; a row's 8 maddubs add up in int16
 * (16 products a lane) and one madd applies the scales ---- */
AVX2 INLINE void transpose8x8_epi32(__m256i v[8])
{
    __m256i t[8], u[8];
    UNROLL for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
    }
    UNROLL for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    UNROLL for (int c = 0; c < 4; c++) {
        v[c] = _mm256_permute2x128_si256(u[c], u[c + 4], 0x20);
        v[c + 4] = _mm256_permute2x128_si256(u[c], u[c + 4], 0x31);
    }
}

AVX2 static void mdot_q4_K_avx2(const uint8_t *w, const uint8_t *x, size_t xstride, size_t n, size_t nb, float *out,
                                size_t ostride)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    const size_t nq = (n + 3) / 4;
    __m128 sum[MR_ROWS / 4];
    for (size_t q = 0; q < nq; q++) sum[q] = _mm_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = w + 144 * b;
        uint64_t sc, mn;
        unpack_scales(blk + 4, &sc, &mn);
        __m256i qv[8];
        UNROLL for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c));
            qv[2 * c] = _mm256_and_si256(q, m4);
            qv[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        }
        transpose8x8_epi32(qv);
        __m128i s16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc));
        __m256i s = _mm256_set_m128i(_mm_unpackhi_epi16(s16, s16), _mm_unpacklo_epi16(s16, s16));
        __m256i mins = _mm256_castsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn)));
        __m256i mins0 = _mm256_permutevar8x32_epi32(mins, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
        __m256i mins1 = _mm256_permutevar8x32_epi32(mins, _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3));
        __m256 dd = _mm256_set_m128(_mm_set1_ps(_cvtsh_ss(rd16(blk + 2))), _mm_set1_ps(_cvtsh_ss(rd16(blk))));
        const uint8_t *xb = x + MR_Q4K_BLOCK * b;
        for (size_t q = 0; q < nq; q++, xb += xstride) {
            size_t nr = n - 4 * q;
            __m256i a[4];
            UNROLL for (int r = 0; r < 4; r++) {
                a[r] = _mm256_setzero_si256();
                if ((size_t)r >= nr) continue;
                const uint8_t *xr = xb + 256 * r;
                __m256i p0 = _mm256_maddubs_epi16(qv[0], _mm256_load_si256((const __m256i *)xr));
                __m256i p1 = _mm256_maddubs_epi16(qv[1], _mm256_load_si256((const __m256i *)(xr + 32)));
                UNROLL for (int v = 2; v < 8; v += 2) {
                    p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(qv[v], _mm256_load_si256((const __m256i *)(xr + 32 * v))));
                    p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(qv[v + 1],
                                                                   _mm256_load_si256((const __m256i *)(xr + 32 * v + 32))));
                }
                a[r] = _mm256_madd_epi16(_mm256_add_epi16(p0, p1), s);
            }
            /* per 128 bits the 4 rows' partial sums in order (X), the same
             * for the minimums (Y), then both halves added */
            __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(a[0], a[1]), _mm256_unpackhi_epi32(a[0], a[1]));
            __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(a[2], a[3]), _mm256_unpackhi_epi32(a[2], a[3]));
            __m256i X = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
            __m256i Y = _mm256_add_epi32(_mm256_madd_epi16(mins0, _mm256_load_si256((const __m256i *)(xb + MR_Q4K_XR))),
                                         _mm256_madd_epi16(mins1, _mm256_load_si256((const __m256i *)(xb + MR_Q4K_XR + 32))));
            __m256i v = _mm256_add_epi32(_mm256_permute2x128_si256(X, Y, 0x20), _mm256_permute2x128_si256(X, Y, 0x31));
            sum[q] = q4k_float4(sum[q], dd, (const float *)(xb + MR_Q4K_XD), v);
        }
    }
    for (size_t r = 0; r < n; r++) {
        float f[4];
        _mm_storeu_ps(f, sum[r / 4]);
        out[r * ostride] = f[r % 4];
    }
}

/* ==== the quantized Linear layer ==== */

typedef float (*rowdot_fn)(const uint8_t *w, const int8_t *xq, const float *xd, const int32_t *xs, const int16_t *xr,
                           size_t nb);

typedef struct qctx {
    llmk_qtype t;
    rowdot_fn dot;
    mrowdot_fn mdot;      /* from 2 rows: a pass of rows against a weight row */
    void (*pack)(const struct qctx *c, size_t r);   /* x's row r into mx, for mdot */
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
    uint8_t *mx;          /* from 2 rows: x packed (see MR32_STEP512, MR_Q4K_BLOCK) */
    size_t mstride;       /* bytes a packed row (q4_k: a packed quad of rows) */
    size_t pass;          /* rows of x a pass over a tile of weights, a multiple of 4 */
    int bias;             /* q8_0, q4_0: the packed block sums start at -bias x sum of x's codes */
} qctx;

/* ---- x packed for the multi-row dots: row r, from its codes and sums
 * above; the moves are those applied to the weights ---- */
AVX512 static void pack32_avx512(const qctx *c, size_t r)
{
    const int8_t *q = c->xq + r * c->nbp * 32;
    const float *xd = c->xd + r * c->nbp;
    const int32_t *xs = c->xs + r * c->nbp;
    uint8_t *dst = c->mx + r * c->mstride;
    for (size_t g = 0; g < c->nbp / 16; g++, dst += MR32_STEP512) {
        __m512i v[8];
        UNROLL for (int j = 0; j < 8; j++) v[j] = _mm512_loadu_si512(q + 512 * g + 64 * j);
        route512(v);
        UNROLL for (int j = 0; j < 8; j++) _mm512_store_si512(dst + 64 * j, v[j]);
        int32_t *s0 = (int32_t *)(dst + 512);
        float *dx = (float *)(dst + 576);
        for (int e = 0; e < 16; e++) {
            size_t k = 16 * g + (size_t)perm16(e);
            s0[e] = -c->bias * xs[k];
            dx[e] = xd[k];
        }
    }
}

AVX2 static void pack32_avx2(const qctx *c, size_t r)
{
    const int8_t *q = c->xq + r * c->nbp * 32;
    const float *xd = c->xd + r * c->nbp;
    const int32_t *xs = c->xs + r * c->nbp;
    uint8_t *dst = c->mx + r * c->mstride;
    for (size_t g = 0; g < c->nbp / 8; g++, dst += MR32_STEP256) {
        __m256i v[8];
        UNROLL for (int j = 0; j < 8; j++) v[j] = _mm256_loadu_si256((const __m256i *)(q + 256 * g + 32 * j));
        route256(v);
        UNROLL for (int j = 0; j < 8; j++) _mm256_store_si256((__m256i *)(dst + 32 * j), v[j]);
        int32_t *s0 = (int32_t *)(dst + 256);
        float *dx = (float *)(dst + 288);
        for (int e = 0; e < 8; e++) {
            s0[e] = -c->bias * xs[8 * g + (size_t)e];
            dx[e] = xd[8 * g + (size_t)e];
        }
    }
}

/* q4_k: row r's block b in its quad's block at blk (row rr of 4) */
static void pack_q4k_sums(const qctx *c, size_t r, size_t b, uint8_t *blk, size_t rr)
{
    int16_t *xr = (int16_t *)(blk + MR_Q4K_XR);
    for (size_t j = 0; j < 8; j++) xr[2 * (4 * (j / 2) + rr) + j % 2] = c->xr[(r * c->nb + b) * 8 + j];
    ((float *)(blk + MR_Q4K_XD))[rr] = c->xd[r * c->nbp + b];
}

AVX512 static void pack_q4k_avx512(const qctx *c, size_t r)
{
    uint8_t *quad = c->mx + r / 4 * c->mstride;
    for (size_t b = 0; b < c->nb; b++) {
        const int8_t *q = c->xq + (r * c->nb + b) * 256;
        uint8_t *blk = quad + MR_Q4K_BLOCK * b;
        __m512i v[4];
        UNROLL for (int i = 0; i < 4; i++) v[i] = _mm512_loadu_si512(q + 64 * i);
        route_q4k512(v);
        UNROLL for (int i = 0; i < 4; i++) _mm512_store_si512(blk + 256 * (r % 4) + 64 * i, v[i]);
        pack_q4k_sums(c, r, b, blk, r % 4);
    }
}

AVX2 static void pack_q4k_avx2(const qctx *c, size_t r)
{
    uint8_t *quad = c->mx + r / 4 * c->mstride;
    for (size_t b = 0; b < c->nb; b++) {
        const int8_t *q = c->xq + (r * c->nb + b) * 256;
        uint8_t *blk = quad + MR_Q4K_BLOCK * b;
        __m256i v[8];
        UNROLL for (int i = 0; i < 8; i++) v[i] = _mm256_loadu_si256((const __m256i *)(q + 32 * i));
        transpose8x8_epi32(v);
        UNROLL for (int i = 0; i < 8; i++) _mm256_store_si256((__m256i *)(blk + 256 * (r % 4) + 32 * i), v[i]);
        pack_q4k_sums(c, r, b, blk, r % 4);
    }
}

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
        if (c->pack) c->pack(c, r);
    }
}

/* Output channels [o0, o1): a tile of weight rows (kept in L2) against
 * every row of x in turn, so prefill reads each weight byte from memory
 * once per call; from 2 rows, against passes of c->pass rows of x packed,
 * each weight row once a pass. */
static void qlinear_range(void *arg, size_t o0, size_t o1)
{
    const qctx *c = arg;
    const size_t be = c->t == LLMK_Q4_K ? 256 : 32;
    for (size_t t0 = o0; t0 < o1; t0 += c->tile) {
        size_t t1 = t0 + c->tile < o1 ? t0 + c->tile : o1;
        if (c->mx) {   /* passes of rows, each weight row once a pass */
            for (size_t r0 = 0; r0 < c->rows; r0 += c->pass) {
                size_t n = c->rows - r0 < c->pass ? c->rows - r0 : c->pass;
                const uint8_t *x = c->mx + (c->t == LLMK_Q4_K ? r0 / 4 : r0) * c->mstride;
                float *out = c->out + r0 * c->oc;
                for (size_t o = t0; o < t1; o++) c->mdot(c->w + o * c->rb, x, c->mstride, n, c->nb, out + o, c->oc);
            }
            continue;
        }
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
    static const mrowdot_fn mdots[3][LLMK_QTYPE_COUNT] = {
        {mdot_q8_0_avx2, mdot_q4_0_avx2, mdot_q4_K_avx2},
        {mdot_q8_0_avx512, mdot_q4_0_avx512, mdot_q4_K_avx512},
        {mdot_q8_0_vnni, mdot_q4_0_vnni, mdot_q4_K_vnni},
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
    size_t bm = 0;
    if (rows >= 2) {   /* x packed for the multi-row dots */
        c.mstride = t == LLMK_Q4_K ? c.nb * MR_Q4K_BLOCK : path ? c.nbp / 16 * MR32_STEP512 : c.nbp / 8 * MR32_STEP256;
        bm = (t == LLMK_Q4_K ? (rows + 3) / 4 : rows) * c.mstride;
    }
    uint8_t *buf = act_buffer(bq + bd + bs + bm + 64);
    if (!buf) {   /* no memory for x's codes: the oracle needs none */
        llmk_qlinear_ref(t, out, x, w, rows, ic, oc);
        return;
    }
    c.xq = (int8_t *)buf;
    c.xd = (float *)(buf + bq);
    if (t == LLMK_Q4_K) c.xr = (int16_t *)(buf + bq + bd);
    else c.xs = (int32_t *)(buf + bq + bd);
    if (bm) {
        typedef void (*pack_fn)(const qctx *, size_t);
        static const pack_fn packs[2][LLMK_QTYPE_COUNT] = {
            {pack32_avx2, pack32_avx2, pack_q4k_avx2},
            {pack32_avx512, pack32_avx512, pack_q4k_avx512},
        };
        c.mdot = mdots[path][t];
        c.pack = packs[path > 0][t];
        c.mx = buf + bq + bd + bs;
        c.bias = t == LLMK_Q4_0 ? 8 : t == LLMK_Q8_0 && path == 2 ? 128 : 0;
        /* 16 rows a pass where their packed x stays inside 24 KiB (L1
         * with the weights streaming past), else 8 (measured best at
         * ic = 2048 and 5632: x then comes from L2, but the weights' work
         * is shared by fewer rows below 8) */
        size_t row_bytes = t == LLMK_Q4_K ? c.mstride / 4 : c.mstride;
        c.pass = MR_ROWS * row_bytes <= (24u << 10) ? MR_ROWS : 8;
        if (t == LLMK_Q4_K && rows % 4)   /* the last quad's missing rows: zero */
            memset(c.mx + rows / 4 * c.mstride, 0, c.mstride);
    }

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
