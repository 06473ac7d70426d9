/* A generation request from JSON: see gen_request.h. */
#include "gen_request.h"

#include "chat_encode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void llm_gen_request_free(llm_gen_request *q)
{
    for (size_t i = 0; q->stop && i < q->p.n_stop; i++) free(q->stop[i]);
    free(q->stop);
    free(q->stop_ids);
    free(q->bias);
    memset(q, 0, sizeof *q);
}

/* Points p's lists at q's arrays. */
static void relink(llm_gen_request *q)
{
    q->p.stop = (const char *const *)q->stop;
    q->p.stop_ids = q->stop_ids;
    q->p.sampling.logit_bias = q->bias;
}

int llm_gen_request_init(llm_gen_request *q, const llm_gen_params *d, llm_err *err)
{
    memset(q, 0, sizeof *q);
    q->p = *d;
    q->stop_ids_cap = d->n_stop_ids + 2;
    q->stop = calloc(d->n_stop + 1, sizeof *q->stop);
    q->stop_ids = malloc(q->stop_ids_cap * sizeof *q->stop_ids);
    q->bias = malloc((d->sampling.n_logit_bias + 1) * sizeof *q->bias);
    int oom = !q->stop || !q->stop_ids || !q->bias;
    for (size_t i = 0; !oom && i < d->n_stop; i++) oom = !(q->stop[i] = strdup(d->stop[i]));
    if (oom) {
        q->p.n_stop = 0;
        llm_gen_request_free(q);
        return llm_errf(err, "out of memory");
    }
    if (d->n_stop_ids) memcpy(q->stop_ids, d->stop_ids, d->n_stop_ids * sizeof *q->stop_ids);
    if (d->sampling.n_logit_bias) memcpy(q->bias, d->sampling.logit_bias, d->sampling.n_logit_bias * sizeof *q->bias);
    relink(q);
    return 0;
}

int llm_gen_request_stop_id(llm_gen_request *q, uint32_t id, llm_err *err)
{
    if (q->p.n_stop_ids == q->stop_ids_cap) {
        uint32_t *n = realloc(q->stop_ids, (q->stop_ids_cap * 2 + 2) * sizeof *n);
        if (!n) return llm_errf(err, "out of memory");
        q->stop_ids = n;
        q->stop_ids_cap = q->stop_ids_cap * 2 + 2;
    }
    q->stop_ids[q->p.n_stop_ids++] = id;
    relink(q);
    return 0;
}

const char *llm_gen_params_problem(const llm_gen_params *p, const char **field)
{
    const llm_sampling *s = &p->sampling;
    const char *dummy;
    if (!field) field = &dummy;
    if (!(s->temperature >= 0)) return *field = "temperature", "temperature must be 0 or more";
    if (!(s->top_p > 0 && s->top_p <= 1)) return *field = "top_p", "top_p must be above 0 and at most 1";
    if (!(s->min_p >= 0 && s->min_p < 1)) return *field = "min_p", "min_p must be at least 0 and below 1";
    if (!(s->repetition_penalty > 0)) return *field = "repetition_penalty", "the repetition penalty must be above 0";
    if (!(fabs(s->presence_penalty) <= 2)) return *field = "presence_penalty", "the presence penalty must be within -2..2";
    if (!(fabs(s->frequency_penalty) <= 2))
        return *field = "frequency_penalty", "the frequency penalty must be within -2..2";
    if (p->beams == 1) return *field = "beams", "beams must be 2 or more (0: no beam search)";
    if (p->beams >= 2 && p->n > p->beams) return *field = "n", "n must be at most the number of beams";
    return *field = NULL, NULL;
}

/* ---- fields ---- */

static int get_number(const json_t *o, const char *k, double *v, const char **field, llm_err *err)
{
    json_t *x = json_object_get(o, k);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_number(x)) return *field = k, llm_errf(err, "\"%s\" must be a number", k);
    *v = json_number_value(x);
    return 0;
}

static int get_count(const json_t *o, const char *k, size_t *v, size_t min, size_t max, const char **field,
                     llm_err *err)
{
    json_t *x = json_object_get(o, k);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_integer(x) || json_integer_value(x) < (json_int_t)min || (uint64_t)json_integer_value(x) > max)
        return *field = k, llm_errf(err, "\"%s\" must be an integer from %zu to %zu", k, min, max);
    *v = (size_t)json_integer_value(x);
    return 0;
}

static int read_stop(llm_gen_request *q, json_t *x, llm_err *err)
{
    size_t n = json_is_array(x) ? json_array_size(x) : 1;
    for (size_t i = 0; i < n; i++)
        if (!json_is_string(json_is_array(x) ? json_array_get(x, i) : x))
            return llm_errf(err, "\"stop\" must be a string or a list of strings");
    char **st = calloc(n + 1, sizeof *st);
    if (!st) return llm_errf(err, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (!(st[i] = strdup(json_string_value(json_is_array(x) ? json_array_get(x, i) : x)))) {
            for (size_t k = 0; k < i; k++) free(st[k]);
            free(st);
            return llm_errf(err, "out of memory");
        }
    for (size_t i = 0; i < q->p.n_stop; i++) free(q->stop[i]);
    free(q->stop);
    q->stop = st;
    q->p.n_stop = n;
    return 0;
}

static int read_bias(llm_gen_request *q, json_t *x, llm_err *err)
{
    if (!json_is_object(x)) return llm_errf(err, "\"logit_bias\" must be an object of token ids to biases");
    llm_logit_bias *nb = malloc((json_object_size(x) + 1) * sizeof *nb);
    if (!nb) return llm_errf(err, "out of memory");
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(x, key, v) {
        char *end;
        unsigned long id = strtoul(key, &end, 10);
        if (!*key || *end || *key == '-' || id > UINT32_MAX) {
            free(nb);
            return llm_errf(err, "\"logit_bias\": '%s' is not a token id", key);
        }
        if (!json_is_number(v) || !(fabs(json_number_value(v)) <= 100)) {
            free(nb);
            return llm_errf(err, "\"logit_bias\": the bias of %s must be a number in -100..100", key);
        }
        nb[n++] = (llm_logit_bias){(uint32_t)id, (float)json_number_value(v)};
    }
    free(q->bias);
    q->bias = nb;
    q->p.sampling.n_logit_bias = n;
    return 0;
}

int llm_gen_request_read(llm_gen_request *q, const json_t *o, const char **field, llm_err *err)
{
    const char *dummy;
    if (!field) field = &dummy;
    *field = NULL;
    llm_gen_params *p = &q->p;
    llm_sampling *s = &p->sampling;
    size_t seed_v = (size_t)p->seed, k = s->top_k;
    if (get_number(o, "temperature", &s->temperature, field, err) || get_number(o, "top_p", &s->top_p, field, err) ||
        get_number(o, "min_p", &s->min_p, field, err) ||
        get_number(o, "repetition_penalty", &s->repetition_penalty, field, err) ||
        get_number(o, "presence_penalty", &s->presence_penalty, field, err) ||
        get_number(o, "frequency_penalty", &s->frequency_penalty, field, err) ||
        get_number(o, "length_penalty", &p->length_penalty, field, err) ||
        get_count(o, "top_k", &k, 0, 1 << 24, field, err) || get_count(o, "seed", &seed_v, 0, SIZE_MAX, field, err) ||
        get_count(o, "max_tokens", &p->max_tokens, 1, 1 << 24, field, err) ||
        get_count(o, "n", &p->n, 1, 1024, field, err) || get_count(o, "beams", &p->beams, 0, LLM_GEN_MAX_BEAMS, field, err) ||
        get_count(o, "top_logprobs", &p->top_logprobs, 0, LLM_GEN_MAX_TOP_LOGPROBS, field, err))
        return -1;
    s->top_k = k;
    p->seed = seed_v;
    json_t *x = json_object_get(o, "ignore_eos");
    if (x && !json_is_null(x)) {
        if (!json_is_boolean(x)) return *field = "ignore_eos", llm_errf(err, "\"ignore_eos\" must be true or false");
        p->ignore_eos = json_is_true(x);
    }
    if ((x = json_object_get(o, "stop")) && !json_is_null(x) && read_stop(q, x, err)) return *field = "stop", -1;
    if ((x = json_object_get(o, "logit_bias")) && !json_is_null(x) && read_bias(q, x, err))
        return *field = "logit_bias", -1;
    relink(q);
    const char *bad = llm_gen_params_problem(p, field);
    return bad ? llm_errf(err, "%s", bad) : 0;
}

/* ---- chat ---- */

int llm_gen_chat_format(const char *name, const char *tpl, llm_chat_format *fmt, int *has, int *unrecognised,
                        llm_err *err)
{
    *has = 0, *unrecognised = 0, *fmt = LLM_CHAT_NONE;
    if (name) {
        if (llm_chat_format_parse(name, fmt) || *fmt == LLM_CHAT_NONE)
            return llm_errf(err, "the chat template must be chatml, llama2 or llama3, not '%s'", name);
        *has = 1;
    } else if (tpl) {
        *has = (!llm_chat_format_parse(tpl, fmt) || !llm_chat_format_detect(tpl, fmt)) && *fmt != LLM_CHAT_NONE;
        *unrecognised = !*has;
    }
    return 0;
}

int llm_gen_encode_messages(const llm_tokenizer *tok, llm_tok_scratch *ts, llm_chat_format f, json_t *messages,
                            llm_chat_segments *segs, llm_ids *ids, uint32_t *end_id, int *has_end, llm_err *err)
{
    *has_end = 0;
    json_t *rec = json_pack("{sO}", "messages", messages);
    if (!rec) return llm_errf(err, "out of memory");
    llm_chat_segments_reset(segs);
    int rc = llm_chat_render(f, rec, segs, err) || llm_chat_generation_prompt(f, segs, err) ||
             llm_chat_encode(tok, ts, segs, ids, err);
    json_decref(rec);
    if (rc) return -1;
    const char *end = llm_chat_end_token(f);
    if (end && llm_tok_special(tok, end, end_id))
        return llm_errf(err, "the chat template's end token '%s' is not in the tokenizer", end);
    *has_end = end != NULL;
    return 0;
}
