/* Causal self-attention, fast CPU versions (AVX-512 or AVX2 + FMA, chosen at
 * run time; _ref otherwise), compared to attention_ref.c in
 * t/unit/test_attention.c. Layout and semantics are in llmk.h.
 *
 * The work is cut into blocks of R = 4 rows, and every output element is
 * computed by one block in one fixed order, so results do not depend on the
 * number of threads:
 *
 *   forward      query rows t0 .. t0+3 of one (b, h): scores s_j = scale
 *                q_t.k_j (j <= t), softmax into att, out_t = sum_j p_j v_j.
 *   backward 1   query rows of one (b, h): dP_j = dout_t.v_j, dS_j = p_j
 *                (dP_j - sum_i p_i dP_i) into a (T, T) buffer, dq_t += scale
 *                sum_j dS_j k_j. A dq row belongs to one (b, h, t).
 *   backward 2   key rows j0 .. j0+3 of one (b, kv head g): dk_j += scale
 *                sum_{t>=j} dS[t][j] q_t and dv_j += sum_{t>=j} P[t][j]
 *                dout_t, one addition per query head of the group, in head
 *                order. A dk or dv row belongs to one (b, g, j), so GQA
 *                needs no atomics and no reduction.
 *
 * When the (b, g) pairs share evenly among the threads, each thread takes
 * whole pairs and runs, head by head, pass 1 over all rows then pass 2 over
 * all keys while that head's dS and att are in L2 (dS in a per-thread
 * buffer up to T = 512, in scratch beyond). Otherwise pass 1 runs over all
 * (b, h, row blocks), then pass 2 over all (b, g, key blocks), with dS in
 * scratch. Both schedules do the same arithmetic for every element.
 *
 * Four rows at a time share every load of k, v, q or dout: each loaded
 * vector feeds four FMAs, so the loops run from L1/L2 near the FMA rate
 * rather than at the load rate. Scores for a block of 16 (AVX-512) keys are
 * one vector: K (or V) of the current (b, g) is first transposed into a
 * per-thread Kt (D, Tp), Tp = T rounded up to 16, zero-padded, so that
 * s[j..j+15] = sum_d q[d] * Kt[d][j..j+15] needs no horizontal sums. The
 * rows summed along D (V, or K; q and dout in the fused backward) are
 * copied to contiguous (T, D) buffers: qkv rows are (H + 2 KVH) D floats
 * apart, a multiple of 1 KiB for the usual shapes, which would put them
 * all in a few L1 sets.
 *
 * Causal blocks cost in proportion to their row index (or T minus it): the
 * blocks are cut into one contiguous range per thread of equal total cost,
 * so the split is even for any B, H, T, including B*H below the threads. */
#include "llmk.h"
#include "attn_simd.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,fma")))
#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE512 static inline __attribute__((always_inline, target("avx512f,avx512bw,fma")))
#define INLINE2 static inline __attribute__((always_inline, target("avx2,fma")))

#define R 4            /* rows per block */
#define MAX_PARTS 256

typedef struct {
    float *out, *att;            /* forward: (B, T, H*D), (B, H, T, T) */
    float *dqkv, *scratch;       /* backward: (B, T, C3), (B, H, T, T) */
    const float *qkv, *dout;     /* (B, T, C3), (B, T, H*D) */
    const float *attc;           /* backward: att, read only */
    size_t B, T, H, KVH, D, C3, group, Tp, nb;   /* nb: blocks per (b, h) = ceil(T / R) */
    float scale;
    int avx512;
    int ds_local;                /* fused backward: dS in the part's buffer, not in scratch */
    size_t bound[MAX_PARTS + 1]; /* part p takes blocks bound[p] .. bound[p+1] - 1 */
    float *ws;                   /* per part: see alloc_ws */
    size_t ws_stride;            /* floats per part, a multiple of 16 */
} attn_ctx;

/* the output rows of a block, for combo (below) */
typedef struct {
    float *dst[R];         /* output rows (D floats) */
    const float *w[R];     /* weights: item i of output r at w[r][i * wsi] */
    size_t lo[R], hi[R];   /* output r sums items [lo[r], hi[r]) */
    int n;                 /* real outputs; outputs n .. R-1 repeat output 0, computed and not stored */
} rows4;

static int use_avx512(void) { const llmk_cpu_features *f = llmk_cpu(); return f->avx512f && f->avx512bw && f->fma; }
static int use_avx2(void) { const llmk_cpu_features *f = llmk_cpu(); return f->avx2 && f->fma; }

static size_t min_z(size_t a, size_t b) { return a < b ? a : b; }

/* Cuts `runs` runs of nb blocks into `parts` contiguous ranges of about
 * equal cost; block k of a run costs k + 1 (ascending) or nb - k. */
static void partition(size_t *bound, size_t parts, size_t runs, size_t nb, int ascending)
{
    const size_t n = runs * nb;
    const double total = (double)runs * (double)nb * (double)(nb + 1) / 2;
    double acc = 0;
    size_t p = 1;
    bound[0] = 0;
    for (size_t i = 0; i < n && p < parts; i++) {
        size_t k = i % nb;
        acc += (double)(ascending ? k + 1 : nb - k);
        while (p < parts && acc >= total * (double)p / (double)parts) bound[p++] = i + 1;
    }
    while (p <= parts) bound[p++] = n;
}

/* How many parts (threads) the work is worth: the pool wakes threads in
 * tens of microseconds, so small problems stay on the calling thread. */
static size_t choose_parts(size_t blocks, double macs)
{
    size_t parts = (size_t)llmk_threads();
    if (parts > MAX_PARTS) parts = MAX_PARTS;
    if (parts > blocks) parts = blocks;
    if (macs < 1 << 18) parts = 1;
    return parts ? parts : 1;
}

/* Kt (D, Tp) = the T rows of x (stride C3, D wide) transposed, columns
 * T .. Tp - 1 zero. */
static void pack_transposed(float *Kt, const float *x, size_t T, size_t Tp, size_t D, size_t C3)
{
    /* 16 rows at a time, so that each write fills a cache line and the 16
     * rows being read stay in L1 (Kt's rows are Tp floats apart, often a
     * multiple of 1 KiB: column-at-a-time writes would share a few sets) */
    for (size_t j0 = 0; j0 < Tp; j0 += 16)
        for (size_t d = 0; d < D; d++) {
            float *o = Kt + d * Tp + j0;
            for (size_t j = 0; j < 16; j++) o[j] = j0 + j < T ? x[(j0 + j) * C3 + d] : 0;
        }
}

/* X (T, D) = the T rows of x (stride C3), contiguous */
static void pack_rows(float *X, const float *x, size_t T, size_t D, size_t C3)
{
    for (size_t j = 0; j < T; j++) memcpy(X + j * D, x + j * C3, D * sizeof(float));
}

/* ===================================================================== */
/* AVX-512                                                                */
/* ===================================================================== */

/* pack_transposed with whole 16 x 16 tiles in registers; the ragged edges
 * (T or D not a multiple of 16) element by element */
AVX512 static void pack_transposed512(float *Kt, const float *x, size_t T, size_t Tp, size_t D, size_t C3)
{
    for (size_t j0 = 0; j0 < Tp; j0 += 16)
        for (size_t d0 = 0; d0 < D; d0 += 16) {
            if (j0 + 16 <= T && d0 + 16 <= D) {
                transpose16_512(Kt + d0 * Tp + j0, Tp, x + j0 * C3 + d0, C3);
                continue;
            }
            for (size_t d = d0; d < D && d < d0 + 16; d++)
                for (size_t j = j0; j < j0 + 16; j++) Kt[d * Tp + j] = j < T ? x[j * C3 + d] : 0;
        }
}

static __mmask16 tail_mask16(size_t k) { return (__mmask16)(k >= 16 ? 0xffff : (1u << k) - 1); }

/* S[r][j] = alpha * sum_d q[r][d] * Kt[d*ld + j] for the R rows and the nv
 * (1..4) vectors of 16 columns from j0: R * nv accumulators, each Kt vector
 * loaded once for the R rows. */
INLINE512 void scores_block512(float *const S[R], const float *const q[R], const float *Kt, size_t ld, size_t D,
                               size_t j0, int nv, float alpha)
{
    __m512 acc[R][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[r][v] = _mm512_setzero_ps();
    const float *kt = Kt + j0;
    for (size_t d = 0; d < D; d++, kt += ld) {
        __m512 k[4];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) k[v] = _mm512_loadu_ps(kt + 16 * v);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512 qr = _mm512_set1_ps(q[r][d]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(qr, k[v], acc[r][v]);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) _mm512_storeu_ps(S[r] + j0 + 16 * v, _mm512_mul_ps(va, acc[r][v]));
}

/* S[r][0 .. np) for the R rows (np a multiple of 16). */
AVX512 static void scores512(float *const S[R], const float *const q[R], const float *Kt, size_t ld, size_t D,
                             size_t np, float alpha)
{
    size_t j = 0;
    for (; j + 64 <= np; j += 64) scores_block512(S, q, Kt, ld, D, j, 4, alpha);
    switch ((np - j) / 16) {
    case 3: scores_block512(S, q, Kt, ld, D, j, 3, alpha); break;
    case 2: scores_block512(S, q, Kt, ld, D, j, 2, alpha); break;
    case 1: scores_block512(S, q, Kt, ld, D, j, 1, alpha); break;
    default: break;
    }
}

/* For the outputs of o, channels [d0, d0 + 16 nv) (the last vector cut to
 * `last` lanes): dst[r] = (add ? dst[r] : 0) + alpha * sum_{i in [lo[r],
 * hi[r])} w[r][i*wsi] * x[i*xs + d]. The items every output takes are done
 * four outputs at a time (one load of x for four FMAs); the few at the
 * ragged ends, one output at a time. Items are always added in ascending
 * order. */
INLINE512 void combo_block512(const rows4 *o, size_t wsi, const float *x, size_t xs, size_t d0, int nv,
                              __mmask16 last, float alpha, int add)
{
    __m512 acc[R][4];
    __mmask16 m[4];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) m[v] = v == nv - 1 ? last : (__mmask16)0xffff;
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[r][v] = _mm512_setzero_ps();
    size_t L = 0, U = SIZE_MAX, first = SIZE_MAX, end = 0;   /* common items [L, U); all items [first, end) */
    for (int r = 0; r < R; r++) {
        if (o->lo[r] > L) L = o->lo[r];
        if (o->hi[r] < U) U = o->hi[r];
        if (o->lo[r] < first) first = o->lo[r];
        if (o->hi[r] > end) end = o->hi[r];
    }
    if (U < L) U = L;
    const float *w0 = o->w[0], *w1 = o->w[1], *w2 = o->w[2], *w3 = o->w[3];
    for (size_t i = first; i < end; i++) {
        if (i == L) {   /* the common items, four outputs at a time */
            for (; i < U; i++) {
                const float *xi = x + i * xs + d0;
                __m512 xv[4];
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++) xv[v] = _mm512_maskz_loadu_ps(m[v], xi + 16 * v);
                const __m512 a0 = _mm512_set1_ps(w0[i * wsi]), a1 = _mm512_set1_ps(w1[i * wsi]),
                             a2 = _mm512_set1_ps(w2[i * wsi]), a3 = _mm512_set1_ps(w3[i * wsi]);
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++) {
                    acc[0][v] = _mm512_fmadd_ps(a0, xv[v], acc[0][v]);
                    acc[1][v] = _mm512_fmadd_ps(a1, xv[v], acc[1][v]);
                    acc[2][v] = _mm512_fmadd_ps(a2, xv[v], acc[2][v]);
                    acc[3][v] = _mm512_fmadd_ps(a3, xv[v], acc[3][v]);
                }
            }
            if (i >= end) break;
        }
        const float *xi = x + i * xs + d0;
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            if (i >= o->lo[r] && i < o->hi[r]) {
                const __m512 a = _mm512_set1_ps(o->w[r][i * wsi]);
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    acc[r][v] = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m[v], xi + 16 * v), acc[r][v]);
            }
    }
    const __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        if (r >= o->n) break;
        float *dst = o->dst[r] + d0;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __m512 base = add ? _mm512_maskz_loadu_ps(m[v], dst + 16 * v) : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(dst + 16 * v, m[v], _mm512_fmadd_ps(va, acc[r][v], base));
        }
    }
}

AVX512 static void combo512(const rows4 *o, size_t wsi, const float *x, size_t xs, size_t D, float alpha, int add)
{
    const size_t nvec = (D + 15) / 16;
    for (size_t v = 0; v < nvec; v += 4) {
        int nv = nvec - v < 4 ? (int)(nvec - v) : 4;
        size_t d0 = 16 * v;
        __mmask16 last = tail_mask16(D - (d0 + 16 * (size_t)(nv - 1)));
        switch (nv) {
        case 4: combo_block512(o, wsi, x, xs, d0, 4, last, alpha, add); break;
        case 3: combo_block512(o, wsi, x, xs, d0, 3, last, alpha, add); break;
        case 2: combo_block512(o, wsi, x, xs, d0, 2, last, alpha, add); break;
        default: combo_block512(o, wsi, x, xs, d0, 1, last, alpha, add); break;
        }
    }
}

/* s[0 .. n) scores (s has np >= n floats, a multiple of 16) -> the
 * probabilities, in s (for out = sum p v, from L1) and in p (T), then zeros
 * to the end of p. att is written once here and read again only in the
 * backward pass, long after it has left the caches: stream it (no
 * read-for-ownership) when the row is 64-byte aligned. */
AVX512 static void softmax_row512(float *s, size_t n, size_t np, float *p, size_t T)
{
    for (size_t j = n; j < np; j++) s[j] = -INFINITY;
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (size_t j = 0; j < np; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(s + j));
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    __m512 sum = _mm512_setzero_ps();
    for (size_t j = 0; j < np; j += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(s + j), mx));
        _mm512_storeu_ps(s + j, e);
        sum = _mm512_add_ps(sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    const int aligned = ((uintptr_t)p & 63) == 0;
    size_t j = 0;
    for (; j + 16 <= T; j += 16) {
        __m512 v = _mm512_setzero_ps();
        if (j < np) {
            v = _mm512_mul_ps(_mm512_loadu_ps(s + j), inv);
            _mm512_storeu_ps(s + j, v);
        }
        if (aligned) _mm512_stream_ps(p + j, v);
        else _mm512_storeu_ps(p + j, v);
    }
    if (j < T) {
        __m512 v = _mm512_setzero_ps();
        if (j < np) {
            v = _mm512_mul_ps(_mm512_loadu_ps(s + j), inv);
            _mm512_storeu_ps(s + j, v);
        }
        _mm512_mask_storeu_ps(p + j, tail_mask16(T - j), v);
    }
}

/* dS[j] = p[j] * (dP[j] - sum_{i<n} p[i] dP[i]) for j < n */
AVX512 static void dsoftmax_row512(float *dS, const float *p, const float *dP, size_t n)
{
    __m512 acc = _mm512_setzero_ps();
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = tail_mask16(n - j);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p + j), _mm512_maskz_loadu_ps(m, dP + j), acc);
    }
    const __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(acc));
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = tail_mask16(n - j);
        _mm512_mask_storeu_ps(dS + j, m,
                              _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + j),
                                            _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dP + j), dot)));
    }
}

/* ===================================================================== */
/* AVX2 + FMA: the same code, 8 lanes, and at most 2 vectors per row      */
/* (16 ymm registers)                                                     */
/* ===================================================================== */

INLINE2 float hsum256(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

INLINE2 float hmax256(__m256 v)
{
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

/* lanes < k set (k <= 8) */
INLINE2 __m256i tail_mask8(size_t k)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(k < 8 ? k : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* 16 columns from j0 (np is a multiple of 16) for the R rows */
AVX2 static void scores256(float *const S[R], const float *const q[R], const float *Kt, size_t ld, size_t D,
                           size_t np, float alpha)
{
    const __m256 va = _mm256_set1_ps(alpha);
    for (size_t j0 = 0; j0 < np; j0 += 16) {
        __m256 acc[R][2];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        const float *kt = Kt + j0;
        for (size_t d = 0; d < D; d++, kt += ld) {
            const __m256 k0 = _mm256_loadu_ps(kt), k1 = _mm256_loadu_ps(kt + 8);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                const __m256 qr = _mm256_set1_ps(q[r][d]);
                acc[r][0] = _mm256_fmadd_ps(qr, k0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(qr, k1, acc[r][1]);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            _mm256_storeu_ps(S[r] + j0, _mm256_mul_ps(va, acc[r][0]));
            _mm256_storeu_ps(S[r] + j0 + 8, _mm256_mul_ps(va, acc[r][1]));
        }
    }
}

/* as combo_block512, channels [d0, d0 + 8 nv), nv <= 2; the last vector
 * is a masked load and store when `partial` */
INLINE2 void combo_block256(const rows4 *o, size_t wsi, const float *x, size_t xs, size_t d0, int nv, __m256i last,
                            int partial, float alpha, int add)
{
#define LOADV(p, v) (partial && (v) == nv - 1 ? _mm256_maskload_ps((p) + 8 * (v), last) : _mm256_loadu_ps((p) + 8 * (v)))
    __m256 acc[R][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    size_t L = 0, U = SIZE_MAX, first = SIZE_MAX, end = 0;
    for (int r = 0; r < R; r++) {
        if (o->lo[r] > L) L = o->lo[r];
        if (o->hi[r] < U) U = o->hi[r];
        if (o->lo[r] < first) first = o->lo[r];
        if (o->hi[r] > end) end = o->hi[r];
    }
    if (U < L) U = L;
    const float *w0 = o->w[0], *w1 = o->w[1], *w2 = o->w[2], *w3 = o->w[3];
    for (size_t i = first; i < end; i++) {
        if (i == L) {
            for (; i < U; i++) {
                const float *xi = x + i * xs + d0;
                __m256 xv[2];
#pragma GCC unroll 2
                for (int v = 0; v < nv; v++) xv[v] = LOADV(xi, v);
                const __m256 a0 = _mm256_set1_ps(w0[i * wsi]), a1 = _mm256_set1_ps(w1[i * wsi]),
                             a2 = _mm256_set1_ps(w2[i * wsi]), a3 = _mm256_set1_ps(w3[i * wsi]);
#pragma GCC unroll 2
                for (int v = 0; v < nv; v++) {
                    acc[0][v] = _mm256_fmadd_ps(a0, xv[v], acc[0][v]);
                    acc[1][v] = _mm256_fmadd_ps(a1, xv[v], acc[1][v]);
                    acc[2][v] = _mm256_fmadd_ps(a2, xv[v], acc[2][v]);
                    acc[3][v] = _mm256_fmadd_ps(a3, xv[v], acc[3][v]);
                }
            }
            if (i >= end) break;
        }
        const float *xi = x + i * xs + d0;
#pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            if (i >= o->lo[r] && i < o->hi[r]) {
                const __m256 a = _mm256_set1_ps(o->w[r][i * wsi]);
#pragma GCC unroll 2
                for (int v = 0; v < nv; v++) acc[r][v] = _mm256_fmadd_ps(a, LOADV(xi, v), acc[r][v]);
            }
    }
    const __m256 va = _mm256_set1_ps(alpha);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        if (r >= o->n) break;
        float *dst = o->dst[r] + d0;
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            __m256 base = add ? LOADV(dst, v) : _mm256_setzero_ps();
            __m256 y = _mm256_fmadd_ps(va, acc[r][v], base);
            if (partial && v == nv - 1) _mm256_maskstore_ps(dst + 8 * v, last, y);
            else _mm256_storeu_ps(dst + 8 * v, y);
        }
    }
#undef LOADV
}

AVX2 static void combo256(const rows4 *o, size_t wsi, const float *x, size_t xs, size_t D, float alpha, int add)
{
    const size_t nvec = (D + 7) / 8;
    for (size_t v = 0; v < nvec; v += 2) {
        int nv = nvec - v < 2 ? 1 : 2;
        size_t d0 = 8 * v, lanes = D - (d0 + 8 * (size_t)(nv - 1));
        __m256i last = tail_mask8(lanes);
        if (lanes < 8) {
            if (nv == 2) combo_block256(o, wsi, x, xs, d0, 2, last, 1, alpha, add);
            else combo_block256(o, wsi, x, xs, d0, 1, last, 1, alpha, add);
        } else {
            if (nv == 2) combo_block256(o, wsi, x, xs, d0, 2, last, 0, alpha, add);
            else combo_block256(o, wsi, x, xs, d0, 1, last, 0, alpha, add);
        }
    }
}

AVX2 static void softmax_row256(float *s, size_t n, size_t np, float *p, size_t T)
{
    for (size_t j = n; j < np; j++) s[j] = -INFINITY;
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (size_t j = 0; j < np; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(s + j));
    const __m256 mx = _mm256_set1_ps(hmax256(m));
    __m256 sum = _mm256_setzero_ps();
    for (size_t j = 0; j < np; j += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), mx));
        _mm256_storeu_ps(s + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / hsum256(sum));
    const int aligned = ((uintptr_t)p & 31) == 0;
    size_t j = 0;
    for (; j + 8 <= T; j += 8) {
        __m256 v = _mm256_setzero_ps();
        if (j < np) {
            v = _mm256_mul_ps(_mm256_loadu_ps(s + j), inv);
            _mm256_storeu_ps(s + j, v);
        }
        if (aligned) _mm256_stream_ps(p + j, v);
        else _mm256_storeu_ps(p + j, v);
    }
    if (j < T) {
        __m256 v = _mm256_setzero_ps();
        if (j < np) {
            v = _mm256_mul_ps(_mm256_loadu_ps(s + j), inv);
            _mm256_storeu_ps(s + j, v);
        }
        _mm256_maskstore_ps(p + j, tail_mask8(T - j), v);
    }
}

AVX2 static void dsoftmax_row256(float *dS, const float *p, const float *dP, size_t n)
{
    __m256 acc = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 8 <= n; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(p + j), _mm256_loadu_ps(dP + j), acc);
    if (j < n) {
        __m256i m = tail_mask8(n - j);
        acc = _mm256_fmadd_ps(_mm256_maskload_ps(p + j, m), _mm256_maskload_ps(dP + j, m), acc);
    }
    const __m256 dot = _mm256_set1_ps(hsum256(acc));
    for (j = 0; j + 8 <= n; j += 8)
        _mm256_storeu_ps(dS + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), _mm256_sub_ps(_mm256_loadu_ps(dP + j), dot)));
    if (j < n) {
        __m256i m = tail_mask8(n - j);
        _mm256_maskstore_ps(dS + j, m,
                            _mm256_mul_ps(_mm256_maskload_ps(p + j, m), _mm256_sub_ps(_mm256_maskload_ps(dP + j, m), dot)));
    }
}

/* ===================================================================== */
/* blocks, threading and dispatch                                         */
/* ===================================================================== */

static void pack_t(const attn_ctx *c, float *Kt, const float *x)
{
    if (c->avx512) pack_transposed512(Kt, x, c->T, c->Tp, c->D, c->C3);
    else pack_transposed(Kt, x, c->T, c->Tp, c->D, c->C3);
}

static void scores(const attn_ctx *c, float *const S[R], const float *const q[R], const float *Kt, size_t np,
                   float alpha)
{
    if (c->avx512) scores512(S, q, Kt, c->Tp, c->D, np, alpha);
    else scores256(S, q, Kt, c->Tp, c->D, np, alpha);
}

static void combo(const attn_ctx *c, const rows4 *o, size_t wsi, const float *x, size_t xs, float alpha, int add)
{
    if (c->avx512) combo512(o, wsi, x, xs, c->D, alpha, add);
    else combo256(o, wsi, x, xs, c->D, alpha, add);
}

/* Query rows t0 .. t0 + nr - 1 of (b, h), forward. Kt: the keys of its kv
 * head transposed, V: its values (T, D); sbuf: R rows of Tp floats. */
static void fwd_block(const attn_ctx *c, size_t b, size_t h, size_t t0, int nr, const float *Kt, const float *V,
                      float *sbuf)
{
    const size_t T = c->T, D = c->D, np = (t0 + (size_t)nr + 15) & ~(size_t)15;
    float *S[R];
    const float *q[R];
    rows4 o = {.n = nr};
    for (int r = 0; r < R; r++) {
        size_t t = t0 + (size_t)(r < nr ? r : 0);   /* the spare rows repeat row t0 */
        S[r] = sbuf + (size_t)r * c->Tp;
        q[r] = c->qkv + (b * T + t) * c->C3 + h * D;
        o.dst[r] = c->out + (b * T + t) * c->H * D + h * D;
        o.w[r] = S[r < nr ? r : 0];   /* the probabilities, as softmax leaves them */
        o.lo[r] = 0, o.hi[r] = t + 1;
    }
    scores(c, S, q, Kt, np, c->scale);
    for (int r = 0; r < nr; r++) {
        float *p = c->att + ((b * c->H + h) * T + t0 + (size_t)r) * T;
        if (c->avx512) softmax_row512(S[r], t0 + (size_t)r + 1, np, p, T);
        else softmax_row256(S[r], t0 + (size_t)r + 1, np, p, T);
    }
    combo(c, &o, 1, V, D, 1.0f, 0);
}

/* Query rows t0 .. t0 + nr - 1 of (b, h), backward pass 1. Vt: the values
 * transposed, K: the keys (T, D); dS (T, T) of this (b, h) is written. */
static void bwd1_block(const attn_ctx *c, size_t b, size_t h, size_t t0, int nr, const float *Vt, const float *K,
                       float *sbuf, float *dS)
{
    const size_t T = c->T, D = c->D, H = c->H, np = (t0 + (size_t)nr + 15) & ~(size_t)15;
    float *S[R];
    const float *dO[R];
    rows4 o = {.n = nr};
    for (int r = 0; r < R; r++) {
        size_t t = t0 + (size_t)(r < nr ? r : 0);
        S[r] = sbuf + (size_t)r * c->Tp;
        dO[r] = c->dout + (b * T + t) * H * D + h * D;
        o.dst[r] = c->dqkv + (b * T + t) * c->C3 + h * D;
        o.w[r] = dS + t * T;
        o.lo[r] = 0, o.hi[r] = t + 1;
    }
    scores(c, S, dO, Vt, np, 1.0f);   /* dP */
    for (int r = 0; r < nr; r++) {
        size_t t = t0 + (size_t)r;
        const float *p = c->attc + ((b * H + h) * T + t) * T;
        if (c->avx512) dsoftmax_row512((float *)o.w[r], p, S[r], t + 1);
        else dsoftmax_row256((float *)o.w[r], p, S[r], t + 1);
    }
    combo(c, &o, 1, K, D, c->scale, 1);   /* dq */
}

/* Key rows j0 .. j0 + nr - 1 of (b, g), backward pass 2, the share of
 * query head h: dk and dv each get one addition. dS and P: its (T, T)
 * blocks, column j read down the rows t >= j; Q and dO: its query and
 * dout rows t, qs and os floats apart. */
static void bwd2_block(const attn_ctx *c, size_t b, size_t g, size_t j0, int nr, const float *dS, const float *P,
                       const float *Q, size_t qs, const float *dO, size_t os)
{
    const size_t T = c->T, D = c->D, H = c->H, KVH = c->KVH, C3 = c->C3;
    rows4 k = {.n = nr}, v = {.n = nr};
    for (int r = 0; r < R; r++) {
        size_t j = j0 + (size_t)(r < nr ? r : 0);
        k.dst[r] = c->dqkv + (b * T + j) * C3 + (H + g) * D;
        v.dst[r] = k.dst[r] + KVH * D;
        k.w[r] = dS + j;   /* item t at t * T */
        v.w[r] = P + j;
        k.lo[r] = v.lo[r] = j;
        k.hi[r] = v.hi[r] = T;
    }
    combo(c, &k, T, Q, qs, c->scale, 1);
    combo(c, &v, T, dO, os, 1.0f, 1);
}

/* Forward and backward pass 1: block i = (b*H + h)*nb + k takes rows
 * R k .. of (b, h). */
static void rows_part(void *vc, size_t p0, size_t p1, int backward)
{
    const attn_ctx *c = vc;
    const size_t T = c->T, H = c->H, D = c->D;
    for (size_t part = p0; part < p1; part++) {
        float *Kt = c->ws + part * c->ws_stride, *X = Kt + D * c->Tp, *sbuf = X + T * D;
        size_t packed = SIZE_MAX;
        for (size_t i = c->bound[part]; i < c->bound[part + 1]; i++) {
            size_t bh = i / c->nb, t0 = (i % c->nb) * R, b = bh / H, h = bh % H, g = h / c->group;
            int nr = (int)min_z(R, T - t0);
            if (b * c->KVH + g != packed) {
                /* forward: keys transposed, values as rows; backward: the other way round */
                const float *k = c->qkv + b * T * c->C3 + (H + g) * D, *v = k + c->KVH * D;
                pack_t(c, Kt, backward ? v : k);
                pack_rows(X, backward ? k : v, T, D, c->C3);
                packed = b * c->KVH + g;
            }
            if (backward) bwd1_block(c, b, h, t0, nr, Kt, X, sbuf, c->scratch + bh * T * T);
            else fwd_block(c, b, h, t0, nr, Kt, X, sbuf);
        }
    }
}

static void fwd_part(void *vc, size_t p0, size_t p1)
{
    rows_part(vc, p0, p1, 0);
    _mm_sfence();   /* the streamed att rows are visible before the caller goes on */
}
static void bwd1_part(void *vc, size_t p0, size_t p1) { rows_part(vc, p0, p1, 1); }

/* Backward pass 2: block i = (b*KVH + g)*nb + k takes key rows R k .. of
 * kv head g, adding the group's query heads in order. */
static void bwd2_part(void *vc, size_t p0, size_t p1)
{
    const attn_ctx *c = vc;
    const size_t T = c->T, H = c->H, D = c->D;
    for (size_t part = p0; part < p1; part++)
        for (size_t i = c->bound[part]; i < c->bound[part + 1]; i++) {
            size_t bg = i / c->nb, j0 = (i % c->nb) * R, b = bg / c->KVH, g = bg % c->KVH;
            for (size_t h = g * c->group; h < (g + 1) * c->group; h++)
                bwd2_block(c, b, g, j0, (int)min_z(R, T - j0), c->scratch + (b * H + h) * T * T,
                           c->attc + (b * H + h) * T * T, c->qkv + b * T * c->C3 + h * D, c->C3,
                           c->dout + b * T * H * D + h * D, H * D);
        }
}

/* Both backward passes for whole (b, g) units, one query head at a time:
 * pass 1 over all its rows, then pass 2 over all keys, while its dS and
 * att (T, T) are still in L2. dS goes to a per-thread buffer when it is
 * small (c->ds_local), so it is never written back to memory, else to its
 * place in scratch. The same blocks in the same order for every output
 * element as the two-pass schedule, so the same bits. */
static void bwd_fused_part(void *vc, size_t p0, size_t p1)
{
    const attn_ctx *c = vc;
    const size_t T = c->T, H = c->H, D = c->D;
    for (size_t part = p0; part < p1; part++) {
        float *Vt = c->ws + part * c->ws_stride, *K = Vt + D * c->Tp, *sbuf = K + T * D;
        for (size_t bg = c->bound[part]; bg < c->bound[part + 1]; bg++) {
            size_t b = bg / c->KVH, g = bg % c->KVH;
            const float *k = c->qkv + b * T * c->C3 + (H + g) * D;
            pack_t(c, Vt, k + c->KVH * D);
            pack_rows(K, k, T, D, c->C3);
            for (size_t h = g * c->group; h < (g + 1) * c->group; h++) {
                float *dS = c->ds_local ? sbuf + R * c->Tp : c->scratch + (b * H + h) * T * T;
                const float *P = c->attc + (b * H + h) * T * T;
                for (size_t t0 = 0; t0 < T; t0 += R) bwd1_block(c, b, h, t0, (int)min_z(R, T - t0), Vt, K, sbuf, dS);
                /* q and dout rows of the head, contiguous, for pass 2 */
                float *Q = sbuf + R * c->Tp + (c->ds_local ? T * T : 0), *dO = Q + T * D;
                pack_rows(Q, c->qkv + b * T * c->C3 + h * D, T, D, c->C3);
                pack_rows(dO, c->dout + b * T * H * D + h * D, T, D, H * D);
                for (size_t j0 = 0; j0 < T; j0 += R)
                    bwd2_block(c, b, g, j0, (int)min_z(R, T - j0), dS, P, Q, D, dO, D);
            }
        }
    }
}

static int bad_shape(size_t B, size_t T, size_t H, size_t KVH)
{
    return B == 0 || T == 0 || H == 0 || KVH == 0 || H % KVH != 0;
}

/* Fills the shape fields; returns 0 when no SIMD path applies (use _ref). */
static int setup(attn_ctx *c, size_t B, size_t T, size_t H, size_t KVH, size_t D)
{
    memset(c, 0, sizeof *c);
    c->B = B, c->T = T, c->H = H, c->KVH = KVH, c->D = D;
    c->C3 = (H + 2 * KVH) * D;
    c->group = H / KVH;
    c->Tp = (T + 15) & ~(size_t)15;
    c->nb = (T + R - 1) / R;
    c->scale = (float)(1.0 / sqrt((double)(D ? D : 1)));
    c->avx512 = use_avx512();
    return c->avx512 || use_avx2();
}

/* Per-part buffers Kt (D, Tp), X (T, D), R score rows (Tp) and, for the
 * fused backward, [dS (T, T) with ds_local,] Q and dO (T, D); NULL when
 * out of memory. */
static float *alloc_ws(attn_ctx *c, size_t parts, int fused)
{
    c->ws_stride = (c->D * c->Tp + c->T * c->D + R * c->Tp + (c->ds_local ? c->T * c->T : 0) +
                    (fused ? 2 * c->T * c->D : 0) + 15) & ~(size_t)15;
    /* kept for the caller's next call, as the GEMM keeps its pack buffers:
     * a buffer of megabytes freed every call would come back as fresh pages
     * (mmap) that the kernel zeroes, 2 x 12 times a GPT-2 step */
    static __thread float *cache;
    static __thread size_t cache_floats;
    size_t floats = parts * c->ws_stride;
    if (floats > cache_floats) {
        void *p = NULL;
        if (posix_memalign(&p, 64, floats * sizeof(float)) != 0) return NULL;
        free(cache);
        cache = p;
        cache_floats = floats;
    }
    return c->ws = cache;
}

void llmk_attention_forward(float *out, float *att, const float *qkv, size_t B, size_t T, size_t H, size_t KVH,
                            size_t D)
{
    if (bad_shape(B, T, H, KVH)) return;
    attn_ctx c;
    if (!setup(&c, B, T, H, KVH, D)) { llmk_attention_forward_ref(out, att, qkv, B, T, H, KVH, D); return; }
    c.out = out, c.att = att, c.qkv = qkv;
    size_t parts = choose_parts(B * H * c.nb, (double)B * H * T * (T + 1) * (D + 4));
    if (!alloc_ws(&c, parts, 0)) { llmk_attention_forward_ref(out, att, qkv, B, T, H, KVH, D); return; }
    partition(c.bound, parts, B * H, c.nb, 1);
    llmk_parallel_for(parts, 1, fwd_part, &c);
}

void llmk_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att,
                             size_t B, size_t T, size_t H, size_t KVH, size_t D)
{
    if (bad_shape(B, T, H, KVH)) return;
    attn_ctx c;
    if (!setup(&c, B, T, H, KVH, D)) {
        llmk_attention_backward_ref(dqkv, scratch, dout, qkv, att, B, T, H, KVH, D);
        return;
    }
    c.dqkv = dqkv, c.scratch = scratch, c.dout = dout, c.qkv = qkv, c.attc = att;
    const double macs = (double)B * H * T * (T + 1) * (D + 2);
    size_t parts = choose_parts(B * H * c.nb, macs);
    const size_t units = B * KVH;
    /* Enough (b, g) units to share evenly: one pass over each, with dS in
     * L2-sized per-thread buffers up to T = 512. Otherwise two passes
     * split by rows, with dS in scratch. */
    const int fused = units % parts == 0 || units >= 4 * parts;
    c.ds_local = fused && T * T <= (1 << 18);
    /* the fallback runs before anything has been accumulated */
    if (!alloc_ws(&c, parts, fused)) {
        llmk_attention_backward_ref(dqkv, scratch, dout, qkv, att, B, T, H, KVH, D);
        return;
    }
    if (fused) {
        for (size_t p = 0; p <= parts; p++) c.bound[p] = p * units / parts;
        llmk_parallel_for(parts, 1, bwd_fused_part, &c);
    } else {
        partition(c.bound, parts, B * H, c.nb, 1);
        llmk_parallel_for(parts, 1, bwd1_part, &c);   /* dS into scratch, dq */
        parts = choose_parts(B * KVH * c.nb, macs);
        partition(c.bound, parts, B * KVH, c.nb, 0);
        llmk_parallel_for(parts, 1, bwd2_part, &c);   /* dk, dv */
    }
}
