/* Sampling: see sample.h. */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void llm_rng_seed(llm_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

double llm_rng_uniform(llm_rng *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(out >> 11) * 0x1.0p-53;
}

struct llm_sampler {
    size_t V;
    llm_token_prob *c;   /* the working logits, then the distribution */
    uint32_t *count;     /* all zero between calls: cleared by walking the lists */
};

llm_sampler *llm_sampler_new(size_t vocab)
{
    llm_sampler *s = calloc(1, sizeof *s);
    if (!s || !vocab || !(s->c = malloc(vocab * sizeof *s->c)) || !(s->count = calloc(vocab, sizeof *s->count))) {
        llm_sampler_free(s);
        return NULL;
    }
    s->V = vocab;
    return s;
}

void llm_sampler_free(llm_sampler *s)
{
    if (!s) return;
    free(s->c);
    free(s->count);
    free(s);
}

static int by_value_desc(const void *a, const void *b)
{
    const llm_token_prob *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* c[i] = logit i after the logit bias and the penalties (sample.h, 1-3). */
static void adjust(llm_sampler *s, const float *logits, const llm_sampling *sp, const llm_sample_context *ctx)
{
    size_t V = s->V;
    llm_token_prob *c = s->c;
    uint32_t *count = s->count;
    for (size_t i = 0; i < V; i++) c[i] = (llm_token_prob){(uint32_t)i, (double)logits[i]};
    if (sp->logit_bias)
        for (size_t i = 0; i < sp->n_logit_bias; i++)
            if (sp->logit_bias[i].id < V) c[sp->logit_bias[i].id].p += (double)sp->logit_bias[i].bias;
    if (!ctx) return;
    double rp = sp->repetition_penalty;
    if (rp > 0 && rp != 1 && ctx->penalty_ids) {
        const uint32_t *ids = ctx->penalty_ids;
        size_t n = ctx->n_penalty_ids;
        for (size_t i = 0; i < n; i++) {   /* count[] marks the ids done */
            uint32_t id = ids[i];
            if (id >= V || count[id]) continue;
            count[id] = 1;
            double v = c[id].p;
            c[id].p = v > 0 ? v / rp : v < 0 ? v * rp : v;
        }
        for (size_t i = 0; i < n; i++)
            if (ids[i] < V) count[ids[i]] = 0;
    }
    double pres = sp->presence_penalty, freq = sp->frequency_penalty;
    if ((pres != 0 || freq != 0) && ctx->output_ids) {
        const uint32_t *ids = ctx->output_ids;
        size_t n = ctx->n_output_ids;
        for (size_t i = 0; i < n; i++)
            if (ids[i] < V) count[ids[i]]++;
        for (size_t i = 0; i < n; i++) {   /* applied at an id's first occurrence, which clears it */
            uint32_t id = ids[i];
            if (id >= V || !count[id]) continue;
            c[id].p -= pres + freq * (double)count[id];
            count[id] = 0;
        }
    }
}

const llm_token_prob *llm_sample_probs(llm_sampler *s, const float *logits, const llm_sampling *p,
                                       const llm_sample_context *ctx, size_t *n_out)
{
    size_t V = s->V;
    llm_token_prob *c = s->c;
    adjust(s, logits, p, ctx);
    if (!(p->temperature > 0)) {
        size_t best = 0;
        for (size_t i = 1; i < V; i++)
            if (c[i].p > c[best].p) best = i;
        c[0] = (llm_token_prob){(uint32_t)best, 1.0};
        *n_out = 1;
        return c;
    }
    for (size_t i = 0; i < V; i++) c[i].p /= p->temperature;
    qsort(c, V, sizeof *c, by_value_desc);
    size_t n = p->top_k && p->top_k < V ? p->top_k : V;
    double mx = c[0].p, sum = 0;
    for (size_t i = 0; i < n; i++) sum += (c[i].p = exp(c[i].p - mx));
    for (size_t i = 0; i < n; i++) c[i].p /= sum;
    if (p->min_p > 0) {
        size_t keep = 1;
        while (keep < n && c[keep].p >= p->min_p * c[0].p) keep++;
        n = keep;
    }
    if (p->top_p > 0 && p->top_p < 1) {
        double cum = 0;
        size_t keep = 0;
        while (keep < n && cum < p->top_p) cum += c[keep++].p;
        n = keep ? keep : 1;
    }
    sum = 0;
    for (size_t i = 0; i < n; i++) sum += c[i].p;
    for (size_t i = 0; i < n; i++) c[i].p /= sum;
    *n_out = n;
    return c;
}

/* log of the sum of exp(logits) */
static double log_sum_exp(const float *logits, size_t V)
{
    float mx = logits[0];
    for (size_t i = 1; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (size_t i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    return mx + log(sum);
}

uint32_t llm_sample_ex(llm_sampler *s, const float *logits, const llm_sampling *p, const llm_sample_context *ctx,
                       llm_rng *rng, double *logprob)
{
    size_t n;
    const llm_token_prob *c = llm_sample_probs(s, logits, p, ctx, &n);
    uint32_t chosen = c[0].id;
    if (p->temperature > 0) {
        double sum = 0;
        for (size_t i = 0; i < n; i++) sum += c[i].p;
        double u = llm_rng_uniform(rng) * sum, acc = 0;
        chosen = c[n - 1].id;
        for (size_t i = 0; i < n; i++) {
            acc += c[i].p;
            if (u < acc) { chosen = c[i].id; break; }
        }
    }
    if (logprob) *logprob = (double)logits[chosen] - log_sum_exp(logits, s->V);
    return chosen;
}

uint32_t llm_sample(llm_sampler *s, const float *logits, const llm_sampling *p, llm_rng *rng, double *logprob)
{
    return llm_sample_ex(s, logits, p, NULL, rng, logprob);
}

/* a ranks before b: the larger logit, then the lower id */
static int before(const float *logits, uint32_t a, uint32_t b)
{
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

/* restores the heap (root: the one that ranks last) below position i of h[0..n) */
static void sift_down(const float *logits, uint32_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && before(logits, h[m], h[l])) m = l;
        if (r < n && before(logits, h[m], h[r])) m = r;
        if (m == i) return;
        uint32_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

size_t llm_top_logprobs(llm_sampler *s, const float *logits, size_t k, uint32_t *ids, double *logprobs)
{
    size_t V = s->V;
    if (k > V) k = V;
    if (!k) return 0;
    /* a heap of the best k so far in ids[], the worst at the root */
    for (size_t i = 0; i < V; i++) {
        uint32_t id = (uint32_t)i;
        if (i < k) {
            size_t j = i;
            ids[j] = id;
            while (j > 0 && before(logits, ids[(j - 1) / 2], ids[j])) {
                uint32_t t = ids[j];
                ids[j] = ids[(j - 1) / 2];
                ids[(j - 1) / 2] = t;
                j = (j - 1) / 2;
            }
        } else if (before(logits, id, ids[0])) {
            ids[0] = id;
            sift_down(logits, ids, k, 0);
        }
    }
    for (size_t end = k - 1; end > 0; end--) {   /* heap sort: the worst to the back */
        uint32_t t = ids[0];
        ids[0] = ids[end];
        ids[end] = t;
        sift_down(logits, ids, end, 0);
    }
    double lse = log_sum_exp(logits, V);
    for (size_t i = 0; i < k; i++) logprobs[i] = (double)logits[ids[i]] - lse;
    return k;
}
