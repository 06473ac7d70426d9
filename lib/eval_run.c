/* One evaluation from start to result: see eval_run.h. */
#include "clock.h"
#include "eval_run.h"
#include "eval_gen.h"
#include "eval_lm.h"
#include "eval_match.h"
#include "fileio.h"
#include "seqset.h"
#include "unicode.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- what every task type shares: the examples, their shots, bad ones ---- */

typedef struct {
    const llm_eval_task *t;
    const llm_eval_opts *o;
    const llm_eval_example **pool;
    size_t n_pool;
    uint64_t shots;
    size_t *pick;
    const llm_eval_example **shot;
    size_t skipped, truncated;
} run_ctx;

static void run_ctx_free(run_ctx *c)
{
    free(c->pool), free(c->pick), free(c->shot);
}

static int run_ctx_init(run_ctx *c, const llm_eval_task *t, const llm_eval_opts *o, llm_err *err)
{
    memset(c, 0, sizeof *c);
    c->t = t;
    c->o = o;
    c->skipped = t->bad;
    c->shots = o->has_shots ? o->shots : t->has_shots ? t->shots : 0;
    const llm_eval_task *src = o->pool ? o->pool : t;
    c->pool = malloc((src->n ? src->n : 1) * sizeof *c->pool);
    c->pick = malloc((c->shots ? c->shots : 1) * sizeof *c->pick);
    c->shot = malloc((c->shots ? c->shots : 1) * sizeof *c->shot);
    if (!c->pool || !c->pick || !c->shot) { run_ctx_free(c); return llm_errf(err, "out of memory"); }
    for (size_t i = 0; i < src->n; i++)
        if (o->pool || src->ex[i].fewshot) c->pool[c->n_pool++] = &src->ex[i];
    if (c->shots > c->n_pool) {
        llm_errf(err, "%s: %llu shots, but %s has %zu few-shot examples", t->path, (unsigned long long)c->shots,
                 o->pool ? o->pool->path : "the task (lines with \"split\":\"train\")", c->n_pool);
        run_ctx_free(c);
        return -1;
    }
    return 0;
}

uint64_t llm_eval_task_total(const llm_eval_task *t, const llm_eval_opts *o)
{
    uint64_t n = t->n - t->n_fewshot;
    return o->limit && o->limit < n ? o->limit : n;
}

/* The examples to score, in file order (the first `limit`). */
static size_t scored_examples(const llm_eval_task *t, const llm_eval_opts *o, const llm_eval_example ***out)
{
    size_t n = 0, total = (size_t)llm_eval_task_total(t, o);
    const llm_eval_example **v = malloc((total ? total : 1) * sizeof *v);
    if (!v) return SIZE_MAX;
    for (size_t i = 0; i < t->n && n < total; i++)
        if (!t->ex[i].fewshot) v[n++] = &t->ex[i];
    *out = v;
    return n;
}

static void context_text(run_ctx *c, const llm_eval_example *e, uint64_t index, llm_strbuf *out)
{
    if (c->shots) {
        llm_eval_draw(c->n_pool, (size_t)c->shots, c->o->seed, index, c->pick);
        for (size_t i = 0; i < c->shots; i++) c->shot[i] = c->pool[c->pick[i]];
    }
    llm_eval_context_text(c->t, e, c->shot, (size_t)c->shots, out);
}

/* An example that cannot be scored: skipped with a warning (skip_bad), or
 * the error. */
static int bad_example(run_ctx *c, const llm_eval_example *e, llm_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad_example(run_ctx *c, const llm_eval_example *e, llm_err *err, const char *fmt, ...)
{
    char msg[600];
    int n = snprintf(msg, sizeof msg, "%s:%zu: ", c->t->path, e->line);
    if (n < 0 || (size_t)n >= sizeof msg) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - n, fmt, ap);
    va_end(ap);
    if (!c->o->skip_bad) return llm_errf(err, "%s", msg);
    c->skipped++;
    if (c->o->warn) c->o->warn(c->o->warn_ctx, msg);
    return 0;
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

static void detail(const llm_eval_opts *o, llm_strbuf *b)
{
    if (o->detail && !b->failed) o->detail(o->detail_ctx, b->data, b->len);
}

/* ---- mc and cloze: log-likelihoods ---- */

typedef struct {
    llm_eval_req req;
    llm_ids ctx, cont;
    size_t chars;            /* of the choice, for acc_norm */
} choice_req;

typedef struct {
    const llm_eval_example *e;
    size_t first;            /* its first request */
    int truncated;
    uint64_t index;          /* among the examples scored: its shots' draw */
} scored;

/* ,"shots":[LINE,...] of the shots drawn for the example at index i */
static void shot_lines(run_ctx *c, uint64_t index, llm_strbuf *b)
{
    if (!c->shots) return;
    llm_eval_draw(c->n_pool, (size_t)c->shots, c->o->seed, index, c->pick);
    llm_sb_puts(b, ",\"shots\":[");
    for (size_t i = 0; i < c->shots; i++) llm_sb_printf(b, "%s%zu", i ? "," : "", c->pool[c->pick[i]]->line);
    llm_sb_puts(b, "]");
}

typedef struct {
    llm_eval_progress_fn fn;
    void *ctx;
    const size_t *example_of;   /* request -> the index of its example */
} req_progress;

static void on_requests(void *ctx, uint64_t done)
{
    req_progress *p = ctx;
    if (p->fn && done) p->fn(p->ctx, p->example_of[done - 1] + 1);
}

static int run_loglik(llm_infer *m, llm_eval_tok *et, run_ctx *c, llm_eval_result *r, llm_err *err)
{
    const llm_eval_task *t = c->t;
    const llm_eval_opts *o = c->o;
    size_t ctx_len = llm_infer_config(m)->ctx_len;
    const llm_eval_example **ex;
    size_t n_ex = scored_examples(t, o, &ex);
    if (n_ex == SIZE_MAX) return llm_errf(err, "out of memory");
    size_t n_req = 0, cap = 0, n_done = 0;
    choice_req *q = NULL;
    scored *sc = malloc((n_ex ? n_ex : 1) * sizeof *sc);
    llm_strbuf ctx = {0}, cont = {0};
    int rc = sc ? 0 : llm_errf(err, "out of memory");
    for (size_t i = 0; !rc && i < n_ex; i++) {
        const llm_eval_example *e = ex[i];
        ctx.len = 0;
        context_text(c, e, i, &ctx);
        size_t first = n_req;
        int bad = 0, truncated = 0;
        for (size_t k = 0; !rc && !bad && k < e->n_choices; k++) {
            if (n_req == cap) {
                cap = cap ? cap * 2 : 256;
                choice_req *nq = realloc(q, cap * sizeof *nq);
                if (!nq) { rc = llm_errf(err, "out of memory"); break; }
                q = nq;
            }
            choice_req *cr = &q[n_req++];
            memset(cr, 0, sizeof *cr);
            cont.len = 0;
            llm_eval_choice_text(t, e, k, &cont);
            llm_err e2;
            if (ctx.failed || cont.failed) rc = llm_errf(err, "out of memory");
            else if (llm_eval_encode_pair(et, ctx.data ? ctx.data : "", ctx.len, cont.data, cont.len, &cr->ctx, &cr->cont, &e2))
                bad = 1, rc = bad_example(c, e, err, "%s%s", t->type == LLM_EVAL_MC ? "a choice: " : "", e2.msg);
            else if (cr->cont.n > ctx_len)
                bad = 1, rc = bad_example(c, e, err, "the answer is %zu tokens; the model's context holds %zu", cr->cont.n,
                                          ctx_len);
            if (rc || bad) break;
            if (cr->ctx.n + cr->cont.n - 1 > ctx_len) {   /* keep the end of the context */
                size_t drop = cr->ctx.n + cr->cont.n - 1 - ctx_len;
                memmove(cr->ctx.v, cr->ctx.v + drop, (cr->ctx.n - drop) * sizeof *cr->ctx.v);
                cr->ctx.n -= drop;
                truncated = 1;
            }
            cr->chars = utf8_chars(e->choices[k]);
        }
        if (rc || bad) {   /* drop the example's requests */
            while (n_req > first) {
                n_req--;
                llm_ids_free(&q[n_req].ctx);
                llm_ids_free(&q[n_req].cont);
            }
            continue;
        }
        sc[n_done++] = (scored){e, first, truncated, i};
        c->truncated += truncated;
    }
    llm_sb_free(&ctx);
    size_t *example_of = rc ? NULL : malloc((n_req ? n_req : 1) * sizeof *example_of);
    llm_eval_req *reqs = rc ? NULL : malloc((n_req ? n_req : 1) * sizeof *reqs);
    if (!rc && (!example_of || !reqs)) rc = llm_errf(err, "out of memory");
    for (size_t i = 0; !rc && i < n_done; i++)
        for (size_t k = 0; k < sc[i].e->n_choices; k++) {
            choice_req *cr = &q[sc[i].first + k];
            reqs[sc[i].first + k] = (llm_eval_req){cr->ctx.v, cr->ctx.n, cr->cont.v, cr->cont.n, 0, 0};
            example_of[sc[i].first + k] = i;
        }
    uint64_t run = 0;
    req_progress rp = {o->progress, o->progress_ctx, example_of};
    if (!rc && n_req && llm_eval_loglik(m, reqs, n_req, o->batch, &run, on_requests, &rp, err)) rc = -1;
    /* the metrics */
    double right = 0, right_norm = 0, lp_sum = 0;
    for (size_t i = 0; !rc && i < n_done; i++) {
        const llm_eval_example *e = sc[i].e;
        const llm_eval_req *rq = reqs + sc[i].first;
        cont.len = 0;
        if (t->type == LLM_EVAL_MC) {
            size_t best = 0, best_norm = 0;
            const choice_req *cr = q + sc[i].first;
            for (size_t k = 1; k < e->n_choices; k++) {
                if (rq[k].logprob > rq[best].logprob) best = k;
                if (rq[k].logprob / (double)cr[k].chars > rq[best_norm].logprob / (double)cr[best_norm].chars)
                    best_norm = k;
            }
            right += best == e->gold;
            right_norm += best_norm == e->gold;
            llm_sb_printf(&cont, "{\"line\":%zu,\"gold\":%zu,\"pred\":%zu,\"pred_norm\":%zu,\"logprobs\":[", e->line,
                          e->gold, best, best_norm);
            for (size_t k = 0; k < e->n_choices; k++) llm_sb_printf(&cont, "%s%.6f", k ? "," : "", rq[k].logprob);
            llm_sb_puts(&cont, "],\"tokens\":[");
            for (size_t k = 0; k < e->n_choices; k++) llm_sb_printf(&cont, "%s%zu", k ? "," : "", rq[k].n_cont);
            llm_sb_printf(&cont, "],\"truncated\":%s", sc[i].truncated ? "true" : "false");
            shot_lines(c, sc[i].index, &cont);
            llm_sb_puts(&cont, "}\n");
        } else {
            right += rq[0].greedy;
            lp_sum += rq[0].logprob;
            llm_sb_printf(&cont, "{\"line\":%zu,\"answer\":", e->line);
            llm_sb_json_string(&cont, e->choices[0]);
            llm_sb_printf(&cont, ",\"logprob\":%.6f,\"greedy\":%s,\"tokens\":%zu,\"truncated\":%s", rq[0].logprob,
                          rq[0].greedy ? "true" : "false", rq[0].n_cont, sc[i].truncated ? "true" : "false");
            shot_lines(c, sc[i].index, &cont);
            llm_sb_puts(&cont, "}\n");
        }
        detail(o, &cont);
    }
    if (!rc) {
        double n = (double)n_done;
        llm_eval_set_metric(r, "acc", n_done ? right / n : NAN);
        if (t->type == LLM_EVAL_MC) llm_eval_set_metric(r, "acc_norm", n_done ? right_norm / n : NAN);
        else llm_eval_set_metric(r, "ppl", n_done ? exp(-lp_sum / n) : NAN);
        llm_eval_set_count(r, "examples", n_done);
        llm_eval_set_count(r, "tokens", run);
        r->examples = n_done;
        r->tokens = run;
    }
    llm_sb_free(&cont);
    for (size_t i = 0; i < n_req; i++) llm_ids_free(&q[i].ctx), llm_ids_free(&q[i].cont);
    free(q), free(sc), free(ex), free(reqs), free(example_of);
    return rc;
}

/* ---- gen: greedy generation, matched with the answers ---- */

static int run_gen(llm_infer *m, llm_eval_tok *et, run_ctx *c, llm_eval_result *r, llm_err *err)
{
    const llm_eval_task *t = c->t;
    const llm_eval_opts *o = c->o;
    size_t ctx_len = llm_infer_config(m)->ctx_len;
    const llm_eval_example **ex;
    size_t n_ex = scored_examples(t, o, &ex);
    if (n_ex == SIZE_MAX) return llm_errf(err, "out of memory");
    llm_eval_gen_req *reqs = calloc(n_ex ? n_ex : 1, sizeof *reqs);
    llm_ids *ids = calloc(n_ex ? n_ex : 1, sizeof *ids);
    const llm_eval_example **used = malloc((n_ex ? n_ex : 1) * sizeof *used);
    uint64_t *index = malloc((n_ex ? n_ex : 1) * sizeof *index);
    int *truncated = calloc(n_ex ? n_ex : 1, sizeof *truncated);
    llm_strbuf b = {0};
    int rc = reqs && ids && used && index && truncated ? 0 : llm_errf(err, "out of memory");
    size_t n = 0;
    for (size_t i = 0; !rc && i < n_ex; i++) {
        const llm_eval_example *e = ex[i];
        b.len = 0;
        context_text(c, e, i, &b);
        if (b.failed) { rc = llm_errf(err, "out of memory"); break; }
        llm_ids *p = &ids[n];
        p->n = 0;
        llm_err e2;
        if (llm_tok_encode(et->tok, et->ts, b.data, b.len, LLM_TOK_ADD_SPECIAL, p, &e2)) {
            rc = bad_example(c, e, err, "%s", e2.msg);
            continue;
        }
        size_t max = llm_eval_example_max_tokens(t, e), room = ctx_len > max ? ctx_len - max : 1;
        if (p->n > room) {   /* keep the end of the prompt */
            memmove(p->v, p->v + (p->n - room), room * sizeof *p->v);
            p->n = room;
            truncated[n] = 1;
            c->truncated++;
        }
        char *const *stop;
        size_t n_stop;
        llm_eval_example_stop(t, e, &stop, &n_stop);
        reqs[n] = (llm_eval_gen_req){.prompt = p->v, .n_prompt = p->n, .max_tokens = max,
                                     .stop = (const char *const *)stop, .n_stop = n_stop};
        index[n] = i;
        used[n++] = e;
    }
    uint64_t run = 0;
    if (!rc && n && llm_eval_generate(m, et->tok, reqs, n, o->batch, &run, o->progress, o->progress_ctx, err)) rc = -1;
    double right = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const llm_eval_example *e = used[i];
        llm_eval_match_kind kind = llm_eval_example_match(t, e);
        int ok = 0;
        for (size_t k = 0; !ok && k < e->n_choices; k++)
            ok = llm_eval_matches(kind, reqs[i].text, reqs[i].text_len, e->choices[k], e->regex ? e->regex[k] : NULL);
        right += ok;
        b.len = 0;
        llm_sb_printf(&b, "{\"line\":%zu,\"text\":", e->line);
        llm_sb_json_string(&b, reqs[i].text);
        llm_sb_printf(&b, ",\"correct\":%s,\"match\":\"%s\",\"tokens\":%zu,\"prompt_tokens\":%zu,\"truncated\":%s",
                      ok ? "true" : "false", llm_eval_match_name(kind), reqs[i].n_tokens, reqs[i].n_prompt,
                      truncated[i] ? "true" : "false");
        shot_lines(c, index[i], &b);
        llm_sb_puts(&b, "}\n");
        detail(o, &b);
    }
    if (!rc) {
        llm_eval_set_metric(r, "acc", n ? right / (double)n : NAN);
        llm_eval_set_count(r, "examples", n);
        llm_eval_set_count(r, "tokens", run);
        r->examples = n;
        r->tokens = run;
    }
    for (size_t i = 0; i < n_ex; i++) {
        if (reqs) free(reqs[i].text);
        if (ids) llm_ids_free(&ids[i]);
    }
    llm_sb_free(&b);
    free(reqs), free(ids), free(used), free(index), free(truncated), free(ex);
    return rc;
}

int llm_eval_run_task(llm_infer *m, llm_eval_tok *et, const llm_eval_task *t, const llm_eval_opts *o,
                      llm_eval_result *r, llm_err *err)
{
    double t0 = llm_seconds();
    run_ctx c;
    if (o->pool && o->pool->type != t->type)
        return llm_errf(err, "%s: few-shot examples of type %s for a task of type %s", o->pool->path,
                        llm_eval_type_name(o->pool->type), llm_eval_type_name(t->type));
    if (run_ctx_init(&c, t, o, err)) return -1;
    r->type = llm_eval_type_name(t->type);
    r->has_shots = 1;
    r->shots = c.shots;
    r->seed = o->seed;
    int rc = t->type == LLM_EVAL_GEN ? run_gen(m, et, &c, r, err) : run_loglik(m, et, &c, r, err);
    if (!rc) {
        llm_eval_set_count(r, "skipped", c.skipped);
        llm_eval_set_count(r, "truncated", c.truncated);
        r->seconds = llm_seconds() - t0;
    }
    run_ctx_free(&c);
    return rc;
}

/* ---- language modelling ---- */

static void lm_result(const llm_eval_lm_totals *tt, int has_bytes, const char *runs_name, llm_eval_result *r)
{
    double loss = tt->scored ? tt->nll / (double)tt->scored : NAN;
    r->type = "lm";
    llm_eval_set_metric(r, "loss", loss);
    llm_eval_set_metric(r, "ppl", exp(loss));
    if (has_bytes) llm_eval_set_metric(r, "bpb", tt->bytes ? tt->nll / log(2.0) / (double)tt->bytes : NAN);
    llm_eval_set_count(r, runs_name, tt->runs);
    llm_eval_set_count(r, "tokens", tt->scored);
    if (has_bytes) llm_eval_set_count(r, "bytes", tt->bytes);
    r->examples = tt->runs;
    r->tokens = tt->run;
}

/* A warning when the data's manifest names another tokenizer than the model's. */
static void check_tokenizer(llm_seqset *set, const llm_tokenizer *tok, const char *path, const llm_eval_opts *o)
{
    const char *text = llm_seqset_manifest(set);
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    const char *name = j ? json_string_value(json_object_get(j, "tokenizer")) : NULL;
    if (name && *name && strcmp(name, llm_tok_name(tok)) && o->warn) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s: tokenized with %s, but the model's tokenizer is %s", path, name, llm_tok_name(tok));
        o->warn(o->warn_ctx, msg);
    }
    json_decref(j);
}

int llm_eval_run_data(llm_infer *m, const llm_tokenizer *tok, const char *path, const llm_eval_opts *o,
                      llm_eval_result *r, llm_err *err)
{
    double t0 = llm_seconds();
    llm_seqset *set;
    if (llm_seqset_open(path, &set, err)) return -1;
    const llm_config *c = llm_infer_config(m);
    uint32_t *bytes = NULL;
    int rc = tok ? llm_eval_token_bytes(tok, c->vocab_size, &bytes, err) : 0;
    if (!rc && tok) check_tokenizer(set, tok, path, o);
    llm_eval_lm *e = rc ? NULL : llm_eval_lm_new(m, bytes, err);
    if (!rc && !e) rc = -1;
    if (!rc) rc = llm_eval_lm_seqset(e, set, path, o->limit, o->progress, o->progress_ctx, err);
    if (!rc) {
        lm_result(llm_eval_lm_totals_of(e), tok != NULL, "sequences", r);
        r->seconds = llm_seconds() - t0;
    }
    llm_eval_lm_free(e);
    free(bytes);
    llm_seqset_close(set);
    return rc;
}

int llm_eval_run_text(llm_infer *m, llm_eval_tok *et, const char *path, size_t window, size_t stride,
                      const llm_eval_opts *o, llm_eval_result *r, llm_err *err)
{
    double t0 = llm_seconds();
    const llm_config *c = llm_infer_config(m);
    if (!window || window > c->ctx_len) window = c->ctx_len;
    if (!stride || stride > window) stride = window;
    llm_mapped f;
    if (llm_map_file(&f, path, err)) return -1;
    llm_ids ids = {0};
    int rc = 0, oom = 0;
    for (size_t i = 0; i < et->prefix.n; i++) oom |= llm_ids_push(&ids, et->prefix.v[i]);
    if (!et->prefix.n && et->has_eos) oom |= llm_ids_push(&ids, et->eos);
    size_t first = ids.n ? ids.n : 1;
    const char *text = (const char *)f.data;
    size_t valid = llm_utf8_valid_prefix(text, f.size);
    if (valid < f.size) rc = llm_errf(err, "%s: not UTF-8 text (byte %zu)", path, valid);
    for (size_t at = 0; !oom && !rc && at < f.size;) {   /* in pieces that encode as the whole does */
        size_t left = f.size - at, cut = f.size;
        if (left > (2u << 20)) cut = at + llm_tok_cut_point(et->tok, 0, text + at, left, 1u << 20);
        if (llm_tok_encode(et->tok, et->ts, text + at, cut - at, 0, &ids, err)) rc = llm_err_prefix(err, "%s", path);
        at = cut;
    }
    if (oom) rc = llm_errf(err, "out of memory");
    uint32_t *bytes = NULL;
    if (!rc) rc = llm_eval_token_bytes(et->tok, c->vocab_size, &bytes, err);
    llm_eval_lm *e = rc ? NULL : llm_eval_lm_new(m, bytes, err);
    if (!rc && !e) rc = -1;
    if (!rc && llm_eval_lm_document(e, ids.v, ids.n, first, window, stride, o->limit, o->progress, o->progress_ctx, err))
        rc = llm_err_prefix(err, "%s", path);
    if (!rc) {
        lm_result(llm_eval_lm_totals_of(e), 1, "windows", r);
        r->seconds = llm_seconds() - t0;
    }
    llm_eval_lm_free(e);
    free(bytes);
    llm_ids_free(&ids);
    llm_unmap_file(&f);
    return rc;
}
