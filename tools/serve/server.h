/* server.h — llm-serve's parts: the state they share, jobs (one generation
 * request on its way through the engine), the engine thread, the OpenAI
 * request and answer shapes, metrics, and the HTTP side.
 *
 * Threads: libmicrohttpd runs one thread per connection; one engine thread
 * owns the llm_gen (lib/generate.h) and runs its steps. They meet in jobs,
 * under one lock (server.lock): the HTTP side fills a job and submits it;
 * the engine adds it to the batch and records its events into it; the HTTP
 * side waits on server.progress (signalled after every step) and writes
 * what is new. A job is freed when both sides have let go of it (refs). */
#ifndef LLMUX_SERVE_SERVER_H
#define LLMUX_SERVE_SERVER_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "gen_request.h"
#include "generate.h"
#include "infer.h"
#include "strbuf.h"
#include "tokenizer.h"

/* ---- metrics ---- */

#define HIST_BUCKETS 12

typedef struct {
    uint64_t count[HIST_BUCKETS + 1];   /* the last: +Inf */
    double sum;
    uint64_t n;
} histogram;

typedef struct {
    uint64_t requests[6];    /* by status class: 2xx, 400, 401, 404, 413, other */
    uint64_t prompt_tokens, cached_tokens, generation_tokens, cancelled;
    histogram ttft, latency; /* seconds */
} metrics;

void hist_add(histogram *h, double seconds);
void metrics_count_status(metrics *mt, unsigned status);

/* ---- jobs ---- */

typedef struct {
    char *delta;             /* text now final */
    size_t delta_len;
    uint32_t id;
    double logprob;
    uint32_t *top_ids;       /* (n_top) */
    double *top_lps;
} tok_event;

typedef struct {
    tok_event *ev;           /* token events not yet taken by the stream */
    size_t nev, cap, taken;
    size_t streamed;         /* bytes of text the stream has written */
    int role_sent, final_sent;
    int done;
    llm_gen_result r;        /* once done */
} job_choice;

typedef enum { JOB_NEW, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED } job_state;

typedef struct job {
    struct job *next;        /* the engine's inbox, then its list of jobs it holds */
    int refs;
    /* filled by the HTTP side before submission */
    llm_gen_request gr;
    llm_ids prompt;
    int chat, stream, include_usage, logprobs;   /* logprobs: report them (top: gr.p.top_logprobs) */
    char id[48];
    long long created;       /* Unix seconds */
    double t_submit, deadline;
    /* under the lock */
    job_state state;
    int cancel;              /* the HTTP side gave up (client gone, deadline, stopping) */
    char error[600];
    int error_status;        /* 400: refused by the generator; 500: failed while running */
    job_choice *ch;
    size_t nch, ndone, completion_tokens, cached_tokens;
    double t_first, t_done;
} job;

/* ---- the server ---- */

typedef struct {
    /* options */
    const char *model_path, *host, *api_key, *model_name;
    unsigned port;
    size_t max_seqs, max_body, max_n, max_queue, max_tokens;   /* max_tokens 0: the context */
    double timeout;
    /* the model (set before ready) */
    llm_infer *m;
    llm_tokenizer *tok;
    llm_chat_format chat;
    int has_chat;
    size_t ctx, vocab;
    uint64_t kv_block_bytes;
    /* shared state, under lock */
    pthread_mutex_t lock;
    pthread_cond_t work, progress;
    int ready, stopping, quit;
    char load_error[512];
    job *inbox, *inbox_tail;
    size_t waiting, running, running_seqs, kv_used, kv_max, kv_reserved;   /* gauges, after each step */
    metrics mt;
    uint64_t seed_state;     /* for requests without a seed */
    long long started;       /* Unix seconds */
} server;

/* engine.c */
int engine_start(server *S, pthread_t *thread);
/* Hands j to the engine (one reference goes with it). Under no lock. */
void engine_submit(server *S, job *j);
/* Releases one reference; frees the job at the last. Under the lock. */
void job_release(job *j);
job *job_new(void);

/* openai.c: requests and answers. Each parse returns 0, or an HTTP status
 * with *msg / *param set (param NULL when none) and nothing submitted. */
int parse_completion(server *S, json_t *body, int chat, job *j, const char **param, char *msg, size_t msg_size);
/* /tokenize's body: "prompt" (text, encoded as for completions) or
 * "messages" (the chat prompt) into j->prompt. */
int parse_prompt(server *S, json_t *body, job *j, const char **param, char *msg, size_t msg_size);
/* The whole answer of a finished job (JSON text, malloc'd). */
char *answer_json(server *S, job *j);
/* Appends to out the SSE chunks of what is new in j (under the lock); sets
 * *end when the stream is complete ([DONE] appended). */
void stream_chunks(server *S, job *j, llm_strbuf *out, int *end);
/* {"error":{...}} (malloc'd) */
char *error_json(const char *message, const char *type, const char *param, const char *code);

/* metrics.c: the Prometheus text (under the lock) */
char *metrics_text(server *S);

/* http.c */
struct MHD_Daemon;
struct MHD_Daemon *http_start(server *S, unsigned *port_out, char *msg, size_t msg_size);

#endif
