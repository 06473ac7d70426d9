/* Attention of a few new queries over a KV cache (decoding): see llmk.h.
 * The reference accumulates in double; the CPU version spreads the (query,
 * head) pairs over the threads, with float loops the compiler vectorises.
 * At batch 1 the time of a decoding step is in reading the weights, not
 * here. */
#include "llmk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void llmk_attention_cached_ref(float *out, const float *q, size_t q_stride, const float *k, const float *v,
                               size_t kv_stride, size_t n, size_t pos0, size_t H, size_t KVH, size_t D)
{
    if (!H || !KVH || H % KVH) return;
    double scale = 1.0 / sqrt((double)D);
    size_t group = H / KVH;
    double *p = malloc((pos0 + n) * sizeof *p);
    if (!p) return;
    for (size_t i = 0; i < n; i++) {
        size_t len = pos0 + i + 1;
        for (size_t h = 0; h < H; h++) {
            const float *qh = q + i * q_stride + h * D;
            size_t kvh = h / group;
            double mx = -INFINITY, sum = 0;
            for (size_t j = 0; j < len; j++) {
                const float *kj = k + j * kv_stride + kvh * D;
                double s = 0;
                for (size_t d = 0; d < D; d++) s += (double)qh[d] * kj[d];
                p[j] = s * scale;
                if (p[j] > mx) mx = p[j];
            }
            for (size_t j = 0; j < len; j++) sum += (p[j] = exp(p[j] - mx));
            float *o = out + i * H * D + h * D;
            for (size_t d = 0; d < D; d++) {
                double acc = 0;
                for (size_t j = 0; j < len; j++) acc += p[j] * v[j * kv_stride + kvh * D + d];
                o[d] = (float)(acc / sum);
            }
        }
    }
    free(p);
}

typedef struct {
    float *out;
    const float *q, *k, *v;
    size_t q_stride, kv_stride, pos0, H, KVH, D;
} cached_ctx;

static void cached_range(void *arg, size_t begin, size_t end)
{
    const cached_ctx *c = arg;
    size_t H = c->H, D = c->D, group = H / c->KVH, max_len = c->pos0 + (end + H - 1) / H + 1;
    float *p = malloc(max_len * sizeof *p), *acc = malloc(D * sizeof *acc);
    if (!p || !acc) { free(p); free(acc); return; }
    float scale = 1.0f / sqrtf((float)D);
    for (size_t w = begin; w < end; w++) {   /* w = query * H + head */
        size_t i = w / H, h = w % H, kvh = h / group, len = c->pos0 + i + 1;
        const float *qh = c->q + i * c->q_stride + h * D;
        float mx = -INFINITY;
        for (size_t j = 0; j < len; j++) {
            const float *kj = c->k + j * c->kv_stride + kvh * D;
            float s = 0;
            for (size_t d = 0; d < D; d++) s += qh[d] * kj[d];
            p[j] = s * scale;
            if (p[j] > mx) mx = p[j];
        }
        float sum = 0;
        for (size_t j = 0; j < len; j++) sum += (p[j] = expf(p[j] - mx));
        memset(acc, 0, D * sizeof *acc);
        for (size_t j = 0; j < len; j++) {
            const float *vj = c->v + j * c->kv_stride + kvh * D;
            float pj = p[j];
            for (size_t d = 0; d < D; d++) acc[d] += pj * vj[d];
        }
        float *o = c->out + i * H * D + h * D, inv = 1.0f / sum;
        for (size_t d = 0; d < D; d++) o[d] = acc[d] * inv;
    }
    free(p);
    free(acc);
}

void llmk_attention_cached(float *out, const float *q, size_t q_stride, const float *k, const float *v, size_t kv_stride,
                           size_t n, size_t pos0, size_t H, size_t KVH, size_t D)
{
    if (!H || !KVH || H % KVH || !n) return;
    cached_ctx c = {out, q, k, v, q_stride, kv_stride, pos0, H, KVH, D};
    /* a grain of a few heads: short contexts are not worth a thread */
    llmk_parallel_for(n * H, (pos0 + n) * D < 4096 ? n * H : 2, cached_range, &c);
}
