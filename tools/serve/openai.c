/* OpenAI's request and answer shapes for /v1/completions and
 * /v1/chat/completions: parsing a body into a job, and writing a finished
 * job as one answer or a job in progress as Server-Sent Events. */
#include "server.h"

#include "unicode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- text ---- */

static json_t *text_value(const char *s, size_t n)
{
    llm_strbuf b = {0};
    llm_utf8_sanitized(&b, s, n);
    json_t *v = json_stringn(b.data ? b.data : "", b.len);
    llm_sb_free(&b);
    return v;
}

/* A token's text (raw bytes into raw when given) */
static json_t *token_value(server *S, uint32_t id, json_t **bytes)
{
    llm_strbuf b = {0};
    llm_err err;
    if (id < llm_tok_vocab_size(S->tok)) llm_tok_decode(S->tok, &id, 1, &b, &err);
    if (bytes) {
        *bytes = json_array();
        for (size_t i = 0; i < b.len; i++) json_array_append_new(*bytes, json_integer((unsigned char)b.data[i]));
    }
    json_t *v = text_value(b.data ? b.data : "", b.len);
    llm_sb_free(&b);
    return v;
}

char *error_json(const char *message, const char *type, const char *param, const char *code)
{
    json_t *e = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", message, "type", type, "param",
                          param ? json_string(param) : json_null(), "code", code ? json_string(code) : json_null());
    char *s = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    return s;
}

/* ---- requests ---- */

static int fail(char *msg, size_t size, const char **param, const char *field, int status, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int fail(char *msg, size_t size, const char **param, const char *field, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, size, fmt, ap);
    va_end(ap);
    *param = field;
    return status;
}

static uint64_t next_seed(server *S)
{
    pthread_mutex_lock(&S->lock);
    uint64_t z = (S->seed_state += 0x9e3779b97f4a7c15ull);
    pthread_mutex_unlock(&S->lock);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (z ^ (z >> 31)) >> 1;   /* within int64, as JSON carries it */
}

/* content: a string, or an array of parts of which the text ones count */
static json_t *content_text(json_t *c)
{
    if (json_is_string(c)) return json_incref(c);
    if (json_is_null(c)) return json_string("");
    if (!json_is_array(c)) return NULL;
    llm_strbuf b = {0};
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type)) { llm_sb_free(&b); return NULL; }
        if (strcmp(json_string_value(type), "text")) continue;
        if (!json_is_string(text)) { llm_sb_free(&b); return NULL; }
        llm_sb_add(&b, json_string_value(text), json_string_length(text));
    }
    json_t *v = json_stringn(b.data ? b.data : "", b.len);
    llm_sb_free(&b);
    return v;
}

static int chat_prompt(server *S, json_t *messages, job *j, const char **param, char *msg, size_t size)
{
    if (!S->has_chat)
        return fail(msg, size, param, "messages", 400,
                    "the model has no chat template llm-serve knows: start it with --chat-template");
    if (!json_is_array(messages) || json_array_size(messages) == 0)
        return fail(msg, size, param, "messages", 400, "'messages' must be a non-empty array of messages");
    json_t *plain = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m) {
        json_t *role = json_object_get(m, "role"), *content = content_text(json_object_get(m, "content"));
        if (!json_is_object(m) || !json_is_string(role) || !content) {
            json_decref(content);
            json_decref(plain);
            return fail(msg, size, param, "messages", 400,
                        "messages[%zu] must be an object with a string 'role' and a 'content' string or text parts", i);
        }
        json_array_append_new(plain, json_pack("{sOso}", "role", role, "content", content));
    }
    llm_tok_scratch *ts = llm_tok_scratch_new(S->tok);
    llm_chat_segments segs = {0};
    uint32_t end;
    int has_end = 0, rc = 0;
    llm_err err;
    if (!ts) rc = fail(msg, size, param, NULL, 500, "out of memory");
    else if (llm_gen_encode_messages(S->tok, ts, S->chat, plain, &segs, &j->prompt, &end, &has_end, &err))
        rc = fail(msg, size, param, "messages", 400, "%s",
                  strncmp(err.msg, "record: ", 8) ? err.msg : err.msg + 8);   /* lib/chat names the record */
    else if (has_end && llm_gen_request_stop_id(&j->gr, end, &err))
        rc = fail(msg, size, param, NULL, 500, "%s", err.msg);
    llm_chat_segments_free(&segs);
    llm_tok_scratch_free(ts);
    json_decref(plain);
    return rc;
}

static int text_prompt(server *S, json_t *prompt, job *j, const char **param, char *msg, size_t size)
{
    if (json_is_array(prompt) && json_array_size(prompt) == 1 && !json_is_integer(json_array_get(prompt, 0)))
        prompt = json_array_get(prompt, 0);   /* ["text"] or [[ids]] */
    llm_err err;
    if (json_is_string(prompt)) {
        llm_tok_scratch *ts = llm_tok_scratch_new(S->tok);
        int rc = !ts || llm_tok_encode(S->tok, ts, json_string_value(prompt), json_string_length(prompt),
                                      LLM_TOK_ADD_SPECIAL, &j->prompt, &err);
        llm_tok_scratch_free(ts);
        return rc ? fail(msg, size, param, "prompt", 400, "the prompt cannot be encoded: %s", ts ? err.msg : "out of memory")
                  : 0;
    }
    if (json_is_array(prompt) && json_array_size(prompt) > 0) {
        size_t i;
        json_t *v;
        json_array_foreach(prompt, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) >= S->vocab)
                return fail(msg, size, param, "prompt", 400, "prompt[%zu] is not a token id below %zu", i, S->vocab);
            if (llm_ids_push(&j->prompt, (uint32_t)json_integer_value(v))) return fail(msg, size, param, NULL, 500, "out of memory");
        }
        return 0;
    }
    return fail(msg, size, param, "prompt", 400,
                "'prompt' must be a string, an array of one string, or a non-empty array of token ids");
}

int parse_prompt(server *S, json_t *body, job *j, const char **param, char *msg, size_t size)
{
    *param = NULL;
    json_t *messages = json_object_get(body, "messages"), *prompt = json_object_get(body, "prompt");
    if (!messages == !prompt) return fail(msg, size, param, NULL, 400, "give either 'prompt' or 'messages'");
    llm_gen_params d = {.n = 1, .max_tokens = 1};
    llm_err err;
    if (llm_gen_request_init(&j->gr, &d, &err)) return fail(msg, size, param, NULL, 500, "out of memory");
    return messages ? chat_prompt(S, messages, j, param, msg, size) : text_prompt(S, prompt, j, param, msg, size);
}

int parse_completion(server *S, json_t *body, int chat, job *j, const char **param, char *msg, size_t size)
{
    *param = NULL;
    if (!json_is_object(body)) return fail(msg, size, param, NULL, 400, "the request body must be a JSON object");
    json_t *x = json_object_get(body, "model");
    if (x && !json_is_null(x) && !json_is_string(x)) return fail(msg, size, param, "model", 400, "'model' must be a string");
    if (json_is_string(x) && strcmp(json_string_value(x), S->model_name))
        return fail(msg, size, param, "model", 404, "The model '%s' does not exist (this server has '%s')",
                    json_string_value(x), S->model_name);
    /* OpenAI's defaults; chat's max_tokens: the rest of the context (SIZE_MAX until the prompt is known) */
    llm_gen_params d = {.sampling = {.temperature = 1, .top_p = 1, .repetition_penalty = 1},
                        .seed = next_seed(S), .max_tokens = chat ? SIZE_MAX : 16, .n = 1, .length_penalty = 1};
    llm_err err;
    if (llm_gen_request_init(&j->gr, &d, &err)) return fail(msg, size, param, NULL, 500, "out of memory");
    json_t *o = json_copy(body);   /* OpenAI's fields renamed to the reader's */
    if (!o) return fail(msg, size, param, NULL, 500, "out of memory");
    json_object_del(o, "top_logprobs");
    int rc = 0;
    json_t *mct = json_object_get(body, "max_completion_tokens"), *lp = json_object_get(body, "logprobs");
    if (chat && mct && !json_is_null(mct)) json_object_set(o, "max_tokens", mct);
    if (!chat && lp && !json_is_null(lp)) {
        if (!json_is_integer(lp) || json_integer_value(lp) < 0 || json_integer_value(lp) > LLM_GEN_MAX_TOP_LOGPROBS)
            rc = fail(msg, size, param, "logprobs", 400, "'logprobs' must be an integer from 0 to %d", LLM_GEN_MAX_TOP_LOGPROBS);
        else json_object_set(o, "top_logprobs", lp), j->logprobs = 1;
    }
    if (chat && !rc) {
        json_t *tl = json_object_get(body, "top_logprobs");
        if (lp && !json_is_null(lp) && !json_is_boolean(lp))
            rc = fail(msg, size, param, "logprobs", 400, "'logprobs' must be true or false");
        else if (tl && !json_is_null(tl) && !json_is_true(lp))
            rc = fail(msg, size, param, "top_logprobs", 400, "'top_logprobs' needs 'logprobs': true");
        else {
            j->logprobs = json_is_true(lp);
            if (tl) json_object_set(o, "top_logprobs", tl);
        }
    }
    const char *field = NULL;
    if (!rc && llm_gen_request_read(&j->gr, o, &field, &err)) {
        if (field && !strcmp(field, "max_tokens") && chat && mct) field = "max_completion_tokens";
        if (field && !strcmp(field, "top_logprobs") && !chat) field = "logprobs";
        rc = fail(msg, size, param, field, 400, "%s", err.msg);
    }
    json_decref(o);
    if (rc) return rc;
    llm_gen_params *p = &j->gr.p;
    if (p->sampling.temperature > 2) return fail(msg, size, param, "temperature", 400, "'temperature' must be from 0 to 2");
    if (p->n > S->max_n) return fail(msg, size, param, "n", 400, "'n' must be at most %zu", S->max_n);
    if (p->n_stop > 4) return fail(msg, size, param, "stop", 400, "at most 4 stop sequences");
    for (size_t i = 0; i < p->sampling.n_logit_bias; i++)
        if (p->sampling.logit_bias[i].id >= S->vocab)
            return fail(msg, size, param, "logit_bias", 400, "logit_bias: token %u is not below %zu",
                        p->sampling.logit_bias[i].id, S->vocab);
    if ((x = json_object_get(body, "stream")) && !json_is_null(x) && !json_is_boolean(x))
        return fail(msg, size, param, "stream", 400, "'stream' must be true or false");
    j->stream = json_is_true(x);
    if ((x = json_object_get(body, "stream_options")) && !json_is_null(x)) {
        json_t *iu = json_object_get(x, "include_usage");
        if (!json_is_object(x) || (iu && !json_is_null(iu) && !json_is_boolean(iu)))
            return fail(msg, size, param, "stream_options", 400,
                        "'stream_options' must be an object with 'include_usage' true or false");
        j->include_usage = json_is_true(iu);
    }
    if ((x = json_object_get(body, "echo")) && json_is_true(x))
        return fail(msg, size, param, "echo", 400, "'echo' is not supported");
    if ((x = json_object_get(body, "user")) && !json_is_null(x) && !json_is_string(x))
        return fail(msg, size, param, "user", 400, "'user' must be a string");
    if (chat) {
        rc = chat_prompt(S, json_object_get(body, "messages"), j, param, msg, size);
    } else {
        x = json_object_get(body, "prompt");
        rc = x ? text_prompt(S, x, j, param, msg, size) : fail(msg, size, param, "prompt", 400, "'prompt' is required");
    }
    if (rc) return rc;
    const char *what = chat ? "messages" : "prompt";
    if (j->prompt.n == 0) return fail(msg, size, param, what, 400, "the prompt is empty");
    if (j->prompt.n >= S->ctx)
        return fail(msg, size, param, what, 400,
                    "This model's maximum context length is %zu tokens; the %s take %zu", S->ctx, what, j->prompt.n);
    if (p->max_tokens == SIZE_MAX) {
        p->max_tokens = S->ctx - j->prompt.n;
        if (S->max_tokens && p->max_tokens > S->max_tokens) p->max_tokens = S->max_tokens;
    }
    if (S->max_tokens && p->max_tokens > S->max_tokens)
        return fail(msg, size, param, chat && mct ? "max_completion_tokens" : "max_tokens", 400,
                    "at most %zu tokens per choice on this server (--max-tokens)", S->max_tokens);
    if (j->prompt.n + p->max_tokens > S->ctx)
        return fail(msg, size, param, chat && mct ? "max_completion_tokens" : "max_tokens", 400,
                    "This model's maximum context length is %zu tokens; you asked for %zu (%zu in the %s, %zu to "
                    "generate)", S->ctx, j->prompt.n + p->max_tokens, j->prompt.n, what, p->max_tokens);
    j->chat = chat;
    j->nch = p->n;
    if (!(j->ch = calloc(j->nch, sizeof *j->ch))) return fail(msg, size, param, NULL, 500, "out of memory");
    snprintf(j->id, sizeof j->id, "%s-%016llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)next_seed(S));
    j->created = (long long)time(NULL);
    return 0;
}

/* ---- answers ---- */

static json_t *usage_json(const job *j)
{
    return json_pack("{sIsIsIs{sI}}", "prompt_tokens", (json_int_t)j->prompt.n, "completion_tokens",
                     (json_int_t)j->completion_tokens, "total_tokens", (json_int_t)(j->prompt.n + j->completion_tokens),
                     "prompt_tokens_details", "cached_tokens", (json_int_t)j->cached_tokens);
}

/* Logprobs of tokens [from, to) of a choice, in the request's shape. */
static json_t *logprobs_json(server *S, const job *j, const uint32_t *ids, const double *lps, const uint32_t *top_ids,
                             const double *top_lps, size_t n, size_t n_top)
{
    if (j->chat) {
        json_t *content = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *bytes, *tok = token_value(S, ids[i], &bytes), *top = json_array();
            for (size_t k = 0; k < n_top; k++) {
                json_t *tb, *tt = token_value(S, top_ids[i * n_top + k], &tb);
                json_array_append_new(top, json_pack("{sosfso}", "token", tt, "logprob", top_lps[i * n_top + k], "bytes", tb));
            }
            json_array_append_new(content,
                                  json_pack("{sosfsoso}", "token", tok, "logprob", lps[i], "bytes", bytes, "top_logprobs", top));
        }
        return json_pack("{so}", "content", content);
    }
    json_t *tokens = json_array(), *tlps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *tok = token_value(S, ids[i], NULL), *top = json_object();
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += json_string_length(tok);
        json_array_append_new(tokens, tok);
        json_array_append_new(tlps, json_real(lps[i]));
        for (size_t k = 0; k < n_top; k++) {
            json_t *tt = token_value(S, top_ids[i * n_top + k], NULL);
            json_object_set_new(top, json_string_value(tt), json_real(top_lps[i * n_top + k]));
            json_decref(tt);
        }
        json_array_append_new(tops, top);
    }
    return json_pack("{sosososo}", "tokens", tokens, "token_logprobs", tlps, "top_logprobs", tops, "text_offset", offs);
}

char *answer_json(server *S, job *j)
{
    json_t *choices = json_array();
    for (size_t i = 0; i < j->nch; i++) {
        const job_choice *c = &j->ch[i];
        json_t *lp = j->logprobs ? logprobs_json(S, j, c->r.ids, c->r.lps, c->r.top_ids, c->r.top_lps, c->r.n, c->r.n_top)
                                 : json_null();
        json_t *text = text_value(c->r.text ? c->r.text : "", c->r.text_len), *ch;
        if (j->chat)
            ch = json_pack("{sIs{sssoso}soss}", "index", (json_int_t)i, "message", "role", "assistant", "content", text,
                           "refusal", json_null(), "logprobs", lp, "finish_reason", c->r.finish);
        else
            ch = json_pack("{sIsososs}", "index", (json_int_t)i, "text", text, "logprobs", lp, "finish_reason", c->r.finish);
        json_array_append_new(choices, ch);
    }
    json_t *a = json_pack("{sssssIsssoso}", "id", j->id, "object", j->chat ? "chat.completion" : "text_completion",
                          "created", (json_int_t)j->created, "model", S->model_name, "choices", choices, "usage",
                          usage_json(j));
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
}

/* ---- streams ---- */

static void add_chunk(llm_strbuf *out, json_t *chunk)
{
    char *s = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
    json_decref(chunk);
    if (!s) return;
    llm_sb_puts(out, "data: ");
    llm_sb_puts(out, s);
    llm_sb_puts(out, "\n\n");
    free(s);
}

static json_t *chunk_json(server *S, const job *j, size_t index, json_t *text_or_delta, json_t *logprobs,
                          const char *finish)
{
    json_t *choice = j->chat ? json_pack("{sIsoso}", "index", (json_int_t)index, "delta", text_or_delta, "logprobs",
                                         logprobs ? logprobs : json_null())
                             : json_pack("{sIsoso}", "index", (json_int_t)index, "text", text_or_delta, "logprobs",
                                         logprobs ? logprobs : json_null());
    json_object_set_new(choice, "finish_reason", finish ? json_string(finish) : json_null());
    return json_pack("{sssssIsss[o]}", "id", j->id, "object", j->chat ? "chat.completion.chunk" : "text_completion",
                     "created", (json_int_t)j->created, "model", S->model_name, "choices", choice);
}

static json_t *delta(const job *j, const char *s, size_t n)
{
    json_t *t = text_value(s, n);
    if (!j->chat) return t;
    return n ? json_pack("{so}", "content", t) : (json_decref(t), json_object());
}

void stream_chunks(server *S, job *j, llm_strbuf *out, int *end)
{
    *end = 0;
    int all_final = 1;
    for (size_t i = 0; i < j->nch; i++) {
        job_choice *c = &j->ch[i];
        if (j->chat && !c->role_sent) {
            add_chunk(out, chunk_json(S, j, i, json_pack("{ssss}", "role", "assistant", "content", ""), NULL, NULL));
            c->role_sent = 1;
        }
        for (; c->taken < c->nev; c->taken++) {
            tok_event *t = &c->ev[c->taken];
            if (t->delta_len || j->logprobs) {
                json_t *lp = j->logprobs ? logprobs_json(S, j, &t->id, &t->logprob, t->top_ids, t->top_lps, 1,
                                                         j->gr.p.top_logprobs)
                                         : NULL;
                add_chunk(out, chunk_json(S, j, i, delta(j, t->delta ? t->delta : "", t->delta_len), lp, NULL));
            }
            c->streamed += t->delta_len;
            free(t->delta), free(t->top_ids), free(t->top_lps);
            t->delta = NULL, t->top_ids = NULL, t->top_lps = NULL;
        }
        if (c->done && !c->final_sent) {
            /* text held back for a stop string that did not come, and (beam
             * search) every token's logprobs */
            size_t from = c->streamed < c->r.text_len ? c->streamed : c->r.text_len, tok0 = c->taken < c->r.n ? c->taken : c->r.n;
            json_t *lp = j->logprobs && tok0 < c->r.n
                             ? logprobs_json(S, j, c->r.ids + tok0, c->r.lps + tok0, c->r.top_ids + tok0 * c->r.n_top,
                                             c->r.top_lps + tok0 * c->r.n_top, c->r.n - tok0, c->r.n_top)
                             : NULL;
            add_chunk(out, chunk_json(S, j, i, delta(j, c->r.text ? c->r.text + from : "", c->r.text_len - from), lp, c->r.finish));
            c->final_sent = 1;
        }
        all_final &= c->final_sent;
    }
    if (j->state == JOB_DONE && all_final) {
        if (j->include_usage)
            add_chunk(out, json_pack("{sssssIsss[]so}", "id", j->id, "object",
                                     j->chat ? "chat.completion.chunk" : "text_completion", "created",
                                     (json_int_t)j->created, "model", S->model_name, "choices", "usage", usage_json(j)));
        llm_sb_puts(out, "data: [DONE]\n\n");
        *end = 1;
    } else if (j->state == JOB_FAILED || j->state == JOB_CANCELLED) {
        char *e = error_json(j->state == JOB_FAILED ? j->error : "the request was cancelled",
                             j->state == JOB_FAILED ? "server_error" : "cancelled", NULL, NULL);
        if (e) {
            llm_sb_puts(out, "data: ");
            llm_sb_puts(out, e);
            llm_sb_puts(out, "\n\n");
            free(e);
        }
        llm_sb_puts(out, "data: [DONE]\n\n");
        *end = 1;
    }
}
