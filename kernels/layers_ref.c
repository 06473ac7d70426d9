/* Scalar oracles for the fp32 layer kernels (embeddings, normalisation,
 * activations, rotary embeddings, classifier loss, AdamW, sum of squares).
 *
 * These are the definitions the fast versions in layers_cpu.c are tested
 * against, so they favour clarity and accuracy over speed: sums, means and
 * variances are taken in double, and most element results are computed in
 * double and rounded once. Two exceptions copy PyTorch's float32 arithmetic
 * on purpose, because there the point is to reproduce PyTorch bit for bit:
 * RoPE (Hugging Face's float32 inv_freq, angle and rotation) and AdamW
 * (torch.optim.AdamW's single-tensor step, operation by operation). For
 * those, contracting a*b+c into one fused multiply-add would change the
 * rounding, so contraction is switched off for this whole file (gcc's GNU
 * mode contracts by default wherever the target has FMA). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "llmk.h"

#include <math.h>
#include <string.h>

/* ---- embeddings ---- */

void llmk_embed_forward_ref(float *out, const uint32_t *ids, const float *wte, const float *wpe, size_t rows, size_t T,
                            size_t C)
{
    for (size_t r = 0; r < rows; r++) {
        const float *e = wte + (size_t)ids[r] * C;            /* (C) */
        const float *p = wpe ? wpe + (T ? r % T : r) * C : NULL;
        float *o = out + r * C;
        for (size_t c = 0; c < C; c++) o[c] = p ? e[c] + p[c] : e[c];
    }
}

/* Rows are added in increasing order; the fast version keeps that order per
 * channel, so the two agree exactly. */
void llmk_embed_backward_ref(float *dwte, float *dwpe, const float *dout, const uint32_t *ids, size_t rows, size_t T,
                             size_t C)
{
    for (size_t r = 0; r < rows; r++) {
        const float *d = dout + r * C;
        if (dwte) {
            float *g = dwte + (size_t)ids[r] * C;
            for (size_t c = 0; c < C; c++) g[c] += d[c];
        }
        if (dwpe) {
            float *g = dwpe + (T ? r % T : r) * C;
            for (size_t c = 0; c < C; c++) g[c] += d[c];
        }
    }
}

/* ---- LayerNorm ----
 * inp, out (rows, C); w, b (C) (NULL: 1 and 0); mean, rstd (rows) or NULL.
 * Two-pass mean and biased variance in double. */
void llmk_layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                                size_t rows, size_t C, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *x = inp + r * C;
        double s = 0;
        for (size_t c = 0; c < C; c++) s += x[c];
        double m = s / (double)C, v = 0;
        for (size_t c = 0; c < C; c++) v += ((double)x[c] - m) * ((double)x[c] - m);
        double rs = 1.0 / sqrt(v / (double)C + (double)eps);
        float *o = out + r * C;
        for (size_t c = 0; c < C; c++)
            o[c] = (float)(((double)x[c] - m) * rs * (w ? w[c] : 1.0) + (b ? b[c] : 0.0));
        if (mean) mean[r] = (float)m;
        if (rstd) rstd[r] = (float)rs;
    }
}

/* With xhat = (x - mean) * rstd and g = dout * w:
 *   dinp += rstd * (g - mean(g) - xhat * mean(g * xhat))
 *   dw += sum over rows of dout * xhat;  db += sum over rows of dout
 * mean and rstd are the saved (float) values of the forward pass. */
void llmk_layernorm_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                                 const float *mean, const float *rstd, size_t rows, size_t C)
{
    if (dinp) {
        for (size_t r = 0; r < rows; r++) {
            const float *x = inp + r * C, *d = dout + r * C;
            double m = mean[r], rs = rstd[r], sg = 0, sgx = 0;
            for (size_t c = 0; c < C; c++) {
                double g = (double)d[c] * (w ? w[c] : 1.0);
                sg += g;
                sgx += g * ((x[c] - m) * rs);
            }
            sg /= (double)C;
            sgx /= (double)C;
            float *di = dinp + r * C;
            for (size_t c = 0; c < C; c++) {
                double g = (double)d[c] * (w ? w[c] : 1.0), xh = (x[c] - m) * rs;
                di[c] = (float)(di[c] + rs * (g - sg - xh * sgx));
            }
        }
    }
    if (dw || db) {
        for (size_t c = 0; c < C; c++) {   /* column by column: one double sum per channel */
            double sw = 0, sb = 0;
            for (size_t r = 0; r < rows; r++) {
                double d = dout[r * C + c];
                sw += d * (((double)inp[r * C + c] - mean[r]) * rstd[r]);
                sb += d;
            }
            if (dw) dw[c] = (float)(dw[c] + sw);
            if (db) db[c] = (float)(db[c] + sb);
        }
    }
}

/* ---- RMSNorm ----
 * out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps); w (C) or NULL (1). */
void llmk_rmsnorm_forward_ref(float *out, float *rstd, const float *inp, const float *w, size_t rows, size_t C, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *x = inp + r * C;
        double ss = 0;
        for (size_t c = 0; c < C; c++) ss += (double)x[c] * x[c];
        double rs = 1.0 / sqrt(ss / (double)C + (double)eps);
        float *o = out + r * C;
        for (size_t c = 0; c < C; c++) o[c] = (float)((double)x[c] * rs * (w ? w[c] : 1.0));
        if (rstd) rstd[r] = (float)rs;
    }
}

/* d rstd / d x_j = -rstd^3 x_j / C, so
 *   dinp_j += rstd * dout_j * w_j - rstd^3 / C * x_j * sum_i dout_i w_i x_i
 *   dw_j += sum over rows of dout_j * x_j * rstd */
void llmk_rmsnorm_backward_ref(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                               const float *rstd, size_t rows, size_t C)
{
    if (dinp) {
        for (size_t r = 0; r < rows; r++) {
            const float *x = inp + r * C, *d = dout + r * C;
            double rs = rstd[r], s = 0;
            for (size_t c = 0; c < C; c++) s += (double)d[c] * (w ? w[c] : 1.0) * x[c];
            double k = rs * rs * rs * s / (double)C;
            float *di = dinp + r * C;
            for (size_t c = 0; c < C; c++) di[c] = (float)(di[c] + rs * d[c] * (w ? w[c] : 1.0) - k * x[c]);
        }
    }
    if (dw) {
        for (size_t c = 0; c < C; c++) {
            double s = 0;
            for (size_t r = 0; r < rows; r++) s += (double)dout[r * C + c] * inp[r * C + c] * rstd[r];
            dw[c] = (float)(dw[c] + s);
        }
    }
}

/* ---- GELU, tanh approximation ----
 * gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
 * 0.5 (1 + tanh u) is sigmoid(2u), so with s = sigmoid(2u)
 *   gelu(x) = x s,  gelu'(x) = s + x s (1 - s) 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
 * The same function, but 1 + tanh(u) cancels for negative u (at x = -6 it
 * leaves ~5e-6 relative error even in double, and 0 from x ~ -10 on),
 * while s and 1 - s from exp(-|2u|) keep full relative accuracy. */
#define GELU_S 0.79788456080286535588   /* sqrt(2/pi) */
#define GELU_A 0.044715

/* sigmoid(z) and 1 - sigmoid(z), each without cancellation */
static void sigmoid2(double z, double *s, double *one_minus_s)
{
    double q = exp(-fabs(z)), d = 1.0 / (1.0 + q);
    *s = z >= 0 ? d : q * d;
    *one_minus_s = z >= 0 ? q * d : d;
}

void llmk_gelu_forward_ref(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double x = inp[i], s, sc;
        sigmoid2(2.0 * GELU_S * (x + GELU_A * x * x * x), &s, &sc);
        out[i] = (float)(x * s);
    }
}

void llmk_gelu_backward_ref(float *dinp, const float *inp, const float *dout, size_t n)
{
    if (!dinp) return;
    for (size_t i = 0; i < n; i++) {
        double x = inp[i], s, sc;
        sigmoid2(2.0 * GELU_S * (x + GELU_A * x * x * x), &s, &sc);
        double d = s + x * s * sc * 2.0 * GELU_S * (1.0 + 3.0 * GELU_A * x * x);
        dinp[i] = (float)(dinp[i] + d * dout[i]);
    }
}

/* ---- SwiGLU ----
 * inp, dinp (rows, 2F) = [gate | up]; out, dout (rows, F).
 * out = silu(g) u, silu(g) = g sigmoid(g); silu'(g) = s (1 + g (1 - s)). */
void llmk_swiglu_forward_ref(float *out, const float *inp, size_t rows, size_t F)
{
    for (size_t r = 0; r < rows; r++) {
        const float *gate = inp + r * 2 * F, *up = gate + F;
        for (size_t i = 0; i < F; i++) {
            double g = gate[i], s, sc;
            sigmoid2(g, &s, &sc);
            out[r * F + i] = (float)(g * s * up[i]);
        }
    }
}

void llmk_swiglu_backward_ref(float *dinp, const float *inp, const float *dout, size_t rows, size_t F)
{
    if (!dinp) return;
    for (size_t r = 0; r < rows; r++) {
        const float *gate = inp + r * 2 * F, *up = gate + F, *d = dout + r * F;
        float *dg = dinp + r * 2 * F, *du = dg + F;
        for (size_t i = 0; i < F; i++) {
            double g = gate[i], s, sc;
            sigmoid2(g, &s, &sc);
            dg[i] = (float)(dg[i] + d[i] * up[i] * s * (1.0 + g * sc));
            du[i] = (float)(du[i] + d[i] * g * s);
        }
    }
}

/* ---- RoPE ----
 * In float32 exactly as Hugging Face's Llama computes it:
 *   inv_freq[i] = 1 / theta ** (float(2i) / D)     (float pow, float divide)
 *   angle = float(p) * inv_freq[i]                  (one float product)
 *   cos, sin of that float angle, rounded to float
 *   x'[i] = x[i] cos - x[i+D/2] sin; x'[i+D/2] = x[i+D/2] cos + x[i] sin
 * (q * cos + rotate_half(q) * sin: two rounded products, one rounded sum).
 * The pow, cos and sin are taken in double and rounded once, which is the
 * correctly rounded float result (PyTorch's vectorised versions are within
 * one ulp of it). */
static float rope_inv_freq(size_t i, size_t D, float theta)
{
    float e = (float)(2 * i) / (float)D;
    return 1.0f / (float)pow((double)theta, (double)e);
}

static void rope_ref(float *x, size_t rows, size_t T, size_t pos0, size_t heads, size_t D, size_t row_stride, float theta,
                     int sign)
{
    size_t h = D / 2;
    for (size_t r = 0; r < rows; r++) {
        float p = (float)(pos0 + (T ? r % T : r));
        for (size_t i = 0; i < h; i++) {
            float a = p * rope_inv_freq(i, D, theta);
            float c = (float)cos((double)a), s = sign * (float)sin((double)a);
            for (size_t hd = 0; hd < heads; hd++) {
                float *v = x + r * row_stride + hd * D;
                float x0 = v[i], x1 = v[i + h];
                v[i] = x0 * c - x1 * s;
                v[i + h] = x1 * c + x0 * s;
            }
        }
    }
}

void llmk_rope_forward_ref(float *x, size_t rows, size_t T, size_t heads, size_t D, size_t row_stride, float theta)
{
    rope_ref(x, rows, T, 0, heads, D, row_stride, theta, 1);
}

void llmk_rope_at_ref(float *x, size_t rows, size_t pos0, size_t heads, size_t D, size_t row_stride, float theta)
{
    rope_ref(x, rows, 0, pos0, heads, D, row_stride, theta, 1);
}

/* Decoding rotates a few rows at a time: the reference is fast enough. */
void llmk_rope_at(float *x, size_t rows, size_t pos0, size_t heads, size_t D, size_t row_stride, float theta)
{
    rope_ref(x, rows, 0, pos0, heads, D, row_stride, theta, 1);
}

/* The transpose of the rotation is the rotation by -angle. */
void llmk_rope_backward_ref(float *dx, size_t rows, size_t T, size_t heads, size_t D, size_t row_stride, float theta)
{
    rope_ref(dx, rows, T, 0, heads, D, row_stride, theta, -1);
}

/* ---- softmax cross-entropy ----
 * logits (rows, V); loss (rows) or NULL; targets (rows); grad_scale (rows)
 * or NULL (loss only). */
void llmk_softmax_xent_ref(float *loss, float *logits, const uint32_t *targets, const float *grad_scale, size_t rows,
                           size_t V)
{
    for (size_t r = 0; r < rows; r++) {
        float *x = logits + r * V;
        uint32_t t = targets[r];
        float mx = -INFINITY;
        for (size_t i = 0; i < V; i++)
            if (x[i] > mx) mx = x[i];
        double s = 0;
        for (size_t i = 0; i < V; i++) s += exp((double)x[i] - mx);
        double lse = mx + log(s);
        if (loss) loss[r] = (float)(lse - x[t]);
        if (!grad_scale) continue;
        double k = grad_scale[r];
        if (k == 0) {   /* masked row: zeros, whatever the logits held */
            memset(x, 0, V * sizeof *x);
            continue;
        }
        for (size_t i = 0; i < V; i++) x[i] = (float)((exp((double)x[i] - lse) - (i == t)) * k);
    }
}

/* ---- AdamW ----
 * torch.optim.AdamW (foreach=False, maximize=False, amsgrad=False) on float32
 * tensors, operation by operation. Python computes the hyperparameter
 * expressions in double and the tensor ops cast them to float:
 *   param.mul_(1 - lr*wd)
 *   exp_avg.lerp_(grad, 1 - beta1)
 *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *   denom = (exp_avg_sq.sqrt() / sqrt(1 - beta2**step)).add_(eps)
 *   param.addcdiv_(exp_avg, denom, value=-(lr / (1 - beta1**step)))
 * Two of these are fused multiply-adds in the PyTorch that users run:
 * - lerp: ATen's CPU kernel (lerp_vec, aten/src/ATen/native/cpu/LerpKernel.cpp)
 *   is weight < 0.5 ? fma(w, g - m, m) : fma(w - 1, g - m, g);
 * - addcmul: its kernel is v + (value * g) * g, which gcc contracts into
 *   fma(value * g, g, v) in the AVX2 and AVX-512 builds of the wheels.
 * addcdiv is p + (value * m) / denom, separately rounded. Checked bit for
 * bit (param, exp_avg, exp_avg_sq) against torch 2.15's CPU AdamW.
 * The hyperparameters arrive as floats, so they are the float values widened
 * (pass torch the same float values to compare bit for bit). */
typedef struct {
    float decay, w1, w1m1, beta2, w2, bc2_sqrt, eps, neg_step_size, grad_scale;
    int small;
} adamw_consts;

static adamw_consts adamw_setup(const llmk_adamw_args *a)
{
    adamw_consts k;
    double lr = a->lr, b1 = a->beta1, b2 = a->beta2, step = (double)a->step;
    k.decay = (float)(1.0 - lr * (double)a->weight_decay);
    k.w1 = (float)(1.0 - b1);
    k.w1m1 = k.w1 - 1.0f;
    k.small = fabsf(k.w1) < 0.5f;
    k.beta2 = a->beta2;
    k.w2 = (float)(1.0 - b2);
    k.bc2_sqrt = (float)sqrt(1.0 - pow(b2, step));
    k.eps = a->eps;
    k.neg_step_size = (float)-(lr / (1.0 - pow(b1, step)));
    k.grad_scale = a->grad_scale;
    return k;
}

void llmk_adamw_ref(float *param, const float *grad, float *m, float *v, size_t n, const llmk_adamw_args *a)
{
    adamw_consts k = adamw_setup(a);
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        if (k.grad_scale != 1.0f) g = g * k.grad_scale;
        float p = param[i] * k.decay;
        float mi = k.small ? fmaf(k.w1, g - m[i], m[i]) : fmaf(k.w1m1, g - m[i], g);
        float vi = fmaf(k.w2 * g, g, v[i] * k.beta2);
        float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
        param[i] = p + (k.neg_step_size * mi) / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

double llmk_sumsq_ref(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}
