/* llmux-sample: the sampler (lib/sample.c) on a request read from stdin, for
 * the conformance tier (t/conformance/test_sample_hf.py compares it with
 * transformers' logits processors and with OpenAI's formulas in numpy).
 *
 *   llmux-sample < REQUEST.json
 *
 * The request is one JSON object, or an array of them (answered by an array
 * in the same order):
 *   logits              numbers, the vocabulary's size (read as float;
 *                       null is -inf)
 *   temperature, top_p, min_p, top_k, repetition_penalty, presence_penalty,
 *   frequency_penalty   as in llm_sampling; absent: 0 (off; temperature 0
 *                       is greedy)
 *   logit_bias          {"ID": bias, ...} as OpenAI's
 *   prompt, output      token ids; the repetition penalty looks at prompt +
 *                       output (as transformers and vLLM), presence and
 *                       frequency at output (as OpenAI and vLLM)
 *   penalty_ids         instead of prompt + output for the repetition penalty
 *   top_logprobs        K: the K most likely tokens of the raw distribution
 *   seed                when present, one draw too
 * Any other key is an error. The answer, on one line:
 *   {"probs": [[id, p], ...],         llm_sample_probs: the distribution the
 *                                     draw is made from, most likely first
 *    "top_logprobs": [[id, lp], ...], llm_top_logprobs
 *    "token": id, "logprob": lp}      with a seed: llm_sample_ex's draw
 * Numbers are printed with 17 significant digits; a logprob of -inf as null. */
#include "cli.h"
#include "sample.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double num(json_t *req, const char *key, double dflt)
{
    json_t *v = json_object_get(req, key);
    if (!v) return dflt;
    if (!json_is_number(v)) llm_die("'%s' is not a number", key);
    return json_number_value(v);
}

static uint32_t to_id(json_t *v, const char *what)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
        llm_die("%s: not a token id", what);
    return (uint32_t)json_integer_value(v);
}

/* the ids of list `key` appended to ids[*n..] */
static void ids_of(json_t *req, const char *key, uint32_t *ids, size_t *n)
{
    json_t *a = json_object_get(req, key), *v;
    size_t i;
    if (!a) return;
    if (!json_is_array(a)) llm_die("'%s' is not an array", key);
    json_array_foreach(a, i, v) ids[(*n)++] = to_id(v, key);
}

static size_t list_len(json_t *req, const char *key)
{
    json_t *a = json_object_get(req, key);
    return json_is_array(a) ? json_array_size(a) : 0;
}

static json_t *real_or_null(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *answer(json_t *req)
{
    static const char *const known[] = {"logits", "temperature", "top_p", "min_p", "top_k", "repetition_penalty",
                                        "presence_penalty", "frequency_penalty", "logit_bias", "prompt", "output",
                                        "penalty_ids", "top_logprobs", "seed", NULL};
    if (!json_is_object(req)) llm_die("a request is not a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(req, key, v) {
        int ok = 0;
        for (const char *const *k = known; *k; k++) ok |= !strcmp(*k, key);
        if (!ok) llm_die("unknown key '%s'", key);
    }
    json_t *jl = json_object_get(req, "logits");
    size_t V = json_array_size(jl);
    if (!json_is_array(jl) || !V) llm_die("'logits' must be a non-empty array");
    float *logits = malloc(V * sizeof *logits);
    size_t i;
    json_array_foreach(jl, i, v) {
        if (json_is_null(v)) logits[i] = -INFINITY;
        else if (json_is_number(v)) logits[i] = (float)json_number_value(v);
        else llm_die("logits[%zu] is not a number", i);
    }

    llm_sampling p = {
        .temperature = num(req, "temperature", 0),
        .top_p = num(req, "top_p", 0),
        .min_p = num(req, "min_p", 0),
        .repetition_penalty = num(req, "repetition_penalty", 0),
        .presence_penalty = num(req, "presence_penalty", 0),
        .frequency_penalty = num(req, "frequency_penalty", 0),
    };
    double k = num(req, "top_k", 0);
    if (k < 0 || k != floor(k)) llm_die("'top_k' must be a whole number >= 0");
    p.top_k = (size_t)k;

    json_t *jb = json_object_get(req, "logit_bias");
    llm_logit_bias *bias = NULL;
    if (jb) {
        if (!json_is_object(jb)) llm_die("'logit_bias' is not an object");
        bias = malloc((json_object_size(jb) + 1) * sizeof *bias);
        json_object_foreach(jb, key, v) {
            char *end;
            unsigned long id = strtoul(key, &end, 10);
            if (!*key || *end || id > UINT32_MAX) llm_die("logit_bias: '%s' is not a token id", key);
            if (!json_is_number(v)) llm_die("logit_bias['%s'] is not a number", key);
            bias[p.n_logit_bias++] = (llm_logit_bias){(uint32_t)id, (float)json_number_value(v)};
        }
        p.logit_bias = bias;
    }

    size_t np = list_len(req, "prompt"), no = list_len(req, "output"), nr = list_len(req, "penalty_ids");
    uint32_t *all = malloc((np + no + 1) * sizeof *all), *rep = malloc((nr + 1) * sizeof *rep);
    size_t n_all = 0, n_rep = 0;
    ids_of(req, "prompt", all, &n_all);
    ids_of(req, "output", all, &n_all);
    ids_of(req, "penalty_ids", rep, &n_rep);
    llm_sample_context ctx = {all, n_all, all + np, n_all - np};
    if (json_object_get(req, "penalty_ids")) ctx.penalty_ids = rep, ctx.n_penalty_ids = n_rep;

    llm_sampler *s = llm_sampler_new(V);
    if (!s) llm_die("out of memory");
    json_t *out = json_object(), *probs = json_array(), *top = json_array();
    size_t n;
    const llm_token_prob *d = llm_sample_probs(s, logits, &p, &ctx, &n);
    for (i = 0; i < n; i++) json_array_append_new(probs, json_pack("[Io]", (json_int_t)d[i].id, json_real(d[i].p)));
    json_object_set_new(out, "probs", probs);

    double kt = num(req, "top_logprobs", 0);
    if (kt < 0 || kt != floor(kt)) llm_die("'top_logprobs' must be a whole number >= 0");
    size_t K = (size_t)kt < V ? (size_t)kt : V;
    uint32_t *ids = malloc((K + 1) * sizeof *ids);
    double *lps = malloc((K + 1) * sizeof *lps);
    K = llm_top_logprobs(s, logits, K, ids, lps);
    for (i = 0; i < K; i++) json_array_append_new(top, json_pack("[Io]", (json_int_t)ids[i], real_or_null(lps[i])));
    json_object_set_new(out, "top_logprobs", top);

    json_t *seed = json_object_get(req, "seed");
    if (seed) {
        if (!json_is_integer(seed)) llm_die("'seed' is not an integer");
        llm_rng r;
        llm_rng_seed(&r, (uint64_t)json_integer_value(seed));
        double lp;
        uint32_t t = llm_sample_ex(s, logits, &p, &ctx, &r, &lp);
        json_object_set_new(out, "token", json_integer(t));
        json_object_set_new(out, "logprob", real_or_null(lp));
    }
    llm_sampler_free(s);
    free(ids);
    free(lps);
    free(all);
    free(rep);
    free(bias);
    free(logits);
    return out;
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    if (argc != 1) llm_usage_error("usage: llmux-sample < REQUEST.json");
    json_error_t jerr;
    json_t *req = json_loadf(stdin, 0, &jerr);
    if (!req) llm_die("stdin: line %d: %s", jerr.line, jerr.text);
    json_t *out;
    if (json_is_array(req)) {
        out = json_array();
        size_t i;
        json_t *r;
        json_array_foreach(req, i, r) json_array_append_new(out, answer(r));
    } else {
        out = answer(req);
    }
    if (json_dumpf(out, stdout, JSON_COMPACT | JSON_REAL_PRECISION(17)) || putchar('\n') == EOF)
        llm_die("stdout: write failed");
    json_decref(out);
    json_decref(req);
    return 0;
}
