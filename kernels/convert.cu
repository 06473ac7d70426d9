// CUDA element conversions between bf16 and f32; the same rounding as
// llmk_f32_to_bf16_ref (nearest even, NaN kept quiet, subnormals kept).
#include <cuda_runtime.h>
#include <stdint.h>

#include "llmk.h"

static __global__ void bf16_to_f32_kernel(float *out, const uint16_t *in, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __uint_as_float((uint32_t)in[i] << 16);
}

static __global__ void f32_to_bf16_kernel(uint16_t *out, const float *in, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t u = __float_as_uint(in[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u)
            out[i] = (uint16_t)((u >> 16) | 0x40);
        else
            out[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
    }
}

static unsigned grid_for(size_t n)
{
    size_t blocks = (n + 255) / 256;
    return (unsigned)(blocks > 65535 ? 65535 : blocks ? blocks : 1);
}

extern "C" int llmk_bf16_to_f32_cuda(float *out, const uint16_t *in, size_t n, void *stream)
{
    bf16_to_f32_kernel<<<grid_for(n), 256, 0, (cudaStream_t)stream>>>(out, in, n);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}

extern "C" int llmk_f32_to_bf16_cuda(uint16_t *out, const float *in, size_t n, void *stream)
{
    f32_to_bf16_kernel<<<grid_for(n), 256, 0, (cudaStream_t)stream>>>(out, in, n);
    return cudaGetLastError() == cudaSuccess ? 0 : -1;
}
