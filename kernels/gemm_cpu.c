/* fp32 matrix multiply (BLIS / GotoBLAS design) and the Linear layer on it,
 * compared to their _ref in t/unit/test_gemm.c; speed in bench/bench_gemm.c.
 *
 * Row-major C (M, N) = alpha * A (M, K) @ B (K, N) + beta * C is computed
 * in tiles of MR rows by NR columns by a register-blocked microkernel: per k
 * it loads NR/16 vectors of B and broadcasts MR values of A, so C's tile
 * lives in MR*NR/16 registers. Both operands are first copied ("packed")
 * into buffers laid out in the order the microkernel reads them, which also
 * absorbs the four transpose combinations and the leading dimensions:
 *   A block (mc, kc) -> micro-panels of MR rows: ap[p][k][i], i < MR
 *   B block (kc, nb) -> micro-panels of NR cols: bp[q][k][j], j < NR
 * Edges are zero-padded in the packs; an edge tile is computed into a small
 * buffer and its valid part added to C.
 *
 * Cache blocking (per thread): one A micro-panel (MR x KC) is reused for
 * every B micro-panel of a (KC x NB) block held in L2, the A block (MCB x KC)
 * sits in L3, and C is loaded and stored once per K block. Loops, outer
 * to inner:
 *   ic (M by MCB) -> pc (K by KC, pack A) -> jc (N by NB, pack B) -> ir (MR) -> jr (NR)
 * Threads take disjoint ranges of C's columns (so each packs its own B) and
 * share the packing of each A block (see gemm_cols). Every C element is
 * computed by the same operations in the same order whatever the number of
 * threads: the K blocks and the tile grid depend only on the shape.
 *
 * The quantized Linear layer's prefill (llmk__sgemm_bpack, for quant_cpu.c)
 * runs the same loops on a B that is never stored: where a thread packs its
 * B block, the caller writes the packed panels (dequantizing the weights
 * straight into them), so the weights are read from memory once, in their
 * quantized bytes. */
#include "llmk.h"

#include <immintrin.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma")))
#define AVX2 __attribute__((target("avx2,fma")))

/* the same test as llmk_cpu_path(), so that it names the path taken */
static int use_avx512(void) { const llmk_cpu_features *f = llmk_cpu(); return f->avx512f && f->avx512bw; }

#define MR_MAX 16
#define NR_MAX 32

/* writes one packed NR-column panel of op(B): see llmk__sgemm_bpack */
typedef void (*llmk__bpack_fn)(void *ctx, float *bp, size_t j0, size_t n, size_t k0, size_t kc);

/* what one call computes: C = alpha * op(A) @ op(B) + beta * C (+ bias[j]) */
typedef struct {
    int trans_a, trans_b;
    size_t M, N, K;
    float alpha, beta;
    const float *A, *B, *bias;   /* bias (N) or NULL */
    size_t lda, ldb, ldc;
    float *C;
    /* op(B) not stored, its panels made by bpack (NR bnr): see llmk__sgemm_bpack */
    llmk__bpack_fn bpack;
    void *bctx;
    size_t bnr, kalign;
    int rowwise;                 /* every row as at M = 1 (llmk_linear_forward_rowwise) */
} gemm_args;

/* c (MR, NR; row stride ldc) = alpha * a-panel @ b-panel + beta * c (+ bias);
 * beta == 0 does not read c. */
typedef void (*ukernel_fn)(size_t kc, const float *a, const float *b, float *c, size_t ldc, float alpha, float beta,
                           const float *bias, const float *next_a);
/* pack rows [i0, i0 + mc) and k [k0, k0 + kc) of op(A) into MR-row panels */
typedef void (*pack_a_fn)(float *ap, const gemm_args *g, size_t i0, size_t mc, size_t k0, size_t kc);
/* pack k [k0, k0 + kc) and columns [j0, j0 + nb) of op(B) into NR-column panels */
typedef void (*pack_b_fn)(float *bp, const gemm_args *g, size_t k0, size_t kc, size_t j0, size_t nb);

typedef struct {
    int mr, nr;
    size_t kc, mcb, nb;   /* cache blocks; mcb a multiple of mr, nb of nr */
    ukernel_fn kernel;
    pack_a_fn pack_a;
    pack_b_fn pack_b;
} gemm_path;

/* ---- packing ----
 * Both packs are one of two moves on a source S where element (x, k) -- x a
 * row of op(A) or a column of op(B) -- lies at S[k * ld + x] ("copy": trans_a
 * set, trans_b clear) or at S[x * ld + k] ("transpose"). dst gets panels of
 * R values of x per k: dst[x / R][k][x % R] (panel stride R * kc), zero where
 * x runs past n. */
#define INLINE static inline __attribute__((always_inline))
#define PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

/* k in blocks of 16, panels inside: the writes go 16 * R floats at a time
 * to each panel, the reads along 16 source rows */
INLINE void pack_copy(float *dst, const float *S, size_t ld, size_t x0, size_t n, size_t k0, size_t kc, size_t R)
{
    size_t full = n / R * R;
    for (size_t kb = 0; kb < kc; kb += 16) {
        size_t ke = kc - kb < 16 ? kc : kb + 16;
        float *d = dst + kb * R;
        size_t x = 0;
        for (; x < full; x += R, d += R * kc)
            for (size_t k = kb; k < ke; k++) memcpy(d + (k - kb) * R, S + (k0 + k) * ld + x0 + x, R * sizeof(float));
        if (x < n)
            for (size_t k = kb; k < ke; k++) {
                const float *src = S + (k0 + k) * ld + x0;
                size_t y = 0;
                for (; x + y < n; y++) d[(k - kb) * R + y] = src[x + y];
                for (; y < R; y++) d[(k - kb) * R + y] = 0;
            }
    }
}

static void pack_transpose(float *dst, const float *S, size_t ld, size_t x0, size_t n, size_t k0, size_t kc, size_t R)
{
    for (size_t p = 0; p < n; p += R, dst += R * kc)
        for (size_t x = 0; x < R; x++) {
            const float *src = S + (x0 + p + x) * ld + k0;
            if (p + x < n)
                for (size_t k = 0; k < kc; k++) dst[k * R + x] = src[k];
            else
                for (size_t k = 0; k < kc; k++) dst[k * R + x] = 0;
        }
}

/* AVX-512 in-register transpose of 16 x 16 floats: r[i] lane j <-> r[j] lane i */
AVX512 INLINE void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)
        for (int h = 0; h < 2; h++) {
            __m512d lo = _mm512_castps_pd(t[i + h]), hi = _mm512_castps_pd(t[i + 2 + h]);
            r[i + 2 * h] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi));
            r[i + 2 * h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi));
        }
    for (int i = 0; i < 16; i += 8)
        for (int h = 0; h < 4; h++) {
            t[i + h] = _mm512_shuffle_f32x4(r[i + h], r[i + 4 + h], 0x88);
            t[i + 4 + h] = _mm512_shuffle_f32x4(r[i + h], r[i + 4 + h], 0xdd);
        }
    for (int h = 0; h < 8; h++) {
        r[h] = _mm512_shuffle_f32x4(t[h], t[h + 8], 0x88);
        r[h + 8] = _mm512_shuffle_f32x4(t[h], t[h + 8], 0xdd);
    }
}

/* The transpose in 16 x 16 squares (16 values of x by 16 of k: 64 contiguous
 * bytes from each of 16 source rows); a partial panel and the last k < 16
 * go to pack_transpose. */
AVX512 INLINE void pack_transpose_512(float *dst, const float *S, size_t ld, size_t x0, size_t n, size_t k0, size_t kc,
                                      size_t R)
{
    for (size_t p = 0; p < n; p += R, dst += R * kc) {
        size_t k = 0;
        if (n - p >= R)
            for (; k + 16 <= kc; k += 16)
                for (size_t h = 0; h < R; h += 16) {
                    const float *src = S + (x0 + p + h) * ld + k0 + k;
                    size_t w = R - h < 16 ? R - h : 16;
                    __m512 r[16];
                    if (k + 32 < kc)   /* two squares ahead: ~20% faster from L3 */
                        for (size_t x = 0; x < w; x++) PREFETCH(src + x * ld + 32);
                    for (size_t x = 0; x < 16; x++) r[x] = x < w ? _mm512_loadu_ps(src + x * ld) : _mm512_setzero_ps();
                    transpose16(r);
                    for (size_t t = 0; t < 16; t++)
                        _mm512_mask_storeu_ps(dst + (k + t) * R + h, (__mmask16)((1u << w) - 1), r[t]);
                }
        if (k < kc) pack_transpose(dst + k * R, S, ld, x0 + p, n - p < R ? n - p : R, k0 + k, kc - k, R);
    }
}

/* ---- AVX-512 microkernel: 12 x 32 (24 accumulators, 2 B vectors, 1 broadcast) ---- */
#define MR512 12
#define NR512 32

AVX512 static void pack_a_12(float *ap, const gemm_args *g, size_t i0, size_t mc, size_t k0, size_t kc)
{
    if (g->trans_a) pack_copy(ap, g->A, g->lda, i0, mc, k0, kc, MR512);
    else pack_transpose_512(ap, g->A, g->lda, i0, mc, k0, kc, MR512);
}

AVX512 static void pack_b_32(float *bp, const gemm_args *g, size_t k0, size_t kc, size_t j0, size_t nb)
{
    if (g->trans_b) pack_transpose_512(bp, g->B, g->ldb, j0, nb, k0, kc, NR512);
    else pack_copy(bp, g->B, g->ldb, j0, nb, k0, kc, NR512);
}

/* Software prefetch: the L2 -> L1 hardware prefetchers do not keep up with
 * two streams of 128 bytes per 12 cycles, so the kernel asks for B's
 * micro-panel PF_B k-steps ahead, for the C tile PF_C k-steps before it is
 * read (its rows are ldc apart, which no prefetcher follows), and, when the
 * caller passes the A micro-panel it will use next (which is not in L2), for
 * one line of it per k-step. */
#define PF_B 16
#define PF_C 64
#define K12_STEP()                                                              \
    do {                                                                        \
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);             \
        _Pragma("GCC unroll 12") for (int i = 0; i < MR512; i++)                \
        {                                                                       \
            __m512 ai = _mm512_set1_ps(a[i]);                                   \
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);                     \
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);                     \
        }                                                                       \
        a += MR512;                                                             \
        b += NR512;                                                             \
    } while (0)

AVX512 static void kernel_12x32(size_t kc, const float *a, const float *b, float *c, size_t ldc, float alpha,
                                float beta, const float *bias, const float *next_a)
{
    __m512 acc[MR512][2];
#pragma GCC unroll 12
    for (int i = 0; i < MR512; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    size_t k = 0, kc_main = kc > PF_C ? kc - PF_C : 0;
    if (next_a) {   /* the next A micro-panel, kc * MR floats: one line per k-step */
        size_t lines = kc * MR512 / 16;
        size_t kpf = lines < kc_main ? lines : kc_main;
        for (; k < kpf; k++) {
            PREFETCH(b + PF_B * NR512);
            PREFETCH(b + PF_B * NR512 + 16);
            PREFETCH(next_a + k * 16);
            K12_STEP();
        }
    }
    for (; k < kc_main; k++) {
        PREFETCH(b + PF_B * NR512);
        PREFETCH(b + PF_B * NR512 + 16);
        K12_STEP();
    }
#pragma GCC unroll 12
    for (int i = 0; i < MR512; i++) {
        PREFETCH(c + i * ldc);
        PREFETCH(c + i * ldc + 16);
    }
    for (; k < kc; k++) K12_STEP();
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __m512 bias0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    __m512 bias1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 12
    for (int i = 0; i < MR512; i++) {
        float *ci = c + i * ldc;
        __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
        if (beta != 0) {
            r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), r0);
            r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), r1);
        }
        _mm512_storeu_ps(ci, _mm512_add_ps(r0, bias0));
        _mm512_storeu_ps(ci + 16, _mm512_add_ps(r1, bias1));
    }
}

/* ---- AVX2 microkernel: 6 x 16 (12 accumulators) ---- */
#define MR256 6
#define NR256 16

AVX2 static void pack_a_6(float *ap, const gemm_args *g, size_t i0, size_t mc, size_t k0, size_t kc)
{
    if (g->trans_a) pack_copy(ap, g->A, g->lda, i0, mc, k0, kc, MR256);
    else pack_transpose(ap, g->A, g->lda, i0, mc, k0, kc, MR256);
}

AVX2 static void pack_b_16(float *bp, const gemm_args *g, size_t k0, size_t kc, size_t j0, size_t nb)
{
    if (g->trans_b) pack_transpose(bp, g->B, g->ldb, j0, nb, k0, kc, NR256);
    else pack_copy(bp, g->B, g->ldb, j0, nb, k0, kc, NR256);
}

AVX2 static void kernel_6x16(size_t kc, const float *a, const float *b, float *c, size_t ldc, float alpha, float beta,
                             const float *bias, const float *next_a)
{
    __m256 acc[MR256][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR256; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (size_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR256; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += MR256;
        b += NR256;
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    __m256 bias0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    __m256 bias1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int i = 0; i < MR256; i++) {
        float *ci = c + i * ldc;
        __m256 r0 = _mm256_mul_ps(va, acc[i][0]), r1 = _mm256_mul_ps(va, acc[i][1]);
        if (beta != 0) {
            r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r0);
            r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), r1);
        }
        _mm256_storeu_ps(ci, _mm256_add_ps(r0, bias0));
        _mm256_storeu_ps(ci + 8, _mm256_add_ps(r1, bias1));
    }
}

/* KC 512 (K split evenly, so 384..512): an A micro-panel is 24 KB; NB 256:
 * the B block (512 x 256, 512 KB) takes half of L2 (1 MB), leaving room for
 * the A micro-panels and C tiles passing through; MCB 3072: the A block
 * (6 MB, shared by the threads) L3. Against BLIS's Skylake-X blocks (KC 384,
 * NB 480) this measured ~4% faster on the GPT-2 shapes, one thread. */
static const gemm_path path_avx512 = {MR512, NR512, 512, 3072, 256, kernel_12x32, pack_a_12, pack_b_32};
static const gemm_path path_avx2 = {MR256, NR256, 256, 3072, 240, kernel_6x16, pack_a_6, pack_b_16};

static const gemm_path *pick_path(void)
{
    const llmk_cpu_features *f = llmk_cpu();
    if (use_avx512()) return &path_avx512;
    if (f->avx2 && f->fma) return &path_avx2;
    return NULL;
}

/* ---- a few rows times a transposed B (decoding one token, or a small batch,
 * through a Linear layer) ----
 * Packing would cost more than the product and the 12-row tile would be
 * mostly padding, so for M <= 4, op(A) = A and op(B) = B^T each output is a
 * dot product of a row of A with a row of B, read straight from the sources:
 * B (the weights) is read once, in order; threads split the columns of C.
 * (Without the transpose the same idea walks B across its rows and measured
 * slower than packing.) */
#define SMALL_M LLMK_GEMM_SMALL_M

/* C[i][j] = alpha * acc + beta * C[i][j] (beta == 0: not read) + bias[j] */
static inline float epilogue(const gemm_args *g, float acc, size_t i, size_t j)
{
    float *c = g->C + i * g->ldc + j;
    float v = g->alpha * acc;
    if (g->beta != 0) v += g->beta * *c;
    if (g->bias) v += g->bias[j];
    return v;
}

/* columns [j0, j1) of C for rows [i0, i0 + M), M <= 4: 4 rows of B at a
 * time, 16 k per step. A row's sums do not depend on the other rows. */
AVX512 INLINE void small_dot(const gemm_args *g, size_t j0, size_t j1, size_t i0, size_t M)
{
    const size_t K = g->K, kfull = K / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (K % 16)) - 1);
    const float *A = g->A + i0 * g->lda;
    for (size_t j = j0; j < j1; j += 4) {
        size_t nj = j1 - j < 4 ? j1 - j : 4;
        const float *b[4];
        for (size_t q = 0; q < 4; q++) b[q] = g->B + (j + (q < nj ? q : nj - 1)) * g->ldb;   /* repeat the last row */
        __m512 acc[SMALL_M][4];
        for (size_t i = 0; i < M; i++)
            for (int q = 0; q < 4; q++) acc[i][q] = _mm512_setzero_ps();
        for (size_t k = 0; k <= kfull; k += 16) {
            __mmask16 m = k < kfull ? (__mmask16)0xffff : tail;
            if (!m) break;
            __m512 bv[4];
            for (int q = 0; q < 4; q++) bv[q] = _mm512_maskz_loadu_ps(m, b[q] + k);
            for (size_t i = 0; i < M; i++) {
                __m512 av = _mm512_maskz_loadu_ps(m, A + i * g->lda + k);
                for (int q = 0; q < 4; q++) acc[i][q] = _mm512_fmadd_ps(av, bv[q], acc[i][q]);
            }
        }
        for (size_t i = 0; i < M; i++)
            for (size_t q = 0; q < nj; q++) {
                float v = epilogue(g, _mm512_reduce_add_ps(acc[i][q]), i0 + i, j + q);
                g->C[(i0 + i) * g->ldc + j + q] = v;
            }
    }
}

/* columns [j0, j1) of C: blocks of 32 columns (32 rows of B, in L2 while
 * they serve every group of 4 rows of A; a rowwise call has any M) */
AVX512 static void small_m_block(const gemm_args *g, size_t j0, size_t j1)
{
    for (size_t jb = j0; jb < j1; jb += 32) {
        size_t je = j1 - jb < 32 ? j1 : jb + 32;
        for (size_t i0 = 0; i0 < g->M; i0 += SMALL_M) {
            switch (g->M - i0 < SMALL_M ? g->M - i0 : SMALL_M) {
            case 1: small_dot(g, jb, je, i0, 1); break;
            case 2: small_dot(g, jb, je, i0, 2); break;
            case 3: small_dot(g, jb, je, i0, 3); break;
            default: small_dot(g, jb, je, i0, 4); break;
            }
        }
    }
}

/* ---- pack buffers: the calling thread's, grown on demand and kept for the next call ---- */
static __thread float *tl_buf;
static __thread size_t tl_cap;   /* floats */

static float *pack_buffer(size_t floats)
{
    if (floats > tl_cap) {
        size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
        float *p = aligned_alloc(64, bytes);
        if (!p) return NULL;
        free(tl_buf);
        tl_buf = p;
        tl_cap = bytes / sizeof(float);
    }
    return tl_buf;
}

/* ---- a team of threads on one product ----
 * Each thread computes its own range of C's columns and packs its own B
 * blocks, but op(A)'s block, which every thread needs whole, is packed once:
 * each thread packs a share of its micro-panels into a buffer they all read.
 * A barrier after each pack says the block is complete; there are two A
 * buffers, used in turn, so the same barrier also says that every thread is
 * done with the block packed two rounds before, which the next pack
 * overwrites. */
typedef struct {
    unsigned count __attribute__((aligned(64)));
    unsigned gen;
} spin_barrier;

/* `units` of the team's `n` arrive (a thread may do the work of several) */
static void barrier_wait(spin_barrier *b, unsigned units, unsigned n)
{
    unsigned gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, units, __ATOMIC_ACQ_REL) == n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
        return;
    }
    for (unsigned spins = 0; __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen; spins++) {
        if (spins < 4096) _mm_pause();
        else sched_yield();   /* a thread of the team is not running: give it the processor */
    }
}

typedef struct {
    const gemm_path *P;
    const gemm_args *g;
    float *abuf[2];   /* shared A blocks (team) */
    float *bbuf;      /* B blocks, bstride floats per thread */
    size_t bstride, mcb, nbb, kc_max;
    size_t nunits;    /* team members, or 1 (no team: one thread does it all) */
    spin_barrier bar;
} gemm_plan;

/* C columns [n0, n1) (the tiles of work units [u0, u1) of plan->nunits),
 * all rows, K in full; packs those units' shares of each A block. */
static void gemm_cols(gemm_plan *pl, size_t u0, size_t u1, size_t n0, size_t n1, float *bp)
{
    const gemm_path *P = pl->P;
    const gemm_args *g = pl->g;
    const size_t mr = (size_t)P->mr, nr = (size_t)P->nr, T = pl->nunits;
    float tile[MR_MAX * NR_MAX] __attribute__((aligned(64)));
    size_t round = 0;
    for (size_t ic = 0; ic < g->M; ic += pl->mcb) {
        size_t mc = g->M - ic < pl->mcb ? g->M - ic : pl->mcb;
        for (size_t pc = 0; pc < g->K; pc += pl->kc_max, round++) {
            size_t kc = g->K - pc < pl->kc_max ? g->K - pc : pl->kc_max;
            float beta = pc == 0 ? g->beta : 1.0f;   /* later K blocks add to C */
            const float *bias = pc == 0 ? g->bias : NULL;
            float *ap = pl->abuf[round & 1];
            size_t panels = (mc + mr - 1) / mr, p0 = panels * u0 / T, p1 = panels * u1 / T;
            if (p1 > p0) {
                size_t rows = (p1 * mr < mc ? p1 * mr : mc) - p0 * mr;
                P->pack_a(ap + p0 * mr * kc, g, ic + p0 * mr, rows, pc, kc);
            }
            if (u1 - u0 < T) barrier_wait(&pl->bar, (unsigned)(u1 - u0), (unsigned)T);
            for (size_t jc = n0; jc < n1; jc += pl->nbb) {
                size_t nb = n1 - jc < pl->nbb ? n1 - jc : pl->nbb;
                if (!g->bpack) P->pack_b(bp, g, pc, kc, jc, nb);
                else
                    for (size_t p = 0; p < nb; p += nr)
                        g->bpack(g->bctx, bp + p * kc, jc + p, nb - p < nr ? nb - p : nr, pc, kc);
                for (size_t ir = 0; ir < mc; ir += mr) {
                    size_t rows = mc - ir < mr ? mc - ir : mr;
                    const float *a = ap + ir * kc;
                    const float *next_a = ir + mr < mc ? a + mr * kc : NULL;
                    float *crow = g->C + (ic + ir) * g->ldc + jc;
                    for (size_t jr = 0; jr < nb; jr += nr) {
                        size_t cols = nb - jr < nr ? nb - jr : nr;
                        const float *b = bp + jr * kc, *bj = bias ? bias + jc + jr : NULL;
                        const float *pf = jr + nr >= nb ? next_a : NULL;   /* the last B panel for this A panel */
                        if (rows == mr && cols == nr) {
                            P->kernel(kc, a, b, crow + jr, g->ldc, g->alpha, beta, bj, pf);
                            continue;
                        }
                        P->kernel(kc, a, b, tile, nr, 1.0f, 0.0f, NULL, pf);
                        for (size_t i = 0; i < rows; i++)
                            for (size_t j = 0; j < cols; j++) {
                                float *cij = crow + i * g->ldc + jr + j;
                                float v = g->alpha * tile[i * nr + j];
                                if (beta != 0) v += beta * *cij;
                                if (bj) v += bj[j];
                                *cij = v;
                            }
                    }
                }
            }
        }
    }
}

/* work units [begin, end) of nunits: each unit is a share of C's NR-column
 * tiles and of the packing of A; the pool runs the tasks at once */
static void gemm_task(void *ctx, size_t begin, size_t end)
{
    gemm_plan *pl = ctx;
    const size_t nr = (size_t)pl->P->nr, ntiles = (pl->g->N + nr - 1) / nr, T = pl->nunits;
    size_t n0 = ntiles * begin / T * nr, n1 = ntiles * end / T * nr;
    gemm_cols(pl, begin, end, n0, n1 < pl->g->N ? n1 : pl->g->N, pl->bbuf + begin * pl->bstride);
}

/* below this many multiply-adds one thread is quicker than waking the pool */
#define PARALLEL_MIN_MACS ((size_t)1 << 21)

static void small_m_task(void *ctx, size_t begin, size_t end)
{
    const gemm_args *g = ctx;
    small_m_block(g, begin * 4, end * 4 < g->N ? end * 4 : g->N);
}

static void gemm_fallback(const gemm_args *g)
{
    llmk_sgemm_ref(g->trans_a, g->trans_b, g->M, g->N, g->K, g->alpha, g->A, g->lda, g->B, g->ldb, g->beta, g->C,
                   g->ldc);
    if (g->bias)
        for (size_t i = 0; i < g->M; i++)
            for (size_t j = 0; j < g->N; j++) g->C[i * g->ldc + j] += g->bias[j];
}

/* 0; or -1 with g->bpack when no vector path takes its panels (NR bnr) or
 * there is no memory for the packs (without bpack the oracle answers) */
static int gemm_run(const gemm_args *g)
{
    if (g->M == 0 || g->N == 0) return 0;
    if (g->K == 0) {   /* no products: C = beta * C + bias */
        for (size_t i = 0; i < g->M; i++)
            for (size_t j = 0; j < g->N; j++) {
                float *c = g->C + i * g->ldc + j;
                *c = (g->beta != 0 ? g->beta * *c : 0.0f) + (g->bias ? g->bias[j] : 0.0f);
            }
        return 0;
    }
    const gemm_path *P = pick_path();
    if (g->bpack && (!P || (size_t)P->nr != g->bnr)) return -1;
    if (!P) {
        gemm_fallback(g);
        return 0;
    }
    size_t threads = (size_t)llmk_threads();
    if (P == &path_avx512 && (g->M <= SMALL_M || g->rowwise) && !g->trans_a && g->trans_b && !g->bpack) {
        size_t groups = (g->N + 3) / 4;   /* 4 columns (rows of B) at a time */
        if (threads <= 1 || g->M * g->N * g->K < PARALLEL_MIN_MACS) small_m_task((void *)g, 0, groups);
        else llmk_parallel_for(groups, 1, small_m_task, (void *)g);
        return 0;
    }
    const size_t mr = (size_t)P->mr, nr = (size_t)P->nr, ntiles = (g->N + nr - 1) / nr;
    /* a team splits the columns; each member wants a few tiles */
    size_t T = threads;
    if (g->M * g->N * g->K < PARALLEL_MIN_MACS) T = 1;
    if (T > ntiles / 2) T = ntiles / 2 ? ntiles / 2 : 1;
    gemm_plan pl = {.P = P, .g = g, .nunits = T};
    size_t nk = (g->K + P->kc - 1) / P->kc;
    pl.kc_max = (g->K + nk - 1) / nk;   /* even K blocks: 768 -> 2 x 384, 1024 -> 342, 342, 340 */
    if (g->bpack && g->kalign > 1) pl.kc_max = (pl.kc_max + g->kalign - 1) / g->kalign * g->kalign;
    pl.mcb = g->M < P->mcb ? (g->M + mr - 1) / mr * mr : P->mcb;
    size_t ncols = (ntiles + T - 1) / T * nr;   /* the most one member gets */
    pl.nbb = ncols < P->nb ? ncols : P->nb;
    size_t a_floats = (pl.mcb * pl.kc_max + 15) & ~(size_t)15;   /* panels start 64-byte aligned */
    pl.bstride = (pl.kc_max * pl.nbb + 15) & ~(size_t)15;
    float *buf = pack_buffer((T > 1 ? 2 : 1) * a_floats + T * pl.bstride);
    if (!buf) {   /* no memory for the packs: the oracle still gives the answer */
        if (g->bpack) return -1;
        gemm_fallback(g);
        return 0;
    }
    pl.abuf[0] = buf;
    pl.abuf[1] = T > 1 ? buf + a_floats : buf;
    pl.bbuf = buf + (T > 1 ? 2 : 1) * a_floats;
    if (T == 1) gemm_task(&pl, 0, 1);
    else llmk_parallel_for(T, 1, gemm_task, &pl);
    return 0;
}

void llmk_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
    gemm_args g = {trans_a, trans_b, M, N, K, alpha, beta, A, B, NULL, lda, ldb, ldc, C, NULL, NULL, 0, 0, 0};
    gemm_run(&g);
}

/* For the quantized Linear layer (quant_cpu.c): C (M, N; row stride ldc) =
 * A (M, K; lda) @ op(B) where op(B) (K, N) is never stored: where a thread
 * packs a block of it, pack(ctx, bp, j0, n, k0, kc) writes the panel of its
 * columns [j0, j0 + n) (n <= nr), rows [k0, k0 + kc) as bp[k * nr + x] =
 * op(B)[k0 + k][j0 + x], zero for x >= n (bp 64-byte aligned). k0 is a
 * multiple of kalign, and so is kc but in the last K block. Threads as in
 * llmk_sgemm; returns -1, C untouched, when this processor's path does not
 * take panels of nr columns (AVX-512: 32, AVX2: 16) or without memory. */
int llmk__sgemm_bpack(size_t M, size_t N, size_t K, const float *A, size_t lda, size_t nr, llmk__bpack_fn pack,
                      void *ctx, size_t kalign, float *C, size_t ldc);
int llmk__sgemm_bpack(size_t M, size_t N, size_t K, const float *A, size_t lda, size_t nr, llmk__bpack_fn pack,
                      void *ctx, size_t kalign, float *C, size_t ldc)
{
    gemm_args g = {0, 1, M, N, K, 1.0f, 0.0f, A, NULL, NULL, lda, 0, ldc, C, pack, ctx, nr, kalign, 0};
    return gemm_run(&g);
}

/* ---- Linear layer ---- */
void llmk_linear_forward(float *out, const float *inp, const float *w, const float *bias, size_t rows, size_t ic,
                         size_t oc)
{
    /* out (rows, oc) = inp (rows, ic) @ w^T (ic, oc) + bias, the bias added as the first K block is stored */
    gemm_args g = {0, 1, rows, oc, ic, 1.0f, 0.0f, inp, w, bias, ic, ic, oc, out, NULL, NULL, 0, 0, 0};
    gemm_run(&g);
}

void llmk_linear_forward_rowwise(float *out, const float *inp, const float *w, const float *bias, size_t rows,
                                 size_t ic, size_t oc)
{
    gemm_args g = {0, 1, rows, oc, ic, 1.0f, 0.0f, inp, w, bias, ic, ic, oc, out, NULL, NULL, 0, 0, 1};
    gemm_run(&g);
}

/* dbias[j] += sum over rows of dout[r][j], summed in double, in blocks of
 * COLSUM columns: rows outer so that dout is read along its rows (a column
 * walk would touch a new page per element), the sums in a 16 KB array in L1 */
#define COLSUM 2048
typedef struct {
    float *dbias;
    const float *dout;
    size_t rows, oc;
} colsum_job;

/* s[t] += x[t] for t < w (w rounded down to 16); returns how far it got */
AVX512 static size_t add_row_avx512(double *s, const float *x, size_t w)
{
    size_t t = 0;
    for (; t + 16 <= w; t += 16) {
        __m512 v = _mm512_loadu_ps(x + t);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        _mm512_storeu_pd(s + t, _mm512_add_pd(_mm512_loadu_pd(s + t), lo));
        _mm512_storeu_pd(s + t + 8, _mm512_add_pd(_mm512_loadu_pd(s + t + 8), hi));
    }
    return t;
}

static void colsum_task(void *ctx, size_t begin, size_t end)
{
    const colsum_job *c = ctx;
    int simd = use_avx512();
    size_t j1 = end * COLSUM < c->oc ? end * COLSUM : c->oc;
    for (size_t j = begin * COLSUM; j < j1; j += COLSUM) {
        size_t w = j1 - j < COLSUM ? j1 - j : COLSUM;
        double s[COLSUM] = {0};
        for (size_t r = 0; r < c->rows; r++) {
            const float *x = c->dout + r * c->oc + j;
            for (size_t t = simd ? add_row_avx512(s, x, w) : 0; t < w; t++) s[t] += x[t];
        }
        for (size_t t = 0; t < w; t++) c->dbias[j + t] = (float)(c->dbias[j + t] + s[t]);
    }
}

void llmk_linear_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                          size_t rows, size_t ic, size_t oc)
{
    if (dinp) llmk_sgemm(0, 0, rows, ic, oc, 1.0f, dout, oc, w, ic, 1.0f, dinp, ic);   /* dout @ w */
    if (dw) llmk_sgemm(1, 0, oc, ic, rows, 1.0f, dout, oc, inp, ic, 1.0f, dw, ic);     /* dout^T @ inp */
    if (dbias && rows && oc) {
        colsum_job c = {dbias, dout, rows, oc};
        size_t groups = (oc + COLSUM - 1) / COLSUM;
        if (rows * oc < PARALLEL_MIN_MACS) colsum_task(&c, 0, groups);
        else llmk_parallel_for(groups, 1, colsum_task, &c);
    }
}
