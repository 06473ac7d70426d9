/* The HTTP side: libmicrohttpd, one thread per connection. Reads a request
 * body (within --max-body and the deadline), routes it, and answers: at
 * once, after waiting for its job, or as a stream that waits for each new
 * chunk. A client that goes away while its job runs cancels the job. */
#include "clock.h"
#include "server.h"

#include "unicode.h"

#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

extern const char llmux_chat_html[], llmux_chat_html_end[];

/* what a connection's request has so far */
typedef struct {
    llm_strbuf body;
    double t_start;
    int too_big;
} request_ctx;

/* ---- answers ---- */

/* Queues r with status, counted in the metrics; r is released. */
static enum MHD_Result queue(server *S, struct MHD_Connection *c, unsigned status, struct MHD_Response *r)
{
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    pthread_mutex_lock(&S->lock);
    metrics_count_status(&S->mt, status);
    pthread_mutex_unlock(&S->lock);
    return ok;
}

/* Answers status with data (malloc'd, taken) of content type type, and an
 * Allow header when allow is not NULL (405). */
static enum MHD_Result respond_allow(server *S, struct MHD_Connection *c, unsigned status, const char *type, char *data,
                                     size_t len, const char *allow)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(data ? len : 0, data ? data : (void *)"", data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    return queue(S, c, status, r);
}

static enum MHD_Result respond(server *S, struct MHD_Connection *c, unsigned status, const char *type, char *data,
                               size_t len)
{
    return respond_allow(S, c, status, type, data, len, NULL);
}

static enum MHD_Result respond_json(server *S, struct MHD_Connection *c, unsigned status, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!s) return respond(S, c, 500, "application/json", NULL, 0);
    return respond(S, c, status, "application/json", s, strlen(s));
}

/* {"error":...} with status; allow: the methods of a 405's path. */
static enum MHD_Result respond_error_allow(server *S, struct MHD_Connection *c, unsigned status, const char *message,
                                           const char *param, const char *allow)
{
    const char *type = status == 401 ? "authentication_error"
                       : status == 404 ? "not_found_error"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    const char *code = status == 401 ? "invalid_api_key"
                       : status == 413 ? "request_too_large"
                       : status == 404 && param && !strcmp(param, "model") ? "model_not_found"
                       : strstr(message, "maximum context length") ? "context_length_exceeded"
                                                                   : NULL;
    char *s = error_json(message, type, param, code);
    return respond_allow(S, c, status, "application/json", s, s ? strlen(s) : 0, allow);
}

static enum MHD_Result respond_error(server *S, struct MHD_Connection *c, unsigned status, const char *message,
                                     const char *param)
{
    return respond_error_allow(S, c, status, message, param, NULL);
}

/* ---- the client ---- */

/* The peer has closed its end (or the socket failed). */
static int client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 1;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return 1;
    if (p.revents & POLLIN) {   /* data, or the end of the stream */
        char b;
        return recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
    }
    return 0;
}

static int api_key_ok(server *S, struct MHD_Connection *c)
{
    if (!S->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7)) return 0;
    const char *given = h + 7, *want = S->api_key;
    size_t gl = strlen(given), wl = strlen(want);
    /* constant time in the key's contents: every byte of the longer is read */
    unsigned diff = gl != wl;
    size_t n = gl > wl ? gl : wl;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(i < gl ? given[i] : 0) ^ (unsigned char)(i < wl ? want[i] : 0);
    return diff == 0;
}

/* ---- jobs ---- */

static void wait_progress(server *S, double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)(seconds * 1e9);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_cond_timedwait(&S->progress, &S->lock, &ts);
}

static void cancel_job(server *S, job *j)
{
    j->cancel = 1;
    pthread_cond_signal(&S->work);
}

static int job_over(const job *j) { return j->state == JOB_DONE || j->state == JOB_FAILED || j->state == JOB_CANCELLED; }

typedef struct {
    server *S;
    job *j;
    struct MHD_Connection *c;
    llm_strbuf buf;
    size_t off;
    int end;
} stream_ctx;

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    stream_ctx *sc = cls;
    server *S = sc->S;
    for (;;) {
        if (sc->off < sc->buf.len) {
            size_t n = sc->buf.len - sc->off < max ? sc->buf.len - sc->off : max;
            memcpy(out, sc->buf.data + sc->off, n);
            sc->off += n;
            return (ssize_t)n;
        }
        if (sc->end) return MHD_CONTENT_READER_END_OF_STREAM;
        sc->buf.len = sc->off = 0;
        pthread_mutex_lock(&S->lock);
        stream_chunks(S, sc->j, &sc->buf, &sc->end);
        if (!sc->buf.len && !sc->end) {
            if (client_gone(sc->c)) {   /* nobody to tell: the stream just ends */
                cancel_job(S, sc->j);
                pthread_mutex_unlock(&S->lock);
                return MHD_CONTENT_READER_END_OF_STREAM;
            }
            if (llm_seconds() > sc->j->deadline || S->quit) cancel_job(S, sc->j);
            wait_progress(S, 0.2);
        }
        pthread_mutex_unlock(&S->lock);
        if (sc->buf.failed) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void stream_free(void *cls)
{
    stream_ctx *sc = cls;
    server *S = sc->S;
    pthread_mutex_lock(&S->lock);
    if (!job_over(sc->j)) cancel_job(S, sc->j);
    job_release(sc->j);
    pthread_mutex_unlock(&S->lock);
    llm_sb_free(&sc->buf);
    free(sc);
}

static enum MHD_Result completion(server *S, struct MHD_Connection *c, request_ctx *rq, int chat)
{
    json_error_t je;
    json_t *body = json_loadb(rq->body.data ? rq->body.data : "", rq->body.len, 0, &je);
    if (!body) {
        char msg[300];
        snprintf(msg, sizeof msg, "the body is not JSON: %s (at byte %d)", je.text, je.position);
        return respond_error(S, c, 400, msg, NULL);
    }
    job *j = job_new();
    if (!j) {
        json_decref(body);
        return respond_error(S, c, 500, "out of memory", NULL);
    }
    char msg[512];
    const char *param = NULL;
    int status = parse_completion(S, body, chat, j, &param, msg, sizeof msg);
    json_decref(body);
    if (status) {
        enum MHD_Result r = respond_error(S, c, (unsigned)status, msg, param);
        pthread_mutex_lock(&S->lock);
        job_release(j);
        pthread_mutex_unlock(&S->lock);
        return r;
    }
    pthread_mutex_lock(&S->lock);
    int full = S->waiting >= S->max_queue, stopping = S->stopping;
    pthread_mutex_unlock(&S->lock);
    if (full || stopping) {
        pthread_mutex_lock(&S->lock);
        job_release(j);
        pthread_mutex_unlock(&S->lock);
        return respond_error(S, c, 503, stopping ? "the server is stopping" : "too many requests are waiting", NULL);
    }
    j->t_submit = rq->t_start;
    j->deadline = rq->t_start + S->timeout;
    engine_submit(S, j);
    if (j->stream) {
        stream_ctx *sc = calloc(1, sizeof *sc);
        struct MHD_Response *r = sc ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, sc,
                                                                         stream_free)
                                    : NULL;
        if (!r) {
            free(sc);
            pthread_mutex_lock(&S->lock);
            cancel_job(S, j);
            job_release(j);
            pthread_mutex_unlock(&S->lock);
            return respond_error(S, c, 500, "out of memory", NULL);
        }
        sc->S = S, sc->j = j, sc->c = c;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
        return queue(S, c, 200, r);
    }
    /* the whole answer: wait for the job */
    pthread_mutex_lock(&S->lock);
    int gone = 0, late = 0;
    while (!job_over(j)) {
        if ((gone = client_gone(c)) || (late = llm_seconds() > j->deadline) || S->quit) {
            cancel_job(S, j);
            break;
        }
        wait_progress(S, 0.2);
    }
    job_state st = j->state;
    char *answer = NULL;
    char error[sizeof j->error];
    int error_status = j->error_status;
    snprintf(error, sizeof error, "%s", j->error);
    if (st == JOB_DONE) answer = answer_json(S, j);
    job_release(j);
    pthread_mutex_unlock(&S->lock);
    if (gone) return MHD_NO;
    if (st == JOB_DONE) return answer ? respond(S, c, 200, "application/json", answer, strlen(answer))
                                      : respond_error(S, c, 500, "out of memory", NULL);
    if (st == JOB_FAILED) return respond_error(S, c, (unsigned)error_status, error, NULL);
    if (late) return respond_error(S, c, 504, "the request ran past the server's --timeout", NULL);
    return respond_error(S, c, 503, "the server is stopping", NULL);
}

/* ---- the other endpoints ---- */

static enum MHD_Result tokenize(server *S, struct MHD_Connection *c, request_ctx *rq, int inverse)
{
    json_error_t je;
    json_t *body = json_loadb(rq->body.data ? rq->body.data : "", rq->body.len, 0, &je);
    if (!json_is_object(body)) {
        json_decref(body);
        return respond_error(S, c, 400, "the body must be a JSON object", NULL);
    }
    if (inverse) {
        json_t *toks = json_object_get(body, "tokens"), *v;
        size_t i;
        llm_ids ids = {0};
        int bad = !json_is_array(toks);
        json_array_foreach(toks, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) >= S->vocab ||
                llm_ids_push(&ids, (uint32_t)json_integer_value(v)))
                bad = 1;
        }
        json_decref(body);
        llm_strbuf text = {0}, clean = {0};
        llm_err err;
        if (bad || llm_tok_decode(S->tok, ids.v, ids.n, &text, &err)) {
            llm_ids_free(&ids);
            llm_sb_free(&text);
            return respond_error(S, c, 400, "'tokens' must be an array of token ids of the model", "tokens");
        }
        llm_utf8_sanitized(&clean, text.data ? text.data : "", text.len);
        json_t *a = json_pack("{ss#}", "prompt", clean.data ? clean.data : "", clean.len);
        llm_ids_free(&ids);
        llm_sb_free(&text);
        llm_sb_free(&clean);
        return respond_json(S, c, 200, a);
    }
    job *j = job_new();
    char msg[512];
    const char *param = NULL;
    int status = j ? parse_prompt(S, body, j, &param, msg, sizeof msg) : 500;
    json_decref(body);
    enum MHD_Result r;
    if (status) {
        r = respond_error(S, c, (unsigned)status, j ? msg : "out of memory", param);
    } else {
        json_t *toks = json_array();
        for (size_t i = 0; i < j->prompt.n; i++) json_array_append_new(toks, json_integer(j->prompt.v[i]));
        r = respond_json(S, c, 200,
                         json_pack("{sosIsI}", "tokens", toks, "count", (json_int_t)j->prompt.n, "max_model_len",
                                   (json_int_t)S->ctx));
    }
    if (j) {
        pthread_mutex_lock(&S->lock);
        job_release(j);
        pthread_mutex_unlock(&S->lock);
    }
    return r;
}

static enum MHD_Result models(server *S, struct MHD_Connection *c)
{
    return respond_json(S, c, 200,
                        json_pack("{sss[{sssssIsssI}]}", "object", "list", "data", "id", S->model_name, "object", "model",
                                  "created", (json_int_t)S->started, "owned_by", "llmux", "max_model_len",
                                  (json_int_t)S->ctx));
}

/* ---- routing ---- */

static enum MHD_Result route(server *S, struct MHD_Connection *c, const char *url, const char *method,
                             request_ctx *rq)
{
    static const struct { const char *path, *method; } routes[] = {
        {"/", "GET"}, {"/health", "GET"}, {"/metrics", "GET"}, {"/v1/models", "GET"},
        {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"}, {"/tokenize", "POST"}, {"/detokenize", "POST"},
    };
    size_t k = 0, n = sizeof routes / sizeof *routes;
    while (k < n && strcmp(routes[k].path, url)) k++;
    if (k == n) return respond_error(S, c, 404, "no such endpoint", NULL);
    int head = !strcmp(method, "HEAD") && !strcmp(routes[k].method, "GET");   /* MHD sends the headers only */
    if (strcmp(routes[k].method, method) && !head) {
        char m[64];
        snprintf(m, sizeof m, "%s %s: use %s", method, routes[k].path, routes[k].method);
        return respond_error_allow(S, c, 405, m, NULL, !strcmp(routes[k].method, "GET") ? "GET, HEAD" : "POST");
    }
    if (rq->too_big) return respond_error(S, c, 413, "the request body is larger than --max-body", NULL);
    if (k == 0) {
        size_t len = (size_t)(llmux_chat_html_end - llmux_chat_html);
        struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)llmux_chat_html, MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
        return queue(S, c, 200, r);
    }
    pthread_mutex_lock(&S->lock);
    int ready = S->ready;
    pthread_mutex_unlock(&S->lock);
    if (k == 1)
        return respond_json(S, c, ready ? 200 : 503, json_pack("{ss}", "status", ready ? "ok" : "loading"));
    if (k == 2) {
        pthread_mutex_lock(&S->lock);
        char *text = metrics_text(S);
        pthread_mutex_unlock(&S->lock);
        return text ? respond(S, c, 200, "text/plain; version=0.0.4", text, strlen(text))
                    : respond_error(S, c, 500, "out of memory", NULL);
    }
    if (!api_key_ok(S, c)) return respond_error(S, c, 401, "a missing or wrong API key (Authorization: Bearer KEY)", NULL);
    if (!ready) return respond_error(S, c, 503, "the model is loading", NULL);
    switch (k) {
    case 3: return models(S, c);
    case 4: return completion(S, c, rq, 0);
    case 5: return completion(S, c, rq, 1);
    case 6: return tokenize(S, c, rq, 0);
    default: return tokenize(S, c, rq, 1);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    server *S = cls;
    request_ctx *rq = *con_cls;
    if (!rq) {   /* the headers are in */
        if (!(rq = calloc(1, sizeof *rq))) return MHD_NO;
        rq->t_start = llm_seconds();
        *con_cls = rq;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > S->max_body) {   /* answered before the body is read */
            rq->too_big = 1;
            return respond_error(S, c, 413, "the request body is larger than --max-body", NULL);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (llm_seconds() - rq->t_start > S->timeout) return MHD_NO;   /* a body dripping in: cut off */
        if (!rq->too_big && rq->body.len + *upload_size > S->max_body) rq->too_big = 1;
        if (!rq->too_big) llm_sb_add(&rq->body, upload, *upload_size);
        *upload_size = 0;
        return rq->body.failed ? MHD_NO : MHD_YES;
    }
    if (rq->too_big && MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH)) return MHD_YES;
    return route(S, c, url, method, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why)
{
    (void)cls, (void)c, (void)why;
    request_ctx *rq = *con_cls;
    if (!rq) return;
    llm_sb_free(&rq->body);
    free(rq);
    *con_cls = NULL;
}

struct MHD_Daemon *http_start(server *S, unsigned *port_out, char *msg, size_t msg_size)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST},
                    *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%u", S->port);
    int gai = getaddrinfo(S->host, port, &hints, &ai);
    if (gai) {
        snprintf(msg, msg_size, "--host %s: not a numeric address (%s)", S->host, gai_strerror(gai));
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    struct MHD_Daemon *d =
        MHD_start_daemon(flags, (uint16_t)S->port, NULL, NULL, on_request, S, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_NOTIFY_COMPLETED, on_completed, S,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                         (size_t)256 * 1024, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)256, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!d) {
        snprintf(msg, msg_size, "cannot listen on %s port %u", S->host, S->port);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *port_out = info ? info->port : S->port;
    return d;
}
