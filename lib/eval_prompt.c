/* Few-shot prompts and their tokens: see eval_prompt.h. */
#include "eval_prompt.h"
#include "sample.h"

#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void llm_eval_draw(size_t n, size_t k, uint64_t seed, uint64_t index, size_t *out)
{
    if (k > n) k = n;
    uint64_t x = seed;
    uint64_t s = splitmix64(&x) ^ index;
    llm_rng rng;
    llm_rng_seed(&rng, splitmix64(&s));
    size_t *perm = malloc((n ? n : 1) * sizeof *perm);
    if (!perm) {   /* no memory: the first k, still deterministic */
        for (size_t i = 0; i < k; i++) out[i] = i;
        return;
    }
    for (size_t i = 0; i < n; i++) perm[i] = i;
    for (size_t i = 0; i < k; i++) {
        size_t j = i + (size_t)(llm_rng_uniform(&rng) * (double)(n - i));
        if (j >= n) j = n - 1;
        size_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
        out[i] = perm[i];
    }
    free(perm);
}

static void answer_of(const llm_eval_task *t, const llm_eval_example *e, llm_strbuf *out)
{
    llm_sb_puts(out, e->context);
    if (!e->joined) llm_sb_puts(out, t->target_delim);
    llm_sb_puts(out, e->choices[t->type == LLM_EVAL_MC ? e->gold : 0]);
}

void llm_eval_context_text(const llm_eval_task *t, const llm_eval_example *e, const llm_eval_example *const *shots,
                           size_t k, llm_strbuf *out)
{
    llm_sb_puts(out, t->description);
    for (size_t i = 0; i < k; i++) {
        answer_of(t, shots[i], out);
        llm_sb_puts(out, t->fewshot_delim);
    }
    llm_sb_puts(out, e->context);
}

void llm_eval_choice_text(const llm_eval_task *t, const llm_eval_example *e, size_t i, llm_strbuf *out)
{
    if (!e->joined) llm_sb_puts(out, t->target_delim);
    llm_sb_puts(out, e->choices[i]);
}

int llm_eval_tok_init(llm_eval_tok *et, const llm_tokenizer *tok, llm_err *err)
{
    memset(et, 0, sizeof *et);
    et->tok = tok;
    if (!(et->ts = llm_tok_scratch_new(tok))) return llm_errf(err, "out of memory");
    et->has_eos = llm_tok_eos(tok, &et->eos) == 0;
    /* the template's prefix: what it puts before the tokens of a probe text */
    llm_ids plain = {0}, with = {0};
    int rc = llm_tok_encode(tok, et->ts, "x", 1, 0, &plain, err) ||
             llm_tok_encode(tok, et->ts, "x", 1, LLM_TOK_ADD_SPECIAL, &with, err);
    if (!rc) {
        size_t p = 0;
        while (p + plain.n <= with.n && memcmp(with.v + p, plain.v, plain.n * sizeof *plain.v)) p++;
        if (p + plain.n > with.n) p = 0;   /* not found: no prefix */
        for (size_t i = 0; !rc && i < p; i++)
            if (llm_ids_push(&et->prefix, with.v[i])) rc = llm_errf(err, "out of memory");
    }
    llm_ids_free(&plain);
    llm_ids_free(&with);
    if (rc) llm_eval_tok_free(et);
    return rc ? -1 : 0;
}

void llm_eval_tok_free(llm_eval_tok *et)
{
    llm_tok_scratch_free(et->ts);
    llm_ids_free(&et->prefix);
    memset(et, 0, sizeof *et);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

int llm_eval_encode_pair(llm_eval_tok *et, const char *ctx, size_t n_ctx, const char *cont, size_t n_cont,
                         llm_ids *ctx_ids, llm_ids *cont_ids, llm_err *err)
{
    ctx_ids->n = cont_ids->n = 0;
    size_t keep = n_ctx;
    while (keep && is_space(ctx[keep - 1])) keep--;
    char *whole = malloc(n_ctx + n_cont + 1);
    if (!whole) return llm_errf(err, "out of memory");
    memcpy(whole, ctx, n_ctx);
    memcpy(whole + n_ctx, cont, n_cont);
    whole[n_ctx + n_cont] = 0;
    llm_ids own = {0}, all = {0};
    int rc = llm_tok_encode(et->tok, et->ts, whole, keep, 0, &own, err) ? -1 : 0;
    if (!rc) rc = llm_tok_encode(et->tok, et->ts, whole, n_ctx + n_cont, 0, &all, err) ? -1 : 0;
    free(whole);
    size_t shared = 0;
    while (!rc && shared < own.n && shared < all.n && own.v[shared] == all.v[shared]) shared++;
    int oom = 0;
    for (size_t i = 0; !rc && i < et->prefix.n; i++) oom |= llm_ids_push(ctx_ids, et->prefix.v[i]);
    for (size_t i = 0; !rc && i < shared; i++) oom |= llm_ids_push(ctx_ids, all.v[i]);
    for (size_t i = shared; !rc && i < all.n; i++) oom |= llm_ids_push(cont_ids, all.v[i]);
    if (!rc && !oom && ctx_ids->n == 0) {
        if (!et->has_eos) rc = llm_errf(err, "the context is empty and the tokenizer has no end-of-text token to start from");
        else oom |= llm_ids_push(ctx_ids, et->eos);
    }
    if (!rc && oom) rc = llm_errf(err, "out of memory");
    if (!rc && cont_ids->n == 0) rc = llm_errf(err, "the answer has no tokens");
    llm_ids_free(&own);
    llm_ids_free(&all);
    return rc ? -1 : 0;
}
