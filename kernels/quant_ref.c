/* Scalar oracles for the quantized-block kernels.
 *
 * Byte layouts are llama.cpp's block_q8_0, block_q4_0 and block_q4_K bit for
 * bit (llm-tensors(5), METADATA), and the quantizers make the bytes ggml's
 * quantize_row_*_ref make: the same scale choice, the same rounding (q8_0
 * rounds half away from zero as roundf, q4_0 truncates x/d + 8.5, q4_k rounds
 * half to even with the 1.5 * 2^23 trick) and, for q4_k, the same search for
 * each run's scale and minimum with the float operations in the same order.
 * That search compares sums of float products, so fusing a*b+c into one
 * rounding would change which scale wins: contraction is off for the whole
 * file (gcc's GNU mode contracts wherever the target has FMA, e.g. under
 * -march=native). "no-trapping-math" changes no value: it lets gcc turn the
 * selects in round_i8 and friends into branch-free vector code (with
 * trapping math a float compare may not be executed speculatively).
 *
 * The quantized Linear layer quantizes x the way ggml's CPU backend does
 * before its dot products: to q8_0 blocks (32 int8, f16 d) against q8_0 and
 * q4_0 weights, to q8_K blocks (256 int8, float d, sums of 16) against q4_k.
 * Each block's dot is then an exact integer; the float part is one product
 * per block (two for q4_k) summed in block order. quant_cpu.c quantizes x
 * with the same functions (llmk__quantize_x32 / _x256 below), so both paths
 * see the same integers.
 *
 * Blocks are read and written through byte pointers (the f16 fields
 * little-endian): tensors in a safetensors file need not be aligned, and a
 * q8_0 row is 34 bytes a block. Non-finite inputs give unspecified (but
 * defined) bytes, as they do in ggml. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off", "no-trapping-math")
#endif

#include "llmk.h"
#include "nf4.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* The stored blocks, as llama.cpp declares them; used for sizes and field
 * offsets only (access goes through bytes, see above). */
typedef struct {
    uint16_t d;          /* f16 scale */
    int8_t qs[32];       /* weight j = d * qs[j] */
} blk_q8_0;
typedef struct {
    uint16_t d;          /* f16 scale */
    uint8_t qs[16];      /* weight j = d * ((qs[j] & 15) - 8), weight j+16 = d * ((qs[j] >> 4) - 8) */
} blk_q4_0;
typedef struct {
    uint16_t d, dmin;    /* f16 scales of the 6-bit scales and of the 6-bit minimums */
    uint8_t scales[12];  /* 8 runs of 32: (sc, m) packed as in get_scale_min below */
    uint8_t qs[128];     /* bytes 32c..32c+31: run 2c in the low nibbles, run 2c+1 in the high */
} blk_q4_K;
_Static_assert(sizeof(blk_q8_0) == 34 && offsetof(blk_q8_0, qs) == 2, "block_q8_0 is 34 bytes");
_Static_assert(sizeof(blk_q4_0) == 18 && offsetof(blk_q4_0, qs) == 2, "block_q4_0 is 18 bytes");
_Static_assert(sizeof(blk_q4_K) == 144 && offsetof(blk_q4_K, scales) == 4 && offsetof(blk_q4_K, qs) == 16,
               "block_q4_K is 144 bytes");

static const llmk_qtraits traits[LLMK_QTYPE_COUNT] = {
    [LLMK_Q8_0] = {"q8_0", 32, sizeof(blk_q8_0)},
    [LLMK_Q4_0] = {"q4_0", 32, sizeof(blk_q4_0)},
    [LLMK_Q4_K] = {"q4_k", 256, sizeof(blk_q4_K)},
    [LLMK_NF4] = {"nf4", 64, 33},
};

const llmk_qtraits *llmk_qtype_traits(llmk_qtype t)
{
    return (unsigned)t < LLMK_QTYPE_COUNT ? &traits[t] : NULL;
}

int llmk_qtype_find(const char *name, llmk_qtype *t)
{
    for (int i = 0; i < LLMK_QTYPE_COUNT; i++)
        if (!strcmp(traits[i].name, name)) { *t = (llmk_qtype)i; return 0; }
    return -1;
}

size_t llmk_qbytes(llmk_qtype t, size_t n)
{
    if (t == LLMK_NF4) return llmk__nf4_bytes(n);   /* blocks, then the tensor's tail of scales */
    const llmk_qtraits *q = llmk_qtype_traits(t);
    return q ? n / q->block_elems * q->block_bytes : 0;
}

/* ---- helpers ---- */

static float get_f16(const uint8_t *p)
{
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    float f;
    llmk_f16_to_f32_ref(&f, &h, 1);
    return f;
}

/* Stores f as f16 (nearest even) and returns the value stored. */
static float put_f16(uint8_t *p, float f)
{
    uint16_t h;
    llmk_f32_to_f16_ref(&h, &f, 1);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
    return get_f16(p);
}

/* roundf (half away from zero) of a q8 code, |v| <= 127 (a hair more by
 * rounding). Branch-free, since x's blocks are quantized on every call of
 * the Linear layer; |v| is capped at 127 (a NaN too), so that non-finite
 * input makes no undefined conversion. */
static int8_t round_i8(float v)
{
    float a = fabsf(v);
    a = a < 127.0f ? a : 127.0f;
    int t = (int)a;                 /* toward zero */
    t += a - (float)t >= 0.5f;      /* the difference is exact */
    int neg = -(v < 0);             /* 0 or -1: t or -t, without a branch */
    return (int8_t)((t ^ neg) - neg);
}

/* max |x[j]| over n (a multiple of 8): max is exact, so any order gives
 * ggml's sequential answer for finite x; 8 partial maxima keep the
 * dependency chains short */
static float abs_max(const float *x, int n)
{
    float m[8] = {0};
    for (int j = 0; j < n; j += 8)
        for (int k = 0; k < 8; k++) {
            float a = fabsf(x[j + k]);
            m[k] = m[k] > a ? m[k] : a;
        }
    float r = 0.0f;
    for (int k = 0; k < 8; k++) r = r > m[k] ? r : m[k];
    return r;
}

/* ggml's nearest_int: round half to even by adding 1.5 * 2^23, valid for
 * |v| <= 2^22 - 1 (the callers stay far inside; outside, any int, no UB). */
static int nearest_int(float v)
{
    float s = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &s, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* q4_k's 6-bit scale and minimum of run j (0..7) from the 12 packed bytes:
 * runs 0-3 in the low 6 bits of bytes j (scale) and j+4 (min); runs 4-7 take
 * their low 4 bits from byte j+4's nibbles and their top 2 bits from the top
 * bits of bytes j-4 (scale) and j (min). */
static void get_scale_min(int j, const uint8_t *s, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 15) | (s[j - 4] >> 6) << 4);
        *m = (uint8_t)((s[j + 4] >> 4) | (s[j] >> 6) << 4);
    }
}

/* ---- q8_0 ---- */

/* One block: d = amax / 127 stored as f16; the codes use 1/d of the
 * unrounded d (as ggml does). Returns the stored d. */
static float quantize_q8_0_block(uint8_t *blk, const float *x)
{
    float d = abs_max(x, 32) / 127;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    int8_t q[32];   /* a local array: no aliasing with x, so the loop vectorizes */
    for (int j = 0; j < 32; j++) q[j] = round_i8(x[j] * id);
    memcpy(blk + 2, q, 32);
    return put_f16(blk, d);
}

/* x quantized for the q8_0 and q4_0 dot products: 32 codes, returns d. */
float llmk__quantize_x32(int8_t *q, const float *x);
float llmk__quantize_x32(int8_t *q, const float *x)
{
    uint8_t blk[34];
    float d = quantize_q8_0_block(blk, x);
    memcpy(q, blk + 2, 32);
    return d;
}

/* ---- q4_0 ---- */

static void quantize_q4_0_block(uint8_t *blk, const float *x)
{
    /* d maps the element of largest magnitude (the first, on ties) to -8 */
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    float d = max / -8;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(blk, d);
    for (int j = 0; j < 16; j++) {
        int q[2];
        for (int h = 0; h < 2; h++) {
            float v = x[j + 16 * h] * id + 8.5f;   /* in [0.5, 16.5] for finite input */
            q[h] = v >= 1.0f && v < 16.0f ? (int)v : v >= 16.0f ? 15 : 0;   /* truncate, at most 15 */
        }
        blk[2 + j] = (uint8_t)(q[0] | q[1] << 4);
    }
}

/* ---- q4_k ---- */

/* ggml's make_qkx2_quants for a run of 32 with 4-bit codes (nmax 15) and the
 * search q4_k uses (rmin -1, rdelta 0.1, 20 steps, squared error): the
 * scale and minimum (x ~ scale * L - min, min >= 0) that minimise the
 * weighted squared error over 21 candidate scalings. L gets the codes;
 * returns the scale, *the_min the minimum. Operation order is ggml's. */
static float fit_run(const float *x, const float *w, uint8_t *L, float *the_min)
{
    enum { N = 32, NMAX = 15, NSTEP = 20 };
    const float rmin = -1.0f, rdelta = 0.1f;
    float min = x[0], max = x[0];
    float sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < N; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, N);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = NMAX / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < N; i++) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > NMAX ? NMAX : l);
        float diff = scale * L[i] + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    uint8_t Laux[N];
    for (int is = 0; is <= NSTEP; is++) {
        iscale = (rmin + rdelta * is + NMAX) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < N; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > NMAX ? NMAX : l;
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < N; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, N);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

static void quantize_q4_K_block(uint8_t *blk, const float *x)
{
    uint8_t L[256];
    float scales[8], mins[8], weights[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        /* weights favour the run's large elements: rms of the run + |x| */
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = fit_run(x + 32 * j, weights, L + 32 * j, &mins[j]);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    /* the run scales and minimums to 6 bits against the largest of each */
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t *s = blk + 4;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);   /* mod 256, then capped: as ggml */
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        if (ls > 63) ls = 63;
        if (lm > 63) lm = 63;
        if (j < 4) {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (uint8_t)((ls & 15) | (lm & 15) << 4);
            s[j - 4] |= (uint8_t)((ls >> 4) << 6);
            s[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    float d = put_f16(blk, max_scale / 63.f);
    float dmin = put_f16(blk + 2, max_min / 63.f);
    /* codes again against the scales as stored; a run whose scale is 0 keeps
     * the codes of its search (ggml does the same) */
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        get_scale_min(j, s, &sc, &m);
        float dj = d * sc;
        if (dj == 0.0f) continue;
        float dm = dmin * m;
        for (int i = 0; i < 32; i++) {
            int l = nearest_int((x[32 * j + i] + dm) / dj);
            L[32 * j + i] = (uint8_t)(l < 0 ? 0 : l > 15 ? 15 : l);
        }
    }
    uint8_t *q = blk + 16;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) q[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
}

/* x quantized for the q4_k dot products, as ggml's quantize_row_q8_K_ref:
 * d = max / -127 where max is the element of largest magnitude (so d may be
 * negative), codes nearest-even and at most 127. Returns d (0 for an all-zero
 * block, codes 0). */
float llmk__quantize_x256(int8_t *q, const float *x);
float llmk__quantize_x256(int8_t *q, const float *x)
{
    float amax = abs_max(x, 256), max = 0;
    if (amax == 0.0f) {
        memset(q, 0, 256);
        return 0.0f;
    }
    for (int j = 0; j < 256; j++)   /* the first element of largest magnitude, as ggml's strict > */
        if (fabsf(x[j]) == amax) {
            max = x[j];
            break;
        }
    float iscale = -127.f / max;
    int8_t qs[256];   /* a local array: no aliasing with x, so the loop vectorizes */
    for (int j = 0; j < 256; j++) {
        int v = nearest_int(iscale * x[j]);
        qs[j] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
    }
    memcpy(q, qs, 256);
    return 1 / iscale;
}

/* ---- quantize / dequantize ---- */

void llmk_quantize_ref(llmk_qtype t, void *out, const float *in, size_t n)
{
    if (t == LLMK_NF4) { llmk__nf4_quantize_ref(out, in, n); return; }
    uint8_t *o = out;
    switch (t) {
    case LLMK_Q8_0:
        for (size_t b = 0; b < n / 32; b++) quantize_q8_0_block(o + 34 * b, in + 32 * b);
        break;
    case LLMK_Q4_0:
        for (size_t b = 0; b < n / 32; b++) quantize_q4_0_block(o + 18 * b, in + 32 * b);
        break;
    case LLMK_Q4_K:
        for (size_t b = 0; b < n / 256; b++) quantize_q4_K_block(o + 144 * b, in + 256 * b);
        break;
    default:
        break;
    }
}

void llmk_dequantize_ref(llmk_qtype t, float *out, const void *in, size_t n)
{
    if (t == LLMK_NF4) { llmk__nf4_dequantize_ref(out, in, n); return; }
    const uint8_t *p = in;
    switch (t) {
    case LLMK_Q8_0:
        for (size_t b = 0; b < n / 32; b++, p += 34, out += 32) {
            float d = get_f16(p);
            for (int j = 0; j < 32; j++) out[j] = (int8_t)p[2 + j] * d;
        }
        break;
    case LLMK_Q4_0:
        for (size_t b = 0; b < n / 32; b++, p += 18, out += 32) {
            float d = get_f16(p);
            for (int j = 0; j < 16; j++) {
                out[j] = ((p[2 + j] & 15) - 8) * d;
                out[j + 16] = ((p[2 + j] >> 4) - 8) * d;
            }
        }
        break;
    case LLMK_Q4_K:
        for (size_t b = 0; b < n / 256; b++, p += 144, out += 256) {
            float d = get_f16(p), dmin = get_f16(p + 2);
            for (int j = 0; j < 8; j++) {
                uint8_t sc, m;
                get_scale_min(j, p + 4, &sc, &m);
                float dj = d * sc, mj = dmin * m;   /* weight = dj * code - mj: two roundings, as ggml */
                const uint8_t *q = p + 16 + 32 * (j / 2);
                int shift = 4 * (j & 1);
                for (int l = 0; l < 32; l++) out[32 * j + l] = dj * ((q[l] >> shift) & 15) - mj;
            }
        }
        break;
    default:
        break;
    }
}

/* ---- the quantized Linear layer ----
 * Block by block: quantize x's block b once, then add its term to every
 * output. Each output so accumulates its block terms in block order from
 * 0, as a row-by-row dot would, with nothing but one block of x on the
 * stack. */

/* The integer dots are kept scalar: gcc 12.2 with -march=native on a
 * VNNI processor (at -O2 already) vectorizes a signed x signed int8 dot
 * product into vpdpbusd, which takes its first operand as unsigned, and
 * gets the sum wrong (the test's ref-vs-float check catches it). */
#if defined(__GNUC__) && !defined(__clang__)
#define NOVEC __attribute__((optimize("no-tree-vectorize")))
#else
#define NOVEC
#endif

/* integer dot of a weight block with 32 codes of x */
NOVEC static int32_t dot_q8_0(const uint8_t *blk, const int8_t *xq)
{
    int32_t s = 0;
    for (int j = 0; j < 32; j++) s += (int8_t)blk[2 + j] * xq[j];
    return s;
}

NOVEC static int32_t dot_q4_0(const uint8_t *blk, const int8_t *xq)
{
    int32_t s = 0;
    for (int j = 0; j < 16; j++) s += ((blk[2 + j] & 15) - 8) * xq[j] + ((blk[2 + j] >> 4) - 8) * xq[j + 16];
    return s;
}

/* sum_j sc_j <codes of run j, x's codes of run j> (*isum) and
 * sum_j m_j (sum of x's codes of run j) (*imin) for one q4_k block */
NOVEC static void dot_q4_K(const uint8_t *blk, const int8_t *xq, const int32_t *xs, int32_t *isum, int32_t *imin)
{
    *isum = *imin = 0;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        get_scale_min(j, blk + 4, &sc, &m);
        const uint8_t *qs = blk + 16 + 32 * (j / 2);
        int shift = 4 * (j & 1);
        int32_t s = 0;
        for (int l = 0; l < 32; l++) s += ((qs[l] >> shift) & 15) * xq[32 * j + l];
        *isum += sc * s;
        *imin += m * xs[j];
    }
}

void llmk_qlinear_ref(llmk_qtype t, float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc)
{
    if (t == LLMK_NF4) { llmk__nf4_qlinear_ref(out, x, w, rows, ic, oc); return; }
    const llmk_qtraits *q = llmk_qtype_traits(t);
    if (!q) return;
    const uint8_t *W = w;
    const size_t rb = llmk_qbytes(t, ic), bb = q->block_bytes, nb = ic / q->block_elems;
    for (size_t r = 0; r < rows; r++) {
        float *o = out + r * oc;                  /* (oc) */
        const float *xr = x + r * ic;             /* (ic) */
        for (size_t i = 0; i < oc; i++) o[i] = 0.0f;
        for (size_t b = 0; b < nb; b++) {
            if (t == LLMK_Q4_K) {
                /* q8_K block of x: codes, d, and the sums of each run of 32
                 * (ggml keeps sums of 16; a run's is the sum of two) */
                int8_t xq[256];
                int32_t xs[8] = {0};
                float dx = llmk__quantize_x256(xq, xr + 256 * b);
                for (int j = 0; j < 256; j++) xs[j / 32] += xq[j];
                for (size_t i = 0; i < oc; i++) {
                    const uint8_t *blk = W + i * rb + b * bb;
                    int32_t isum, imin;
                    dot_q4_K(blk, xq, xs, &isum, &imin);
                    o[i] += get_f16(blk) * dx * (float)isum;
                    o[i] -= get_f16(blk + 2) * dx * (float)imin;
                }
            } else {
                int8_t xq[32];
                float dx = llmk__quantize_x32(xq, xr + 32 * b);
                for (size_t i = 0; i < oc; i++) {
                    const uint8_t *blk = W + i * rb + b * bb;
                    int32_t s = t == LLMK_Q8_0 ? dot_q8_0(blk, xq) : dot_q4_0(blk, xq);
                    o[i] += (float)s * (get_f16(blk) * dx);   /* d_w * d_x is exact: two f16 values */
                }
            }
        }
    }
}
