/* Scalar oracles for nf4: bitsandbytes' 4-bit NormalFloat with double
 * quantization (quantize_4bit(A, blocksize=64, quant_type="nf4",
 * compress_statistics=True)), laid out over the whole tensor (kernels/nf4.h,
 * llm-tensors(5)).
 *
 * Quantization follows bitsandbytes' CUDA kernels (kQuantizeBlockwise), which
 * made the checkpoints people use:
 *
 *  - weights: absmax = max |w| of each block of 64 (the true fp32 absmax);
 *    s = w * (1 / absmax) in float (a reciprocal, then a product, as the
 *    kernel does); the code is dQuantizeNF4's: the number of the 15
 *    thresholds below that s is strictly greater than. The thresholds are
 *    the kernel's float constants, the midpoints of neighbouring codebook
 *    values rounded to float, so a tie goes to the lower code, and "nearest"
 *    is decided by these constants, not by |s - value| computed in float
 *    (bitsandbytes' torch fallback, argmin of |s - value|, can differ from it
 *    within a rounding error of a threshold).
 *  - absmax: offset = mean(absmax); each group of 256 blocks (the last one
 *    may be shorter) gets scale = max |absmax - offset| over the group, and
 *    each block the code dQuantize<0> (the binary search of the 8-bit kernel)
 *    gives for x = (absmax - offset) * (1 / scale): a search down to one
 *    value v = map[p], then against the midpoint (neighbour + v) * 0.5f
 *    computed in float: above v, x > midpoint takes the upper neighbour;
 *    below or at v, x < midpoint takes the lower one; otherwise (ties too)
 *    p. That is the nearest map value, a tie going to p, which is even.
 *    (bitsandbytes' CPU build, 0.50.2, searches otherwise and lands one
 *    code off the nearest for about one block in a few hundred.)
 *
 * Where this differs from bitsandbytes, on purpose:
 *  - an all-zero block: bitsandbytes computes 0 * (1 / 0) = NaN and stores
 *    code 0 (-1.0), so the block decodes to -absmax', which double
 *    quantization makes small but not zero. Here the block gets code 7
 *    (0.0) and decodes to exact zeros. Likewise a group whose absmax are all
 *    equal (scale 0) gets the code of 0.0 instead of NaN's code 0; both
 *    decode to the offset exactly.
 *  - the offset is the mean of the absmax computed in double and rounded to
 *    float once; torch's float32 mean (its own summation order) may differ
 *    in the last bit.
 * Non-finite weights give unspecified (but defined) bytes.
 *
 * Dequantization is bitsandbytes' (dequantize_blockwise, then + offset, then
 * the 4-bit kernel): absmax' = map[code] * scale, rounded, + offset, rounded;
 * weight = codebook[code] * absmax', rounded. No operation is fused:
 * contraction is off for this file.
 *
 * The quantized Linear layer's oracle dots x with the dequantized weights
 * in double, one rounding at the end. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "nf4.h"
#include "llmk.h"

#include <stddef.h>
#include <string.h>

/* The NF4 code: quantiles of N(0, 1) scaled to [-1, 1] with an exact 0
 * (QLoRA, Dettmers et al. 2023, appendix E), as bitsandbytes lists them
 * (get_4bit_type("nf4") and nf4_dequantization_lut in csrc/kernels.cu):
 * these are the float values of those decimal literals. */
const float llmk__nf4_codebook[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

/* dQuantizeNF4's decision tree (bitsandbytes csrc/kernels.cu) flattened:
 * code = #{k : s > thresholds[k]}. The kernel's float literals, rounded from
 * the decimal to float as C and CUDA compilers round them: each within half
 * an ulp of its neighbours' exact midpoint (through a double, 4 of them
 * would round to the float on the other side). */
const float llmk__nf4_thresholds[15] = {
    -0.8480964004993439f,
    -0.6106329262256622f,
    -0.4599952697753906f,
    -0.33967943489551544f,
    -0.23460740596055984f,
    -0.13791173323988914f,
    -0.045525018125772476f,
    0.03979014977812767f,
    0.1202552504837513f,
    0.2035212516784668f,
    0.2920137718319893f,
    0.3893125355243683f,
    0.5016634166240692f,
    0.6427869200706482f,
    0.8614784181118011f,
};

/* bitsandbytes' functional.create_dynamic_map(signed=True,
 * max_exponent_bits=7, total_bits=8), the map quantize_blockwise uses for the
 * absmax ("dynamic"): for i = 0..6, the 2^i midpoints of
 * torch.linspace(0.1, 1, 2^i + 1), times 10^(i - 6), and their negatives;
 * then 0 and 1; sorted. torch computes in float: linspace's points are
 * start + step * k below the middle and end - step * (steps - 1 - k) from
 * it, step = (end - start) / (steps - 1), and the x86 builds of torch
 * (its AVX2 and AVX-512 kernels) fuse each into one rounding (an FMA); the
 * midpoints are (a + b) / 2 and the products float(10^(i-6)) * midpoint.
 * A torch running its unvectorized kernels (ATEN_CPU_CAPABILITY=default)
 * rounds twice and gets 42 of these values 1 or 2 ulps apart. t/unit/test_nf4.c
 * recomputes the table by that rule; t/conformance/test_quant_nf4.py
 * against torch. */
const float llmk__nf4_map[256] = {
    -0x1.fc6666p-1f, -0x1.f53334p-1f, -0x1.eep-1f, -0x1.e6ccccp-1f, -0x1.df999ap-1f, -0x1.d86666p-1f,
    -0x1.d13334p-1f, -0x1.cap-1f, -0x1.c2ccccp-1f, -0x1.bb999ap-1f, -0x1.b46666p-1f, -0x1.ad3334p-1f,
    -0x1.a6p-1f, -0x1.9eccccp-1f, -0x1.97999ap-1f, -0x1.906666p-1f, -0x1.893334p-1f, -0x1.82p-1f,
    -0x1.7accccp-1f, -0x1.73999ap-1f, -0x1.6c6668p-1f, -0x1.653334p-1f, -0x1.5ep-1f, -0x1.56ccccp-1f,
    -0x1.4f999ap-1f, -0x1.486668p-1f, -0x1.413334p-1f, -0x1.3ap-1f, -0x1.32ccccp-1f, -0x1.2b999ap-1f,
    -0x1.246668p-1f, -0x1.1d3334p-1f, -0x1.16p-1f, -0x1.0eccccp-1f, -0x1.079998p-1f, -0x1.006666p-1f,
    -0x1.f26664p-2f, -0x1.e4p-2f, -0x1.d59998p-2f, -0x1.c73334p-2f, -0x1.b8ccccp-2f, -0x1.aa6666p-2f,
    -0x1.9cp-2f, -0x1.8d9998p-2f, -0x1.7f3334p-2f, -0x1.70ccccp-2f, -0x1.626666p-2f, -0x1.54p-2f,
    -0x1.459998p-2f, -0x1.373334p-2f, -0x1.28ccccp-2f, -0x1.1a6668p-2f, -0x1.0cp-2f, -0x1.fb3332p-3f,
    -0x1.de6666p-3f, -0x1.c1999ap-3f, -0x1.a4ccccp-3f, -0x1.88p-3f, -0x1.6b3334p-3f, -0x1.4e6666p-3f,
    -0x1.31999ap-3f, -0x1.14ccccp-3f, -0x1.fp-4f, -0x1.b66668p-4f, -0x1.93d70ap-4f, -0x1.8851eep-4f,
    -0x1.7ccccep-4f, -0x1.7147aep-4f, -0x1.65c29p-4f, -0x1.5a3d7p-4f, -0x1.4eb854p-4f, -0x1.433334p-4f,
    -0x1.37ae14p-4f, -0x1.2c28f6p-4f, -0x1.20a3d6p-4f, -0x1.151ebap-4f, -0x1.09999ap-4f, -0x1.fc28f6p-5f,
    -0x1.e51ebap-5f, -0x1.ce147ap-5f, -0x1.b70a3ep-5f, -0x1.ap-5f, -0x1.88f5c2p-5f, -0x1.71eb86p-5f,
    -0x1.5ae146p-5f, -0x1.43d70ap-5f, -0x1.2ccccep-5f, -0x1.15c29p-5f, -0x1.fd70a4p-6f, -0x1.cf5c2ap-6f,
    -0x1.a147aep-6f, -0x1.733334p-6f, -0x1.451ebap-6f, -0x1.170a3ep-6f, -0x1.d1eb86p-7f, -0x1.75c29p-7f,
    -0x1.3e76c8p-7f, -0x1.2c083p-7f, -0x1.19999ap-7f, -0x1.072b02p-7f, -0x1.e978d4p-8f, -0x1.c49ba6p-8f,
    -0x1.9fbe76p-8f, -0x1.7ae148p-8f, -0x1.56041ap-8f, -0x1.3126e8p-8f, -0x1.0c49bap-8f, -0x1.ced914p-9f,
    -0x1.851eb8p-9f, -0x1.3b645ap-9f, -0x1.e353f8p-10f, -0x1.4fdf3ap-10f, -0x1.eecbfep-11f, -0x1.b3d07cp-11f,
    -0x1.78d5p-11f, -0x1.3dd982p-11f, -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f,
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f, -0x1.040bfep-17f, -0x1.b43528p-19f,
    -0x1.27476ep-21f, 0.0f, 0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f,
    0x1.6f0068p-15f, 0x1.15df66p-14f, 0x1.743e96p-14f, 0x1.47ae16p-13f, 0x1.19ce0ap-12f, 0x1.8fc506p-12f,
    0x1.02de02p-11f, 0x1.3dd982p-11f, 0x1.78d5p-11f, 0x1.b3d07cp-11f, 0x1.eecbfep-11f, 0x1.4fdf3ap-10f,
    0x1.e353f8p-10f, 0x1.3b645ap-9f, 0x1.851eb8p-9f, 0x1.ced914p-9f, 0x1.0c49bap-8f, 0x1.3126e8p-8f,
    0x1.56041ap-8f, 0x1.7ae148p-8f, 0x1.9fbe76p-8f, 0x1.c49ba6p-8f, 0x1.e978d4p-8f, 0x1.072b02p-7f,
    0x1.19999ap-7f, 0x1.2c083p-7f, 0x1.3e76c8p-7f, 0x1.75c29p-7f, 0x1.d1eb86p-7f, 0x1.170a3ep-6f,
    0x1.451ebap-6f, 0x1.733334p-6f, 0x1.a147aep-6f, 0x1.cf5c2ap-6f, 0x1.fd70a4p-6f, 0x1.15c29p-5f,
    0x1.2ccccep-5f, 0x1.43d70ap-5f, 0x1.5ae146p-5f, 0x1.71eb86p-5f, 0x1.88f5c2p-5f, 0x1.ap-5f,
    0x1.b70a3ep-5f, 0x1.ce147ap-5f, 0x1.e51ebap-5f, 0x1.fc28f6p-5f, 0x1.09999ap-4f, 0x1.151ebap-4f,
    0x1.20a3d6p-4f, 0x1.2c28f6p-4f, 0x1.37ae14p-4f, 0x1.433334p-4f, 0x1.4eb854p-4f, 0x1.5a3d7p-4f,
    0x1.65c29p-4f, 0x1.7147aep-4f, 0x1.7ccccep-4f, 0x1.8851eep-4f, 0x1.93d70ap-4f, 0x1.b66668p-4f,
    0x1.fp-4f, 0x1.14ccccp-3f, 0x1.31999ap-3f, 0x1.4e6666p-3f, 0x1.6b3334p-3f, 0x1.88p-3f,
    0x1.a4ccccp-3f, 0x1.c1999ap-3f, 0x1.de6666p-3f, 0x1.fb3332p-3f, 0x1.0cp-2f, 0x1.1a6668p-2f,
    0x1.28ccccp-2f, 0x1.373334p-2f, 0x1.459998p-2f, 0x1.54p-2f, 0x1.626666p-2f, 0x1.70ccccp-2f,
    0x1.7f3334p-2f, 0x1.8d9998p-2f, 0x1.9cp-2f, 0x1.aa6666p-2f, 0x1.b8ccccp-2f, 0x1.c73334p-2f,
    0x1.d59998p-2f, 0x1.e4p-2f, 0x1.f26664p-2f, 0x1.006666p-1f, 0x1.079998p-1f, 0x1.0eccccp-1f,
    0x1.16p-1f, 0x1.1d3334p-1f, 0x1.246668p-1f, 0x1.2b999ap-1f, 0x1.32ccccp-1f, 0x1.3ap-1f,
    0x1.413334p-1f, 0x1.486668p-1f, 0x1.4f999ap-1f, 0x1.56ccccp-1f, 0x1.5ep-1f, 0x1.653334p-1f,
    0x1.6c6668p-1f, 0x1.73999ap-1f, 0x1.7accccp-1f, 0x1.82p-1f, 0x1.893334p-1f, 0x1.906666p-1f,
    0x1.97999ap-1f, 0x1.9eccccp-1f, 0x1.a6p-1f, 0x1.ad3334p-1f, 0x1.b46666p-1f, 0x1.bb999ap-1f,
    0x1.c2ccccp-1f, 0x1.cap-1f, 0x1.d13334p-1f, 0x1.d86666p-1f, 0x1.df999ap-1f, 0x1.e6ccccp-1f,
    0x1.eep-1f, 0x1.f53334p-1f, 0x1.fc6666p-1f, 0x1p+0f,
};

/* ---- quantization ---- */

/* dQuantizeNF4: s > threshold counts; NaN compares false and gets 0 */
uint8_t llmk__nf4_code(float s)
{
    int c = 0;
    for (int k = 0; k < 15; k++) c += s > llmk__nf4_thresholds[k];
    return (uint8_t)c;
}

/* bitsandbytes' dQuantize<0> (csrc/kernels.cu) on the dynamic map: a
 * binary search over 7 levels to a value v = map[pivot], then v or its
 * neighbour on x's side, whichever is nearer by the float midpoint. */
uint8_t llmk__nf4_map_code(float x)
{
    const float *m = llmk__nf4_map;
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f, val = m[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = m[pivot];
    }
    if (upper_pivot == 255) upper = m[255];
    if (lower_pivot == 0) lower = m[0];
    if (x > val) {
        float mid = (upper + val) * 0.5f;
        return (uint8_t)(x > mid ? upper_pivot : pivot);
    }
    float mid = (lower + val) * 0.5f;
    return (uint8_t)(x < mid ? lower_pivot : pivot);
}

/* max |x| of a block of 64 (NaNs left out: fmaxf's rule); exact, so any
 * order gives the same value */
static float block_absmax(const float *x)
{
    float m = 0.0f;
    for (int j = 0; j < LLMK_NF4_BLOCK; j++) {
        float a = x[j] < 0 ? -x[j] : x[j];
        m = a > m ? a : m;
    }
    return m;
}

static void wr_f32(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    p[0] = (uint8_t)u, p[1] = (uint8_t)(u >> 8), p[2] = (uint8_t)(u >> 16), p[3] = (uint8_t)(u >> 24);
}

void llmk__nf4_quantize_ref(void *out, const float *in, size_t n)
{
    uint8_t *o = out, *acode = o + llmk__nf4_absmax_at(n), *scales = o + llmk__nf4_scales_at(n);
    const size_t nb = llmk__nf4_nblocks(n), ng = llmk__nf4_ngroups(n);
    /* the weights' codes against each block's own absmax; the sum for the mean */
    double sum = 0;
    for (size_t b = 0; b < nb; b++) {
        const float *x = in + b * LLMK_NF4_BLOCK;
        float amax = block_absmax(x);
        float inv = amax > 0 ? 1.0f / amax : 0.0f;   /* 0: an all-zero block gets 0.0's code */
        sum += amax;
        for (int j = 0; j < LLMK_NF4_BLOCK; j += 2)
            o[(b * LLMK_NF4_BLOCK + j) / 2] = (uint8_t)(llmk__nf4_code(x[j] * inv) << 4 | llmk__nf4_code(x[j + 1] * inv));
    }
    float offset = nb ? (float)(sum / (double)nb) : 0.0f;
    wr_f32(o + llmk__nf4_offset_at(n), offset);
    /* the absmax (recomputed: max is exact) less the offset, per group of 256 */
    for (size_t g = 0; g < ng; g++) {
        size_t b0 = g * LLMK_NF4_GROUP, b1 = b0 + LLMK_NF4_GROUP < nb ? b0 + LLMK_NF4_GROUP : nb;
        float d[LLMK_NF4_GROUP], scale = 0.0f;
        for (size_t b = b0; b < b1; b++) {
            d[b - b0] = block_absmax(in + b * LLMK_NF4_BLOCK) - offset;
            float a = d[b - b0] < 0 ? -d[b - b0] : d[b - b0];
            scale = a > scale ? a : scale;
        }
        wr_f32(scales + 4 * g, scale);
        float inv = scale > 0 ? 1.0f / scale : 0.0f;
        for (size_t b = b0; b < b1; b++) acode[b] = llmk__nf4_map_code(d[b - b0] * inv);
    }
}

/* ---- dequantization ---- */

void llmk__nf4_absmax(float *out, const void *w, size_t n, size_t b0, size_t b1)
{
    const uint8_t *p = w, *acode = p + llmk__nf4_absmax_at(n), *scales = p + llmk__nf4_scales_at(n);
    const float offset = llmk__nf4_rdf32(p + llmk__nf4_offset_at(n));
    size_t g = (size_t)-1;
    float scale = 0.0f;
    for (size_t b = b0; b < b1; b++) {
        if (b / LLMK_NF4_GROUP != g) {
            g = b / LLMK_NF4_GROUP;
            scale = llmk__nf4_rdf32(scales + 4 * g);
        }
        float a = llmk__nf4_map[acode[b]] * scale;   /* two roundings, as bitsandbytes */
        out[b - b0] = a + offset;
    }
}

/* blocks [b0, b1) of the tensor w of n weights to out */
static void dequantize_blocks(float *out, const uint8_t *w, size_t n, size_t b0, size_t b1)
{
    const float *cb = llmk__nf4_codebook;
    float am[LLMK_NF4_GROUP];
    for (size_t c0 = b0; c0 < b1; c0 += LLMK_NF4_GROUP) {
        size_t c1 = c0 + LLMK_NF4_GROUP < b1 ? c0 + LLMK_NF4_GROUP : b1;
        llmk__nf4_absmax(am, w, n, c0, c1);
        for (size_t b = c0; b < c1; b++) {
            const uint8_t *q = w + b * LLMK_NF4_BLOCK / 2;
            float *o = out + (b - b0) * LLMK_NF4_BLOCK, a = am[b - c0];
            for (int k = 0; k < LLMK_NF4_BLOCK / 2; k++) {
                o[2 * k] = cb[q[k] >> 4] * a;
                o[2 * k + 1] = cb[q[k] & 15] * a;
            }
        }
    }
}

void llmk__nf4_dequantize_ref(float *out, const void *in, size_t n)
{
    dequantize_blocks(out, in, n, 0, llmk__nf4_nblocks(n));
}

void llmk__nf4_dequantize_rows_ref(float *out, const void *w, size_t ic, size_t oc, size_t r0, size_t r1)
{
    size_t bpr = ic / LLMK_NF4_BLOCK;
    dequantize_blocks(out, w, ic * oc, r0 * bpr, r1 * bpr);
}

/* ---- the quantized Linear layer ---- */

void llmk__nf4_qlinear_ref(float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc)
{
    const float *cb = llmk__nf4_codebook;
    const uint8_t *W = w;
    const size_t n = ic * oc, bpr = ic / LLMK_NF4_BLOCK;
    for (size_t o = 0; o < oc; o++) {
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * ic;   /* (ic) */
            double acc = 0;
            for (size_t b = 0; b < bpr; b++) {
                float a;
                llmk__nf4_absmax(&a, W, n, o * bpr + b, o * bpr + b + 1);
                const uint8_t *q = W + (o * bpr + b) * LLMK_NF4_BLOCK / 2;
                const float *xb = xr + b * LLMK_NF4_BLOCK;
                for (int k = 0; k < LLMK_NF4_BLOCK / 2; k++) {
                    float w0 = cb[q[k] >> 4] * a, w1 = cb[q[k] & 15] * a;   /* the dequantized weights */
                    acc += (double)w0 * xb[2 * k] + (double)w1 * xb[2 * k + 1];
                }
            }
            out[r * oc + o] = (float)acc;
        }
    }
}
