/* sample.h — choosing the next token from logits.
 *
 * The logits are first adjusted, in this order (all in double precision, on a
 * copy: the caller's logits are never written):
 *   1. logit bias: each (id, bias) pair of p->logit_bias is added to that
 *      token's logit (OpenAI's logit_bias, whose values are -100..100; a
 *      repeated id gets the sum; an id >= the vocabulary is ignored). It is
 *      plain addition, as OpenAI documents, vLLM and llama.cpp do: -100
 *      scales a token's probability by e^(-100/T) or less, which no draw
 *      reaches and top-p (< 1) and min-p (above that) cut; but it is not
 *      -inf, and it can still win a greedy choice when every other token is
 *      lower still.
 *   2. repetition penalty (p->repetition_penalty; 1 is off, and so is <= 0,
 *      so that a zeroed llm_sampling is plain sampling): every distinct id of
 *      ctx->penalty_ids, once however often it occurs, has its logit divided
 *      by the penalty when > 0 and multiplied by it when < 0 (0 stays 0), as
 *      transformers' RepetitionPenaltyLogitsProcessor, vLLM and llama.cpp
 *      do. Which tokens count is the caller's choice: transformers penalises
 *      every id of input_ids, that is the prompt and what has been generated
 *      (prompt_ignore_length drops the prompt), vLLM the prompt and the
 *      output, llama.cpp the last penalty_last_n (64) tokens.
 *   3. presence and frequency penalties, as OpenAI defines them:
 *          logit[j] -= presence * (count[j] > 0) + frequency * count[j]
 *      with count[j] the number of times j occurs in ctx->output_ids, meant
 *      to be the generated tokens only (OpenAI and vLLM count the output,
 *      not the prompt). Negative values reward instead.
 * Then temperature 0: the most likely token (greedy; the lowest id among
 * equals). Otherwise: the logits divided by the temperature; top-k (the k
 * most likely, 0: all; ties broken towards the lower id); softmax over those
 * k; min-p (drop tokens below min_p times the most likely one's
 * probability); top-p (the smallest set of most likely tokens whose
 * probabilities — still those of the softmax over the top k, not
 * renormalised after min-p — sum to at least top_p; off unless 0 < top_p < 1);
 * renormalise; draw with the generator.
 *
 * How the order compares (the kept set is what matters: min-p's threshold is
 * relative to the top token, so it does not care about renormalising, and
 * top-k, min-p and top-p each keep a prefix of the same sorted order):
 *   - transformers' generate() applies repetition penalty, temperature,
 *     top-k, top-p, then min-p, each on logits: the same kept set and the same
 *     distribution as here (its top-p sees the top-k renormalised
 *     probabilities, its min-p intersects). t/conformance/test_sample_hf.py
 *     checks it. It has no presence/frequency penalty and no logit bias in
 *     the OpenAI form (SequenceBiasLogitsProcessor comes first, like ours).
 *   - vLLM: logit bias, repetition, frequency, presence penalty, temperature
 *     (as here), then min-p, then top-k and top-p, with top-p over the
 *     distribution renormalised after min-p. A LogitsProcessorList of
 *     [..., TopK, MinP, TopP] does the same. It keeps fewer tokens than here
 *     when min-p and top-p both cut (min-p removed mass, so the survivors
 *     reach top_p sooner); with only one of the two on, it is the same.
 *   - llama.cpp's default chain: logit bias, penalties, top-k, top-p, min-p,
 *     and temperature last, so its top-p and min-p see the temperature-1
 *     distribution: different from here whenever the temperature is not 1
 *     and top-p or min-p cuts.
 *
 * The generator is xoshiro256** seeded by splitmix64(seed), so a seed gives
 * the same draws whatever else happens.
 *
 * Log-probabilities (llm_sample's *logprob, llm_top_logprobs) are those of
 * the model's raw distribution, the log_softmax of the logits as given, before
 * any of the above: what vLLM reports by default and OpenAI's logprobs are.
 *
 * A sampler is for one thread; it owns its working memory (O(vocab)), and no
 * call allocates. A call walks the vocabulary a few times (and sorts it when
 * the temperature is > 0), the token lists twice. */
#ifndef LLMUX_SAMPLE_H
#define LLMUX_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t id;
    float bias;
} llm_logit_bias;

/* Zero-initialised fields beyond the first four are off: a positional
 * {temperature, top_p, min_p, top_k} still means what it did. */
typedef struct {
    double temperature, top_p, min_p;
    size_t top_k;
    double repetition_penalty;                  /* 1 or <= 0: off */
    double presence_penalty, frequency_penalty; /* 0: off; OpenAI allows -2..2 */
    const llm_logit_bias *logit_bias;           /* n_logit_bias pairs, or NULL */
    size_t n_logit_bias;
} llm_sampling;

/* The token history the penalties look at; both lists may hold repeats and
 * ids beyond the vocabulary (ignored). For transformers' and vLLM's behaviour
 * keep one array of prompt + generated ids: penalty_ids = all of it,
 * output_ids = the part after the prompt. */
typedef struct {
    const uint32_t *penalty_ids;   /* the repetition penalty's tokens */
    size_t n_penalty_ids;
    const uint32_t *output_ids;    /* presence/frequency counts: the generated tokens */
    size_t n_output_ids;
} llm_sample_context;

typedef struct { uint64_t s[4]; } llm_rng;

void llm_rng_seed(llm_rng *r, uint64_t seed);
double llm_rng_uniform(llm_rng *r);   /* [0, 1) */

typedef struct {
    uint32_t id;
    double p;
} llm_token_prob;

typedef struct llm_sampler llm_sampler;
llm_sampler *llm_sampler_new(size_t vocab);
void llm_sampler_free(llm_sampler *s);

/* The distribution the draw is made from, after everything above: *n
 * tokens, most likely first (the lowest id first among equals), with
 * probabilities that sum to 1 (up to rounding; a token may have underflowed
 * to 0). Temperature 0 gives the greedy token with probability 1. The array
 * is the sampler's, valid until its next call. ctx may be NULL (no history). */
const llm_token_prob *llm_sample_probs(llm_sampler *s, const float *logits, const llm_sampling *p,
                                       const llm_sample_context *ctx, size_t *n);

/* The chosen token, drawn from llm_sample_probs's distribution with one
 * llm_rng_uniform (none at temperature 0); *logprob, when not NULL, its
 * log-probability under the raw distribution (see above). */
uint32_t llm_sample_ex(llm_sampler *s, const float *logits, const llm_sampling *p, const llm_sample_context *ctx,
                       llm_rng *rng, double *logprob);
/* llm_sample_ex without a history: the penalties that need one do nothing
 * (logit bias still applies). */
uint32_t llm_sample(llm_sampler *s, const float *logits, const llm_sampling *p, llm_rng *rng, double *logprob);

/* The min(k, vocab) most likely tokens of the raw distribution and their
 * log-probabilities (log_softmax of the logits as given), most likely first,
 * the lower id first among equals; returns how many. For OpenAI's
 * top_logprobs (k <= 20 there) and for beam search's expansion (any k). */
size_t llm_top_logprobs(llm_sampler *s, const float *logits, size_t k, uint32_t *ids, double *logprobs);

#endif
