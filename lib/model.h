/* model.h — the transformer: its configuration, its parameters, and the
 * forward and backward passes on the CPU (fp32, through kernels/llmk.h).
 *
 * One model covers two families (llm-tensors(5) names the tensors):
 *   gpt2:  learned positions, LayerNorm (with biases), GELU (tanh) MLP,
 *          biases on every linear layer, tied embeddings;
 *   llama: rotary positions (rope_theta), RMSNorm, SwiGLU MLP, grouped-query
 *          attention (n_kv_heads), no biases but optional q/k/v biases
 *          (qkv_bias, as Qwen2), tied or untied embeddings.
 *
 * State is split by lifetime (as llama2.c does): the configuration; the
 * parameters (one allocation of floats; the gradients, and AdamW's two
 * moments, are further allocations with the same layout, bound to the same
 * llm_weights shape); the activations of one batch shape (B, T).
 *
 * In memory q, k and v of a layer are one (q_dim + 2 kv_dim, dim) matrix (the
 * three tensors back to back), and llama's gate and up are one (2 ffn, dim)
 * matrix, so each is one GEMM; in files they are separate tensors. */
#ifndef LLMUX_MODEL_H
#define LLMUX_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum { LLM_ARCH_GPT2 = 0, LLM_ARCH_LLAMA = 1 } llm_arch;

typedef struct {
    llm_arch arch;
    size_t n_layers, n_heads, n_kv_heads, dim, ffn_dim, vocab_size, ctx_len;
    float norm_eps, rope_theta;
    int tied_embeddings, qkv_bias;
} llm_config;

/* The "config" metadata value (llm-tensors(5)), both ways. from_json checks
 * every field and the relations between them. to_json is malloc'd. */
int llm_config_from_json(llm_config *c, const char *json, llm_err *err);
char *llm_config_to_json(const llm_config *c);
int llm_config_check(const llm_config *c, llm_err *err);
/* Presets: gpt2-tiny, gpt2-small (124M), gpt2-medium (350M), gpt2-large,
 * llama-tiny, llama-small, llama-1b. The vocabulary is the preset's until
 * the tokenizer's replaces it. */
int llm_config_preset(llm_config *c, const char *name, llm_err *err);
const char *llm_config_preset_names(void);   /* "gpt2-tiny, gpt2-small, ..." */
size_t llm_config_head_dim(const llm_config *c);
size_t llm_config_qkv_dim(const llm_config *c);   /* (n_heads + 2 n_kv_heads) * head_dim */

/* ---- parameters ---- */
typedef struct {
    char name[48];        /* as in files: "layers.3.attn.q.weight" */
    size_t ndim, shape[2];
    size_t offset, size;  /* in floats, within the allocation */
    int decay;            /* AdamW's weight decay applies: matrices and embeddings, not norms or biases */
} llm_param;

/* The parameter table of a configuration, in allocation order. *total is the
 * number of floats. Returns a malloc'd array of *n entries. */
llm_param *llm_params_layout(const llm_config *c, size_t *n, size_t *total);

/* Pointers into one allocation of that layout (parameters, gradients or
 * moments alike). Absent tensors are NULL. */
typedef struct {
    float *attn_norm_w, *attn_norm_b;   /* (dim) */
    float *qkv_w, *qkv_b;               /* (qkv_dim, dim), (qkv_dim) */
    float *o_w, *o_b;                   /* (dim, q_dim), (dim) */
    float *ffn_norm_w, *ffn_norm_b;     /* (dim) */
    float *fc_w, *fc_b;                 /* gpt2: up (ffn, dim), (ffn); llama: [gate; up] (2 ffn, dim) */
    float *down_w, *down_b;             /* (dim, ffn), (dim) */
} llm_layer_weights;

typedef struct {
    float *tok_emb;                     /* (vocab, dim) */
    float *pos_emb;                     /* (ctx, dim), gpt2 */
    llm_layer_weights *layers;          /* (n_layers) */
    float *norm_w, *norm_b;             /* (dim) */
    float *output;                      /* (vocab, dim): tok_emb when tied */
} llm_weights;

/* Binds w to base (an allocation of the layout's total floats); w->layers
 * is malloc'd (free with llm_weights_free). */
int llm_weights_bind(llm_weights *w, const llm_config *c, float *base, llm_err *err);
void llm_weights_free(llm_weights *w);

/* GPT-2-style initialisation, seeded: linear and embedding weights from
 * N(0, 0.02), gpt2's residual projections (attn.o, ffn.down) from
 * N(0, 0.02 / sqrt(2 n_layers)) as GPT-2 and transformers do, biases 0,
 * norm weights 1. Each tensor draws from its own generator seeded by (seed,
 * name), so the result does not depend on the order of initialisation. */
void llm_params_init(float *base, const llm_config *c, const llm_param *params, size_t n, uint64_t seed);

/* ---- activations of one batch shape ---- */
typedef struct llm_acts llm_acts;
llm_acts *llm_acts_new(const llm_config *c, size_t B, size_t T, int training, llm_err *err);
void llm_acts_free(llm_acts *a);
size_t llm_acts_floats(const llm_config *c, size_t B, size_t T, int training);
/* (B*T, vocab): the logits after llm_forward; the gradient of the loss with
 * respect to them after llm_loss with grad_scale. */
float *llm_acts_logits(llm_acts *a);

/* The model's norm (LayerNorm for gpt2, RMSNorm for llama) over rows of
 * dim; mean is not written for RMSNorm. */
void llm_norm_forward(const llm_config *c, float *out, float *mean, float *rstd, const float *x, const float *w,
                      const float *b, size_t rows);

/* Forward: inputs (B*T token ids, each < vocab: the caller checks) to logits.
 * T <= the T the activations were made for, and <= ctx_len. */
void llm_forward(const llm_config *c, const llm_weights *w, llm_acts *a, const uint32_t *inputs, size_t B, size_t T);
/* Cross-entropy of the logits against targets (B*T); loss[r] per row. With
 * grad_scale (B*T weights; 0 for masked rows), the logits become the gradient
 * of sum_r grad_scale[r] * loss[r], ready for llm_backward. */
void llm_loss(const llm_config *c, llm_acts *a, const uint32_t *targets, const float *grad_scale, float *loss, size_t B,
              size_t T);
/* Backward from the logits' gradient: ADDS the parameters' gradients into g
 * (bound to the gradient allocation). Needs activations made for training. */
void llm_backward(const llm_config *c, const llm_weights *w, const llm_weights *g, llm_acts *a, const uint32_t *inputs,
                  size_t B, size_t T);

/* Floating-point operations of one training step per token (forward and
 * backward): 6 per parameter of the matrices and embeddings used, and the
 * attention's 12 L T dim (PaLM's count), for MFU. */
double llm_model_flops_per_token(const llm_config *c, size_t T);

#endif
