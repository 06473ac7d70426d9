/* The engine thread: every job through one llm_gen, a step at a time (see
 * server.h for who holds what). */
#include "clock.h"
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    server *S;
    llm_gen *g;
    job *held;               /* jobs added to g, not yet released by the engine */
} engine;

void engine_submit(server *S, job *j)
{
    pthread_mutex_lock(&S->lock);
    j->refs++;
    j->state = JOB_NEW;
    j->next = NULL;
    if (S->inbox_tail) S->inbox_tail->next = j;
    else S->inbox = j;
    S->inbox_tail = j;
    S->waiting++;
    pthread_cond_signal(&S->work);
    pthread_mutex_unlock(&S->lock);
}

static void *dup_or_null(const void *p, size_t n)
{
    if (!n) return NULL;
    void *q = malloc(n);
    if (q) memcpy(q, p, n);
    return q;
}

/* A token or done event of a job's choice (engine thread; takes the lock). */
static void on_event(void *ctx, const llm_gen_event *e)
{
    engine *E = ctx;
    server *S = E->S;
    job *j = e->user;
    pthread_mutex_lock(&S->lock);
    if (!j->t_first) {
        j->t_first = llm_seconds();
        hist_add(&S->mt.ttft, j->t_first - j->t_submit);
    }
    job_choice *c = &j->ch[e->choice];
    if (!e->done) {
        if (j->stream && c->nev == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 16;
            tok_event *ev = realloc(c->ev, cap * sizeof *ev);
            if (ev) c->ev = ev, c->cap = cap;
        }
        if (j->stream && c->nev < c->cap) {
            tok_event *t = &c->ev[c->nev++];
            memset(t, 0, sizeof *t);
            t->delta = malloc(e->delta_len + 1);
            if (t->delta) memcpy(t->delta, e->delta, e->delta_len), t->delta_len = e->delta_len;
            t->id = e->id;
            t->logprob = e->logprob;
            t->top_ids = dup_or_null(e->top_ids, e->n_top * sizeof *e->top_ids);
            t->top_lps = dup_or_null(e->top_lps, e->n_top * sizeof *e->top_lps);
        }
        pthread_mutex_unlock(&S->lock);
        return;
    }
    if (llm_gen_result_copy(&c->r, e)) {   /* the text is lost, not the request: it ends empty */
        c->r.finish = e->finish;
        c->r.text = NULL;
    }
    c->done = 1;
    j->completion_tokens += e->n_ids;
    j->cached_tokens = e->cached_tokens;
    S->mt.generation_tokens += e->n_ids;
    if (++j->ndone == j->nch) {
        j->state = JOB_DONE;
        j->t_done = llm_seconds();
        hist_add(&S->mt.latency, j->t_done - j->t_submit);
        S->mt.cached_tokens += e->cached_tokens;
    }
    pthread_mutex_unlock(&S->lock);
}

/* Drops the engine's hold on jobs that are over (done, failed, cancelled);
 * under the lock. */
static void release_finished(engine *E)
{
    job **pp = &E->held;
    while (*pp) {
        job *j = *pp;
        if (j->state == JOB_RUNNING) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        job_release(j);
    }
}

static void update_gauges(engine *E)
{
    server *S = E->S;
    llm_gen_counts gc;
    llm_gen_stats(E->g, &gc);
    llm_infer_kv kv;
    llm_infer_kv_stats(S->m, &kv);
    size_t inbox = 0;
    for (job *j = S->inbox; j; j = j->next) inbox++;
    S->waiting = gc.waiting + inbox;
    S->running = gc.running;
    S->running_seqs = gc.running_seqs;
    S->kv_used = kv.used;
    S->kv_max = kv.max;
    S->kv_reserved = gc.kv_reserved;
}

static void *engine_main(void *arg)
{
    engine *E = arg;
    server *S = E->S;
    llm_err err;
    pthread_mutex_lock(&S->lock);
    while (!S->quit) {
        job *in = S->inbox;
        S->inbox = S->inbox_tail = NULL;
        pthread_mutex_unlock(&S->lock);
        while (in) {   /* new jobs join the batch */
            job *j = in;
            in = j->next;
            int rc = llm_gen_add(E->g, j->prompt.v, j->prompt.n, &j->gr.p, j, &err);
            pthread_mutex_lock(&S->lock);
            if (rc) {
                j->state = JOB_FAILED;
                j->error_status = 400;
                snprintf(j->error, sizeof j->error, "%s", err.msg);
            } else {
                j->state = JOB_RUNNING;
                S->mt.prompt_tokens += j->prompt.n;
            }
            j->next = E->held;
            E->held = j;
            pthread_mutex_unlock(&S->lock);
        }
        pthread_mutex_lock(&S->lock);
        for (job *j = E->held; j; j = j->next)
            if (j->cancel && j->state == JOB_RUNNING) {
                llm_gen_cancel(E->g, j);
                j->state = JOB_CANCELLED;
                S->mt.cancelled++;
            }
        release_finished(E);
        update_gauges(E);
        pthread_cond_broadcast(&S->progress);
        if (!llm_gen_pending(E->g)) {
            if (!S->inbox && !S->quit) pthread_cond_wait(&S->work, &S->lock);
            continue;
        }
        pthread_mutex_unlock(&S->lock);
        int rc = llm_gen_step(E->g, &err);
        pthread_mutex_lock(&S->lock);
        if (rc < 0) {   /* not expected: every job running fails, the generator starts afresh */
            fprintf(stderr, "llm-serve: generation failed: %s\n", err.msg);
            for (job *j = E->held; j; j = j->next)
                if (j->state == JOB_RUNNING) {
                    j->state = JOB_FAILED;
                    j->error_status = 500;
                    snprintf(j->error, sizeof j->error, "generation failed: %s", err.msg);
                    llm_gen_cancel(E->g, j);
                }
        }
        release_finished(E);
        update_gauges(E);
        pthread_cond_broadcast(&S->progress);
    }
    /* stopping: whatever is left is cancelled */
    for (job *j = E->held; j; j = j->next)
        if (j->state == JOB_RUNNING) {
            llm_gen_cancel(E->g, j);
            j->state = JOB_CANCELLED;
        }
    for (job *j = S->inbox; j; j = j->next) j->state = JOB_CANCELLED;
    release_finished(E);
    while (S->inbox) {
        job *j = S->inbox;
        S->inbox = j->next;
        job_release(j);
    }
    S->inbox_tail = NULL;
    pthread_cond_broadcast(&S->progress);
    pthread_mutex_unlock(&S->lock);
    llm_gen_free(E->g);
    free(E);
    return NULL;
}

int engine_start(server *S, pthread_t *thread)
{
    engine *E = calloc(1, sizeof *E);
    llm_err err;
    if (!E) return -1;
    E->S = S;
    if (!(E->g = llm_gen_new(S->m, S->tok, S->max_seqs, on_event, E, &err))) {
        fprintf(stderr, "llm-serve: %s\n", err.msg);
        free(E);
        return -1;
    }
    llm_gen_share_prefixes(E->g, 1);
    if (pthread_create(thread, NULL, engine_main, E)) {
        llm_gen_free(E->g);
        free(E);
        return -1;
    }
    return 0;
}
