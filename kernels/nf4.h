/* nf4.h — kernels' internals for nf4 (bitsandbytes' 4-bit NormalFloat with
 * double quantization): the tables and the entry points that quant_ref.c and
 * quant_cpu.c dispatch to for LLMK_NF4, and that the tests call directly.
 * Not part of the kernels' API (llmk.h); the layout and the rules are in
 * nf4_ref.c and llm-tensors(5).
 *
 * A tensor of n weights (n a multiple of 64, nb = n / 64 blocks, ng =
 * ceil(nb / 256) groups of blocks) is, in this order:
 *   n/2 bytes   codes: weight 2k in the high nibble of byte k, 2k+1 in the low
 *   nb bytes    absmax codes: block b's index into the dynamic map
 *   4*ng bytes  f32 scales: group g's largest |absmax - offset|
 *   4 bytes     f32 offset: the mean absmax
 * and block b's absmax is map[code] * scale[b / 256] + offset (two
 * roundings), weight i is codebook[code] * absmax of block i / 64. */
#ifndef LLMUX_NF4_H
#define LLMUX_NF4_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LLMK_NF4_BLOCK 64      /* weights per absmax */
#define LLMK_NF4_GROUP 256     /* absmax codes per scale */

/* the 16 NF4 values (bitsandbytes' get_4bit_type("nf4")), ascending */
extern const float llmk__nf4_codebook[16];
/* the 15 decision thresholds of bitsandbytes' dQuantizeNF4, ascending */
extern const float llmk__nf4_thresholds[15];
/* bitsandbytes' create_dynamic_map(signed=True): 256 ascending values */
extern const float llmk__nf4_map[256];

/* byte offsets of the sections of a tensor of n weights, and its size */
static inline size_t llmk__nf4_nblocks(size_t n) { return n / LLMK_NF4_BLOCK; }
static inline size_t llmk__nf4_ngroups(size_t n) { return (n / LLMK_NF4_BLOCK + LLMK_NF4_GROUP - 1) / LLMK_NF4_GROUP; }
static inline size_t llmk__nf4_absmax_at(size_t n) { return n / 2; }
static inline size_t llmk__nf4_scales_at(size_t n) { return n / 2 + llmk__nf4_nblocks(n); }
static inline size_t llmk__nf4_offset_at(size_t n) { return llmk__nf4_scales_at(n) + 4 * llmk__nf4_ngroups(n); }
static inline size_t llmk__nf4_bytes(size_t n) { return llmk__nf4_offset_at(n) + 4; }

/* a little-endian f32 at any address */
static inline float llmk__nf4_rdf32(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The quantizer's two roundings (nf4_ref.c): a weight over its block's
 * absmax to its code (0-15), and an absmax, less the offset, over its
 * group's scale to its code in the map (0-255). */
uint8_t llmk__nf4_code(float s);
uint8_t llmk__nf4_map_code(float x);

/* The absmax of blocks [b0, b1) of the tensor w of n weights, as
 * dequantization uses them: out[b - b0] = map[code] * scale + offset. */
void llmk__nf4_absmax(float *out, const void *w, size_t n, size_t b0, size_t b1);

void llmk__nf4_quantize_ref(void *out, const float *in, size_t n);
void llmk__nf4_dequantize_ref(float *out, const void *in, size_t n);
/* rows [r0, r1) of the (oc, ic) matrix w (ic a multiple of 64): out (r1 - r0, ic) */
void llmk__nf4_dequantize_rows_ref(float *out, const void *w, size_t ic, size_t oc, size_t r0, size_t r1);
/* out (rows, oc) = x (rows, ic) @ W^T: each output the dot of x with the
 * dequantized weights, accumulated in double */
void llmk__nf4_qlinear_ref(float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc);

/* the CPU versions (nf4_cpu.c): dequantization bit for bit the ref's */
void llmk__nf4_dequantize(float *out, const void *in, size_t n);
void llmk__nf4_dequantize_rows(float *out, const void *w, size_t ic, size_t oc, size_t r0, size_t r1);
void llmk__nf4_qlinear(float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc);

#endif
