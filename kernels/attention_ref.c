/* Causal self-attention, scalar oracle (the fast versions are in
 * attention_cpu.c and are tested against these in t/unit/test_attention.c).
 *
 * Layout, as in llmk.h: qkv (B, T, C3) with C3 = (H + 2*KVH) * D holds per
 * row the H query heads, then KVH key heads, then KVH value heads; query
 * head h reads kv head h / (H / KVH) (grouped-query attention; H == KVH is
 * ordinary multi-head attention). out (B, T, H*D), att (B, H, T, T).
 *
 * Every dot product and every sum is accumulated in double and rounded to
 * float once, so these are as accurate as float outputs can be and the
 * tests can blame any disagreement on the fast code. Shapes the header rules
 * out (a zero dimension, H not a multiple of KVH) do nothing. */
#include "llmk.h"

#include <math.h>

static int bad_shape(size_t B, size_t T, size_t H, size_t KVH)
{
    return B == 0 || T == 0 || H == 0 || KVH == 0 || H % KVH != 0;
}

static double dot(const float *a, const float *b, size_t D)
{
    double s = 0;
    for (size_t d = 0; d < D; d++) s += (double)a[d] * b[d];
    return s;
}

void llmk_attention_forward_ref(float *out, float *att, const float *qkv, size_t B, size_t T, size_t H, size_t KVH,
                                size_t D)
{
    if (bad_shape(B, T, H, KVH)) return;
    const size_t C3 = (H + 2 * KVH) * D, group = H / KVH;
    const double scale = 1.0 / sqrt((double)(D ? D : 1));
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++) {
            const size_t g = h / group;
            const float *k0 = qkv + b * T * C3 + (H + g) * D;        /* key row j at k0 + j*C3 */
            const float *v0 = qkv + b * T * C3 + (H + KVH + g) * D;  /* value row j at v0 + j*C3 */
            for (size_t t = 0; t < T; t++) {
                const float *q = qkv + (b * T + t) * C3 + h * D;
                float *p = att + ((b * H + h) * T + t) * T;           /* (T) */
                /* softmax over j <= t of scale * q.k_j, with the max
                 * subtracted so that exp never overflows; the scores are
                 * recomputed rather than stored, to keep them in double */
                double mx = -INFINITY;
                for (size_t j = 0; j <= t; j++) {
                    double s = scale * dot(q, k0 + j * C3, D);
                    if (s > mx) mx = s;
                }
                double sum = 0;
                for (size_t j = 0; j <= t; j++) sum += exp(scale * dot(q, k0 + j * C3, D) - mx);
                for (size_t j = 0; j <= t; j++) p[j] = (float)(exp(scale * dot(q, k0 + j * C3, D) - mx) / sum);
                for (size_t j = t + 1; j < T; j++) p[j] = 0;
                /* out_t = sum_j p_j v_j, with the stored (float) p_j that
                 * the backward pass will see */
                float *o = out + (b * T + t) * H * D + h * D;
                for (size_t d = 0; d < D; d++) {
                    double s = 0;
                    for (size_t j = 0; j <= t; j++) s += (double)p[j] * v0[j * C3 + d];
                    o[d] = (float)s;
                }
            }
        }
}

/* With P = att (T, T) of one (b, h), dO its rows of dout, and S the scores:
 *   dP[t][j] = dO_t . v_j                       (j <= t)
 *   dS[t][j] = P[t][j] * (dP[t][j] - sum_i P[t][i] dP[t][i])   (softmax)
 *   dq_t += scale * sum_j dS[t][j] k_j
 *   dk_j += scale * sum_t dS[t][j] q_t           (t >= j)
 *   dv_j += sum_t P[t][j] dO_t                   (t >= j)
 * dS of the (b, h) is kept in scratch (T, T), lower triangle, so that dk
 * and dv can be summed over t in double. */
void llmk_attention_backward_ref(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att,
                                 size_t B, size_t T, size_t H, size_t KVH, size_t D)
{
    if (bad_shape(B, T, H, KVH)) return;
    const size_t C3 = (H + 2 * KVH) * D, HD = H * D, group = H / KVH;
    const double scale = 1.0 / sqrt((double)(D ? D : 1));
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++) {
            const size_t g = h / group;
            const size_t qo = h * D, ko = (H + g) * D, vo = (H + KVH + g) * D;   /* offsets in a qkv row */
            const float *x = qkv + b * T * C3;           /* (T, C3) */
            float *dx = dqkv + b * T * C3;               /* (T, C3) */
            const float *dO = dout + b * T * HD + qo;    /* row t at dO + t*HD */
            const float *P = att + (b * H + h) * T * T;  /* (T, T) */
            float *dS = scratch + (b * H + h) * T * T;   /* (T, T) */
            for (size_t t = 0; t < T; t++) {
                double s = 0;
                for (size_t j = 0; j <= t; j++) s += (double)P[t * T + j] * dot(dO + t * HD, x + j * C3 + vo, D);
                for (size_t j = 0; j <= t; j++)
                    dS[t * T + j] = (float)(P[t * T + j] * (dot(dO + t * HD, x + j * C3 + vo, D) - s));
            }
            for (size_t t = 0; t < T; t++)
                for (size_t d = 0; d < D; d++) {
                    double s = 0;
                    for (size_t j = 0; j <= t; j++) s += (double)dS[t * T + j] * x[j * C3 + ko + d];
                    dx[t * C3 + qo + d] += (float)(scale * s);
                }
            for (size_t j = 0; j < T; j++)
                for (size_t d = 0; d < D; d++) {
                    double sk = 0, sv = 0;
                    for (size_t t = j; t < T; t++) {
                        sk += (double)dS[t * T + j] * x[t * C3 + qo + d];
                        sv += (double)P[t * T + j] * dO[t * HD + d];
                    }
                    dx[j * C3 + ko + d] += (float)(scale * sk);
                    dx[j * C3 + vo + d] += (float)sv;
                }
        }
}
