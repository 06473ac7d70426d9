// Checks every CUDA kernel against its CPU _ref on fresh random inputs and
// prints a timing table. TAP lines on stdout; exits 0 with a skip line when
// no CUDA device is present. Built and run by t/gpu/check (make gpu-check).
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmk.h"

static int test_no;
static int failures;

static void report(int ok, const char *name, const char *detail)
{
    printf("%sok %d - %s%s%s\n", ok ? "" : "not ", ++test_no, name, detail[0] ? ": " : "", detail);
    if (!ok) failures++;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rand32(void)
{
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return (uint32_t)((rng * 2685821657736338717ull) >> 32);
}

#define CUDA_OK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    printf("not ok %d - %s: %s\n", ++test_no, #call, cudaGetErrorString(e_)); return 1; } } while (0)

int main(int argc, char **argv)
{
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        printf("ok 1 - gpu kernels # skip no CUDA device here\n");
        return 0;
    }
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("# device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : (uint64_t)time(NULL);
    rng ^= seed;
    printf("# seed %llu\n", (unsigned long long)seed);

    const size_t n = (size_t)64 << 20;   // 64M elements: 256 MB of f32
    float *hf = (float *)malloc(n * 4), *hback = (float *)malloc(n * 4), *ref = (float *)malloc(n * 4);
    uint16_t *hh = (uint16_t *)malloc(n * 2), *href = (uint16_t *)malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = rand32();
        memcpy(&hf[i], &u, 4);
        hh[i] = (uint16_t)rand32();
    }
    float *df;
    uint16_t *dh;
    CUDA_OK(cudaMalloc(&df, n * 4));
    CUDA_OK(cudaMalloc(&dh, n * 2));
    cudaEvent_t t0, t1;
    cudaEventCreate(&t0);
    cudaEventCreate(&t1);
    char detail[160];
    float ms;

    // bf16 -> f32: exact, so compared bit for bit
    CUDA_OK(cudaMemcpy(dh, hh, n * 2, cudaMemcpyHostToDevice));
    cudaEventRecord(t0);
    llmk_bf16_to_f32_cuda(df, dh, n, 0);
    cudaEventRecord(t1);
    CUDA_OK(cudaEventSynchronize(t1));
    cudaEventElapsedTime(&ms, t0, t1);
    CUDA_OK(cudaMemcpy(hback, df, n * 4, cudaMemcpyDeviceToHost));
    llmk_bf16_to_f32_ref(ref, hh, n);
    snprintf(detail, sizeof detail, "%zu elements bit-exact, %.0f GB/s", n, 6.0 * n / ms / 1e6);
    report(memcmp(ref, hback, n * 4) == 0, "bf16_to_f32_cuda vs ref", detail);

    // f32 -> bf16: integer rounding, so also bit for bit
    CUDA_OK(cudaMemcpy(df, hf, n * 4, cudaMemcpyHostToDevice));
    cudaEventRecord(t0);
    llmk_f32_to_bf16_cuda(dh, df, n, 0);
    cudaEventRecord(t1);
    CUDA_OK(cudaEventSynchronize(t1));
    cudaEventElapsedTime(&ms, t0, t1);
    uint16_t *hout = (uint16_t *)malloc(n * 2);
    CUDA_OK(cudaMemcpy(hout, dh, n * 2, cudaMemcpyDeviceToHost));
    llmk_f32_to_bf16_ref(href, hf, n);
    snprintf(detail, sizeof detail, "%zu elements bit-exact, %.0f GB/s", n, 6.0 * n / ms / 1e6);
    report(memcmp(href, hout, n * 2) == 0, "f32_to_bf16_cuda vs ref", detail);

    printf("# timing table (GB/s moved; HBM peak of an H100 SXM is about 3350)\n");
    cudaFree(df);
    cudaFree(dh);
    free(hf); free(hback); free(ref); free(hh); free(href); free(hout);
    return failures ? 1 : 0;
}
