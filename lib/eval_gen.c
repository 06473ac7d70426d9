/* Greedy generation for generation tasks: see eval_gen.h. */
#include "eval_gen.h"
#include "generate.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t done, generated;
    int oom;
    llm_eval_progress_fn progress;
    void *pctx;
} gen_state;

static void on_event(void *ctx, const llm_gen_event *e)
{
    gen_state *st = ctx;
    if (!e->done) return;
    llm_eval_gen_req *r = e->user;
    if (!(r->text = malloc(e->text_len + 1))) { st->oom = 1; return; }
    memcpy(r->text, e->text, e->text_len);
    r->text[e->text_len] = 0;
    r->text_len = e->text_len;
    r->n_tokens = e->n_ids;
    st->generated += e->n_ids;
    if (st->progress) st->progress(st->pctx, ++st->done);
}

int llm_eval_generate(llm_infer *m, const llm_tokenizer *tok, llm_eval_gen_req *reqs, size_t n, size_t batch,
                      uint64_t *tokens_run, llm_eval_progress_fn progress, void *pctx, llm_err *err)
{
    gen_state st = {.progress = progress, .pctx = pctx};
    if (n == 0) return 0;
    llm_gen *g = llm_gen_new(m, tok, batch ? batch : 1, on_event, &st, err);
    if (!g) return -1;
    uint64_t prompts = 0;
    int rc = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        llm_gen_params p = {0};
        p.sampling.temperature = 0;
        p.sampling.top_p = 1;
        p.max_tokens = reqs[i].max_tokens;
        p.n = 1;
        p.stop = reqs[i].stop;
        p.n_stop = reqs[i].n_stop;
        reqs[i].text = NULL;
        rc = llm_gen_add(g, reqs[i].prompt, reqs[i].n_prompt, &p, &reqs[i], err);
        prompts += reqs[i].n_prompt;
    }
    int more = 1;
    while (!rc && more > 0)
        if ((more = llm_gen_step(g, err)) < 0) rc = -1;
    llm_gen_free(g);
    if (!rc && st.oom) rc = llm_errf(err, "out of memory");
    if (rc) {
        for (size_t i = 0; i < n; i++) free(reqs[i].text), reqs[i].text = NULL;
        return -1;
    }
    if (tokens_run) *tokens_run += prompts + st.generated;
    return 0;
}
