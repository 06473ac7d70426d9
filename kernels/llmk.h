/* llmk.h — the compute kernels: one C API, no I/O, no printing.
 *
 * Each kernel has a scalar `_ref` version (the oracle the tests compare
 * against), a CPU version (SIMD, chosen at run time for this processor) under
 * the plain name, and, where built with nvcc, a CUDA version `_cuda` that
 * takes device pointers and a stream. */
#ifndef LLMUX_LLMK_H
#define LLMUX_LLMK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CPU features the dispatcher uses, read once. The environment variable
 * LLMK_CPU=avx2|scalar hides the wider ones (for tests and benchmarks). */
typedef struct {
    int avx2, f16c, fma, avx512f, avx512bw, avx512bf16, avx512vnni;
} llmk_cpu_features;
const llmk_cpu_features *llmk_cpu(void);
/* "avx512", "avx2" or "scalar": the path the kernels below take here. */
const char *llmk_cpu_path(void);

/* ---- element conversions (n elements; pointers need no alignment) ----
 * f16: IEEE binary16; subnormals and infinities exact, NaN payloads kept and
 * made quiet (as the F16C instructions do); f32 -> f16 rounds to nearest even.
 * bf16 -> f32 is exact; f32 -> bf16 rounds to nearest even and keeps NaN a
 * (quiet) NaN, as PyTorch does. */
void llmk_f16_to_f32_ref(float *out, const uint16_t *in, size_t n);
void llmk_bf16_to_f32_ref(float *out, const uint16_t *in, size_t n);
void llmk_f32_to_bf16_ref(uint16_t *out, const float *in, size_t n);
void llmk_f32_to_f16_ref(uint16_t *out, const float *in, size_t n);

void llmk_f16_to_f32(float *out, const uint16_t *in, size_t n);
void llmk_bf16_to_f32(float *out, const uint16_t *in, size_t n);
void llmk_f32_to_bf16(uint16_t *out, const float *in, size_t n);
void llmk_f32_to_f16(uint16_t *out, const float *in, size_t n);

/* Summary of n floats: NaNs and infinities are counted and left out of the
 * rest. sum and sumsq in double. */
typedef struct {
    uint64_t count, nan, inf;
    float min, max;
    double sum, sumsq;
} llmk_stats;
void llmk_stats_f32_ref(llmk_stats *s, const float *x, size_t n);
void llmk_stats_f32(llmk_stats *s, const float *x, size_t n);

#ifdef LLMK_CUDA
/* CUDA versions: device pointers, asynchronous on `stream` (a cudaStream_t). */
int llmk_bf16_to_f32_cuda(float *out, const uint16_t *in, size_t n, void *stream);
int llmk_f32_to_bf16_cuda(uint16_t *out, const float *in, size_t n, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif
