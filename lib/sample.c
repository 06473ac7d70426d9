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

typedef struct {
    uint32_t id;
    double v;
} cand;

struct llm_sampler {
    size_t V;
    cand *c;
};

llm_sampler *llm_sampler_new(size_t vocab)
{
    llm_sampler *s = calloc(1, sizeof *s);
    if (!s || !(s->c = malloc(vocab * sizeof *s->c))) { free(s); return NULL; }
    s->V = vocab;
    return s;
}

void llm_sampler_free(llm_sampler *s)
{
    if (!s) return;
    free(s->c);
    free(s);
}

static int by_value_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

uint32_t llm_sample(llm_sampler *s, const float *logits, const llm_sampling *p, llm_rng *rng, double *logprob)
{
    size_t V = s->V, best = 0;
    for (size_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    double lse = 0;
    if (logprob) {
        for (size_t i = 0; i < V; i++) lse += exp((double)logits[i] - logits[best]);
        lse = logits[best] + log(lse);
    }
    uint32_t chosen = (uint32_t)best;
    if (p->temperature > 0) {
        cand *c = s->c;
        for (size_t i = 0; i < V; i++) c[i] = (cand){(uint32_t)i, (double)logits[i] / p->temperature};
        qsort(c, V, sizeof *c, by_value_desc);
        size_t n = p->top_k && p->top_k < V ? p->top_k : V;
        double mx = c[0].v, sum = 0;
        for (size_t i = 0; i < n; i++) sum += (c[i].v = exp(c[i].v - mx));
        for (size_t i = 0; i < n; i++) c[i].v /= sum;
        if (p->min_p > 0) {
            size_t keep = 1;
            while (keep < n && c[keep].v >= p->min_p * c[0].v) keep++;
            n = keep;
        }
        if (p->top_p > 0 && p->top_p < 1) {
            double cum = 0;
            size_t keep = 0;
            while (keep < n && cum < p->top_p) cum += c[keep++].v;
            n = keep ? keep : 1;
        }
        sum = 0;
        for (size_t i = 0; i < n; i++) sum += c[i].v;
        double u = llm_rng_uniform(rng) * sum, acc = 0;
        chosen = c[n - 1].id;
        for (size_t i = 0; i < n; i++) {
            acc += c[i].v;
            if (u < acc) { chosen = c[i].id; break; }
        }
    }
    if (logprob) *logprob = (double)logits[chosen] - lse;
    return chosen;
}
