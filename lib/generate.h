/* generate.h — generating text for many requests at once over one model.
 *
 * A request is a prompt (token ids) and parameters; it makes n choices:
 * n samples, or the n best hypotheses of a beam search. Requests are added
 * at any time and run together: each llm_gen_step is one forward pass
 * (lib/infer.h llm_infer_batch) over every running sequence — prompts not yet
 * seen (prefill) and the last token of every choice still going (decode) —
 * so the weights are read once per step for the whole batch, and requests
 * join and leave between steps (continuous batching, for llm-serve too).
 *
 * Sampling (lib/sample.h): choice i of a request draws with a generator
 * seeded by seed + i, and penalises the request's prompt and its own output
 * (repetition penalty: prompt and output, as transformers and vLLM;
 * presence/frequency: its output, as OpenAI). A choice's tokens depend only
 * on its prompt, parameters and seed, not on the other requests in the batch
 * (lib/infer.h: passes are grouped so that the kernels' paths do not depend
 * on the batch). The n choices share the prompt's prefill: its KV cache is
 * copied, not recomputed.
 *
 * Beam search (beams >= 2): at every step each running beam proposes its
 * 2 x beams most likely next tokens (raw log-probabilities: no temperature
 * or penalties, as transformers' generate(num_beams=...) without logits
 * processors); the candidates are ranked by the sum of log-probabilities of
 * their tokens; an end token among the best `beams` candidates closes a
 * hypothesis, scored by the sum over its length (generated tokens, the end
 * token included) to the power length_penalty; the best `beams` other
 * candidates go on. The search ends when `beams` hypotheses are closed and
 * no running beam can beat the worst of them (its score over its current
 * length: transformers' early_stopping=False heuristic), or at max_tokens,
 * where the running beams are closed as they are. The n best hypotheses are
 * the choices. Stop strings cut the finished text (they do not steer the
 * search); nothing is reported before the search ends.
 *
 * KV cache: with a budget of blocks (llm_infer_kv_limit), a request starts
 * only when the blocks it could need (each choice's prompt and max_tokens,
 * the prompt's full blocks counted once) fit beside those the running
 * requests could need, so a pass never runs out of blocks; until then it
 * waits, in order. A request that could need more than the budget is
 * refused by llm_gen_add.
 *
 * Stops: the model's end token (unless ignore_eos), any of stop_ids, a stop
 * string (the text is cut before it; text that could still become a stop
 * string is held back from llm_gen_event's delta until it cannot), max_tokens,
 * or the end of the context: finish reason "stop" or "length". */
#ifndef LLMUX_GENERATE_H
#define LLMUX_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "infer.h"
#include "sample.h"
#include "tokenizer.h"

#define LLM_GEN_MAX_TOP_LOGPROBS 20
#define LLM_GEN_MAX_BEAMS 32

typedef struct {
    llm_sampling sampling;
    uint64_t seed;
    size_t max_tokens;       /* per choice, >= 1 */
    size_t n;                /* choices, >= 1 (<= beams when beams >= 2) */
    size_t beams;            /* 0 or 1: sampling; >= 2: beam search of this width */
    double length_penalty;   /* beam search: the exponent of the length (1 as transformers) */
    size_t top_logprobs;     /* alternatives reported per token, <= LLM_GEN_MAX_TOP_LOGPROBS */
    int ignore_eos;          /* the end token is a token like others */
    const char *const *stop; /* stop strings (copied) */
    size_t n_stop;
    const uint32_t *stop_ids;/* tokens that end a choice, besides the end token (copied) */
    size_t n_stop_ids;
} llm_gen_params;

/* What a step reports, per choice. Token events come as tokens are chosen
 * (sampling only); a done event ends every choice. Pointers are valid
 * during the call only. */
typedef struct {
    void *user;              /* the request's, from llm_gen_add */
    size_t choice;
    int done;
    /* token event: the new token */
    uint32_t id;
    double logprob;          /* raw log-probability */
    const uint32_t *top_ids; /* top_logprobs alternatives, most likely first */
    const double *top_lps;
    size_t n_top;
    const char *delta;       /* text now final (whole UTF-8 characters, no stop-string prefix) */
    size_t delta_len;
    /* done event: the whole choice */
    const char *text;        /* NUL-terminated, cut at a stop string */
    size_t text_len;
    const uint32_t *ids;     /* the tokens generated: an end or stop token is not included, a stop string's tokens are */
    const double *logprobs;  /* (n_ids) */
    const uint32_t *all_top_ids;  /* (n_ids, n_top) for beams too */
    const double *all_top_lps;
    size_t n_ids;
    double score;            /* beam search: the hypothesis' score; sampling: the sum of logprobs */
    const char *finish;      /* "stop" or "length" */
    size_t prompt_tokens;
    size_t cached_tokens;    /* of the prompt's, those whose KV blocks were shared, not run */
} llm_gen_event;

typedef void (*llm_gen_event_fn)(void *ctx, const llm_gen_event *e);

/* A finished choice, copied out of its done event (which lives during the
 * call only). */
typedef struct {
    char *text;              /* NUL-terminated */
    size_t text_len;
    uint32_t *ids, *top_ids; /* (n), (n, n_top) */
    double *lps, *top_lps;
    size_t n, n_top;
    double score;
    const char *finish;      /* a string constant */
} llm_gen_result;

/* r becomes a copy of done event e; -1 when out of memory (r then empty). */
int llm_gen_result_copy(llm_gen_result *r, const llm_gen_event *e);
void llm_gen_result_free(llm_gen_result *r);

typedef struct llm_gen llm_gen;

/* A generator over m, decoding with tok; at most max_seqs sequences (KV
 * caches) at once: a request needs n (sampling) or beams of them, and waits
 * in a queue until they are free. */
llm_gen *llm_gen_new(llm_infer *m, const llm_tokenizer *tok, size_t max_seqs, llm_gen_event_fn fn, void *ctx,
                     llm_err *err);
void llm_gen_free(llm_gen *g);

/* Queues a request. Fails (nothing queued) on parameters out of range, an
 * empty prompt, a prompt that leaves no room in the context, or a request
 * that needs more sequences than max_seqs. */
int llm_gen_add(llm_gen *g, const uint32_t *prompt, size_t n, const llm_gen_params *p, void *user, llm_err *err);

/* One forward pass over everything running (starting queued requests that
 * fit first). Returns 1 when work remains, 0 when all requests are done,
 * -1 with err set on failure. */
int llm_gen_step(llm_gen *g, llm_err *err);

/* Requests queued or running. */
size_t llm_gen_pending(const llm_gen *g);

/* Removes the request added with `user` (queued or running), freeing its
 * sequences, with no more events; returns whether there was one. */
int llm_gen_cancel(llm_gen *g, void *user);

/* Prefix sharing (off by default): a request starts with the KV blocks of
 * an earlier prompt that began with the same whole blocks of tokens
 * (lib/infer.h llm_infer_seq_reuse) and runs only the rest. */
void llm_gen_share_prefixes(llm_gen *g, int on);

typedef struct {
    size_t waiting, running; /* requests */
    size_t running_seqs;
    size_t kv_reserved;      /* KV blocks the running requests could need */
} llm_gen_counts;
void llm_gen_stats(const llm_gen *g, llm_gen_counts *st);

#endif
