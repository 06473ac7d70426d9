/* sample.h — choosing the next token from logits.
 *
 * temperature 0: the most likely token (greedy; the lowest id among equals).
 * Otherwise, in this order as in llama.cpp and vLLM: the logits divided by
 * the temperature; top-k (the k most likely, 0: all); softmax; min-p (drop
 * tokens below min_p times the most likely one's probability); top-p (the
 * smallest set of most likely tokens whose probabilities sum to at least
 * top_p); renormalise; draw with the generator. The generator is
 * xoshiro256** seeded by splitmix64(seed), so a seed gives the same draws
 * whatever else happens. */
#ifndef LLMUX_SAMPLE_H
#define LLMUX_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double temperature, top_p, min_p;
    size_t top_k;
} llm_sampling;

typedef struct { uint64_t s[4]; } llm_rng;

void llm_rng_seed(llm_rng *r, uint64_t seed);
double llm_rng_uniform(llm_rng *r);   /* [0, 1) */

typedef struct llm_sampler llm_sampler;
llm_sampler *llm_sampler_new(size_t vocab);
void llm_sampler_free(llm_sampler *s);
/* The chosen token; *logprob its log-probability under the model's own
 * distribution (the logits' softmax), when not NULL. */
uint32_t llm_sample(llm_sampler *s, const float *logits, const llm_sampling *p, llm_rng *rng, double *logprob);

#endif
