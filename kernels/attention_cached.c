/* Attention of new queries over a KV cache (decoding and prefill): see
 * llmk.h. The reference accumulates in double. The fast version is SIMD
 * (AVX-512, or AVX2 + FMA, chosen at run time; the vector code is written
 * once below and compiled for each, this file including itself), with the
 * plain float loops of cached_range on processors with neither (and with
 * LLMK_CPU=scalar).
 *
 * A "row" is one (query i, query head h). The n * group rows of kv head g
 * (group = H / KVH) are numbered rho = i * group + (h - g * group), so a
 * kv head's query heads are next to each other and share every load of a
 * key or value. Keys are taken in tiles of BK = 32 at fixed positions (0,
 * 32, 64, ...) with an online softmax per row: per tile the row's max m,
 * sum l and output o are rescaled by a = e^(m_old - m_new); the tile's
 * probabilities p_j = e^(s_j - m_new), s_j = (q / sqrt(D)) . k_j summed in
 * d order (p_j = 0 for keys after the row's position) are added into l in
 * a fixed tree (see softmax) by l = l a + sum, and o = o a + p_j v_j in key
 * order; at the end out = o (1 / l). Keys after a row's position are
 * masked, never multiplied by 0, so a non-finite value there cannot reach
 * the row. Two layouts do this same arithmetic:
 *
 *   - many rows (prefill): items of up to NR consecutive rows (a multiple
 *     of 16, about 16 KiB of queries), their queries transposed, Qt (D,
 *     NR), so that a vector holds one number of W rows (W = 16 or 8
 *     lanes): the scores of key j for W rows are a broadcast of k_j[d] and
 *     an FMA per d, no horizontal sums, and p_j enters the W rows' outputs,
 *     kept transposed as O (D, NR), the same way. 4 (AVX2: 2) vectors of
 *     rows share each broadcast.
 *   - fewer rows than W per kv head (decoding): rows in lanes would be
 *     mostly empty, so keys go in lanes instead: the tile's keys are
 *     transposed, Kt (D, BK), a row's scores are BK / W vectors of FMAs
 *     over d, and its output a row of D. An item takes several kv heads
 *     tile by tile, so the cache is read in runs of several heads.
 *
 * Every step is per row, and a row takes the same tiles in either layout,
 * in any item, lane or call, so its result depends only on its query, its
 * position and the cache: not on n, pos0, the blocking, the layout or the
 * thread count (the same bits for a query decoded alone at n = 1 or within
 * a prompt). The AVX2 path does the same arithmetic per row (exp256 and
 * exp512 round alike) and gives the same bits as AVX-512 too.
 *
 * Threads take contiguous ranges of items, ordered kv head by kv head (its
 * keys and values stay in L2 from one item to the next), cut to equal
 * estimated cost (later rows see more keys). */
#ifndef CACHED_SIMD_BODY

#include "llmk.h"
#include "attn_simd.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void llmk_attention_paged_ref(float *out, const float *q, size_t q_stride, const float *const *kb,
                              const float *const *vb, size_t blen, size_t kv_stride, size_t n, size_t pos0, size_t H,
                              size_t KVH, size_t D)
{
    if (!H || !KVH || H % KVH) return;
    double scale = 1.0 / sqrt((double)D);
    size_t group = H / KVH;
    double *p = malloc((pos0 + n) * sizeof *p);
    if (!p) return;
    for (size_t i = 0; i < n; i++) {
        size_t len = pos0 + i + 1;
        for (size_t h = 0; h < H; h++) {
            const float *qh = q + i * q_stride + h * D;
            size_t kvh = h / group;
            double mx = -INFINITY, sum = 0;
            for (size_t j = 0; j < len; j++) {
                const float *kj = kb[j / blen] + j % blen * kv_stride + kvh * D;
                double s = 0;
                for (size_t d = 0; d < D; d++) s += (double)qh[d] * kj[d];
                p[j] = s * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (size_t j = 0; j < len; j++) sum += (p[j] = exp(p[j] - mx));
            float *o = out + i * H * D + h * D;
            for (size_t d = 0; d < D; d++) {
                double acc = 0;
                for (size_t j = 0; j < len; j++) acc += p[j] * vb[j / blen][j % blen * kv_stride + kvh * D + d];
                o[d] = (float)(acc / sum);
            }
        }
    }
    free(p);
}

/* the contiguous cache is one block of every position */
static size_t one_block(size_t pos0, size_t n) { return (pos0 + n + 31) / 32 * 32; }

void llmk_attention_cached_ref(float *out, const float *q, size_t q_stride, const float *k, const float *v,
                               size_t kv_stride, size_t n, size_t pos0, size_t H, size_t KVH, size_t D)
{
    llmk_attention_paged_ref(out, q, q_stride, &k, &v, one_block(pos0, n), kv_stride, n, pos0, H, KVH, D);
}

/* ---- scalar: the (query, head) pairs spread over the threads ---- */

typedef struct {
    float *out;
    const float *q;
    const float *const *kb, *const *vb;
    size_t blen, q_stride, kv_stride, pos0, H, KVH, D;
} cached_ctx;

static void cached_range(void *arg, size_t begin, size_t end)
{
    const cached_ctx *c = arg;
    size_t H = c->H, D = c->D, group = H / c->KVH, max_len = c->pos0 + (end + H - 1) / H + 1;
    float *p = malloc(max_len * sizeof *p), *acc = malloc(D * sizeof *acc);
    if (!p || !acc) { free(p); free(acc); return; }
    float scale = 1.0f / sqrtf((float)D);
    for (size_t w = begin; w < end; w++) {   /* w = query * H + head */
        size_t i = w / H, h = w % H, kvh = h / group, len = c->pos0 + i + 1;
        const float *qh = c->q + i * c->q_stride + h * D;
        float mx = -INFINITY;
        for (size_t j = 0; j < len; j++) {
            const float *kj = c->kb[j / c->blen] + j % c->blen * c->kv_stride + kvh * D;
            float s = 0;
            for (size_t d = 0; d < D; d++) s += qh[d] * kj[d];
            p[j] = s * scale;
            if (p[j] > mx) mx = p[j];
        }
        float sum = 0;
        for (size_t j = 0; j < len; j++) sum += (p[j] = expf(p[j] - mx));
        memset(acc, 0, D * sizeof *acc);
        for (size_t j = 0; j < len; j++) {
            const float *vj = c->vb[j / c->blen] + j % c->blen * c->kv_stride + kvh * D;
            float pj = p[j];
            for (size_t d = 0; d < D; d++) acc[d] += pj * vj[d];
        }
        float *o = c->out + i * H * D + h * D, inv = 1.0f / sum;
        for (size_t d = 0; d < D; d++) o[d] = acc[d] * inv;
    }
    free(p);
    free(acc);
}

static void cached_scalar(float *out, const float *q, size_t q_stride, const float *const *kb,
                          const float *const *vb, size_t blen, size_t kv_stride, size_t n, size_t pos0, size_t H,
                          size_t KVH, size_t D)
{
    cached_ctx c = {out, q, kb, vb, blen, q_stride, kv_stride, pos0, H, KVH, D};
    /* a grain of a few heads: short contexts are not worth a thread */
    llmk_parallel_for(n * H, (pos0 + n) * D < 4096 ? n * H : 2, cached_range, &c);
}

/* ---- SIMD ---- */

#define QT_FLOATS 4096   /* floats of queries per item, for Qt to stay in L1 */
#define BK 32            /* keys per tile: a multiple of 16 */
#define MAX_PARTS 256

typedef struct {
    float *out;
    const float *q;
    const float *const *kb, *const *vb;   /* the cache's blocks of blen positions */
    size_t blen, q_stride, kv_stride, n, pos0, H, KVH, D, group;
    size_t NR, nib;     /* rows per item (a multiple of 16); items per kv head */
    size_t hc;          /* few: kv heads per item (all their rows, under W of them) */
    int few;
    size_t ws_floats;   /* per part, a multiple of 16 */
    float *ws;
    float scale;
    int avx512;
    size_t bound[MAX_PARTS + 1];   /* part p takes items bound[p] .. bound[p+1] - 1 */
} cctx;

/* One item's state and buffers; lanes are rows. */
typedef struct {
    const float *Qt;      /* (D, NRp): scaled queries, transposed */
    float *P;             /* (BK, NRp): scores, then probabilities, of the tile */
    float *O;             /* (D, NRp): unnormalised outputs, transposed */
    float *M, *L, *MT, *A;/* (NRp): running max and sum, tile max, rescale */
    const int32_t *T;     /* (NRp): positions, nondecreasing */
    const float *K, *V;   /* the tile's keys and values: rows ks, vs floats apart */
    size_t ks, vs, D, NRp;
} item_t;

static inline size_t min_zi(size_t a, size_t b) { return a < b ? a : b; }

/* the key and value rows of position j0 on: a tile (BK positions from a
 * multiple of BK) lies inside one block */
static inline const float *key_rows(const cctx *c, size_t j0) { return c->kb[j0 / c->blen] + j0 % c->blen * c->kv_stride; }
static inline const float *value_rows(const cctx *c, size_t j0) { return c->vb[j0 / c->blen] + j0 % c->blen * c->kv_stride; }

#define CACHED_SIMD_BODY 1

/* AVX-512 */
#define INLINE static inline __attribute__((always_inline, target("avx512f,avx512bw,fma")))
#define ISA_ATTR __attribute__((target("avx512f,avx512bw,fma")))
#define NAME(f) f##_avx512
#define W 16
#define vf __m512
#define vi __m512i
#define vm __mmask16
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, x) _mm512_storeu_ps(p, x)
#define V_SET1(x) _mm512_set1_ps(x)
#define V_ZERO() _mm512_setzero_ps()
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_SUB(a, b) _mm512_sub_ps(a, b)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_DIV(a, b) _mm512_div_ps(a, b)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_MAX(a, b) _mm512_max_ps(a, b)
#define V_EXP(x) exp512(x)
#define VI_LOAD(p) _mm512_loadu_si512((const void *)(p))
/* lanes whose position t >= j */
#define M_GE(t, j) _mm512_cmpge_epi32_mask(t, _mm512_set1_epi32((int)(j)))
/* x where m, else -inf */
#define V_KEEP_OR_NEGINF(x, m) _mm512_mask_blend_ps(m, _mm512_set1_ps(-INFINITY), x)
/* a*b + c where m, else c */
#define V_FMA_MASK(a, b, c, m) _mm512_mask3_fmadd_ps(a, b, c, m)
#define RV_MAX 4
#define KJ_OF(rv) ((rv) <= 2 ? 8 : 4)   /* keys per score block: KJ * RV accumulators */
#define DD_OF(rv) ((rv) <= 2 ? 8 : 4)   /* channels per value block: DD * RV accumulators */
#define RB 4                            /* few rows: rows per block */
#define TRANSPOSE(dst, ldd, src, lds) transpose16_512(dst, ldd, src, lds)
#define V_HMAX(x) _mm512_reduce_max_ps(x)
#define V_LANE0(x) _mm512_cvtss_f32(x)
/* x in lanes < k (0 <= k), -inf in the others */
#define V_FIRST_OR_NEGINF(x, k) \
    _mm512_mask_blend_ps((__mmask16)((k) >= 16 ? 0xffff : (1u << (k)) - 1), _mm512_set1_ps(-INFINITY), x)
/* 8 lanes to 1: lane k + lane k+4, then + 2 on, then + 1 on */
INLINE float NAME(sum8)(__m256 w)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(w), _mm256_extractf128_ps(w, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}
/* the tile's sum in the tree of softmax (below) from its BK / 16 vectors */
INLINE float NAME(tree)(const __m512 *p)
{
    __m512 u = p[0];
#pragma GCC unroll 8
    for (int c = 1; c < BK / 16; c++) u = _mm512_add_ps(u, p[c]);
    return NAME(sum8)(_mm256_add_ps(_mm512_castps512_ps256(u),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(u), 1))));
}
#include "attention_cached.c"
#undef INLINE
#undef ISA_ATTR
#undef NAME
#undef W
#undef vf
#undef vi
#undef vm
#undef V_LOAD
#undef V_STORE
#undef V_SET1
#undef V_ZERO
#undef V_ADD
#undef V_SUB
#undef V_MUL
#undef V_DIV
#undef V_FMA
#undef V_MAX
#undef V_EXP
#undef VI_LOAD
#undef M_GE
#undef V_KEEP_OR_NEGINF
#undef V_FMA_MASK
#undef RV_MAX
#undef KJ_OF
#undef DD_OF
#undef RB
#undef TRANSPOSE
#undef V_HMAX
#undef V_LANE0
#undef V_FIRST_OR_NEGINF

/* AVX2 + FMA (16 registers: fewer accumulators) */
#define INLINE static inline __attribute__((always_inline, target("avx2,fma")))
#define ISA_ATTR __attribute__((target("avx2,fma")))
#define NAME(f) f##_avx2
#define W 8
#define vf __m256
#define vi __m256i
#define vm __m256
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, x) _mm256_storeu_ps(p, x)
#define V_SET1(x) _mm256_set1_ps(x)
#define V_ZERO() _mm256_setzero_ps()
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_SUB(a, b) _mm256_sub_ps(a, b)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_DIV(a, b) _mm256_div_ps(a, b)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_MAX(a, b) _mm256_max_ps(a, b)
#define V_EXP(x) exp256(x)
#define VI_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define M_GE(t, j) _mm256_castsi256_ps(_mm256_cmpgt_epi32(t, _mm256_set1_epi32((int)(j) - 1)))
#define V_KEEP_OR_NEGINF(x, m) _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, m)
#define V_FMA_MASK(a, b, c, m) _mm256_blendv_ps(c, _mm256_fmadd_ps(a, b, c), m)
#define RV_MAX 2
#define KJ_OF(rv) ((rv) <= 1 ? 8 : 6)
#define DD_OF(rv) ((rv) <= 1 ? 8 : 4)
#define RB 2
#define TRANSPOSE(dst, ldd, src, lds) transpose8_256(dst, ldd, src, lds)
INLINE float NAME(hmax)(__m256 v)
{
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)));
}
#define V_HMAX(x) NAME(hmax)(x)
#define V_LANE0(x) _mm256_cvtss_f32(x)
#define V_FIRST_OR_NEGINF(x, k)                                                                                   \
    _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x,                                                                \
                     _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)((k) < 8 ? (k) : 8)),          \
                                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))))
INLINE float NAME(sum8)(__m256 w)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(w), _mm256_extractf128_ps(w, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}
/* the same from BK / 8 vectors: keys k + 16 c are in vector 2 c (k < 8) or 2 c + 1 */
INLINE float NAME(tree)(const __m256 *p)
{
    __m256 lo = p[0], hi = p[1];
#pragma GCC unroll 8
    for (int c = 1; c < BK / 16; c++) lo = _mm256_add_ps(lo, p[2 * c]), hi = _mm256_add_ps(hi, p[2 * c + 1]);
    return NAME(sum8)(_mm256_add_ps(lo, hi));
}
#include "attention_cached.c"
#undef INLINE
#undef ISA_ATTR
#undef NAME
#undef W
#undef vf
#undef vi
#undef vm
#undef V_LOAD
#undef V_STORE
#undef V_SET1
#undef V_ZERO
#undef V_ADD
#undef V_SUB
#undef V_MUL
#undef V_DIV
#undef V_FMA
#undef V_MAX
#undef V_EXP
#undef VI_LOAD
#undef M_GE
#undef V_KEEP_OR_NEGINF
#undef V_FMA_MASK
#undef RV_MAX
#undef KJ_OF
#undef DD_OF
#undef RB
#undef TRANSPOSE
#undef V_HMAX
#undef V_LANE0
#undef V_FIRST_OR_NEGINF

#undef CACHED_SIMD_BODY

static int isa(void)
{
    const llmk_cpu_features *f = llmk_cpu();
    return f->avx512f && f->avx512bw && f->fma ? 2 : f->avx2 && f->fma ? 1 : 0;
}

/* rows of item `it` (it = g * nib + block) and the position of its last row */
static size_t item_rows(const cctx *c, size_t it, size_t *tmax)
{
    size_t rho0 = it % c->nib * c->NR, nr = min_zi(c->NR, c->n * c->group - rho0);
    *tmax = c->pos0 + (rho0 + nr - 1) / c->group;
    return nr;
}

static double item_cost(const cctx *c, size_t it)
{
    size_t tmax, nr = item_rows(c, it, &tmax);
    /* rows of the vector width times keys (rounded to tiles), and a little per row */
    return (double)((nr + 15) & ~(size_t)15) * (double)(((tmax + BK) / BK) * BK + 8) * (double)c->D;
}

static void parts_fn(void *vc, size_t p0, size_t p1)
{
    const cctx *c = vc;
    const size_t W = c->avx512 ? 16 : 8;
    for (size_t part = p0; part < p1; part++) {
        float *ws = c->ws + part * c->ws_floats;
        for (size_t it = c->bound[part]; it < c->bound[part + 1]; it++) {
            if (c->few) {
                size_t g0 = it * c->hc, nh = min_zi(c->hc, c->KVH - g0);
                if (c->avx512) item_few_avx512(c, g0, nh, 0, c->NR, ws);
                else item_few_avx2(c, g0, nh, 0, c->NR, ws);
                continue;
            }
            size_t g = it / c->nib, rho0 = it % c->nib * c->NR, tmax, nr = item_rows(c, it, &tmax);
            int few = nr < W && c->D % W == 0;
            if (c->avx512) {
                if (few) item_few_avx512(c, g, 1, rho0, nr, ws);
                else item_avx512(c, g, rho0, nr, ws);
            } else {
                if (few) item_few_avx2(c, g, 1, rho0, nr, ws);
                else item_avx2(c, g, rho0, nr, ws);
            }
        }
    }
}

/* per-part buffers, kept for the caller's next call (as attention_cpu.c
 * keeps its own): NULL when out of memory */
static float *workspace(size_t floats)
{
    static __thread float *cache;
    static __thread size_t cache_floats;
    if (floats > cache_floats) {
        void *p = NULL;
        if (posix_memalign(&p, 64, floats * sizeof(float)) != 0) return NULL;
        free(cache);
        cache = p;
        cache_floats = floats;
    }
    return cache;
}

void llmk_attention_cached(float *out, const float *q, size_t q_stride, const float *k, const float *v, size_t kv_stride,
                           size_t n, size_t pos0, size_t H, size_t KVH, size_t D)
{
    llmk_attention_paged(out, q, q_stride, &k, &v, one_block(pos0, n), kv_stride, n, pos0, H, KVH, D);
}

void llmk_attention_paged(float *out, const float *q, size_t q_stride, const float *const *kb,
                          const float *const *vb, size_t blen, size_t kv_stride, size_t n, size_t pos0, size_t H,
                          size_t KVH, size_t D)
{
    if (!H || !KVH || H % KVH || !n || !D || !blen) return;
    int level = isa();
    if (!level || pos0 + n > (size_t)INT32_MAX || (blen % BK && blen < pos0 + n)) {
        cached_scalar(out, q, q_stride, kb, vb, blen, kv_stride, n, pos0, H, KVH, D);
        return;
    }
    cctx c, *cp = &c;
    memset(cp, 0, sizeof c);
    cp->out = out, cp->q = q, cp->kb = kb, cp->vb = vb, cp->blen = blen;
    cp->q_stride = q_stride, cp->kv_stride = kv_stride, cp->n = n, cp->pos0 = pos0;
    cp->H = H, cp->KVH = KVH, cp->D = D, cp->group = H / KVH;
    cp->scale = (float)(1.0 / sqrt((double)D));
    cp->avx512 = level == 2;
    /* llmk_threads() is asked only for work worth threads: without
     * LLMK_THREADS it reads the processor count from the system each time */
    size_t rows = n * cp->group, W = cp->avx512 ? 16 : 8, parts = 1;
    if (rows < W && D % W == 0) {
        /* decoding (a few rows per kv head): items of hc kv heads each */
        cp->few = 1, cp->NR = rows, cp->nib = 1;
        double total = (double)KVH * 16 * (double)(((pos0 + n - 1 + BK) / BK) * BK + 8) * (double)D;
        if (total >= (double)(1 << 21)) parts = min_zi(min_zi((size_t)llmk_threads(), MAX_PARTS), KVH);
        cp->hc = (KVH + parts - 1) / parts;
        parts = (KVH + cp->hc - 1) / cp->hc;
        for (size_t p = 0; p <= parts; p++) cp->bound[p] = p;
        cp->ws_floats = (cp->hc * rows * 2 * D + cp->hc * 3 * W + rows * BK + D * BK + W * D + 15) & ~(size_t)15;
    } else {
        /* about 16 KiB of queries per item (Qt stays in L1), 16 .. 64 rows;
         * smaller items when there would be fewer than threads (few kv heads) */
        size_t nr_max = (QT_FLOATS / D) & ~(size_t)15;
        if (nr_max < 16) nr_max = 16;
        if (nr_max > 64) nr_max = 64;
        size_t nib = (rows + nr_max - 1) / nr_max;
        double total = 0;
        for (int pass = 0; pass < 2; pass++) {
            cp->NR = ((rows + nib - 1) / nib + 15) & ~(size_t)15;
            cp->nib = (rows + cp->NR - 1) / cp->NR;
            total = 0;
            for (size_t it = 0; it < cp->nib * KVH; it++) total += item_cost(cp, it);
            if (pass || total < (double)(1 << 20)) break;   /* tens of microseconds: one thread */
            size_t threads = min_zi((size_t)llmk_threads(), MAX_PARTS);
            parts = min_zi(threads, cp->nib * KVH);
            if (cp->nib * KVH >= threads) break;
            nib = min_zi((threads + KVH - 1) / KVH, (rows + 15) / 16);
            parts = min_zi(threads, nib * KVH);   /* nib may only grow: parts <= items */
        }
        const size_t NR = cp->NR, items = cp->nib * KVH;
        cp->ws_floats = (2 * D * NR + BK * NR + 2 * BK * D + 5 * NR + 15) & ~(size_t)15;
        if (parts > items) parts = items;
        /* contiguous ranges of about equal cost */
        double acc = 0;
        size_t p = 1;
        cp->bound[0] = 0;
        for (size_t it = 0; it < items && p < parts; it++) {
            acc += item_cost(cp, it);
            while (p < parts && acc >= total * (double)p / (double)parts) cp->bound[p++] = it + 1;
        }
        while (p <= parts) cp->bound[p++] = items;
    }
    cp->ws = workspace(parts * cp->ws_floats);
    if (!cp->ws) {
        cached_scalar(out, q, q_stride, kb, vb, blen, kv_stride, n, pos0, H, KVH, D);
        return;
    }
    if (parts == 1) parts_fn(cp, 0, 1);
    else llmk_parallel_for(parts, 1, parts_fn, cp);
}

#else /* CACHED_SIMD_BODY: the per-ISA code, included once per instruction set */

/* dst[0 .. D) = src[0 .. D) * a (a = 1: a copy) */
INLINE void NAME(copy_row)(float *dst, const float *src, size_t D, float a)
{
    size_t d = 0;
    if (a == 1.0f)
        for (; d + W <= D; d += W) V_STORE(dst + d, V_LOAD(src + d));
    else
        for (; d + W <= D; d += W) V_STORE(dst + d, V_MUL(V_LOAD(src + d), V_SET1(a)));
    for (; d < D; d++) dst[d] = src[d] * a;
}

/* Scores of the tile's keys 0 .. nk-1 (key j0 + jj) for the RV row vectors
 * from v: P[jj][rows] = sum_d k[d] Qt[d][rows] in d order, -inf for keys
 * after a row's position; MT = the rows' max over the tile. KJ keys at a
 * time (the last block repeats the last key, not stored). */
INLINE void NAME(scores_blk)(const item_t *s, size_t v, const int RV, const int KJ, size_t nk, size_t j0)
{
    const size_t D = s->D, NRp = s->NRp;
    const size_t tmin = (size_t)s->T[v * W];
    vf mt[RV_MAX];
#pragma GCC unroll 4
    for (int r = 0; r < RV; r++) mt[r] = V_SET1(-INFINITY);
    for (size_t jj = 0; jj < nk; jj += (size_t)KJ) {
        const float *kr[8];
#pragma GCC unroll 8
        for (int e = 0; e < KJ; e++) kr[e] = s->K + min_zi(jj + (size_t)e, nk - 1) * s->ks;
        vf acc[8][RV_MAX];
#pragma GCC unroll 8
        for (int e = 0; e < KJ; e++)
#pragma GCC unroll 4
            for (int r = 0; r < RV; r++) acc[e][r] = V_ZERO();
        const float *qt = s->Qt + v * W;
        for (size_t d = 0; d < D; d++, qt += NRp) {
            vf qv[RV_MAX];
#pragma GCC unroll 4
            for (int r = 0; r < RV; r++) qv[r] = V_LOAD(qt + r * W);
#pragma GCC unroll 8
            for (int e = 0; e < KJ; e++) {
                const vf kb = V_SET1(kr[e][d]);
#pragma GCC unroll 4
                for (int r = 0; r < RV; r++) acc[e][r] = V_FMA(kb, qv[r], acc[e][r]);
            }
        }
#pragma GCC unroll 8
        for (int e = 0; e < KJ; e++) {
            if (jj + (size_t)e >= nk) break;
            const size_t j = j0 + jj + (size_t)e;
            float *pj = s->P + (jj + (size_t)e) * NRp + v * W;
#pragma GCC unroll 4
            for (int r = 0; r < RV; r++) {
                vf x = acc[e][r];
                if (j > tmin) x = V_KEEP_OR_NEGINF(x, M_GE(VI_LOAD(s->T + (v + (size_t)r) * W), j));
                V_STORE(pj + r * W, x);
                mt[r] = V_MAX(mt[r], x);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < RV; r++) V_STORE(s->MT + (v + (size_t)r) * W, mt[r]);
}

/* The online softmax step of row vector v for this tile: new max, the
 * rescale A = e^(m_old - m_new), probabilities into P (0 past nk), and
 * l = l A + (their sum in a fixed tree: u_k = p_k + p_{k+16} + p_{k+32}
 * ... in that order (k < 16), then u_k + u_{k+8}, + the one 4 on, + 2 on,
 * + 1 on). */
INLINE void NAME(softmax)(const item_t *s, size_t v, size_t nk)
{
    const size_t NRp = s->NRp;
    const vf mo = V_LOAD(s->M + v * W), mn = V_MAX(mo, V_LOAD(s->MT + v * W));
    V_STORE(s->A + v * W, V_EXP(V_SUB(mo, mn)));
    V_STORE(s->M + v * W, mn);
    float *p = s->P + v * W;
    vf u[16];
#pragma GCC unroll 16
    for (int k = 0; k < 16; k++) {
#pragma GCC unroll 8
        for (int c = 0; c < BK / 16; c++) {
            const size_t j = (size_t)(k + 16 * c);
            vf a = V_ZERO();
            if (j < nk) {
                a = V_EXP(V_SUB(V_LOAD(p + j * NRp), mn));
                V_STORE(p + j * NRp, a);
            }
            u[k] = c ? V_ADD(u[k], a) : a;
        }
    }
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) u[k] = V_ADD(u[k], u[k + 8]);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) u[k] = V_ADD(u[k], u[k + 4]);
#pragma GCC unroll 2
    for (int k = 0; k < 2; k++) u[k] = V_ADD(u[k], u[k + 2]);
    const vf z = V_ADD(u[0], u[1]);
    V_STORE(s->L + v * W, V_FMA(V_LOAD(s->L + v * W), V_LOAD(s->A + v * W), z));
}

/* O[d][rows] = O A + sum_{jj < nk} p_jj v_jj[d] in key order, for the RV
 * row vectors from v; keys after a row's position are left out (masked).
 * DD channels at a time (the last block repeats the last channel). */
INLINE void NAME(pv_blk)(const item_t *s, size_t v, const int RV, const int DD, size_t nk, size_t j0)
{
    const size_t D = s->D, NRp = s->NRp, tmin = (size_t)s->T[v * W];
    /* keys every row of the block takes: jj < full */
    const size_t full = tmin < j0 ? 0 : min_zi(nk, tmin - j0 + 1);
    vi t[RV_MAX];
    vf a[RV_MAX];
#pragma GCC unroll 4
    for (int r = 0; r < RV; r++) {
        t[r] = VI_LOAD(s->T + (v + (size_t)r) * W);
        a[r] = V_LOAD(s->A + (v + (size_t)r) * W);
    }
    for (size_t d0 = 0; d0 < D; d0 += (size_t)DD) {
        size_t dd[8];
#pragma GCC unroll 8
        for (int e = 0; e < DD; e++) dd[e] = min_zi(d0 + (size_t)e, D - 1);
        vf acc[8][RV_MAX];
#pragma GCC unroll 8
        for (int e = 0; e < DD; e++)
#pragma GCC unroll 4
            for (int r = 0; r < RV; r++) acc[e][r] = V_MUL(V_LOAD(s->O + dd[e] * NRp + (v + (size_t)r) * W), a[r]);
        const float *pj = s->P + v * W, *vj = s->V;
        size_t jj = 0;
        for (; jj < full; jj++, pj += NRp, vj += s->vs) {
            vf pr[RV_MAX];
#pragma GCC unroll 4
            for (int r = 0; r < RV; r++) pr[r] = V_LOAD(pj + r * W);
#pragma GCC unroll 8
            for (int e = 0; e < DD; e++) {
                const vf vb = V_SET1(vj[dd[e]]);
#pragma GCC unroll 4
                for (int r = 0; r < RV; r++) acc[e][r] = V_FMA(vb, pr[r], acc[e][r]);
            }
        }
        for (; jj < nk; jj++, pj += NRp, vj += s->vs) {
            vf pr[RV_MAX];
            vm m[RV_MAX];
#pragma GCC unroll 4
            for (int r = 0; r < RV; r++) {
                pr[r] = V_LOAD(pj + r * W);
                m[r] = M_GE(t[r], j0 + jj);
            }
#pragma GCC unroll 8
            for (int e = 0; e < DD; e++) {
                const vf vb = V_SET1(vj[dd[e]]);
#pragma GCC unroll 4
                for (int r = 0; r < RV; r++) acc[e][r] = V_FMA_MASK(vb, pr[r], acc[e][r], m[r]);
            }
        }
#pragma GCC unroll 8
        for (int e = 0; e < DD; e++)
#pragma GCC unroll 4
            for (int r = 0; r < RV; r++) V_STORE(s->O + dd[e] * NRp + (v + (size_t)r) * W, acc[e][r]);
    }
}

/* the same with RV a constant, so that the blocks unroll */
ISA_ATTR static void NAME(scores)(const item_t *s, size_t v, int rv, size_t nk, size_t j0)
{
    switch (rv) {
#if RV_MAX >= 4
    case 4: NAME(scores_blk)(s, v, 4, KJ_OF(4), nk, j0); break;
    case 3: NAME(scores_blk)(s, v, 3, KJ_OF(3), nk, j0); break;
#endif
    case 2: NAME(scores_blk)(s, v, 2, KJ_OF(2), nk, j0); break;
    default: NAME(scores_blk)(s, v, 1, KJ_OF(1), nk, j0); break;
    }
}

ISA_ATTR static void NAME(pv)(const item_t *s, size_t v, int rv, size_t nk, size_t j0)
{
    switch (rv) {
#if RV_MAX >= 4
    case 4: NAME(pv_blk)(s, v, 4, DD_OF(4), nk, j0); break;
    case 3: NAME(pv_blk)(s, v, 3, DD_OF(3), nk, j0); break;
#endif
    case 2: NAME(pv_blk)(s, v, 2, DD_OF(2), nk, j0); break;
    default: NAME(pv_blk)(s, v, 1, DD_OF(1), nk, j0); break;
    }
}

ISA_ATTR static void NAME(softmax_all)(const item_t *s, size_t v0, size_t nv, size_t nk)
{
    for (size_t v = v0; v < nv; v++) NAME(softmax)(s, v, nk);
}

/* ---- few rows (under W: decoding): keys in lanes ----
 * The same arithmetic per row as above, laid out the other way: the tile's
 * keys transposed, Kt (D, BK), a row's scores are BK / W vectors summed
 * along d; its output a row of D. */

#define NKV (BK / W)

/* Scores, softmax step and probabilities of rows r0 .. r0 + rb - 1 (all at
 * or after key j0) for this tile; S[r][0 .. BK). */
INLINE void NAME(few_scores)(const float *Qs, size_t D, const float *Kt, float *S, size_t r0, int rb,
                             const size_t *t, float *m, float *l, float *al, size_t j0, const int NV)
{
    vf acc[RB][NKV];
    const float *qr[RB];
#pragma GCC unroll 4
    for (int e = 0; e < RB; e++) {
        qr[e] = Qs + (r0 + (size_t)(e < rb ? e : rb - 1)) * D;
#pragma GCC unroll 4
        for (int k = 0; k < NKV; k++) acc[e][k] = V_ZERO();   /* the keys from NV W on: none, p = 0 */
    }
    for (size_t d = 0; d < D; d++) {
        vf kt[NKV];
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) kt[k] = V_LOAD(Kt + d * BK + (size_t)k * W);
#pragma GCC unroll 4
        for (int e = 0; e < RB; e++) {
            const vf qb = V_SET1(qr[e][d]);
#pragma GCC unroll 4
            for (int k = 0; k < NV; k++) acc[e][k] = V_FMA(qb, kt[k], acc[e][k]);
        }
    }
#pragma GCC unroll 4
    for (int e = 0; e < RB; e++) {
        if (e >= rb) break;
        const size_t r = r0 + (size_t)e, lim = t[r] - j0 + 1;   /* keys before lim are the row's */
        vf x[NKV], mx = V_SET1(-INFINITY);
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) {
            x[k] = acc[e][k];
            if (lim < (size_t)(k + 1) * W) x[k] = V_FIRST_OR_NEGINF(x[k], lim > (size_t)k * W ? lim - (size_t)k * W : 0);
            mx = V_MAX(mx, x[k]);
        }
        const float mt = V_HMAX(mx), mn = m[r] > mt ? m[r] : mt;
        const vf vmn = V_SET1(mn);
        al[r] = V_LANE0(V_EXP(V_SET1(m[r] - mn)));
#pragma GCC unroll 4
        for (int k = 0; k < NKV; k++) {
            x[k] = k < NV ? V_EXP(V_SUB(x[k], vmn)) : V_ZERO();
            V_STORE(S + r * BK + (size_t)k * W, x[k]);
        }
        l[r] = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(l[r]), _mm_set_ss(al[r]), _mm_set_ss(NAME(tree)(x))));
        m[r] = mn;
    }
}

/* Ob[r] = Ob[r] al[r] + sum_j S[r][j] v_j over the row's keys in the tile,
 * for rows r0 .. r0 + rb - 1, channels d0 .. d0 + DC W - 1. */
INLINE void NAME(few_pv_blk)(float *Ob, size_t D, const float *S, const float *vt, size_t vs, size_t r0, int rb,
                             const size_t *t, const float *al, size_t j0, size_t nk, size_t d0, const int DC)
{
    vf acc[RB][4];
    size_t rr[RB], jc = nk;
#pragma GCC unroll 4
    for (int e = 0; e < RB; e++) {
        rr[e] = r0 + (size_t)(e < rb ? e : rb - 1);
        const size_t lim = t[rr[e]] - j0 + 1;
        if (lim < jc) jc = lim;
        const vf a = V_SET1(al[rr[e]]);
#pragma GCC unroll 4
        for (int k = 0; k < DC; k++) acc[e][k] = V_MUL(V_LOAD(Ob + rr[e] * D + d0 + (size_t)k * W), a);
    }
    const float *vj = vt + d0;
    size_t j = 0;
    for (; j < jc; j++, vj += vs) {
        vf x[4];
#pragma GCC unroll 4
        for (int k = 0; k < DC; k++) x[k] = V_LOAD(vj + (size_t)k * W);
#pragma GCC unroll 4
        for (int e = 0; e < RB; e++) {
            const vf pb = V_SET1(S[rr[e] * BK + j]);
#pragma GCC unroll 4
            for (int k = 0; k < DC; k++) acc[e][k] = V_FMA(pb, x[k], acc[e][k]);
        }
    }
    for (; j < nk; j++, vj += vs) {   /* rows of different positions: each to its own */
#pragma GCC unroll 4
        for (int e = 0; e < RB; e++) {
            if (j0 + j > t[rr[e]]) continue;
            const vf pb = V_SET1(S[rr[e] * BK + j]);
#pragma GCC unroll 4
            for (int k = 0; k < DC; k++) acc[e][k] = V_FMA(pb, V_LOAD(vj + (size_t)k * W), acc[e][k]);
        }
    }
#pragma GCC unroll 4
    for (int e = 0; e < RB; e++) {
        if (e >= rb) break;
#pragma GCC unroll 4
        for (int k = 0; k < DC; k++) V_STORE(Ob + rr[e] * D + d0 + (size_t)k * W, acc[e][k]);
    }
}

ISA_ATTR static void NAME(few_pv)(float *Ob, size_t D, const float *S, const float *vt, size_t vs, size_t r0, int rb,
                                  const size_t *t, const float *al, size_t j0, size_t nk)
{
    for (size_t d0 = 0; d0 < D; d0 += 4 * W) {
        switch ((D - d0) / W) {
        case 1: NAME(few_pv_blk)(Ob, D, S, vt, vs, r0, rb, t, al, j0, nk, d0, 1); break;
        case 2: NAME(few_pv_blk)(Ob, D, S, vt, vs, r0, rb, t, al, j0, nk, d0, 2); break;
        case 3: NAME(few_pv_blk)(Ob, D, S, vt, vs, r0, rb, t, al, j0, nk, d0, 3); break;
        default: NAME(few_pv_blk)(Ob, D, S, vt, vs, r0, rb, t, al, j0, nk, d0, 4); break;
        }
    }
}

ISA_ATTR static void NAME(few_scores_all)(const float *Qs, size_t D, const float *Kt, float *S, size_t r0, size_t nr,
                                          const size_t *t, float *m, float *l, float *al, size_t j0, size_t nk)
{
    const int nv = (int)((nk + W - 1) / W);   /* vectors of keys in the tile (the rest: p = 0) */
    for (size_t r = r0; r < nr; r += RB) {
        const int rb = (int)min_zi(RB, nr - r);
        switch (nv) {
#if NKV > 2
        case 1: NAME(few_scores)(Qs, D, Kt, S, r, rb, t, m, l, al, j0, 1); break;
        case 2: NAME(few_scores)(Qs, D, Kt, S, r, rb, t, m, l, al, j0, 2); break;
        case 3: NAME(few_scores)(Qs, D, Kt, S, r, rb, t, m, l, al, j0, 3); break;
#else
        case 1: NAME(few_scores)(Qs, D, Kt, S, r, rb, t, m, l, al, j0, 1); break;
#endif
        default: NAME(few_scores)(Qs, D, Kt, S, r, rb, t, m, l, al, j0, NKV); break;
        }
    }
}

/* Rows rho0 .. rho0 + nr - 1 (nr < W) of kv heads g0 .. g0 + nh - 1, D a
 * multiple of W. Tile by tile, head by head inside: the heads' parts of a
 * cache row are next to each other, so the cache is read in runs of nh D
 * floats. */
ISA_ATTR static void NAME(item_few)(const cctx *c, size_t g0, size_t nh, size_t rho0, size_t nr, float *ws)
{
    const size_t D = c->D, group = c->group, kvs = c->kv_stride;
    /* per head: Qs, Ob (nr, D), m, l, al (W); shared: S (nr, BK), Kt (D, BK), tmp (W, D) */
    float *Qs = ws, *Ob = Qs + nh * nr * D, *ml = Ob + nh * nr * D, *S = ml + nh * 3 * W, *Kt = S + nr * BK,
          *tmp = Kt + D * BK;
    size_t t[W];
    for (size_t r = 0; r < nr; r++) t[r] = c->pos0 + (rho0 + r) / group;
    for (size_t hh = 0; hh < nh; hh++)
        for (size_t r = 0; r < nr; r++) {
            size_t i = (rho0 + r) / group, h = (g0 + hh) * group + (rho0 + r) % group;
            NAME(copy_row)(Qs + (hh * nr + r) * D, c->q + i * c->q_stride + h * D, D, c->scale);
            ml[hh * 3 * W + r] = -INFINITY, ml[hh * 3 * W + W + r] = 0;
        }
    memset(Ob, 0, nh * nr * D * sizeof *Ob);
    const size_t tmax = t[nr - 1];
    for (size_t j0 = 0; j0 <= tmax; j0 += BK) {
        const size_t nk = min_zi(BK, tmax + 1 - j0);
        size_t r0 = 0;
        while (t[r0] < j0) r0++;
        for (size_t hh = 0; hh < nh; hh++) {
            const float *kt = key_rows(c, j0) + (g0 + hh) * D, *vt = value_rows(c, j0) + (g0 + hh) * D;
            for (size_t c0 = 0; c0 < BK; c0 += W) {
                if (c0 + W <= nk) {
                    for (size_t d0 = 0; d0 < D; d0 += W) TRANSPOSE(Kt + d0 * BK + c0, BK, kt + c0 * kvs + d0, kvs);
                } else if (c0 < nk) {   /* the item's last key inside: its rows, then zeros */
                    for (size_t e = 0; e < W; e++)
                        if (c0 + e < nk) NAME(copy_row)(tmp + e * D, kt + (c0 + e) * kvs, D, 1.0f);
                        else memset(tmp + e * D, 0, D * sizeof(float));
                    for (size_t d0 = 0; d0 < D; d0 += W) TRANSPOSE(Kt + d0 * BK + c0, BK, tmp + d0, D);
                }   /* chunks past nk are not read */
            }
            float *m = ml + hh * 3 * W, *l = m + W, *al = l + W, *qs = Qs + hh * nr * D, *ob = Ob + hh * nr * D;
            NAME(few_scores_all)(qs, D, Kt, S, r0, nr, t, m, l, al, j0, nk);
            for (size_t r = r0; r < nr; r += RB)
                NAME(few_pv)(ob, D, S, vt, kvs, r, (int)min_zi(RB, nr - r), t, al, j0, nk);
        }
    }
    for (size_t hh = 0; hh < nh; hh++)
        for (size_t r = 0; r < nr; r++) {
            size_t i = (rho0 + r) / group, h = (g0 + hh) * group + (rho0 + r) % group;
            float *o = c->out + i * c->H * D + h * D;
            const vf inv = V_SET1(1.0f / ml[hh * 3 * W + W + r]);
            for (size_t d = 0; d < D; d += W) V_STORE(o + d, V_MUL(V_LOAD(Ob + (hh * nr + r) * D + d), inv));
        }
}

#undef NKV

/* Rows rho0 .. rho0 + nr - 1 of kv head g. */
ISA_ATTR static void NAME(item)(const cctx *c, size_t g, size_t rho0, size_t nr, float *ws)
{
    const size_t D = c->D, NRp = (nr + W - 1) / W * W, nv = NRp / W, group = c->group, kvs = c->kv_stride;
    item_t s = {.D = D, .NRp = NRp};
    float *Qt = ws, *O = Qt + D * NRp, *P = O + D * NRp, *Kc = P + BK * NRp, *Vc = Kc + BK * D;
    float *M = Vc + BK * D, *L = M + NRp, *MT = L + NRp, *A = MT + NRp;
    int32_t *T = (int32_t *)(A + NRp);
    s.Qt = Qt, s.O = O, s.P = P, s.M = M, s.L = L, s.MT = MT, s.A = A, s.T = T;
    const int whole = D % W == 0;
    /* Qt, W rows at a time through Kc (W rows of D); the spare lanes repeat
     * the last row: same position, never stored */
    for (size_t r0 = 0; r0 < NRp; r0 += W) {
        for (size_t e = 0; e < W; e++) {
            size_t r = r0 + e, rho = rho0 + min_zi(r, nr - 1), i = rho / group, h = g * group + rho % group;
            const float *qr = c->q + i * c->q_stride + h * D;
            T[r] = (int32_t)(c->pos0 + i);
            M[r] = -INFINITY, L[r] = 0;
            if (whole) NAME(copy_row)(Kc + e * D, qr, D, c->scale);
            else for (size_t d = 0; d < D; d++) Qt[d * NRp + r] = qr[d] * c->scale;
        }
        if (whole)
            for (size_t d0 = 0; d0 < D; d0 += W) TRANSPOSE(Qt + d0 * NRp + r0, NRp, Kc + d0, D);
    }
    memset(O, 0, D * NRp * sizeof *O);
    const size_t tmax = (size_t)T[NRp - 1];
    /* keys straight from the cache when each is read once (one block of
     * row vectors), else copied: cache rows are often a multiple of 1 KiB
     * apart and would share a few L1 sets. Values always: the channel
     * blocks read them D / DD times. */
    const int copy_k = nv > RV_MAX;
    for (size_t j0 = 0; j0 <= tmax; j0 += BK) {
        const size_t nk = min_zi(BK, tmax + 1 - j0);
        size_t v0 = 0;
        while ((size_t)T[v0 * W + W - 1] < j0) v0++;
        const float *kt = key_rows(c, j0) + g * D, *vt = value_rows(c, j0) + g * D;
        for (size_t jj = 0; jj < nk; jj++) {
            if (copy_k) NAME(copy_row)(Kc + jj * D, kt + jj * kvs, D, 1.0f);
            NAME(copy_row)(Vc + jj * D, vt + jj * kvs, D, 1.0f);
        }
        s.K = copy_k ? Kc : kt, s.ks = copy_k ? D : kvs;
        s.V = Vc, s.vs = D;
        for (size_t v = v0; v < nv; v += RV_MAX) NAME(scores)(&s, v, (int)min_zi(RV_MAX, nv - v), nk, j0);
        NAME(softmax_all)(&s, v0, nv, nk);
        for (size_t v = v0; v < nv; v += RV_MAX) NAME(pv)(&s, v, (int)min_zi(RV_MAX, nv - v), nk, j0);
    }
    /* out = O (1 / l), back to rows (W at a time through Kc) */
    for (size_t v = 0; v < nv; v++) {
        const vf inv = V_DIV(V_SET1(1.0f), V_LOAD(L + v * W));
        for (size_t d = 0; d < D; d++) V_STORE(O + d * NRp + v * W, V_MUL(V_LOAD(O + d * NRp + v * W), inv));
    }
    for (size_t r0 = 0; r0 < nr; r0 += W) {
        if (whole)
            for (size_t d0 = 0; d0 < D; d0 += W) TRANSPOSE(Kc + d0, D, O + d0 * NRp + r0, NRp);
        for (size_t r = r0; r < r0 + W && r < nr; r++) {
            size_t rho = rho0 + r, i = rho / group, h = g * group + rho % group;
            float *o = c->out + i * c->H * D + h * D;
            if (whole) NAME(copy_row)(o, Kc + (r - r0) * D, D, 1.0f);
            else for (size_t d = 0; d < D; d++) o[d] = O[d * NRp + r];
        }
    }
}

#endif /* CACHED_SIMD_BODY */
