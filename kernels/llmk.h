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

/* ==== training and inference kernels (fp32) ====
 * Shapes follow PyTorch: a Linear layer's weight is (out, in) and
 * y = x @ W^T + b. Activations are row-major (rows, channels) with
 * rows = B * T (batch and time flattened, time fastest). Backward kernels
 * ACCUMULATE (+=) into the gradients they are given (llm.c's convention), so
 * a parameter used twice (tied embeddings) sums its gradients; a NULL
 * gradient pointer is not computed. Dimensions are size_t. */

/* ---- threads ----
 * The CPU kernels split their work over a pool of worker threads, made on
 * first use. llmk_set_threads(0) means one per online processor (the
 * default, or LLMK_THREADS from the environment when set). */
void llmk_set_threads(int n);
int llmk_threads(void);
/* Runs fn(ctx, begin, end) over [0, n) in chunks of at least `grain`,
 * spread over the pool; returns when all are done. Calls from inside a task
 * run inline (no nested parallelism). */
typedef void (*llmk_range_fn)(void *ctx, size_t begin, size_t end);
void llmk_parallel_for(size_t n, size_t grain, llmk_range_fn fn, void *ctx);

/* ---- general matrix multiply ----
 * C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C, row-major, with
 * leading dimensions (row strides) lda, ldb, ldc; op(X) = X or X^T
 * (trans_a / trans_b nonzero). beta == 0 ignores C's old contents (NaN too). */
void llmk_sgemm_ref(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                    const float *B, size_t ldb, float beta, float *C, size_t ldc);
void llmk_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                const float *B, size_t ldb, float beta, float *C, size_t ldc);

/* Rows up to which llmk_sgemm (without trans_a, with trans_b) and
 * llmk_linear_forward take a dot-product path (no packing: decoding). A
 * row's result depends only on its inputs within each path, but the two
 * paths round differently: callers that need a row's result independent of
 * the row count (a sequence's output not depending on its batch) keep to
 * groups of at most this many rows, or always more. */
#define LLMK_GEMM_SMALL_M 4
/* Linear layer: out (rows, oc) = inp (rows, ic) @ w (oc, ic)^T + bias (oc, or NULL). */
void llmk_linear_forward_ref(float *out, const float *inp, const float *w, const float *bias, size_t rows, size_t ic,
                             size_t oc);
void llmk_linear_forward(float *out, const float *inp, const float *w, const float *bias, size_t rows, size_t ic,
                         size_t oc);
/* The same, each row's result exactly what llmk_linear_forward gives it at
 * rows = 1, whatever else is in the call: the dot-product path at any row
 * count (with AVX-512; elsewhere the blocked path, whose rows are already
 * independent), the weights read once per call. For decoding a batch of
 * sequences whose results must not depend on the batch. */
void llmk_linear_forward_rowwise(float *out, const float *inp, const float *w, const float *bias, size_t rows,
                                 size_t ic, size_t oc);
/* dinp (rows, ic) += dout @ w; dw (oc, ic) += dout^T @ inp; dbias (oc) += column sums of dout. */
void llmk_linear_backward_ref(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                              size_t rows, size_t ic, size_t oc);
void llmk_linear_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                          size_t rows, size_t ic, size_t oc);

/* ---- embeddings ----
 * out (rows, C) = wte[ids[r]] (+ wpe[r % T] when wpe is not NULL: learned
 * positions, GPT-2). ids must be < the table's rows (the caller checks). */
void llmk_embed_forward_ref(float *out, const uint32_t *ids, const float *wte, const float *wpe, size_t rows, size_t T,
                            size_t C);
void llmk_embed_forward(float *out, const uint32_t *ids, const float *wte, const float *wpe, size_t rows, size_t T,
                        size_t C);
void llmk_embed_backward_ref(float *dwte, float *dwpe, const float *dout, const uint32_t *ids, size_t rows, size_t T,
                             size_t C);
void llmk_embed_backward(float *dwte, float *dwpe, const float *dout, const uint32_t *ids, size_t rows, size_t T,
                         size_t C);

/* ---- normalisation ----
 * LayerNorm (biased variance, as torch): out = (x - mean) * rstd * w + b;
 * mean and rstd (rows) are saved for the backward pass. */
void llmk_layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                                size_t rows, size_t C, float eps);
void llmk_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                            size_t rows, size_t C, float eps);
void llmk_layernorm_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                                 const float *mean, const float *rstd, size_t rows, size_t C);
void llmk_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                             const float *mean, const float *rstd, size_t rows, size_t C);
/* RMSNorm (Llama): out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps). */
void llmk_rmsnorm_forward_ref(float *out, float *rstd, const float *inp, const float *w, size_t rows, size_t C, float eps);
void llmk_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, size_t rows, size_t C, float eps);
void llmk_rmsnorm_backward_ref(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                               const float *rstd, size_t rows, size_t C);
void llmk_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                           const float *rstd, size_t rows, size_t C);

/* ---- activations ----
 * GELU, tanh approximation (GPT-2's "gelu_new"): n elements. */
void llmk_gelu_forward_ref(float *out, const float *inp, size_t n);
void llmk_gelu_forward(float *out, const float *inp, size_t n);
void llmk_gelu_backward_ref(float *dinp, const float *inp, const float *dout, size_t n);
void llmk_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
/* SwiGLU (Llama's MLP): inp (rows, 2F) holds [gate | up] in each row;
 * out (rows, F) = silu(gate) * up. */
void llmk_swiglu_forward_ref(float *out, const float *inp, size_t rows, size_t F);
void llmk_swiglu_forward(float *out, const float *inp, size_t rows, size_t F);
void llmk_swiglu_backward_ref(float *dinp, const float *inp, const float *dout, size_t rows, size_t F);
void llmk_swiglu_backward(float *dinp, const float *inp, const float *dout, size_t rows, size_t F);

/* ---- rotary position embedding (Llama, Hugging Face's rotate_half form) ----
 * In place on the first `heads` heads of D channels at the start of every
 * row of x (rows, row_stride): the pair (i, i + D/2) of a head at position
 * p = row % T is rotated by the angle p * theta^(-2i/D). backward rotates
 * the gradient back by the same angle (the transpose), also in place. */
void llmk_rope_forward_ref(float *x, size_t rows, size_t T, size_t heads, size_t D, size_t row_stride, float theta);
void llmk_rope_forward(float *x, size_t rows, size_t T, size_t heads, size_t D, size_t row_stride, float theta);
void llmk_rope_backward_ref(float *dx, size_t rows, size_t T, size_t heads, size_t D, size_t row_stride, float theta);
void llmk_rope_backward(float *dx, size_t rows, size_t T, size_t heads, size_t D, size_t row_stride, float theta);

/* The forward rotation for decoding: row r is at position pos0 + r. */
void llmk_rope_at_ref(float *x, size_t rows, size_t pos0, size_t heads, size_t D, size_t row_stride, float theta);
void llmk_rope_at(float *x, size_t rows, size_t pos0, size_t heads, size_t D, size_t row_stride, float theta);

/* ---- attention over a KV cache (decoding) ----
 * n new queries q (n, q_stride; the H heads of D at the start of each row) at
 * positions pos0 .. pos0 + n - 1; the cache holds keys and values of
 * positions 0 .. pos0 + n - 1: k, v (pos0 + n, kv_stride; KVH heads of D at
 * the start of each row). out (n, H * D): query i attends to positions
 * 0 .. pos0 + i (causal), grouped-query as above, scale 1/sqrt(D). */
void llmk_attention_cached_ref(float *out, const float *q, size_t q_stride, const float *k, const float *v,
                               size_t kv_stride, size_t n, size_t pos0, size_t H, size_t KVH, size_t D);
void llmk_attention_cached(float *out, const float *q, size_t q_stride, const float *k, const float *v, size_t kv_stride,
                           size_t n, size_t pos0, size_t H, size_t KVH, size_t D);

/* The same over a paged cache: the rows of positions j are in blocks of
 * block_len, position j's key row at k_blocks[j / block_len] + (j %
 * block_len) * kv_stride (values alike). block_len is a multiple of 32 (the
 * SIMD paths' tile of keys), or at least pos0 + n (one block). The results
 * are those of the contiguous cache, bit for bit. */
void llmk_attention_paged_ref(float *out, const float *q, size_t q_stride, const float *const *k_blocks,
                              const float *const *v_blocks, size_t block_len, size_t kv_stride, size_t n, size_t pos0,
                              size_t H, size_t KVH, size_t D);
void llmk_attention_paged(float *out, const float *q, size_t q_stride, const float *const *k_blocks,
                          const float *const *v_blocks, size_t block_len, size_t kv_stride, size_t n, size_t pos0,
                          size_t H, size_t KVH, size_t D);

/* ---- causal self-attention ----
 * qkv (B, T, (H + 2*KVH) * D): per row the H query heads, then KVH key
 * heads, then KVH value heads (grouped-query: query head h reads kv head
 * h / (H / KVH)). out (B, T, H * D) = softmax(q k^T / sqrt(D), causal) v.
 * att (B, H, T, T) keeps the probabilities for the backward pass (entries
 * above the diagonal are 0). dqkv accumulates; scratch is B*H*T*T floats. */
void llmk_attention_forward_ref(float *out, float *att, const float *qkv, size_t B, size_t T, size_t H, size_t KVH,
                                size_t D);
void llmk_attention_forward(float *out, float *att, const float *qkv, size_t B, size_t T, size_t H, size_t KVH,
                            size_t D);
void llmk_attention_backward_ref(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att,
                                 size_t B, size_t T, size_t H, size_t KVH, size_t D);
void llmk_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att,
                             size_t B, size_t T, size_t H, size_t KVH, size_t D);

/* ---- classifier loss ----
 * For each row: loss[r] = logsumexp(logits[r]) - logits[r][targets[r]]
 * (computed in double inside the row, stored as float). When grad_scale is
 * not NULL the logits are overwritten by the gradient of
 * sum_r grad_scale[r] * loss[r]: (softmax - onehot) * grad_scale[r]; a row
 * with grad_scale 0 gets zeros (masked). targets[r] < V (the caller checks). */
void llmk_softmax_xent_ref(float *loss, float *logits, const uint32_t *targets, const float *grad_scale, size_t rows,
                           size_t V);
void llmk_softmax_xent(float *loss, float *logits, const uint32_t *targets, const float *grad_scale, size_t rows,
                       size_t V);

/* ---- optimiser ----
 * One AdamW step as torch.optim.AdamW computes it (decoupled weight decay,
 * bias correction, same order of float operations), on n parameters.
 * step counts from 1. grad_scale multiplies every gradient first (clipping). */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;   /* Python floats in torch: derived scalars are computed in double */
    float grad_scale;
    uint64_t step;
} llmk_adamw_args;
void llmk_adamw_ref(float *param, const float *grad, float *m, float *v, size_t n, const llmk_adamw_args *a);
void llmk_adamw(float *param, const float *grad, float *m, float *v, size_t n, const llmk_adamw_args *a);
/* Sum of squares, accumulated in double (for the global gradient norm). */
double llmk_sumsq_ref(const float *x, size_t n);
double llmk_sumsq(const float *x, size_t n);

/* ---- quantized blocks (llm-tensors(5); llama.cpp's byte layouts) ----
 * q8_0: 32 weights in 34 bytes (f16 d, 32 int8); q4_0: 32 in 18 (f16 d, 16
 * bytes of nibbles: j and j+16 share byte j, low nibble first, value - 8);
 * q4_k: 256 in 144 (f16 d, f16 dmin, 12 bytes of 6-bit scales and mins,
 * 128 bytes of nibbles). n is a multiple of the type's block size.
 * nf4: bitsandbytes' 4-bit NormalFloat with double quantization, laid out
 * over the whole tensor (not per block): n/2 bytes of codes (two per byte,
 * the first weight in the high nibble), then n/64 bytes of absmax codes
 * (8-bit dynamic map), then ceil(n/64/256) f32 scales of the absmax codes
 * (one per 256 blocks), then one f32 offset (the mean absmax); see
 * kernels/nf4_ref.c. Its "block" (64 weights, 33 bytes) excludes the
 * tensor's tail of scales: llmk_qbytes counts it. */
typedef enum { LLMK_Q8_0 = 0, LLMK_Q4_0, LLMK_Q4_K, LLMK_NF4, LLMK_QTYPE_COUNT } llmk_qtype;
typedef struct {
    const char *name;          /* "q8_0", ... */
    uint32_t block_elems, block_bytes;
} llmk_qtraits;
const llmk_qtraits *llmk_qtype_traits(llmk_qtype t);
/* The type named name ("q8_0", ...): 0 and *t, or -1. */
int llmk_qtype_find(const char *name, llmk_qtype *t);
/* Bytes of a tensor of n weights: n / block_elems * block_bytes, plus
 * nf4's tail. A row of a q8_0, q4_0 or q4_k matrix is llmk_qbytes(t, cols). */
size_t llmk_qbytes(llmk_qtype t, size_t n);
/* Quantize n floats (a whole tensor; round to nearest as llama.cpp's
 * quantize_row_*_ref; q4_k as its reference search; nf4 as bitsandbytes'
 * quantize_4bit with compress_statistics) and back. */
void llmk_quantize_ref(llmk_qtype t, void *out, const float *in, size_t n);
void llmk_dequantize_ref(llmk_qtype t, float *out, const void *in, size_t n);
void llmk_dequantize(llmk_qtype t, float *out, const void *in, size_t n);
/* Rows [r0, r1) of the (oc, ic) quantized matrix w, as floats:
 * out ((r1 - r0), ic). (nf4 needs the whole tensor to find its scales.) */
void llmk_dequantize_rows(llmk_qtype t, float *out, const void *w, size_t ic, size_t oc, size_t r0, size_t r1);
/* out (rows, oc) = x (rows, ic) @ W^T where W is the (oc, ic) quantized
 * matrix w, threaded over oc. Below LLMK_QLINEAR_GEMM_ROWS rows (decoding:
 * a matrix-vector product at rows == 1, or a small batch) q8_0 and q4_0
 * quantize x to int8 blocks first (as llama.cpp does: the dot is integer,
 * AVX-512 VNNI where present) and q4_k dots against x quantized to int8
 * blocks of 256 (as llama.cpp's q8_K), one dot per (weight row, x row).
 * From that many rows on (prefill) q8_0, q4_0 and q4_k run the blocked fp32
 * GEMM (llmk_sgemm's) on x unquantized and W dequantized as the GEMM packs
 * it, so weights are read once, in their quantized bytes: the float product
 * of x and the dequantized weights, nearer the exact product than the int8
 * path (x is not rounded) and at the fp32 GEMM's speed. nf4 dots fp32 x
 * against weights decoded through its 16-value codebook. The _ref is the
 * int8 path at every row count (and llmk_qlinear is the _ref on the scalar
 * path). */
/* Rows from which llmk_qlinear takes its prefill path (measured faster from
 * 9 rows on with AVX-512, 12 with AVX2; 12 rows are one register tile of the
 * AVX-512 GEMM). Callers that need results independent of how rows are
 * grouped (a sequence's output not depending on its batch) keep groups on
 * one side of it. */
#define LLMK_QLINEAR_GEMM_ROWS 12
void llmk_qlinear_ref(llmk_qtype t, float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc);
void llmk_qlinear(llmk_qtype t, float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc);
/* llmk_qlinear's decoding path at any row count: each row's result is what
 * llmk_qlinear gives it at rows = 1, whatever else is in the call (the
 * weights still read once per call). For batches of decoding sequences
 * whose results must not depend on the batch. */
void llmk_qlinear_rowwise(llmk_qtype t, float *out, const float *x, const void *w, size_t rows, size_t ic, size_t oc);

/* ---- peak ----
 * `iters` rounds of independent fp32 multiply-adds on the widest path this
 * processor takes; returns the floating-point operations done (the caller
 * times it for a peak; *sink keeps the work from being optimised away). */
double llmk_fma_burn(uint64_t iters, float *sink);

#ifdef LLMK_CUDA
/* CUDA versions: device pointers, asynchronous on `stream` (a cudaStream_t). */
int llmk_bf16_to_f32_cuda(float *out, const uint16_t *in, size_t n, void *stream);
int llmk_f32_to_bf16_cuda(uint16_t *out, const float *in, size_t n, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif
