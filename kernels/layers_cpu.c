/* The fast fp32 layer kernels: threaded over rows (or channels, or blocks of
 * elements) with llmk_parallel_for, and SIMD where it pays, each tested
 * against its _ref in layers_ref.c by t/unit/test_layers.c.
 *
 * The SIMD bodies are written once, against a handful of vector macros, and
 * compiled twice: this file includes itself (LAYERS_SIMD_BODY) once with the
 * macros mapped to AVX-512 and once to AVX2 + FMA, each function carrying
 * its own target attribute, because the file is compiled without -m flags.
 * Processors with neither take the scalar _ref code.
 *
 * Work is split so that every result is computed by one thread in an order
 * that does not depend on the thread count: rows for the row kernels,
 * channel ranges for the column sums of the backward passes (dw, db,
 * dwte, dwpe: rows with the same token must not race), and fixed blocks of
 * elements for sumsq, whose partial sums are added in block order. Results
 * are therefore the same for any LLMK_THREADS. */
#ifndef LAYERS_SIMD_BODY

#include "llmk.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* 2: AVX-512, 1: AVX2 + FMA, 0: scalar (the _ref code) */
static int isa(void)
{
    const llmk_cpu_features *f = llmk_cpu();
    return f->avx512f && f->avx512bw ? 2 : f->avx2 && f->fma ? 1 : 0;
}

/* About this many floats of work per task: smaller inputs run on the calling
 * thread, where waking the pool would cost more than it saves. */
#define GRAIN_FLOATS 16384

static size_t grain_for(size_t per_item)
{
    return per_item >= GRAIN_FLOATS ? 1 : GRAIN_FLOATS / (per_item ? per_item : 1);
}

/* Where exactness against PyTorch matters (AdamW, RoPE) a*b+c must stay two
 * roundings; gcc's GNU mode would otherwise fuse them (also in intrinsics,
 * which are plain vector arithmetic to gcc). clang fuses only within one
 * expression, and not at all with this pragma (the fused multiply-adds the
 * other kernels want are written as such). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#define NOCONTRACT
#else
#define NOCONTRACT __attribute__((optimize("fp-contract=off")))
#endif

/* Column passes (dw, db, dwte, dwpe) split the channels into blocks of 16
 * (one cache line of floats); a task owns whole blocks. */
#define COL_BLOCK 16

#define GELU_S 0.79788456080286535588f   /* sqrt(2/pi) */
#define GELU_A 0.044715f

/* Shared argument blocks of the range functions. */
typedef struct {
    float *out, *mean, *rstd, *dinp, *dw, *db;
    const float *inp, *w, *b, *dout, *cmean, *crstd;
    size_t rows, C;
    float eps;
} norm_args;

typedef struct {
    float *out, *dinp;
    const float *inp, *dout;
    size_t rows, F;
} act_args;

typedef struct {
    float *loss, *logits;
    const uint32_t *targets;
    const float *grad_scale;
    size_t V;
} xent_args;

typedef struct {
    float *param, *m, *v;
    const float *grad;
    const llmk_adamw_args *a;
} adamw_args;

typedef struct {
    const float *x;
    size_t n, block;
    double *partial;
} sumsq_args;

/* ---- the SIMD bodies, once per instruction set ---- */

#define LAYERS_SIMD_BODY 1

#define ISA_ATTR __attribute__((target("avx512f,avx512bw,fma")))
#define NAME(f) f##_avx512
#define W 16
typedef __m512 vf512;
typedef __m512d vd512;
#define vf vf512
#define vd vd512
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_SET1(x) _mm512_set1_ps(x)
#define V_ZERO() _mm512_setzero_ps()
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_SUB(a, b) _mm512_sub_ps(a, b)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_DIV(a, b) _mm512_div_ps(a, b)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)     /* a*b + c */
#define V_FNMA(a, b, c) _mm512_fnmadd_ps(a, b, c)   /* c - a*b */
#define V_MAX(a, b) _mm512_max_ps(a, b)
#define V_MIN(a, b) _mm512_min_ps(a, b)
#define V_SQRT(a) _mm512_sqrt_ps(a)
#define V_ROUND(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_HSUM(a) _mm512_reduce_add_ps(a)
#define V_HMAX(a) _mm512_reduce_max_ps(a)
#define VD_ZERO() _mm512_setzero_pd()
#define VD_ADD(a, b) _mm512_add_pd(a, b)
#define VD_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define VD_LO(v) _mm512_cvtps_pd(_mm512_castps512_ps256(v))
#define VD_HI(v) _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
#define VD_HSUM(a) _mm512_reduce_add_pd(a)
/* -|a|; a where x < 0 else b */
#define V_NEGABS(a) _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_set1_epi32(INT32_MIN)))
#define V_SELECT_NEG(x, a, b) _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), b, a)
/* the first n (< W) lanes of p, the rest `fill`; stores of the first n lanes;
 * v with lanes n.. zeroed. Masked lanes are never touched in memory. */
ISA_ATTR static inline vf NAME(loadn)(const float *p, size_t n, float fill)
{
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), (__mmask16)((1u << n) - 1), p);
}
ISA_ATTR static inline void NAME(storen)(float *p, vf v, size_t n)
{
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), v);
}
ISA_ATTR static inline vf NAME(keepn)(vf v, size_t n)
{
    return _mm512_maskz_mov_ps((__mmask16)((1u << n) - 1), v);
}
/* v * 2^n for integral n in [-150, 127], rounded once */
ISA_ATTR static inline vf NAME(ldexp)(vf v, vf n) { return _mm512_scalef_ps(v, n); }
#include "layers_cpu.c"
#undef ISA_ATTR
#undef NAME
#undef W
#undef vf
#undef vd
#undef V_LOAD
#undef V_STORE
#undef V_SET1
#undef V_ZERO
#undef V_ADD
#undef V_SUB
#undef V_MUL
#undef V_DIV
#undef V_FMA
#undef V_FNMA
#undef V_MAX
#undef V_MIN
#undef V_SQRT
#undef V_ROUND
#undef V_HSUM
#undef V_HMAX
#undef VD_ZERO
#undef VD_ADD
#undef VD_FMA
#undef VD_LO
#undef VD_HI
#undef VD_HSUM
#undef V_NEGABS
#undef V_SELECT_NEG

#define ISA_ATTR __attribute__((target("avx2,fma")))
#define NAME(f) f##_avx2
#define W 8
typedef __m256 vf256;
typedef __m256d vd256;
#define vf vf256
#define vd vd256
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_SET1(x) _mm256_set1_ps(x)
#define V_ZERO() _mm256_setzero_ps()
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_SUB(a, b) _mm256_sub_ps(a, b)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_DIV(a, b) _mm256_div_ps(a, b)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_FNMA(a, b, c) _mm256_fnmadd_ps(a, b, c)
#define V_MAX(a, b) _mm256_max_ps(a, b)
#define V_MIN(a, b) _mm256_min_ps(a, b)
#define V_SQRT(a) _mm256_sqrt_ps(a)
#define V_ROUND(a) _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_HSUM(a) NAME(hsum)(a)
#define V_HMAX(a) NAME(hmax)(a)
#define VD_ZERO() _mm256_setzero_pd()
#define VD_ADD(a, b) _mm256_add_pd(a, b)
#define VD_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define VD_LO(v) _mm256_cvtps_pd(_mm256_castps256_ps128(v))
#define VD_HI(v) _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))
#define VD_HSUM(a) NAME(hsum_pd)(a)
#define V_NEGABS(a) _mm256_or_ps(a, _mm256_set1_ps(-0.0f))
#define V_SELECT_NEG(x, a, b) _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ))
ISA_ATTR static inline __m256i NAME(lanes_below)(size_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
ISA_ATTR static inline vf NAME(loadn)(const float *p, size_t n, float fill)
{
    __m256i m = NAME(lanes_below)(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
ISA_ATTR static inline void NAME(storen)(float *p, vf v, size_t n) { _mm256_maskstore_ps(p, NAME(lanes_below)(n), v); }
ISA_ATTR static inline vf NAME(keepn)(vf v, size_t n)
{
    return _mm256_and_ps(v, _mm256_castsi256_ps(NAME(lanes_below)(n)));
}
ISA_ATTR static inline float NAME(hsum)(vf v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
ISA_ATTR static inline float NAME(hmax)(vf v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
ISA_ATTR static inline double NAME(hsum_pd)(vd v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
/* v * 2^n for integral n in [-150, 127], v in [0.5, 2): two factors
 * 2^(n - h) and 2^h, h = n / 2 (both normal floats); the first product is
 * exact, the second rounds once, into the subnormals where it must. */
ISA_ATTR static inline vf NAME(ldexp)(vf v, vf n)
{
    __m256i ni = _mm256_cvtps_epi32(n), h = _mm256_srai_epi32(ni, 1), bias = _mm256_set1_epi32(127);
    __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
    __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(v, f1), f2);
}
#include "layers_cpu.c"

/* ---- dispatch and threading ---- */

/* Calls the ISA's version of a range function: fn_avx512 or fn_avx2. */
#define DISPATCH_RANGE(fn)                                                   \
    static void fn(void *ctx, size_t begin, size_t end)                      \
    {                                                                        \
        if (isa() == 2) fn##_avx512(ctx, begin, end);                        \
        else fn##_avx2(ctx, begin, end);                                     \
    }
DISPATCH_RANGE(ln_fwd_rows)
DISPATCH_RANGE(ln_bwd_rows)
DISPATCH_RANGE(ln_bwd_cols)
DISPATCH_RANGE(rms_fwd_rows)
DISPATCH_RANGE(rms_bwd_rows)
DISPATCH_RANGE(rms_bwd_cols)
DISPATCH_RANGE(gelu_fwd_range)
DISPATCH_RANGE(gelu_bwd_range)
DISPATCH_RANGE(swiglu_fwd_rows)
DISPATCH_RANGE(swiglu_bwd_rows)
DISPATCH_RANGE(xent_rows)
DISPATCH_RANGE(adamw_range)
DISPATCH_RANGE(sumsq_blocks)

static size_t col_blocks(size_t C) { return (C + COL_BLOCK - 1) / COL_BLOCK; }

/* o = a + b, the ISA's way (level: isa()) */
static void vadd(int level, float *o, const float *a, const float *b, size_t n)
{
    if (level == 2) vadd_avx512(o, a, b, n);
    else if (level == 1) vadd_avx2(o, a, b, n);
    else for (size_t i = 0; i < n; i++) o[i] = a[i] + b[i];
}

/* ---- embeddings ---- */

typedef struct {
    float *out, *dwte, *dwpe;
    const float *wte, *wpe, *dout;
    const uint32_t *ids;
    size_t rows, T, C;
} embed_args;

static void embed_fwd_rows(void *ctx, size_t begin, size_t end)
{
    const embed_args *k = ctx;
    size_t C = k->C;
    int level = isa();
    for (size_t r = begin; r < end; r++) {
        const float *e = k->wte + (size_t)k->ids[r] * C;
        if (k->wpe) vadd(level, k->out + r * C, e, k->wpe + (k->T ? r % k->T : r) * C, C);
        else memcpy(k->out + r * C, e, C * sizeof(float));
    }
}

void llmk_embed_forward(float *out, const uint32_t *ids, const float *wte, const float *wpe, size_t rows, size_t T,
                        size_t C)
{
    embed_args k = {.out = out, .ids = ids, .wte = wte, .wpe = wpe, .rows = rows, .T = T, .C = C};
    llmk_parallel_for(rows, grain_for(C), embed_fwd_rows, &k);
}

/* Each task owns a range of channels and walks every row in order: the
 * per-element order of additions is the _ref's, and no two tasks touch the
 * same float. */
static void embed_bwd_cols(void *ctx, size_t begin, size_t end)
{
    const embed_args *k = ctx;
    size_t c0 = begin * COL_BLOCK, c1 = end * COL_BLOCK < k->C ? end * COL_BLOCK : k->C, C = k->C;
    int level = isa();
    for (size_t r = 0; r < k->rows; r++) {
        const float *d = k->dout + r * C + c0;
        if (k->dwte) {
            float *g = k->dwte + (size_t)k->ids[r] * C + c0;
            vadd(level, g, g, d, c1 - c0);
        }
        if (k->dwpe) {
            float *g = k->dwpe + (k->T ? r % k->T : r) * C + c0;
            vadd(level, g, g, d, c1 - c0);
        }
    }
}

void llmk_embed_backward(float *dwte, float *dwpe, const float *dout, const uint32_t *ids, size_t rows, size_t T,
                         size_t C)
{
    if (!dwte && !dwpe) return;
    embed_args k = {.dwte = dwte, .dwpe = dwpe, .dout = dout, .ids = ids, .rows = rows, .T = T, .C = C};
    llmk_parallel_for(col_blocks(C), grain_for(rows * COL_BLOCK), embed_bwd_cols, &k);
}

/* ---- LayerNorm ---- */

void llmk_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                            size_t rows, size_t C, float eps)
{
    if (!isa()) { llmk_layernorm_forward_ref(out, mean, rstd, inp, w, b, rows, C, eps); return; }
    norm_args k = {.out = out, .mean = mean, .rstd = rstd, .inp = inp, .w = w, .b = b, .rows = rows, .C = C, .eps = eps};
    llmk_parallel_for(rows, grain_for(3 * C), ln_fwd_rows, &k);
}

void llmk_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                             const float *mean, const float *rstd, size_t rows, size_t C)
{
    if (!isa()) { llmk_layernorm_backward_ref(dinp, dw, db, dout, inp, w, mean, rstd, rows, C); return; }
    norm_args k = {.dinp = dinp, .dw = dw, .db = db, .dout = dout, .inp = inp, .w = w,
                   .cmean = mean, .crstd = rstd, .rows = rows, .C = C};
    if (dinp) llmk_parallel_for(rows, grain_for(3 * C), ln_bwd_rows, &k);
    if (dw || db) llmk_parallel_for(col_blocks(C), grain_for(rows * COL_BLOCK), ln_bwd_cols, &k);
}

/* ---- RMSNorm ---- */

void llmk_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, size_t rows, size_t C, float eps)
{
    if (!isa()) { llmk_rmsnorm_forward_ref(out, rstd, inp, w, rows, C, eps); return; }
    norm_args k = {.out = out, .rstd = rstd, .inp = inp, .w = w, .rows = rows, .C = C, .eps = eps};
    llmk_parallel_for(rows, grain_for(2 * C), rms_fwd_rows, &k);
}

void llmk_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                           const float *rstd, size_t rows, size_t C)
{
    if (!isa()) { llmk_rmsnorm_backward_ref(dinp, dw, dout, inp, w, rstd, rows, C); return; }
    norm_args k = {.dinp = dinp, .dw = dw, .dout = dout, .inp = inp, .w = w, .crstd = rstd, .rows = rows, .C = C};
    if (dinp) llmk_parallel_for(rows, grain_for(3 * C), rms_bwd_rows, &k);
    if (dw) llmk_parallel_for(col_blocks(C), grain_for(rows * COL_BLOCK), rms_bwd_cols, &k);
}

/* ---- activations ---- */

/* GELU is elementwise: split anywhere, GRAIN_FLOATS / 2 elements at least
 * (an exp per element makes them costlier than a copy). */
void llmk_gelu_forward(float *out, const float *inp, size_t n)
{
    if (!isa()) { llmk_gelu_forward_ref(out, inp, n); return; }
    act_args k = {.out = out, .inp = inp};
    llmk_parallel_for(n, GRAIN_FLOATS / 2, gelu_fwd_range, &k);
}

void llmk_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
    if (!dinp) return;
    if (!isa()) { llmk_gelu_backward_ref(dinp, inp, dout, n); return; }
    act_args k = {.dinp = dinp, .inp = inp, .dout = dout};
    llmk_parallel_for(n, GRAIN_FLOATS / 2, gelu_bwd_range, &k);
}

void llmk_swiglu_forward(float *out, const float *inp, size_t rows, size_t F)
{
    if (!isa()) { llmk_swiglu_forward_ref(out, inp, rows, F); return; }
    act_args k = {.out = out, .inp = inp, .rows = rows, .F = F};
    llmk_parallel_for(rows, grain_for(3 * F), swiglu_fwd_rows, &k);
}

void llmk_swiglu_backward(float *dinp, const float *inp, const float *dout, size_t rows, size_t F)
{
    if (!dinp) return;
    if (!isa()) { llmk_swiglu_backward_ref(dinp, inp, dout, rows, F); return; }
    act_args k = {.dinp = dinp, .inp = inp, .dout = dout, .rows = rows, .F = F};
    llmk_parallel_for(rows, grain_for(5 * F), swiglu_bwd_rows, &k);
}

/* ---- RoPE ----
 * The same float arithmetic as the _ref (and Hugging Face), so the results
 * are identical. The work is split over positions rather than rows: the
 * cos and sin of a position (D/2 of each, in double: most of the cost) are
 * computed once and applied to every row at that position (p, p + T, ...:
 * the B sequences of a batch), every head. inv_freq once per task. */
typedef struct {
    float *x;
    size_t rows, T, heads, D, row_stride, step;   /* step: rows between equal positions */
    float theta, sign;
} rope_args;

#define ROPE_BLOCK 128   /* frequencies per pass: tables on the stack */

NOCONTRACT static void rope_positions(void *ctx, size_t begin, size_t end)
{
    const rope_args *k = ctx;
    size_t h = k->D / 2;
    int level = isa();
    float inv_freq[ROPE_BLOCK], cs[ROPE_BLOCK], sn[ROPE_BLOCK];
    for (size_t i0 = 0; i0 < h; i0 += ROPE_BLOCK) {
        size_t nb = h - i0 < ROPE_BLOCK ? h - i0 : ROPE_BLOCK;
        for (size_t i = 0; i < nb; i++) {
            float e = (float)(2 * (i0 + i)) / (float)k->D;
            inv_freq[i] = 1.0f / (float)pow((double)k->theta, (double)e);
        }
        for (size_t q = begin; q < end; q++) {
            float p = (float)q;   /* q < T: it is r % T for every row below */
            for (size_t i = 0; i < nb; i++) {
                double a = (double)(p * inv_freq[i]);
                cs[i] = (float)cos(a);
                sn[i] = k->sign * (float)sin(a);
            }
            for (size_t r = q; r < k->rows; r += k->step) {
                for (size_t hd = 0; hd < k->heads; hd++) {
                    float *x0 = k->x + r * k->row_stride + hd * k->D + i0, *x1 = x0 + h;
                    if (level == 2) rotate_avx512(x0, x1, cs, sn, nb);
                    else if (level == 1) rotate_avx2(x0, x1, cs, sn, nb);
                    else
                        for (size_t i = 0; i < nb; i++) {
                            float a = x0[i], b = x1[i];
                            x0[i] = a * cs[i] - b * sn[i];
                            x1[i] = b * cs[i] + a * sn[i];
                        }
                }
            }
        }
    }
}

static void rope(float *x, size_t rows, size_t T, size_t heads, size_t D, size_t row_stride, float theta, float sign)
{
    /* positions 0 .. npos-1; with T == 0 (p = r) or rows <= T each row is its own position */
    size_t npos = T && T < rows ? T : rows;
    rope_args k = {.x = x, .rows = rows, .T = T, .heads = heads, .D = D, .row_stride = row_stride,
                   .step = npos, .theta = theta, .sign = sign};
    size_t per_pos = (rows + npos - 1) / (npos ? npos : 1) * heads * D + 8 * D;
    llmk_parallel_for(npos, grain_for(per_pos), rope_positions, &k);
}

void llmk_rope_forward(float *x, size_t rows, size_t T, size_t heads, size_t D, size_t row_stride, float theta)
{
    rope(x, rows, T, heads, D, row_stride, theta, 1.0f);
}

void llmk_rope_backward(float *dx, size_t rows, size_t T, size_t heads, size_t D, size_t row_stride, float theta)
{
    rope(dx, rows, T, heads, D, row_stride, theta, -1.0f);
}

/* ---- softmax cross-entropy ---- */

void llmk_softmax_xent(float *loss, float *logits, const uint32_t *targets, const float *grad_scale, size_t rows,
                       size_t V)
{
    if (!isa()) { llmk_softmax_xent_ref(loss, logits, targets, grad_scale, rows, V); return; }
    xent_args k = {.loss = loss, .logits = logits, .targets = targets, .grad_scale = grad_scale, .V = V};
    llmk_parallel_for(rows, grain_for(3 * V), xent_rows, &k);
}

/* ---- AdamW: bit for bit the _ref, which is torch's float arithmetic ---- */

void llmk_adamw(float *param, const float *grad, float *m, float *v, size_t n, const llmk_adamw_args *a)
{
    if (!isa()) { llmk_adamw_ref(param, grad, m, v, n, a); return; }
    adamw_args k = {.param = param, .m = m, .v = v, .grad = grad, .a = a};
    llmk_parallel_for(n, GRAIN_FLOATS, adamw_range, &k);
}

/* ---- sum of squares ----
 * At most SUMSQ_PARTS blocks (each a multiple of 64 floats, at least 64K),
 * summed in double per block and then in block order: the result depends on
 * n only, not on the thread count. */
#define SUMSQ_PARTS 256

double llmk_sumsq(const float *x, size_t n)
{
    if (!isa()) return llmk_sumsq_ref(x, n);
    size_t block = (n + SUMSQ_PARTS - 1) / SUMSQ_PARTS;
    block = block < 65536 ? 65536 : (block + 63) / 64 * 64;
    size_t nblocks = (n + block - 1) / block;
    double partial[SUMSQ_PARTS];
    sumsq_args k = {.x = x, .n = n, .block = block, .partial = partial};
    llmk_parallel_for(nblocks, 1, sumsq_blocks, &k);
    double s = 0;
    for (size_t i = 0; i < nblocks; i++) s += partial[i];
    return s;
}

#else /* LAYERS_SIMD_BODY: the vector code, included once per instruction set */

/* exp(x), relative error about 1 ulp: Cody-Waite reduction by n*ln2
 * (ln2 split in two so n*ln2_hi is exact) and Cephes' degree-5 polynomial
 * on |r| <= ln2/2, scaled by 2^n with gradual underflow (n down to -150:
 * subnormal results as exp() gives them, 0 below -104). Above 88.3 the
 * answer is exp(88.3) ~ 2.2e38 (the callers' arguments are <= 0). NaN stays
 * NaN: max/min return their second operand on NaN. */
ISA_ATTR static inline vf NAME(vexp)(vf x)
{
    x = V_MIN(V_SET1(88.3f), V_MAX(V_SET1(-104.0f), x));
    vf n = V_ROUND(V_MUL(x, V_SET1(1.44269504088896341f)));
    vf r = V_FNMA(n, V_SET1(0.693359375f), x);
    r = V_FNMA(n, V_SET1(-2.12194440e-4f), r);
    vf p = V_SET1(1.9875691500e-4f);
    p = V_FMA(p, r, V_SET1(1.3981999507e-3f));
    p = V_FMA(p, r, V_SET1(8.3334519073e-3f));
    p = V_FMA(p, r, V_SET1(4.1665795894e-2f));
    p = V_FMA(p, r, V_SET1(1.6666665459e-1f));
    p = V_FMA(p, r, V_SET1(5.0000001201e-1f));
    vf y = V_FMA(V_MUL(r, r), p, V_ADD(r, V_SET1(1.0f)));
    return NAME(ldexp)(y, n);
}

/* sigmoid(z) and 1 - sigmoid(z) from q = exp(-|z|) <= 1: for z >= 0 they are
 * 1/(1+q) and q/(1+q), for z < 0 the other way round. Neither cancels, so
 * both keep their relative accuracy far into the tails (where 1 - s or s
 * is tiny), and exp never overflows. */
ISA_ATTR static inline void NAME(vsigmoid)(vf z, vf *s, vf *one_minus_s)
{
    vf q = NAME(vexp)(V_NEGABS(z));
    vf d = V_DIV(V_SET1(1.0f), V_ADD(V_SET1(1.0f), q)), qd = V_MUL(q, d);
    *s = V_SELECT_NEG(z, qd, d);
    *one_minus_s = V_SELECT_NEG(z, d, qd);
}

/* ---- LayerNorm forward: rows [begin, end) ----
 * A float sum over W lanes (each lane adds C/W terms) for a first mean m,
 * then the deviations from it give the correction dm and the biased
 * variance; out = ((x - m) - dm) * rstd * w + b. */
ISA_ATTR static void NAME(ln_fwd_rows)(void *ctx, size_t begin, size_t end)
{
    const norm_args *k = ctx;
    size_t C = k->C, cv = C / W * W, tail = C - cv;
    for (size_t r = begin; r < end; r++) {
        const float *x = k->inp + r * C;
        float *o = k->out + r * C;
        vf s0 = V_ZERO(), s1 = V_ZERO();
        size_t c = 0;
        for (; c + 2 * W <= C; c += 2 * W) {
            s0 = V_ADD(s0, V_LOAD(x + c));
            s1 = V_ADD(s1, V_LOAD(x + c + W));
        }
        for (; c < cv; c += W) s0 = V_ADD(s0, V_LOAD(x + c));
        if (tail) s1 = V_ADD(s1, NAME(loadn)(x + cv, tail, 0.0f));
        float m = V_HSUM(V_ADD(s0, s1)) / (float)C;
        /* The corrected two-pass algorithm (Chan, Golub, LeVeque): the float
         * mean is off by ~C/W ulp of |mean|, which is a large error relative
         * to the spread when |mean| >> std; the sum of the deviations
         * measures it, so mean += sum(d) / C and var = sum(d^2)/C - (sum(d)/C)^2. */
        vf vm = V_SET1(m), d1 = V_ZERO(), d2 = V_ZERO();
        for (c = 0; c < cv; c += W) {
            vf d = V_SUB(V_LOAD(x + c), vm);
            d1 = V_ADD(d1, d);
            d2 = V_FMA(d, d, d2);
        }
        if (tail) {
            vf d = NAME(keepn)(V_SUB(NAME(loadn)(x + cv, tail, 0.0f), vm), tail);
            d1 = V_ADD(d1, d);
            d2 = V_FMA(d, d, d2);
        }
        float dm = V_HSUM(d1) / (float)C, var = V_HSUM(d2) / (float)C - dm * dm;
        float rs = 1.0f / sqrtf((var > 0 ? var : 0) + k->eps);
        /* (x - m) - dm: the deviation to the accuracy of its own size, not
         * of |mean| (as x - float(m + dm) would give) */
        vf vdm = V_SET1(dm), vr = V_SET1(rs), one = V_SET1(1.0f), zero = V_ZERO();
        for (c = 0; c < cv; c += W) {
            vf xh = V_MUL(V_SUB(V_SUB(V_LOAD(x + c), vm), vdm), vr);
            V_STORE(o + c, V_FMA(xh, k->w ? V_LOAD(k->w + c) : one, k->b ? V_LOAD(k->b + c) : zero));
        }
        if (tail) {
            vf xh = V_MUL(V_SUB(V_SUB(NAME(loadn)(x + cv, tail, 0.0f), vm), vdm), vr);
            vf wv = k->w ? NAME(loadn)(k->w + cv, tail, 0.0f) : one, bv = k->b ? NAME(loadn)(k->b + cv, tail, 0.0f) : zero;
            NAME(storen)(o + cv, V_FMA(xh, wv, bv), tail);
        }
        if (k->mean) k->mean[r] = m + dm;
        if (k->rstd) k->rstd[r] = rs;
    }
}

/* ---- LayerNorm backward, dinp: rows [begin, end) ----
 * dinp += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w. Tail
 * lanes load dout as 0, so they add nothing to the sums. */
ISA_ATTR static void NAME(ln_bwd_rows)(void *ctx, size_t begin, size_t end)
{
    const norm_args *k = ctx;
    size_t C = k->C, cv = C / W * W, tail = C - cv;
    vf one = V_SET1(1.0f);
    for (size_t r = begin; r < end; r++) {
        const float *x = k->inp + r * C, *d = k->dout + r * C;
        float *di = k->dinp + r * C;
        vf vm = V_SET1(k->cmean[r]), vr = V_SET1(k->crstd[r]);
        vf sg = V_ZERO(), sgx = V_ZERO();
        for (size_t c = 0; c < cv; c += W) {
            vf g = V_MUL(V_LOAD(d + c), k->w ? V_LOAD(k->w + c) : one);
            sg = V_ADD(sg, g);
            sgx = V_FMA(g, V_MUL(V_SUB(V_LOAD(x + c), vm), vr), sgx);
        }
        if (tail) {
            vf g = V_MUL(NAME(loadn)(d + cv, tail, 0.0f), k->w ? NAME(loadn)(k->w + cv, tail, 0.0f) : one);
            sg = V_ADD(sg, g);
            sgx = V_FMA(g, V_MUL(V_SUB(NAME(loadn)(x + cv, tail, 0.0f), vm), vr), sgx);
        }
        vf msg = V_SET1(V_HSUM(sg) / (float)C), msgx = V_SET1(V_HSUM(sgx) / (float)C);
        for (size_t c = 0; c < cv; c += W) {
            vf g = V_MUL(V_LOAD(d + c), k->w ? V_LOAD(k->w + c) : one);
            vf xh = V_MUL(V_SUB(V_LOAD(x + c), vm), vr);
            vf t = V_FNMA(xh, msgx, V_SUB(g, msg));
            V_STORE(di + c, V_FMA(vr, t, V_LOAD(di + c)));
        }
        if (tail) {
            vf g = V_MUL(NAME(loadn)(d + cv, tail, 0.0f), k->w ? NAME(loadn)(k->w + cv, tail, 0.0f) : one);
            vf xh = V_MUL(V_SUB(NAME(loadn)(x + cv, tail, 0.0f), vm), vr);
            vf t = V_FNMA(xh, msgx, V_SUB(g, msg));
            NAME(storen)(di + cv, V_FMA(vr, t, NAME(loadn)(di + cv, tail, 0.0f)), tail);
        }
    }
}

/* ---- column sums of the norm backward passes: channel blocks [begin, end) ----
 * For each run of up to COL_RUN channels the task keeps float sums on the
 * stack and walks every row: dw += dout * xhat (LayerNorm, xhat =
 * (x - mean) * rstd; db += dout) or dout * x * rstd (RMSNorm, mean NULL). */
#define COL_RUN 256
ISA_ATTR static inline void NAME(norm_cols)(const norm_args *k, size_t begin, size_t end)
{
    size_t C = k->C, c0 = begin * COL_BLOCK, c1 = end * COL_BLOCK < C ? end * COL_BLOCK : C;
    float aw[COL_RUN] __attribute__((aligned(64))), ab[COL_RUN] __attribute__((aligned(64)));
    for (size_t a0 = c0; a0 < c1; a0 += COL_RUN) {
        size_t len = c1 - a0 < COL_RUN ? c1 - a0 : COL_RUN, lv = len / W * W, tail = len - lv;
        memset(aw, 0, sizeof aw);
        memset(ab, 0, sizeof ab);
        for (size_t r = 0; r < k->rows; r++) {
            const float *x = k->inp + r * C + a0, *d = k->dout + r * C + a0;
            vf vm = V_SET1(k->cmean ? k->cmean[r] : 0.0f), vr = V_SET1(k->crstd[r]);
            for (size_t c = 0; c < len; c += W) {
                vf xv = c < lv ? V_LOAD(x + c) : NAME(loadn)(x + c, tail, 0.0f);
                vf dv = c < lv ? V_LOAD(d + c) : NAME(loadn)(d + c, tail, 0.0f);
                vf xh = V_MUL(V_SUB(xv, vm), vr);
                V_STORE(aw + c, V_FMA(dv, xh, V_LOAD(aw + c)));
                V_STORE(ab + c, V_ADD(dv, V_LOAD(ab + c)));
            }
        }
        for (size_t c = 0; c < len; c++) {
            if (k->dw) k->dw[a0 + c] += aw[c];
            if (k->db) k->db[a0 + c] += ab[c];
        }
    }
}
ISA_ATTR static void NAME(ln_bwd_cols)(void *ctx, size_t begin, size_t end) { NAME(norm_cols)(ctx, begin, end); }
ISA_ATTR static void NAME(rms_bwd_cols)(void *ctx, size_t begin, size_t end)
{
    norm_args k = *(const norm_args *)ctx;
    k.cmean = NULL;
    k.db = NULL;
    NAME(norm_cols)(&k, begin, end);
}

/* ---- RMSNorm forward: out = (x * rstd) * w ---- */
ISA_ATTR static void NAME(rms_fwd_rows)(void *ctx, size_t begin, size_t end)
{
    const norm_args *k = ctx;
    size_t C = k->C, cv = C / W * W, tail = C - cv;
    vf one = V_SET1(1.0f);
    for (size_t r = begin; r < end; r++) {
        const float *x = k->inp + r * C;
        float *o = k->out + r * C;
        vf s0 = V_ZERO(), s1 = V_ZERO();
        size_t c = 0;
        for (; c + 2 * W <= C; c += 2 * W) {
            vf a = V_LOAD(x + c), b = V_LOAD(x + c + W);
            s0 = V_FMA(a, a, s0);
            s1 = V_FMA(b, b, s1);
        }
        for (; c < cv; c += W) {
            vf a = V_LOAD(x + c);
            s0 = V_FMA(a, a, s0);
        }
        if (tail) {
            vf a = NAME(loadn)(x + cv, tail, 0.0f);
            s1 = V_FMA(a, a, s1);
        }
        float rs = 1.0f / sqrtf(V_HSUM(V_ADD(s0, s1)) / (float)C + k->eps);
        vf vr = V_SET1(rs);
        for (c = 0; c < cv; c += W) V_STORE(o + c, V_MUL(V_MUL(V_LOAD(x + c), vr), k->w ? V_LOAD(k->w + c) : one));
        if (tail) {
            vf wv = k->w ? NAME(loadn)(k->w + cv, tail, 0.0f) : one;
            NAME(storen)(o + cv, V_MUL(V_MUL(NAME(loadn)(x + cv, tail, 0.0f), vr), wv), tail);
        }
        if (k->rstd) k->rstd[r] = rs;
    }
}

/* ---- RMSNorm backward, dinp: += rstd * dout * w - rstd^3 / C * x * sum(dout * w * x) ---- */
ISA_ATTR static void NAME(rms_bwd_rows)(void *ctx, size_t begin, size_t end)
{
    const norm_args *k = ctx;
    size_t C = k->C, cv = C / W * W, tail = C - cv;
    vf one = V_SET1(1.0f);
    for (size_t r = begin; r < end; r++) {
        const float *x = k->inp + r * C, *d = k->dout + r * C;
        float *di = k->dinp + r * C;
        vf s = V_ZERO();
        for (size_t c = 0; c < cv; c += W)
            s = V_FMA(V_MUL(V_LOAD(d + c), k->w ? V_LOAD(k->w + c) : one), V_LOAD(x + c), s);
        if (tail) {
            vf g = V_MUL(NAME(loadn)(d + cv, tail, 0.0f), k->w ? NAME(loadn)(k->w + cv, tail, 0.0f) : one);
            s = V_FMA(g, NAME(loadn)(x + cv, tail, 0.0f), s);
        }
        float rs = k->crstd[r];
        vf vr = V_SET1(rs), vk = V_SET1(rs * rs * rs * V_HSUM(s) / (float)C);
        for (size_t c = 0; c < cv; c += W) {
            vf g = V_MUL(V_LOAD(d + c), k->w ? V_LOAD(k->w + c) : one);
            vf t = V_FNMA(vk, V_LOAD(x + c), V_MUL(vr, g));
            V_STORE(di + c, V_ADD(V_LOAD(di + c), t));
        }
        if (tail) {
            vf g = V_MUL(NAME(loadn)(d + cv, tail, 0.0f), k->w ? NAME(loadn)(k->w + cv, tail, 0.0f) : one);
            vf t = V_FNMA(vk, NAME(loadn)(x + cv, tail, 0.0f), V_MUL(vr, g));
            NAME(storen)(di + cv, V_ADD(NAME(loadn)(di + cv, tail, 0.0f), t), tail);
        }
    }
}

/* ---- GELU ----
 * 0.5 (1 + tanh u) = sigmoid(2u) = s, so
 *   gelu(x) = x s
 *   gelu'(x) = s + x * 2 sqrt(2/pi) (1 + 3a x^2) * s (1 - s)
 * one exp, full relative accuracy in both tails (no 1 + tanh cancellation). */
ISA_ATTR static inline void NAME(gelu_s)(vf x, vf *s, vf *sc)
{
    vf inner = V_FMA(V_SET1(GELU_A), V_MUL(x, x), V_SET1(1.0f));   /* 1 + a x^2 */
    NAME(vsigmoid)(V_MUL(V_MUL(x, V_SET1(2.0f * GELU_S)), inner), s, sc);
}

ISA_ATTR static void NAME(gelu_fwd_range)(void *ctx, size_t begin, size_t end)
{
    const act_args *k = ctx;
    size_t i = begin;
    vf s, sc;
    for (; i + W <= end; i += W) {
        vf x = V_LOAD(k->inp + i);
        NAME(gelu_s)(x, &s, &sc);
        V_STORE(k->out + i, V_MUL(x, s));
    }
    if (i < end) {
        vf x = NAME(loadn)(k->inp + i, end - i, 0.0f);
        NAME(gelu_s)(x, &s, &sc);
        NAME(storen)(k->out + i, V_MUL(x, s), end - i);
    }
}

ISA_ATTR static inline vf NAME(gelu_grad)(vf x)
{
    vf s, sc;
    NAME(gelu_s)(x, &s, &sc);
    vf slope = V_MUL(x, V_FMA(V_SET1(3.0f * GELU_A), V_MUL(x, x), V_SET1(1.0f)));   /* x (1 + 3a x^2) */
    return V_FMA(V_MUL(V_SET1(2.0f * GELU_S), slope), V_MUL(s, sc), s);
}

ISA_ATTR static void NAME(gelu_bwd_range)(void *ctx, size_t begin, size_t end)
{
    const act_args *k = ctx;
    size_t i = begin;
    for (; i + W <= end; i += W)
        V_STORE(k->dinp + i, V_FMA(NAME(gelu_grad)(V_LOAD(k->inp + i)), V_LOAD(k->dout + i), V_LOAD(k->dinp + i)));
    if (i < end) {
        size_t n = end - i;
        vf g = NAME(gelu_grad)(NAME(loadn)(k->inp + i, n, 0.0f));
        NAME(storen)(k->dinp + i, V_FMA(g, NAME(loadn)(k->dout + i, n, 0.0f), NAME(loadn)(k->dinp + i, n, 0.0f)), n);
    }
}

/* ---- SwiGLU: out = g s u, s = sigmoid(g) ---- */
ISA_ATTR static void NAME(swiglu_fwd_rows)(void *ctx, size_t begin, size_t end)
{
    const act_args *k = ctx;
    size_t F = k->F, fv = F / W * W, tail = F - fv;
    for (size_t r = begin; r < end; r++) {
        const float *gate = k->inp + r * 2 * F, *up = gate + F;
        float *o = k->out + r * F;
        for (size_t i = 0; i < F; i += W) {
            size_t n = i < fv ? W : tail;
            vf g = n == W ? V_LOAD(gate + i) : NAME(loadn)(gate + i, n, 0.0f);
            vf u = n == W ? V_LOAD(up + i) : NAME(loadn)(up + i, n, 0.0f);
            vf s, sc;
            NAME(vsigmoid)(g, &s, &sc);
            vf y = V_MUL(V_MUL(g, s), u);
            if (n == W) V_STORE(o + i, y);
            else NAME(storen)(o + i, y, n);
        }
    }
}

/* dg += dout * u * s (1 + g (1 - s)); du += dout * g * s */
ISA_ATTR static void NAME(swiglu_bwd_rows)(void *ctx, size_t begin, size_t end)
{
    const act_args *k = ctx;
    size_t F = k->F, fv = F / W * W, tail = F - fv;
    vf one = V_SET1(1.0f);
    for (size_t r = begin; r < end; r++) {
        const float *gate = k->inp + r * 2 * F, *up = gate + F, *d = k->dout + r * F;
        float *dg = k->dinp + r * 2 * F, *du = dg + F;
        for (size_t i = 0; i < F; i += W) {
            size_t n = i < fv ? W : tail;
            vf g = n == W ? V_LOAD(gate + i) : NAME(loadn)(gate + i, n, 0.0f);
            vf u = n == W ? V_LOAD(up + i) : NAME(loadn)(up + i, n, 0.0f);
            vf dv = n == W ? V_LOAD(d + i) : NAME(loadn)(d + i, n, 0.0f);
            vf s, sc;
            NAME(vsigmoid)(g, &s, &sc);
            vf dsilu = V_MUL(s, V_FMA(g, sc, one));   /* s (1 + g (1 - s)) */
            vf a = V_MUL(V_MUL(dv, u), dsilu), b = V_MUL(dv, V_MUL(g, s));
            if (n == W) {
                V_STORE(dg + i, V_ADD(V_LOAD(dg + i), a));
                V_STORE(du + i, V_ADD(V_LOAD(du + i), b));
            } else {
                NAME(storen)(dg + i, V_ADD(NAME(loadn)(dg + i, n, 0.0f), a), n);
                NAME(storen)(du + i, V_ADD(NAME(loadn)(du + i, n, 0.0f), b), n);
            }
        }
    }
}

/* ---- softmax cross-entropy: rows [begin, end) ----
 * max in float; sum of exp(x - max) with each float term widened and added
 * in double; logsumexp in double. Every term has a relative error of about
 * an ulp and all are positive, so the sum (and the loss, to ~2e-7 absolute)
 * keeps that accuracy. Gradient: exp(x - max) * (scale / sum), and the
 * target's entry in double from the saved logit. */
ISA_ATTR static void NAME(xent_rows)(void *ctx, size_t begin, size_t end)
{
    const xent_args *k = ctx;
    size_t V = k->V, vv = V / W * W, tail = V - vv;
    for (size_t r = begin; r < end; r++) {
        float *x = k->logits + r * V;
        uint32_t t = k->targets[r];
        float xt = x[t];
        vf mx = V_SET1(-INFINITY);
        for (size_t i = 0; i < vv; i += W) mx = V_MAX(mx, V_LOAD(x + i));
        if (tail) mx = V_MAX(mx, NAME(loadn)(x + vv, tail, -INFINITY));
        float m = V_HMAX(mx);
        vf vm = V_SET1(m);
        vd s0 = VD_ZERO(), s1 = VD_ZERO();
        for (size_t i = 0; i < vv; i += W) {
            vf e = NAME(vexp)(V_SUB(V_LOAD(x + i), vm));
            s0 = VD_ADD(s0, VD_LO(e));
            s1 = VD_ADD(s1, VD_HI(e));
        }
        if (tail) {
            vf e = NAME(keepn)(NAME(vexp)(V_SUB(NAME(loadn)(x + vv, tail, 0.0f), vm)), tail);
            s0 = VD_ADD(s0, VD_LO(e));
            s1 = VD_ADD(s1, VD_HI(e));
        }
        double sum = VD_HSUM(VD_ADD(s0, s1)), lse = m + log(sum);
        if (k->loss) k->loss[r] = (float)(lse - xt);
        if (!k->grad_scale) continue;
        double sc = k->grad_scale[r];
        if (sc == 0) {
            memset(x, 0, V * sizeof *x);
            continue;
        }
        vf f = V_SET1((float)(sc / sum));
        for (size_t i = 0; i < vv; i += W) V_STORE(x + i, V_MUL(NAME(vexp)(V_SUB(V_LOAD(x + i), vm)), f));
        if (tail) NAME(storen)(x + vv, V_MUL(NAME(vexp)(V_SUB(NAME(loadn)(x + vv, tail, 0.0f), vm)), f), tail);
        x[t] = (float)((exp((double)xt - lse) - 1.0) * sc);
    }
}

/* ---- AdamW: elements [begin, end), the _ref's operations in its order ----
 * No contraction here (NOCONTRACT): the two fused multiply-adds are torch's
 * (lerp, addcmul), written out; everything else is a separately rounded op.
 * The last partial vector goes to the _ref, which computes the same thing. */
NOCONTRACT ISA_ATTR static void NAME(adamw_range)(void *ctx, size_t begin, size_t end)
{
    const adamw_args *k = ctx;
    const llmk_adamw_args *a = k->a;
    double lr = a->lr, b1 = a->beta1, b2 = a->beta2, step = (double)a->step;
    float decay = (float)(1.0 - lr * (double)a->weight_decay), w1 = (float)(1.0 - b1);
    int small = fabsf(w1) < 0.5f, scale = a->grad_scale != 1.0f;
    vf vdecay = V_SET1(decay), vgs = V_SET1(a->grad_scale);
    vf vw = V_SET1(small ? w1 : w1 - 1.0f), vbeta2 = V_SET1(a->beta2), vw2 = V_SET1((float)(1.0 - b2));
    vf vbc2 = V_SET1((float)sqrt(1.0 - pow(b2, step))), veps = V_SET1(a->eps);
    vf vstep = V_SET1((float)-(lr / (1.0 - pow(b1, step))));
    size_t i = begin;
    for (; i + W <= end; i += W) {
        vf g = V_LOAD(k->grad + i), m = V_LOAD(k->m + i);
        if (scale) g = V_MUL(g, vgs);
        vf p = V_MUL(V_LOAD(k->param + i), vdecay);
        m = V_FMA(vw, V_SUB(g, m), small ? m : g);
        vf v = V_FMA(V_MUL(vw2, g), g, V_MUL(V_LOAD(k->v + i), vbeta2));
        vf denom = V_ADD(V_DIV(V_SQRT(v), vbc2), veps);
        p = V_ADD(p, V_DIV(V_MUL(vstep, m), denom));
        V_STORE(k->param + i, p);
        V_STORE(k->m + i, m);
        V_STORE(k->v + i, v);
    }
    if (i < end) llmk_adamw_ref(k->param + i, k->grad + i, k->m + i, k->v + i, end - i, a);
}

/* ---- sum of squares: blocks [begin, end) of k->block floats, each in double ---- */
ISA_ATTR static void NAME(sumsq_blocks)(void *ctx, size_t begin, size_t end)
{
    const sumsq_args *k = ctx;
    for (size_t b = begin; b < end; b++) {
        size_t i = b * k->block, e = i + k->block < k->n ? i + k->block : k->n;
        vd a0 = VD_ZERO(), a1 = VD_ZERO(), a2 = VD_ZERO(), a3 = VD_ZERO();
        for (; i + 2 * W <= e; i += 2 * W) {
            vf x = V_LOAD(k->x + i), y = V_LOAD(k->x + i + W);
            vd xl = VD_LO(x), xh = VD_HI(x), yl = VD_LO(y), yh = VD_HI(y);
            a0 = VD_FMA(xl, xl, a0);
            a1 = VD_FMA(xh, xh, a1);
            a2 = VD_FMA(yl, yl, a2);
            a3 = VD_FMA(yh, yh, a3);
        }
        for (; i < e; i += W) {
            vf x = e - i >= W ? V_LOAD(k->x + i) : NAME(loadn)(k->x + i, e - i, 0.0f);
            vd xl = VD_LO(x), xh = VD_HI(x);
            a0 = VD_FMA(xl, xl, a0);
            a1 = VD_FMA(xh, xh, a1);
        }
        k->partial[b] = VD_HSUM(VD_ADD(VD_ADD(a0, a1), VD_ADD(a2, a3)));
    }
}

/* ---- helpers of the embedding and RoPE kernels ---- */

/* o = a + b over n floats (o may be a) */
ISA_ATTR static void NAME(vadd)(float *o, const float *a, const float *b, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W) V_STORE(o + i, V_ADD(V_LOAD(a + i), V_LOAD(b + i)));
    if (i < n) NAME(storen)(o + i, V_ADD(NAME(loadn)(a + i, n - i, 0.0f), NAME(loadn)(b + i, n - i, 0.0f)), n - i);
}

/* the rotation x0' = x0 c - x1 s, x1' = x1 c + x0 s, each product rounded
 * (NOCONTRACT): the _ref's (and Hugging Face's) arithmetic */
NOCONTRACT ISA_ATTR static void NAME(rotate)(float *x0, float *x1, const float *cs, const float *sn, size_t n)
{
    size_t i = 0;
    for (; i + W <= n; i += W) {
        vf a = V_LOAD(x0 + i), b = V_LOAD(x1 + i), c = V_LOAD(cs + i), s = V_LOAD(sn + i);
        V_STORE(x0 + i, V_SUB(V_MUL(a, c), V_MUL(b, s)));
        V_STORE(x1 + i, V_ADD(V_MUL(b, c), V_MUL(a, s)));
    }
    if (i < n) {
        size_t t = n - i;
        vf a = NAME(loadn)(x0 + i, t, 0.0f), b = NAME(loadn)(x1 + i, t, 0.0f);
        vf c = NAME(loadn)(cs + i, t, 0.0f), s = NAME(loadn)(sn + i, t, 0.0f);
        NAME(storen)(x0 + i, V_SUB(V_MUL(a, c), V_MUL(b, s)), t);
        NAME(storen)(x1 + i, V_ADD(V_MUL(b, c), V_MUL(a, s)), t);
    }
}

#endif /* LAYERS_SIMD_BODY */
