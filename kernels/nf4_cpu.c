/* nf4 on the CPU: dequantization and the quantized Linear layer with AVX-512
 * and AVX2 paths (chosen at run time, as quant_cpu.c chooses), tested
 * against nf4_ref.c in t/unit/test_nf4.c.
 *
 * A weight's code is decoded by a permute from the 16-value codebook held in
 * registers (vpermps over 16 lanes with AVX-512; two 8-lane permutes and a
 * blend with AVX2). The codes of a byte belong to neighbouring weights (2k in
 * the high nibble, 2k+1 in the low), so codes come out of the bytes in an
 * order of their own:
 *
 *  - dequantization interleaves them back; each weight is codebook value x
 *    block absmax, one rounding, the ref's (bit for bit; contraction is off
 *    for this file, explicit _fmadd_ intrinsics still fuse);
 *  - the Linear layer instead reorders x once per call to match the codes'
 *    order (see the AVX-512 and AVX2 sections) and dots fp32 x against the
 *    codebook values block by block: per block (AVX-512: per pair of
 *    blocks, one in each half of the lanes) a sum of products in the
 *    vector's lanes, then one fused multiply-add by the block's absmax into
 *    the row's lanes, which are added up at the end. For one row of x
 *    (decoding) the codes are decoded as they stream in; for several rows
 *    each stretch of a weight row is decoded once into a buffer and dotted
 *    against a tile of x rows, with the same operations in the same order,
 *    so an output never depends on how many rows came with it (nor on the
 *    number of threads). The result differs from the ref's double dot by
 *    float rounding only.
 *
 * Both are threaded over output rows (llmk_parallel_for). */
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

#define AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma,f16c")))
#define AVX2 __attribute__((target("avx2,fma,f16c")))
/* the small fixed loops over vector registers must unroll, or their arrays
 * of vectors live on the stack */
#if defined(__clang__)
#define UNROLL _Pragma("unroll 8")
#else
#define UNROLL _Pragma("GCC unroll 8")
#endif

enum { PATH_SCALAR, PATH_AVX2, PATH_AVX512 };

static int path(void)
{
    const llmk_cpu_features *f = llmk_cpu();
    if (f->avx512f && f->avx512bw) return PATH_AVX512;
    if (f->avx2 && f->fma) return PATH_AVX2;
    return PATH_SCALAR;
}

/* A buffer per thread, kept for the next call (one freed every call would
 * come back as fresh zeroed pages); slot 0 for x, slot 1 for a weight row. */
static void *thread_buffer(int slot, size_t bytes)
{
    static __thread void *buf[2];
    static __thread size_t cap[2];
    if (bytes > cap[slot]) {
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes) != 0) return NULL;
        free(buf[slot]);
        buf[slot] = p;
        cap[slot] = bytes;
    }
    return buf[slot];
}

/* ==== decoding ==== */

/* 16 codes (the low 4 bits of each lane) to their values */
AVX512 static inline __m512 lut512(__m512i idx, __m512 cb) { return _mm512_permutexvar_ps(idx, cb); }

/* 8 codes to their values: the low and the high half of the codebook,
 * chosen by bit 3 (moved to the sign bit for blendv) */
AVX2 static inline __m256 lut256(__m256i idx, __m256 cb_lo, __m256 cb_hi)
{
    __m256 lo = _mm256_permutevar8x32_ps(cb_lo, idx), hi = _mm256_permutevar8x32_ps(cb_hi, idx);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

/* ==== dequantize ==== */

typedef struct {
    float *out;          /* the weights of block b0 of the task's range land at out + (b - first) * 64 */
    const uint8_t *w;
    size_t n, first;     /* the tensor's weights; the first block asked for */
    int path;
} dqctx;

AVX512 static void dequant_avx512(float *out, const uint8_t *q, const float *am, size_t nb)
{
    const __m512 cb = _mm512_loadu_ps(llmk__nf4_codebook);
    const __m512i m4 = _mm512_set1_epi32(15);
    const __m512i i0 = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i i1 = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (size_t b = 0; b < nb; b++, q += 32, out += 64) {
        __m512 a = _mm512_set1_ps(am[b]);
        for (int h = 0; h < 2; h++) {
            __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 16 * h)));
            __m512 even = _mm512_mul_ps(lut512(_mm512_srli_epi32(c, 4), cb), a);   /* weights 2k */
            __m512 odd = _mm512_mul_ps(lut512(_mm512_and_si512(c, m4), cb), a);    /* weights 2k+1 */
            _mm512_storeu_ps(out + 32 * h, _mm512_permutex2var_ps(even, i0, odd));
            _mm512_storeu_ps(out + 32 * h + 16, _mm512_permutex2var_ps(even, i1, odd));
        }
    }
}

AVX2 static void dequant_avx2(float *out, const uint8_t *q, const float *am, size_t nb)
{
    const __m256 cb_lo = _mm256_loadu_ps(llmk__nf4_codebook), cb_hi = _mm256_loadu_ps(llmk__nf4_codebook + 8);
    const __m256i m4 = _mm256_set1_epi32(15);
    for (size_t b = 0; b < nb; b++) {
        __m256 a = _mm256_set1_ps(am[b]);
        for (int h = 0; h < 4; h++, q += 8, out += 16) {
            __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q));
            __m256 even = _mm256_mul_ps(lut256(_mm256_srli_epi32(c, 4), cb_lo, cb_hi), a);
            __m256 odd = _mm256_mul_ps(lut256(_mm256_and_si256(c, m4), cb_lo, cb_hi), a);
            __m256 lo = _mm256_unpacklo_ps(even, odd), hi = _mm256_unpackhi_ps(even, odd);   /* e0 o0 e1 o1 | e4 o4 e5 o5 */
            _mm256_storeu_ps(out, _mm256_permute2f128_ps(lo, hi, 0x20));
            _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
        }
    }
}

static void dequant_range(void *arg, size_t b0, size_t b1)
{
    const dqctx *c = arg;
    b0 += c->first, b1 += c->first;
    float am[LLMK_NF4_GROUP];
    for (size_t s0 = b0; s0 < b1; s0 += LLMK_NF4_GROUP) {
        size_t s1 = s0 + LLMK_NF4_GROUP < b1 ? s0 + LLMK_NF4_GROUP : b1;
        llmk__nf4_absmax(am, c->w, c->n, s0, s1);
        float *out = c->out + (s0 - c->first) * LLMK_NF4_BLOCK;
        const uint8_t *q = c->w + s0 * LLMK_NF4_BLOCK / 2;
        if (c->path == PATH_AVX512) dequant_avx512(out, q, am, s1 - s0);
        else dequant_avx2(out, q, am, s1 - s0);
    }
}

/* blocks [b0, b1) of the tensor w of n weights to out */
static void dequantize_blocks(float *out, const uint8_t *w, size_t n, size_t b0, size_t b1)
{
    dqctx c = {out, w, n, b0, path()};
    llmk_parallel_for(b1 - b0, 1024, dequant_range, &c);   /* 64 Ki weights a task at least */
}

void llmk__nf4_dequantize(float *out, const void *in, size_t n)
{
    if (path() == PATH_SCALAR) llmk__nf4_dequantize_ref(out, in, n);
    else dequantize_blocks(out, in, n, 0, llmk__nf4_nblocks(n));
}

void llmk__nf4_dequantize_rows(float *out, const void *w, size_t ic, size_t oc, size_t r0, size_t r1)
{
    size_t bpr = ic / LLMK_NF4_BLOCK;
    if (path() == PATH_SCALAR) llmk__nf4_dequantize_rows_ref(out, w, ic, oc, r0, r1);
    else dequantize_blocks(out, w, ic * oc, r0 * bpr, r1 * bpr);
}

/* ==== the quantized Linear layer ==== */

/* The tiles of the rows > 1 path: OT weight rows by RT x rows (8 with
 * AVX-512, 4 with AVX2) over stretches of KC columns (a multiple of 128, so
 * that the AVX-512 path's pairs of blocks stay whole). x is reordered into
 * tiles too: each stretch of RT rows lies in one piece, a row KC floats
 * from the next, so that the dot addresses them from one pointer. With one
 * row (RT taken as 1) that is x's own row, reordered. */
enum { OT = 16, KC = 512 };

/* where element k of row r of x goes: rt rows a tile, nch stretches a row */
static inline size_t xpos(size_t r, size_t k, size_t rt, size_t nch)
{
    return ((r / rt) * nch + k / KC) * rt * KC + (r % rt) * KC + k % KC;
}

typedef struct {
    float *out;           /* (rows, oc) */
    const float *x;       /* (rows, ic) */
    const float *xp;      /* (rows, ic) x reordered */
    const uint8_t *w;     /* the tensor: (oc, ic) weights */
    size_t rows, ic, oc;
    int path;
} qlctx;

/* The absmax of a row's nb blocks from block b0 on, as llmk__nf4_absmax
 * gives them (the same two roundings), inline: once per weight row, it
 * costs too much through the general function. (x86: little-endian.) */
static inline void row_absmax(float *am, const uint8_t *w, size_t n, size_t b0, size_t nb)
{
    const uint8_t *acode = w + llmk__nf4_absmax_at(n), *scales = w + llmk__nf4_scales_at(n);
    float offset;
    memcpy(&offset, w + llmk__nf4_offset_at(n), 4);
    for (size_t j = 0; j < nb; j++) {
        size_t b = b0 + j;
        float s;
        memcpy(&s, scales + 4 * (b / LLMK_NF4_GROUP), 4);
        float a = llmk__nf4_map[acode[b]] * s;
        am[j] = a + offset;
    }
}

/* row_absmax with AVX-512: 16 blocks at a time (a gather from the map),
 * the same two roundings */
AVX512 static void row_absmax_avx512(float *am, const uint8_t *w, size_t n, size_t b0, size_t nb)
{
    const uint8_t *acode = w + llmk__nf4_absmax_at(n), *scales = w + llmk__nf4_scales_at(n);
    float offset;
    memcpy(&offset, w + llmk__nf4_offset_at(n), 4);
    const __m512 off = _mm512_set1_ps(offset);
    size_t j = 0;
    for (; j + 16 <= nb; j += 16) {
        size_t b = b0 + j;
        if (b / LLMK_NF4_GROUP != (b + 15) / LLMK_NF4_GROUP) break;   /* a group starts inside: the scalar loop */
        float s;
        memcpy(&s, scales + 4 * (b / LLMK_NF4_GROUP), 4);
        __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(acode + b)));
        __m512 a = _mm512_mul_ps(_mm512_i32gather_ps(c, llmk__nf4_map, 4), _mm512_set1_ps(s));
        _mm512_storeu_ps(am + j, _mm512_add_ps(a, off));
    }
    if (j < nb) row_absmax(am + j, w, n, b0 + j, nb - j);
}

AVX512 static inline float hsum512(__m512 v)
{
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

AVX2 static inline float hsum256(__m256 v)
{
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

/* ---- AVX-512 ----
 * Two blocks at a time: their 64 bytes are 16 dwords of 8 codes each, and
 * vpermps reads only the low 4 bits of an index, so the dwords shifted right
 * by 4k (k = 0..7) decode to w_k: lane d holds weight 8d + 2(k/2) + 1 - k%2
 * (the low nibble of a byte is its odd weight). Lanes 0-7 are the first
 * block, 8-15 the second. x is reordered to match (xp below), and
 * t = w_0 x_0 + ... + w_7 x_7 (a product, then seven fused steps),
 * acc += t * absmax (fused; the two blocks' absmax in their halves). A row's
 * odd last block goes 16 bytes at a time: the high nibbles (even weights),
 * then the low ones, x reordered in 32s (evens, then odds), t as above over
 * four products. */

/* x (rows, ic) reordered for the AVX-512 decoding, into tiles of rt rows */
static void reorder_x512(float *xp, const float *x, size_t rows, size_t ic, size_t rt)
{
    const size_t nch = (ic + KC - 1) / KC;
    for (size_t r = 0; r < rows; r++)
        for (size_t k0 = 0; k0 < ic; k0 += KC) {
            float *d = xp + xpos(r, k0, rt, nch);
            const float *s = x + r * ic + k0;
            size_t kc = k0 + KC < ic ? KC : ic - k0, c = 0;
            for (; c + 128 <= kc; c += 128)
                for (size_t k = 0; k < 8; k++)
                    for (size_t j = 0; j < 16; j++) d[c + 16 * k + j] = s[c + 8 * j + 2 * (k / 2) + 1 - k % 2];
            for (; c < kc; c += 32)
                for (size_t k = 0; k < 16; k++) {
                    d[c + k] = s[c + 2 * k];
                    d[c + 16 + k] = s[c + 2 * k + 1];
                }
        }
}

/* decode one weight row: wd (ic) codebook values in xp's order */
AVX512 static void decode_row_avx512(float *wd, const uint8_t *q, size_t nb)
{
    const __m512 cb = _mm512_loadu_ps(llmk__nf4_codebook);
    const __m512i m4 = _mm512_set1_epi32(15);
    size_t b = 0;
    for (; b + 2 <= nb; b += 2, q += 64, wd += 128) {
        __m512i v = _mm512_loadu_si512(q);
        _mm512_store_ps(wd, lut512(v, cb));
        _mm512_store_ps(wd + 16, lut512(_mm512_srli_epi32(v, 4), cb));
        _mm512_store_ps(wd + 32, lut512(_mm512_srli_epi32(v, 8), cb));
        _mm512_store_ps(wd + 48, lut512(_mm512_srli_epi32(v, 12), cb));
        _mm512_store_ps(wd + 64, lut512(_mm512_srli_epi32(v, 16), cb));
        _mm512_store_ps(wd + 80, lut512(_mm512_srli_epi32(v, 20), cb));
        _mm512_store_ps(wd + 96, lut512(_mm512_srli_epi32(v, 24), cb));
        _mm512_store_ps(wd + 112, lut512(_mm512_srli_epi32(v, 28), cb));
    }
    if (b < nb)
        for (int h = 0; h < 2; h++, q += 16, wd += 32) {
            __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)q));
            _mm512_store_ps(wd, lut512(_mm512_srli_epi32(c, 4), cb));
            _mm512_store_ps(wd + 16, lut512(_mm512_and_si512(c, m4), cb));
        }
}

/* the absmax of blocks b and b+1 in the low and high halves */
AVX512 static inline __m512 absmax2(const float *am, size_t b)
{
    return _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(am[b]), _mm512_set1_ps(am[b + 1]));
}

/* one weight row (blocks b0 .. b0 + nb - 1 of the tensor w of n weights)
 * against one x row, decoding as the codes stream in, each block's absmax
 * computed as it goes (llmk__nf4_absmax's two roundings): that scalar work
 * runs beside the vector work, where a pass of its own costs a tenth of the
 * time */
AVX512 static float dot_row_avx512(const uint8_t *w, size_t n, size_t b0, const float *x, size_t nb)
{
    const __m512 cb = _mm512_loadu_ps(llmk__nf4_codebook);
    const __m512i m4 = _mm512_set1_epi32(15);
    const uint8_t *q = w + b0 * LLMK_NF4_BLOCK / 2, *acode = w + llmk__nf4_absmax_at(n) + b0;
    const uint8_t *scales = w + llmk__nf4_scales_at(n);
    float offset, am[2];
    memcpy(&offset, w + llmk__nf4_offset_at(n), 4);
    __m512 acc = _mm512_setzero_ps();
    size_t b = 0;
    for (; b + 2 <= nb; b += 2, q += 64, x += 128) {
        for (int h = 0; h < 2; h++) {
            float s;
            memcpy(&s, scales + 4 * ((b0 + b + h) / LLMK_NF4_GROUP), 4);
            float a = llmk__nf4_map[acode[b + h]] * s;
            am[h] = a + offset;
        }
        __m512i v = _mm512_loadu_si512(q);
        __m512 t = _mm512_mul_ps(lut512(v, cb), _mm512_load_ps(x));
        t = _mm512_fmadd_ps(lut512(_mm512_srli_epi32(v, 4), cb), _mm512_load_ps(x + 16), t);
        t = _mm512_fmadd_ps(lut512(_mm512_srli_epi32(v, 8), cb), _mm512_load_ps(x + 32), t);
        t = _mm512_fmadd_ps(lut512(_mm512_srli_epi32(v, 12), cb), _mm512_load_ps(x + 48), t);
        t = _mm512_fmadd_ps(lut512(_mm512_srli_epi32(v, 16), cb), _mm512_load_ps(x + 64), t);
        t = _mm512_fmadd_ps(lut512(_mm512_srli_epi32(v, 20), cb), _mm512_load_ps(x + 80), t);
        t = _mm512_fmadd_ps(lut512(_mm512_srli_epi32(v, 24), cb), _mm512_load_ps(x + 96), t);
        t = _mm512_fmadd_ps(lut512(_mm512_srli_epi32(v, 28), cb), _mm512_load_ps(x + 112), t);
        acc = _mm512_fmadd_ps(t, absmax2(am, 0), acc);
    }
    if (b < nb) {
        float s;
        memcpy(&s, scales + 4 * ((b0 + b) / LLMK_NF4_GROUP), 4);
        float a = llmk__nf4_map[acode[b]] * s;
        a = a + offset;
        __m512i c0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)q));
        __m512i c1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 16)));
        __m512 t = _mm512_mul_ps(lut512(_mm512_srli_epi32(c0, 4), cb), _mm512_load_ps(x));
        t = _mm512_fmadd_ps(lut512(_mm512_and_si512(c0, m4), cb), _mm512_load_ps(x + 16), t);
        t = _mm512_fmadd_ps(lut512(_mm512_srli_epi32(c1, 4), cb), _mm512_load_ps(x + 32), t);
        t = _mm512_fmadd_ps(lut512(_mm512_and_si512(c1, m4), cb), _mm512_load_ps(x + 48), t);
        acc = _mm512_fmadd_ps(t, _mm512_set1_ps(a), acc);
    }
    return hsum512(acc);
}

/* One decoded stretch of a weight row (nb blocks: pairs, then maybe the
 * row's odd last block) against the same stretch of R (1 to 8) x rows, KC
 * floats apart: the operations of dot_row_avx512 for each, carrying the
 * accumulators in acc (R vectors of 16) from one stretch to the next. R is
 * a constant where this is inlined, so that they stay in registers. */
AVX512 static inline __attribute__((always_inline)) void dot_chunk_avx512_n(float *acc_mem, const float *wd,
                                                                             const float *am, const float *x,
                                                                             size_t nb, const int R)
{
    const size_t ld = KC;   /* a constant: the rows' addresses are offsets from x */
    __m512 acc[8], t[8];
    UNROLL for (int r = 0; r < R; r++) acc[r] = _mm512_load_ps(acc_mem + 16 * r);
    size_t b = 0;
    for (; b + 2 <= nb; b += 2, wd += 128, x += 128) {
        __m512 a = absmax2(am, b), w = _mm512_load_ps(wd);
        UNROLL for (int r = 0; r < R; r++) t[r] = _mm512_mul_ps(w, _mm512_load_ps(x + r * ld));
        UNROLL for (int k = 1; k < 8; k++) {
            w = _mm512_load_ps(wd + 16 * k);
            UNROLL for (int r = 0; r < R; r++) t[r] = _mm512_fmadd_ps(w, _mm512_load_ps(x + r * ld + 16 * k), t[r]);
        }
        UNROLL for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(t[r], a, acc[r]);
    }
    if (b < nb) {
        __m512 a = _mm512_set1_ps(am[b]), w = _mm512_load_ps(wd);
        UNROLL for (int r = 0; r < R; r++) t[r] = _mm512_mul_ps(w, _mm512_load_ps(x + r * ld));
        UNROLL for (int k = 1; k < 4; k++) {
            w = _mm512_load_ps(wd + 16 * k);
            UNROLL for (int r = 0; r < R; r++) t[r] = _mm512_fmadd_ps(w, _mm512_load_ps(x + r * ld + 16 * k), t[r]);
        }
        UNROLL for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(t[r], a, acc[r]);
    }
    UNROLL for (int r = 0; r < R; r++) _mm512_store_ps(acc_mem + 16 * r, acc[r]);
}

AVX512 static void dot_chunk_avx512(float *acc, const float *wd, const float *am, const float *x, size_t nb, int R)
{
    switch (R) {
    case 8: dot_chunk_avx512_n(acc, wd, am, x, nb, 8); break;
    case 7: dot_chunk_avx512_n(acc, wd, am, x, nb, 7); break;
    case 6: dot_chunk_avx512_n(acc, wd, am, x, nb, 6); break;
    case 5: dot_chunk_avx512_n(acc, wd, am, x, nb, 5); break;
    case 4: dot_chunk_avx512_n(acc, wd, am, x, nb, 4); break;
    case 3: dot_chunk_avx512_n(acc, wd, am, x, nb, 3); break;
    case 2: dot_chunk_avx512_n(acc, wd, am, x, nb, 2); break;
    default: dot_chunk_avx512_n(acc, wd, am, x, nb, 1); break;
    }
}

AVX512 static float hsum_acc512(const float *acc) { return hsum512(_mm512_load_ps(acc)); }

/* x (rows, ic) reordered for the AVX2 decoding (in each 16, the even
 * elements, then the odd ones), into tiles of rt rows */
static void reorder_x256(float *xp, const float *x, size_t rows, size_t ic, size_t rt)
{
    const size_t nch = (ic + KC - 1) / KC;
    for (size_t r = 0; r < rows; r++)
        for (size_t k0 = 0; k0 < ic; k0 += KC) {
            float *d = xp + xpos(r, k0, rt, nch);
            const float *s = x + r * ic + k0;
            size_t kc = k0 + KC < ic ? KC : ic - k0;
            for (size_t c = 0; c < kc; c += 16)
                for (size_t k = 0; k < 8; k++) {
                    d[c + k] = s[c + 2 * k];
                    d[c + 8 + k] = s[c + 2 * k + 1];
                }
        }
}

/* ---- AVX2 ----
 * The same in 8 lanes: each 8 bytes give the even weights (high nibbles)
 * and the odd ones (low) of 16 weights; x reordered in 16s. Per block
 * t = sum of 8 products in the order of the bytes (a product, then fused
 * steps), acc += t * absmax (fused). */

AVX2 static void decode_row_avx2(float *wd, const uint8_t *q, size_t nb)
{
    const __m256 cb_lo = _mm256_loadu_ps(llmk__nf4_codebook), cb_hi = _mm256_loadu_ps(llmk__nf4_codebook + 8);
    const __m256i m4 = _mm256_set1_epi32(15);
    for (size_t s = 0; s < 4 * nb; s++, q += 8, wd += 16) {
        __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q));
        _mm256_store_ps(wd, lut256(_mm256_srli_epi32(c, 4), cb_lo, cb_hi));
        _mm256_store_ps(wd + 8, lut256(_mm256_and_si256(c, m4), cb_lo, cb_hi));
    }
}

AVX2 static float dot_stream_avx2(const uint8_t *q, const float *am, const float *x, size_t nb)
{
    const __m256 cb_lo = _mm256_loadu_ps(llmk__nf4_codebook), cb_hi = _mm256_loadu_ps(llmk__nf4_codebook + 8);
    const __m256i m4 = _mm256_set1_epi32(15);
    __m256 acc = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        __m256 t = _mm256_setzero_ps();
        for (int s = 0; s < 4; s++, q += 8, x += 16) {
            __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q));
            __m256 we = lut256(_mm256_srli_epi32(c, 4), cb_lo, cb_hi), wo = lut256(_mm256_and_si256(c, m4), cb_lo, cb_hi);
            t = s == 0 ? _mm256_mul_ps(we, _mm256_load_ps(x)) : _mm256_fmadd_ps(we, _mm256_load_ps(x), t);
            t = _mm256_fmadd_ps(wo, _mm256_load_ps(x + 8), t);
        }
        acc = _mm256_fmadd_ps(t, _mm256_set1_ps(am[b]), acc);
    }
    return hsum256(acc);
}

/* dot_chunk_avx512's work in 8 lanes, R 1 to 4: the operations of
 * dot_stream_avx2 for each x row */
AVX2 static inline __attribute__((always_inline)) void dot_chunk_avx2_n(float *acc_mem, const float *wd,
                                                                         const float *am, const float *x,
                                                                         size_t nb, const int R)
{
    const size_t ld = KC;
    __m256 acc[4], t[4];
    UNROLL for (int r = 0; r < R; r++) acc[r] = _mm256_load_ps(acc_mem + 16 * r);
    for (size_t b = 0; b < nb; b++, wd += 64, x += 64) {
        __m256 w = _mm256_load_ps(wd);
        UNROLL for (int r = 0; r < R; r++) t[r] = _mm256_mul_ps(w, _mm256_load_ps(x + r * ld));
        UNROLL for (int k = 1; k < 8; k++) {
            w = _mm256_load_ps(wd + 8 * k);
            UNROLL for (int r = 0; r < R; r++) t[r] = _mm256_fmadd_ps(w, _mm256_load_ps(x + r * ld + 8 * k), t[r]);
        }
        __m256 a = _mm256_set1_ps(am[b]);
        UNROLL for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(t[r], a, acc[r]);
    }
    UNROLL for (int r = 0; r < R; r++) _mm256_store_ps(acc_mem + 16 * r, acc[r]);
}

AVX2 static void dot_chunk_avx2(float *acc, const float *wd, const float *am, const float *x, size_t nb, int R)
{
    switch (R) {
    case 4: dot_chunk_avx2_n(acc, wd, am, x, nb, 4); break;
    case 3: dot_chunk_avx2_n(acc, wd, am, x, nb, 3); break;
    case 2: dot_chunk_avx2_n(acc, wd, am, x, nb, 2); break;
    default: dot_chunk_avx2_n(acc, wd, am, x, nb, 1); break;
    }
}

AVX2 static float hsum_acc256(const float *acc) { return hsum256(_mm256_load_ps(acc)); }

/* ---- the tasks: output channels [o0, o1) ---- */

/* weight row o against x row xr (in its own order), as llmk__nf4_qlinear_ref
 * does it */
static float dot_scalar(const qlctx *c, size_t o, const float *xr)
{
    const size_t nb = c->ic / LLMK_NF4_BLOCK;
    const uint8_t *q = c->w + o * c->ic / 2;
    double acc = 0;
    for (size_t b = 0; b < nb; b++) {
        float a;
        llmk__nf4_absmax(&a, c->w, c->ic * c->oc, o * nb + b, o * nb + b + 1);
        for (size_t k = 0; k < LLMK_NF4_BLOCK / 2; k++, q++, xr += 2) {
            float w0 = llmk__nf4_codebook[*q >> 4] * a, w1 = llmk__nf4_codebook[*q & 15] * a;
            acc += (double)w0 * xr[0] + (double)w1 * xr[1];
        }
    }
    return (float)acc;
}

static void qlinear_range(void *arg, size_t o0, size_t o1)
{
    const qlctx *c = arg;
    const size_t ic = c->ic, nb = ic / LLMK_NF4_BLOCK, n = ic * c->oc;
    const int avx512 = c->path == PATH_AVX512;
    /* the absmax of a weight row's blocks (rows > 1: of OT rows), then
     * (rows > 1) a decoded stretch and the sums */
    size_t amf = (c->rows > 1 ? OT : 1) * nb;
    amf = (amf + 15) / 16 * 16;
    float *am = thread_buffer(1, (amf + (c->rows > 1 ? KC + OT * 8 * 16 : 0)) * sizeof(float));
    if (!am) {   /* no memory for a row: the oracle's double dot, which needs none */
        for (size_t r = 0; r < c->rows; r++)
            for (size_t o = o0; o < o1; o++) c->out[r * c->oc + o] = dot_scalar(c, o, c->x + r * ic);
        return;
    }
    float *wd = am + amf;   /* 64-byte aligned: am is */
    if (c->rows == 1) {
        for (size_t o = o0; o < o1; o++) {
            const uint8_t *q = c->w + o * ic / 2;
            if (avx512) {
                c->out[o] = dot_row_avx512(c->w, n, o * nb, c->xp, nb);
            } else {
                row_absmax(am, c->w, n, o * nb, nb);
                c->out[o] = dot_stream_avx2(q, am, c->xp, nb);
            }
        }
        return;
    }
    /* rows > 1: tiles of OT weight rows (their absmax in am) by RT x rows
     * (their sums in acc), over stretches of KC columns: each stretch of a
     * weight row is decoded once (into wd) for the RT x rows, whose
     * stretches (RT x KC floats) stay in L1 while the OT weight rows pass. */
    const size_t RT = avx512 ? 8 : 4, nch = (ic + KC - 1) / KC;
    float *acc = wd + KC;   /* (OT, RT, 16) */
    for (size_t t0 = o0; t0 < o1; t0 += OT) {
        size_t t1 = t0 + OT < o1 ? t0 + OT : o1;
        for (size_t o = t0; o < t1; o++) {
            if (avx512) row_absmax_avx512(am + (o - t0) * nb, c->w, n, o * nb, nb);
            else row_absmax(am + (o - t0) * nb, c->w, n, o * nb, nb);
        }
        for (size_t r0 = 0; r0 < c->rows; r0 += RT) {
            int R = c->rows - r0 < RT ? (int)(c->rows - r0) : (int)RT;
            memset(acc, 0, (t1 - t0) * RT * 16 * sizeof(float));
            for (size_t k0 = 0; k0 < ic; k0 += KC) {
                size_t kb = (k0 + KC < ic ? KC : ic - k0) / LLMK_NF4_BLOCK;   /* blocks in the stretch */
                const float *x = c->xp + xpos(r0, k0, RT, nch);
                for (size_t o = t0; o < t1; o++) {
                    const uint8_t *q = c->w + o * ic / 2 + k0 / 2;
                    const float *a = am + (o - t0) * nb + k0 / LLMK_NF4_BLOCK;
                    float *ac = acc + (o - t0) * RT * 16;
                    if (avx512) {
                        decode_row_avx512(wd, q, kb);
                        dot_chunk_avx512(ac, wd, a, x, kb, R);
                    } else {
                        decode_row_avx2(wd, q, kb);
                        dot_chunk_avx2(ac, wd, a, x, kb, R);
                    }
                }
            }
            for (size_t o = t0; o < t1; o++)
                for (int r = 0; r < R; r++) {
                    const float *ac = acc + ((o - t0) * RT + (size_t)r) * 16;
                    c->out[(r0 + (size_t)r) * c->oc + o] = avx512 ? hsum_acc512(ac) : hsum_acc256(ac);
                }
        }
    }
}

void llmk__nf4_qlinear(float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc)
{
    if (rows == 0 || oc == 0) return;
    int p = path();
    const size_t rt = rows == 1 ? 1 : p == PATH_AVX512 ? 8 : 4, nch = (ic + KC - 1) / KC;
    size_t xfloats = (rows + rt - 1) / rt * rt * nch * KC;
    float *xp = p == PATH_SCALAR || ic == 0 ? NULL : thread_buffer(0, xfloats * sizeof(float));
    if (!xp) {   /* the scalar path, nothing to sum, or no memory for x: the oracle */
        llmk__nf4_qlinear_ref(out, x, w, rows, ic, oc);
        return;
    }
    if (p == PATH_AVX512) reorder_x512(xp, x, rows, ic, rt);
    else reorder_x256(xp, x, rows, ic, rt);
    qlctx c = {out, x, xp, w, rows, ic, oc, p};
    /* a task gets at least 64 KiB of weight-row x x-row work */
    size_t rb = ic / 2 + ic / LLMK_NF4_BLOCK;
    size_t grain = (64u << 10) / (rb * rows);
    llmk_parallel_for(oc, grain ? grain : 1, qlinear_range, &c);
}
