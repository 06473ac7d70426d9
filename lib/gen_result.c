/* A finished choice copied out of its done event: see generate.h. Apart
 * from generate.c so that code that only keeps results (llm-serve's
 * answers, their fuzz target) does not pull in the model. */
#include "generate.h"

#include <stdlib.h>
#include <string.h>

static void *copy_of(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (q && n) memcpy(q, p, n);
    return q;
}

void llm_gen_result_free(llm_gen_result *r)
{
    free(r->text), free(r->ids), free(r->top_ids), free(r->lps), free(r->top_lps);
    memset(r, 0, sizeof *r);
}

int llm_gen_result_copy(llm_gen_result *r, const llm_gen_event *e)
{
    r->text = copy_of(e->text, e->text_len + 1);
    r->ids = copy_of(e->ids, e->n_ids * sizeof *r->ids);
    r->lps = copy_of(e->logprobs, e->n_ids * sizeof *r->lps);
    r->top_ids = copy_of(e->all_top_ids, e->n_ids * e->n_top * sizeof *r->top_ids);
    r->top_lps = copy_of(e->all_top_lps, e->n_ids * e->n_top * sizeof *r->top_lps);
    if (!r->text || !r->ids || !r->lps || !r->top_ids || !r->top_lps) {
        llm_gen_result_free(r);
        return -1;
    }
    r->text[e->text_len] = 0;
    r->text_len = e->text_len;
    r->n = e->n_ids;
    r->n_top = e->n_top;
    r->score = e->score;
    r->finish = e->finish;
    return 0;
}
