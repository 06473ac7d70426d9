/* Jobs: one generation request between the HTTP side and the engine
 * (server.h). */
#include "server.h"

#include <stdlib.h>

job *job_new(void)
{
    job *j = calloc(1, sizeof *j);
    if (j) j->refs = 1;
    return j;
}

static void choice_free(job_choice *c)
{
    for (size_t i = 0; i < c->nev; i++) free(c->ev[i].delta), free(c->ev[i].top_ids), free(c->ev[i].top_lps);
    free(c->ev);
    llm_gen_result_free(&c->r);
}

void job_release(job *j)
{
    if (--j->refs > 0) return;
    for (size_t i = 0; j->ch && i < j->nch; i++) choice_free(&j->ch[i]);
    free(j->ch);
    llm_gen_request_free(&j->gr);
    llm_ids_free(&j->prompt);
    free(j);
}
