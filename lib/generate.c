/* Generation for many requests at once: see generate.h. */
#include "generate.h"

#include "strbuf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A sampled choice, or a running beam. */
typedef struct {
    llm_infer_seq *seq;
    llm_rng rng;
    llm_ids hist;            /* prompt + generated: the repetition penalty's tokens */
    double *lps;             /* (generated) raw log-probabilities */
    uint32_t *top_ids;       /* (generated, n_top) */
    double *top_lps;
    size_t cap;
    double score;            /* sum of lps */
    llm_strbuf text;         /* sampling: the decoded text so far */
    size_t emitted;          /* bytes of text already given as deltas */
    uint32_t pending;        /* the token to run next */
    const float *logits;     /* this step's, once run */
    int running;
} choice;

/* A closed beam-search hypothesis. */
typedef struct {
    uint32_t *ids;
    double *lps, *top_lps;
    uint32_t *top_ids;
    size_t n;
    double score;            /* normalised by length */
    int stopped;             /* closed by an end token */
} hyp;

typedef struct request {
    struct request *next;
    void *user;
    llm_gen_params p;
    char **stop;             /* owned copies of p's lists */
    uint32_t *stop_ids;
    llm_logit_bias *bias;
    size_t n_prompt;         /* choices' hist starts with the prompt */
    size_t n_cached;         /* its first tokens whose KV blocks were found (prefix sharing) */
    size_t kv_blocks;        /* the KV blocks it could need (reserved while it runs) */
    int started, prefilled;
    choice *ch;
    size_t nch, live;        /* choices (sampling: n; beams: beams), running ones */
    hyp *hyps;
    size_t nhyps;
    llm_infer_seq *spare[LLM_GEN_MAX_BEAMS];   /* beam search: sequences held for beams to come */
    size_t nspare;
} request;

struct llm_gen {
    llm_infer *m;
    const llm_tokenizer *tok;
    llm_tok_scratch *ts;
    llm_sampler *sampler;
    llm_gen_event_fn fn;
    void *ctx;
    size_t max_seqs, used_seqs, V, tok_vocab;
    size_t kv_reserved;      /* KV blocks the running requests could need */
    int share;
    llm_infer_seq **pool;    /* free sequences */
    size_t npool;
    uint32_t eos;
    int has_eos;
    request *head, *tail;
    /* a step's batch */
    llm_infer_seq **bseq;
    uint32_t *btok;
    size_t *bcount, bcap, btok_cap;
    float *logits;
    size_t logits_rows;
    llm_strbuf scratch;
    llm_ids shown;
};

llm_gen *llm_gen_new(llm_infer *m, const llm_tokenizer *tok, size_t max_seqs, llm_gen_event_fn fn, void *ctx,
                     llm_err *err)
{
    llm_gen *g = calloc(1, sizeof *g);
    if (!g) { llm_errf(err, "out of memory"); return NULL; }
    g->m = m;
    g->tok = tok;
    g->fn = fn;
    g->ctx = ctx;
    g->max_seqs = max_seqs ? max_seqs : 1;
    g->V = llm_infer_config(m)->vocab_size;
    g->tok_vocab = llm_tok_vocab_size(tok);
    g->has_eos = llm_tok_eos(tok, &g->eos) == 0;
    g->ts = llm_tok_scratch_new(tok);
    g->sampler = llm_sampler_new(g->V);
    g->pool = calloc(g->max_seqs, sizeof *g->pool);
    if (!g->ts || !g->sampler || !g->pool) {
        llm_gen_free(g);
        llm_errf(err, "out of memory");
        return NULL;
    }
    return g;
}

static void choice_free(choice *c)
{
    llm_infer_seq_free(c->seq);
    llm_ids_free(&c->hist);
    free(c->lps);
    free(c->top_ids);
    free(c->top_lps);
    llm_sb_free(&c->text);
}

static void request_free(request *r)
{
    for (size_t i = 0; i < r->nch; i++) choice_free(&r->ch[i]);
    free(r->ch);
    for (size_t i = 0; i < r->nspare; i++) llm_infer_seq_free(r->spare[i]);
    for (size_t i = 0; i < r->nhyps; i++) {
        free(r->hyps[i].ids);
        free(r->hyps[i].lps);
        free(r->hyps[i].top_ids);
        free(r->hyps[i].top_lps);
    }
    free(r->hyps);
    for (size_t i = 0; i < r->p.n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    free(r->bias);
    free(r);
}

void llm_gen_free(llm_gen *g)
{
    if (!g) return;
    while (g->head) {
        request *r = g->head;
        g->head = r->next;
        request_free(r);
    }
    for (size_t i = 0; i < g->npool; i++) llm_infer_seq_free(g->pool[i]);
    free(g->pool);
    llm_tok_scratch_free(g->ts);
    llm_sampler_free(g->sampler);
    free(g->bseq);
    free(g->btok);
    free(g->bcount);
    free(g->logits);
    llm_sb_free(&g->scratch);
    llm_ids_free(&g->shown);
    free(g);
}

size_t llm_gen_pending(const llm_gen *g)
{
    size_t n = 0;
    for (const request *r = g->head; r; r = r->next) n++;
    return n;
}

static size_t seqs_needed(const llm_gen_params *p) { return p->beams >= 2 ? p->beams : p->n; }

/* The most KV blocks a request can hold at once: each choice's positions up
 * to max_tokens or the context, the prompt's full blocks counted once (the
 * choices share them; a full block is never written again). */
static size_t kv_blocks_needed(const llm_gen *g, size_t n_prompt, const llm_gen_params *p)
{
    size_t ctx = llm_infer_config(g->m)->ctx_len, len = n_prompt + p->max_tokens, nch = seqs_needed(p);
    if (len > ctx || len < n_prompt) len = ctx;
    size_t per = (len + LLM_KV_BLOCK - 1) / LLM_KV_BLOCK;
    return nch * per - (nch - 1) * (n_prompt / LLM_KV_BLOCK);
}

static size_t kv_budget(const llm_gen *g)
{
    llm_infer_kv st;
    llm_infer_kv_stats(g->m, &st);
    return st.max;
}

void llm_gen_share_prefixes(llm_gen *g, int on)
{
    g->share = on;
    llm_infer_share_prefixes(g->m, on);
}

void llm_gen_stats(const llm_gen *g, llm_gen_counts *st)
{
    memset(st, 0, sizeof *st);
    for (const request *r = g->head; r; r = r->next) {
        if (!r->started) { st->waiting++; continue; }
        st->running++;
        st->running_seqs += r->nch;
    }
    st->kv_reserved = g->kv_reserved;
}

int llm_gen_add(llm_gen *g, const uint32_t *prompt, size_t n, const llm_gen_params *p, void *user, llm_err *err)
{
    const llm_config *c = llm_infer_config(g->m);
    if (n == 0) return llm_errf(err, "an empty prompt: nothing to continue");
    if (n >= c->ctx_len) return llm_errf(err, "the prompt is %zu tokens; the model's context is %zu", n, c->ctx_len);
    for (size_t i = 0; i < n; i++)
        if (prompt[i] >= g->V) return llm_errf(err, "prompt token %u is outside the model's vocabulary of %zu", prompt[i], g->V);
    if (p->n < 1) return llm_errf(err, "n must be at least 1");
    if (p->max_tokens < 1) return llm_errf(err, "max_tokens must be at least 1");
    if (p->beams > LLM_GEN_MAX_BEAMS) return llm_errf(err, "at most %d beams", LLM_GEN_MAX_BEAMS);
    if (p->beams >= 2 && p->n > p->beams) return llm_errf(err, "n (%zu) must be at most the number of beams (%zu)", p->n, p->beams);
    if (p->top_logprobs > LLM_GEN_MAX_TOP_LOGPROBS)
        return llm_errf(err, "top_logprobs must be at most %d", LLM_GEN_MAX_TOP_LOGPROBS);
    if (seqs_needed(p) > g->max_seqs)
        return llm_errf(err, "the request needs %zu sequences; at most %zu run at once", seqs_needed(p), g->max_seqs);
    size_t budget = kv_budget(g), kvb = kv_blocks_needed(g, n, p);
    if (budget && kvb > budget)
        return llm_errf(err, "the request could need %zu KV cache blocks (prompt and max_tokens for %zu choices); "
                             "the cache has %zu", kvb, seqs_needed(p), budget);
    request *r = calloc(1, sizeof *r);
    if (!r) return llm_errf(err, "out of memory");
    r->user = user;
    r->p = *p;
    if (r->p.top_logprobs > g->V) r->p.top_logprobs = g->V;   /* a vocabulary smaller than what is asked */
    r->n_prompt = n;
    r->kv_blocks = kvb;
    r->nch = seqs_needed(p);
    r->ch = calloc(r->nch, sizeof *r->ch);
    r->stop = calloc(p->n_stop + 1, sizeof *r->stop);
    r->stop_ids = malloc((p->n_stop_ids + 1) * sizeof *r->stop_ids);
    r->bias = malloc((p->sampling.n_logit_bias + 1) * sizeof *r->bias);
    int oom = !r->ch || !r->stop || !r->stop_ids || !r->bias;
    for (size_t i = 0; !oom && i < p->n_stop; i++) oom = !(r->stop[i] = strdup(p->stop[i]));
    if (!oom) {
        if (p->n_stop_ids) memcpy(r->stop_ids, p->stop_ids, p->n_stop_ids * sizeof *r->stop_ids);
        if (p->sampling.n_logit_bias)
            memcpy(r->bias, p->sampling.logit_bias, p->sampling.n_logit_bias * sizeof *r->bias);
        r->p.sampling.logit_bias = r->bias;
    }
    for (size_t i = 0; !oom && i < r->nch; i++) {
        choice *ch = &r->ch[i];
        llm_rng_seed(&ch->rng, p->seed + i);
        for (size_t k = 0; !oom && k < n; k++) oom = llm_ids_push(&ch->hist, prompt[k]) != 0;
    }
    if (oom) { request_free(r); return llm_errf(err, "out of memory"); }
    if (g->tail) g->tail->next = r;
    else g->head = r;
    g->tail = r;
    return 0;
}

/* ---- sequences ---- */

static llm_infer_seq *seq_take(llm_gen *g, llm_err *err)
{
    if (g->npool) return g->pool[--g->npool];
    llm_infer_seq *s = llm_infer_seq_new(g->m, err);
    if (s) g->used_seqs++;
    return s;
}

static void seq_give(llm_gen *g, llm_infer_seq **s)
{
    if (!*s) return;
    llm_infer_seq_truncate(*s, 0);
    g->pool[g->npool++] = *s;
    *s = NULL;
}

static size_t seqs_free(const llm_gen *g) { return g->max_seqs - g->used_seqs + g->npool; }

/* ---- text ---- */

/* Complete UTF-8 prefix length of the bytes (a token may end mid-character). */
static size_t utf8_complete(const char *s, size_t n)
{
    size_t i = n;
    for (size_t back = 0; back < 4 && i > 0; back++) {
        unsigned char c = (unsigned char)s[i - 1];
        if (c < 0x80) return n;
        if (c >= 0xc0) {
            size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            return n - (i - 1) >= need ? n : i - 1;
        }
        i--;
    }
    return n;
}

/* Where the first stop string starts in text, or -1. */
static long stop_at(const request *r, const char *text, size_t len)
{
    long first = -1;
    for (size_t i = 0; i < r->p.n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        const char *hit = sl ? memmem(text, len, r->stop[i], sl) : NULL;
        if (hit && (first < 0 || hit - text < first)) first = hit - text;
    }
    return first;
}

/* Bytes at the end of text that could still become the start of a stop
 * string: held back from the deltas until they cannot. */
static size_t stop_prefix(const request *r, const char *text, size_t len)
{
    size_t hold = 0;
    for (size_t i = 0; i < r->p.n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
            if (k <= len && !memcmp(text + len - k, r->stop[i], k)) { hold = k; break; }
    }
    return hold;
}

/* Decodes the generated ids (those the tokenizer has: a model may have more
 * rows than its tokenizer has tokens) into out. */
static int decode(llm_gen *g, const uint32_t *ids, size_t n, llm_strbuf *out, llm_err *err)
{
    g->shown.n = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < g->tok_vocab && llm_ids_push(&g->shown, ids[i])) return llm_errf(err, "out of memory");
    out->len = 0;
    if (llm_tok_decode(g->tok, g->shown.v, g->shown.n, out, err)) return -1;
    llm_sb_add(out, "", 1);   /* NUL, not counted */
    out->len--;
    return 0;
}

static int is_end(const llm_gen *g, const request *r, uint32_t id)
{
    if (g->has_eos && id == g->eos && !r->p.ignore_eos) return 1;
    for (size_t i = 0; i < r->p.n_stop_ids; i++)
        if (r->stop_ids[i] == id) return 1;
    return 0;
}

static int grow(choice *c, size_t need, size_t k)
{
    if (need <= c->cap) return 0;
    size_t cap = c->cap ? c->cap * 2 : 16;
    while (cap < need) cap *= 2;
    double *l = realloc(c->lps, cap * sizeof *l);
    if (l) c->lps = l;
    uint32_t *ti = realloc(c->top_ids, cap * (k ? k : 1) * sizeof *ti);
    if (ti) c->top_ids = ti;
    double *tl = realloc(c->top_lps, cap * (k ? k : 1) * sizeof *tl);
    if (tl) c->top_lps = tl;
    if (!l || !ti || !tl) return -1;
    c->cap = cap;
    return 0;
}

/* Appends token id (log-probability lp, alternatives from logits) to c. */
static int append(llm_gen *g, const request *r, choice *c, uint32_t id, double lp, const float *logits, llm_err *err)
{
    size_t n = c->hist.n - r->n_prompt, k = r->p.top_logprobs;
    if (grow(c, n + 1, k) || llm_ids_push(&c->hist, id)) return llm_errf(err, "out of memory");
    c->lps[n] = lp;
    c->score += lp;
    if (k) llm_top_logprobs(g->sampler, logits, k, c->top_ids + n * k, c->top_lps + n * k);
    return 0;
}

static void emit_done(llm_gen *g, const request *r, size_t index, const uint32_t *ids, const double *lps,
                      const uint32_t *top_ids, const double *top_lps, size_t n, const llm_strbuf *text, double score,
                      const char *finish)
{
    llm_gen_event e = {.user = r->user, .choice = index, .done = 1, .text = text->data ? text->data : "",
                       .text_len = text->len, .ids = ids, .logprobs = lps, .all_top_ids = top_ids,
                       .all_top_lps = top_lps, .n_top = r->p.top_logprobs, .n_ids = n, .score = score,
                       .finish = finish, .prompt_tokens = r->n_prompt, .cached_tokens = r->n_cached};
    g->fn(g->ctx, &e);
}

/* ---- sampling ---- */

static void finish_choice(llm_gen *g, request *r, size_t index, const char *finish)
{
    choice *c = &r->ch[index];
    size_t n = c->hist.n - r->n_prompt;
    emit_done(g, r, index, c->hist.v + r->n_prompt, c->lps, c->top_ids, c->top_lps, n, &c->text, c->score, finish);
    c->running = 0;
    r->live--;
    seq_give(g, &c->seq);
}

/* Chooses choice index's next token from its logits; reports it. */
static int sample_next(llm_gen *g, request *r, size_t index, llm_err *err)
{
    choice *c = &r->ch[index];
    const llm_config *cfg = llm_infer_config(g->m);
    size_t out_n = c->hist.n - r->n_prompt;
    llm_sample_context ctx = {c->hist.v, c->hist.n, c->hist.v + r->n_prompt, out_n};
    double lp;
    uint32_t id = llm_sample_ex(g->sampler, c->logits, &r->p.sampling, &ctx, &c->rng, &lp);
    if (is_end(g, r, id)) { finish_choice(g, r, index, "stop"); return 0; }
    if (append(g, r, c, id, lp, c->logits, err)) return -1;
    out_n++;
    if (decode(g, c->hist.v + r->n_prompt, out_n, &c->text, err)) return -1;
    long at = stop_at(r, c->text.data, c->text.len);
    if (at >= 0) c->text.len = (size_t)at, c->text.data[at] = 0;
    size_t ready = at >= 0 ? c->text.len : utf8_complete(c->text.data, c->text.len - stop_prefix(r, c->text.data, c->text.len));
    if (ready < c->emitted) ready = c->emitted;
    size_t k = r->p.top_logprobs;
    llm_gen_event e = {.user = r->user, .choice = index, .id = id, .logprob = lp,
                       .top_ids = k ? c->top_ids + (out_n - 1) * k : NULL, .top_lps = k ? c->top_lps + (out_n - 1) * k : NULL,
                       .n_top = k, .delta = c->text.data + c->emitted, .delta_len = ready - c->emitted,
                       .prompt_tokens = r->n_prompt, .cached_tokens = r->n_cached};
    g->fn(g->ctx, &e);
    c->emitted = ready;
    if (at >= 0) finish_choice(g, r, index, "stop");
    else if (out_n >= r->p.max_tokens || llm_infer_seq_pos(c->seq) >= cfg->ctx_len) finish_choice(g, r, index, "length");
    else c->pending = id;
    return 0;
}

/* ---- beam search ---- */

typedef struct {
    double score, lp;
    size_t beam;
    uint32_t id;
} cand;

static int cand_order(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->beam != y->beam) return x->beam < y->beam ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int hyp_order(const void *a, const void *b)
{
    const hyp *x = a, *y = b;
    return x->score > y->score ? -1 : x->score < y->score;
}

/* Closes beam c as a hypothesis of `len` tokens (an end token that closes
 * it counts in len but is not kept) whose log-probabilities sum to sum. */
static int close_hyp(request *r, const choice *c, size_t len, double sum, int stopped, llm_err *err)
{
    size_t n = c->hist.n - r->n_prompt, k = r->p.top_logprobs;
    hyp h = {.n = n, .score = sum / pow((double)len, r->p.length_penalty), .stopped = stopped};
    h.ids = malloc((n + 1) * sizeof *h.ids);
    h.lps = malloc((n + 1) * sizeof *h.lps);
    h.top_ids = malloc((n * k + 1) * sizeof *h.top_ids);
    h.top_lps = malloc((n * k + 1) * sizeof *h.top_lps);
    hyp *grown = realloc(r->hyps, (r->nhyps + 1) * sizeof *r->hyps);
    if (grown) r->hyps = grown;
    if (!h.ids || !h.lps || !h.top_ids || !h.top_lps || !grown) {
        free(h.ids), free(h.lps), free(h.top_ids), free(h.top_lps);
        return llm_errf(err, "out of memory");
    }
    memcpy(h.ids, c->hist.v + r->n_prompt, n * sizeof *h.ids);
    if (n) memcpy(h.lps, c->lps, n * sizeof *h.lps);
    if (n && k) {
        memcpy(h.top_ids, c->top_ids, n * k * sizeof *h.top_ids);
        memcpy(h.top_lps, c->top_lps, n * k * sizeof *h.top_lps);
    }
    r->hyps[r->nhyps++] = h;
    qsort(r->hyps, r->nhyps, sizeof *r->hyps, hyp_order);
    while (r->nhyps > r->p.beams) {   /* only the best `beams` matter */
        hyp *w = &r->hyps[--r->nhyps];
        free(w->ids), free(w->lps), free(w->top_ids), free(w->top_lps);
    }
    return 0;
}

static int beams_done(llm_gen *g, request *r, llm_err *err)
{
    for (size_t i = 0; i < r->nch; i++) {
        r->ch[i].running = 0;
        seq_give(g, &r->ch[i].seq);
    }
    while (r->nspare) seq_give(g, &r->spare[--r->nspare]);
    r->live = 0;
    static const hyp none = {.ids = NULL};
    for (size_t i = 0; i < r->p.n; i++) {   /* (fewer hypotheses than n only from a vocabulary under 2 x beams) */
        const hyp *h = i < r->nhyps ? &r->hyps[i] : &none;
        if (decode(g, h->ids, h->n, &g->scratch, err)) return -1;
        long at = stop_at(r, g->scratch.data, g->scratch.len);
        if (at >= 0) g->scratch.len = (size_t)at, g->scratch.data[at] = 0;
        emit_done(g, r, i, h->ids, h->lps, h->top_ids, h->top_lps, h->n, &g->scratch, h->score,
                  h->stopped || at >= 0 ? "stop" : "length");
    }
    return 0;
}

/* One step of the search: every running beam has its logits. */
static int beam_step(llm_gen *g, request *r, llm_err *err)
{
    const llm_config *cfg = llm_infer_config(g->m);
    size_t B = r->p.beams, K = 2 * B, live = r->live, k = r->p.top_logprobs;
    size_t cur_len = r->ch[0].hist.n - r->n_prompt + 1;   /* with the token chosen now */
    cand *cands = malloc(live * K * sizeof *cands);
    uint32_t *ids = malloc(K * sizeof *ids);
    double *lps = malloc(K * sizeof *lps);
    if (!cands || !ids || !lps) { free(cands), free(ids), free(lps); return llm_errf(err, "out of memory"); }
    size_t nc = 0;
    for (size_t b = 0; b < live; b++) {
        size_t got = llm_top_logprobs(g->sampler, r->ch[b].logits, K, ids, lps);
        for (size_t j = 0; j < got; j++) cands[nc++] = (cand){r->ch[b].score + lps[j], lps[j], b, ids[j]};
    }
    free(ids), free(lps);
    qsort(cands, nc, sizeof *cands, cand_order);
    /* the next beams: the best candidates that are not end tokens */
    cand next[LLM_GEN_MAX_BEAMS];
    size_t nn = 0;
    int rc = 0;
    for (size_t i = 0; i < nc && nn < B && !rc; i++) {
        if (is_end(g, r, cands[i].id)) {
            if (i < B) rc = close_hyp(r, &r->ch[cands[i].beam], cur_len, cands[i].score, 1, err);
        } else {
            next[nn++] = cands[i];
        }
    }
    free(cands);
    if (rc) return -1;
    /* every parent's sequence goes to its first child; other children copy
     * it into the sequences of parents that have no child */
    choice old[LLM_GEN_MAX_BEAMS];
    memcpy(old, r->ch, live * sizeof *old);
    int has_child[LLM_GEN_MAX_BEAMS] = {0}, taken[LLM_GEN_MAX_BEAMS] = {0};
    for (size_t j = 0; j < nn; j++) has_child[next[j].beam] = 1;
    for (size_t b = 0; b < live; b++)
        if (!has_child[b]) r->spare[r->nspare++] = old[b].seq;
    choice fresh[LLM_GEN_MAX_BEAMS];
    memset(fresh, 0, sizeof fresh);
    for (size_t j = 0; j < nn && !rc; j++) {
        const choice *parent = &old[next[j].beam];
        choice *c = &fresh[j];
        if (!taken[next[j].beam]) {
            taken[next[j].beam] = 1;
            c->seq = parent->seq;
        } else {
            c->seq = r->spare[--r->nspare];
            llm_infer_seq_copy(c->seq, parent->seq);
        }
        size_t n = parent->hist.n - r->n_prompt;
        if (grow(c, n + 1, k)) { rc = llm_errf(err, "out of memory"); break; }
        for (size_t t = 0; t < parent->hist.n && !rc; t++)
            if (llm_ids_push(&c->hist, parent->hist.v[t])) rc = llm_errf(err, "out of memory");
        if (n) memcpy(c->lps, parent->lps, n * sizeof *c->lps);
        if (n && k) {
            memcpy(c->top_ids, parent->top_ids, n * k * sizeof *c->top_ids);
            memcpy(c->top_lps, parent->top_lps, n * k * sizeof *c->top_lps);
        }
        c->score = parent->score;
        c->logits = parent->logits;
        if (!rc && append(g, r, c, next[j].id, next[j].lp, parent->logits, err)) rc = -1;
        c->pending = next[j].id;
        c->running = 1;
    }
    /* the old beams' memory goes (their sequences have moved on), and that
     * of slots past them (the first step: choices made by llm_gen_add) */
    for (size_t b = 0; b < live; b++) {
        old[b].seq = NULL;
        choice_free(&old[b]);
    }
    for (size_t b = live; b < r->nch; b++) choice_free(&r->ch[b]);
    memcpy(r->ch, fresh, nn * sizeof *r->ch);
    memset(r->ch + nn, 0, (r->nch - nn) * sizeof *r->ch);
    r->live = nn;
    if (rc) return -1;
    int at_end = cur_len >= r->p.max_tokens || nn == 0 || llm_infer_seq_pos(r->ch[0].seq) >= cfg->ctx_len;
    if (at_end) {
        for (size_t j = 0; j < nn; j++)
            if (close_hyp(r, &r->ch[j], cur_len, r->ch[j].score, 0, err)) return -1;
        return beams_done(g, r, err);
    }
    if (r->nhyps >= B && r->ch[0].score / pow((double)cur_len, r->p.length_penalty) <= r->hyps[B - 1].score)
        return beams_done(g, r, err);
    return 0;
}

/* ---- the step ---- */

int llm_gen_cancel(llm_gen *g, void *user)
{
    int found = 0;
    request **pp = &g->head;
    g->tail = NULL;
    while (*pp) {
        request *r = *pp;
        if (r->user != user) {
            g->tail = r;
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        if (r->started) {
            g->kv_reserved -= r->kv_blocks;
            for (size_t i = 0; i < r->nch; i++) seq_give(g, &r->ch[i].seq);
            while (r->nspare) seq_give(g, &r->spare[--r->nspare]);
        }
        request_free(r);
        found = 1;
    }
    return found;
}

int llm_gen_step(llm_gen *g, llm_err *err)
{
    /* start queued requests, in order, while their sequences fit */
    for (request *r = g->head; r; r = r->next) {
        if (r->started) continue;
        if (seqs_free(g) < r->nch) break;
        size_t budget = kv_budget(g);
        if (budget && g->kv_reserved + r->kv_blocks > budget) break;
        if (!(r->ch[0].seq = seq_take(g, err))) return -1;
        r->n_cached = g->share ? llm_infer_seq_reuse(r->ch[0].seq, r->ch[0].hist.v, r->n_prompt) : 0;
        for (size_t i = 1; i < r->nch; i++) {
            llm_infer_seq **to = r->p.beams >= 2 ? &r->spare[r->nspare++] : &r->ch[i].seq;
            if (!(*to = seq_take(g, err))) return -1;
        }
        r->started = 1;
        g->kv_reserved += r->kv_blocks;
    }
    /* the batch: prompts to prefill, then every running choice's last token */
    size_t nseq = 0, ntok = 0;
    for (request *r = g->head; r; r = r->next) {
        if (!r->started) continue;
        if (!r->prefilled) nseq++, ntok += r->n_prompt - r->n_cached;
        else nseq += r->live, ntok += r->live;
    }
    if (nseq == 0) return g->head ? llm_errf(err, "internal: queued requests cannot start") : 0;
    if (nseq > g->bcap) {
        free(g->bseq), free(g->bcount);
        g->bseq = malloc(nseq * sizeof *g->bseq);
        g->bcount = malloc(nseq * sizeof *g->bcount);
        g->bcap = g->bseq && g->bcount ? nseq : 0;
        if (!g->bcap) return llm_errf(err, "out of memory");
    }
    if (ntok > g->btok_cap) {
        free(g->btok);
        g->btok = malloc(ntok * sizeof *g->btok);
        g->btok_cap = g->btok ? ntok : 0;
        if (!g->btok) return llm_errf(err, "out of memory");
    }
    if (nseq > g->logits_rows) {
        free(g->logits);
        g->logits = malloc(nseq * g->V * sizeof *g->logits);
        g->logits_rows = g->logits ? nseq : 0;
        if (!g->logits) return llm_errf(err, "out of memory");
    }
    size_t s = 0, t = 0;
    for (request *r = g->head; r; r = r->next) {
        if (!r->started) continue;
        if (!r->prefilled) {
            size_t run = r->n_prompt - r->n_cached;
            g->bseq[s] = r->ch[0].seq;
            g->bcount[s++] = run;
            memcpy(g->btok + t, r->ch[0].hist.v + r->n_cached, run * sizeof *g->btok);
            t += run;
            continue;
        }
        for (size_t i = 0; i < r->nch; i++)
            if (r->ch[i].running) {
                g->bseq[s] = r->ch[i].seq;
                g->bcount[s++] = 1;
                g->btok[t++] = r->ch[i].pending;
            }
    }
    if (llm_infer_batch(g->m, g->bseq, g->btok, g->bcount, nseq, g->logits, 0, err)) return -1;
    /* hand out the logits, then choose */
    s = 0;
    for (request *r = g->head; r; r = r->next) {
        if (!r->started) continue;
        if (!r->prefilled) {
            const float *row = g->logits + s++ * g->V;
            r->prefilled = 1;
            if (r->p.beams >= 2) {
                r->ch[0].logits = row;
                r->ch[0].running = 1;
                r->live = 1;
            } else {
                for (size_t i = 0; i < r->nch; i++) {
                    if (i) llm_infer_seq_copy(r->ch[i].seq, r->ch[0].seq);
                    r->ch[i].logits = row;
                    r->ch[i].running = 1;
                }
                r->live = r->nch;
            }
            continue;
        }
        for (size_t i = 0; i < r->nch; i++)
            if (r->ch[i].running) r->ch[i].logits = g->logits + s++ * g->V;
    }
    for (request *r = g->head; r; r = r->next) {
        if (!r->started) continue;
        if (r->p.beams >= 2) {
            if (beam_step(g, r, err)) return -1;
        } else {
            for (size_t i = 0; i < r->nch; i++)
                if (r->ch[i].running && sample_next(g, r, i, err)) return -1;
        }
    }
    /* requests with no choice running are done */
    request **pp = &g->head;
    g->tail = NULL;
    while (*pp) {
        request *r = *pp;
        if (r->started && r->live == 0) {
            *pp = r->next;
            g->kv_reserved -= r->kv_blocks;
            request_free(r);
        } else {
            g->tail = r;
            pp = &r->next;
        }
    }
    return g->head != NULL;
}
