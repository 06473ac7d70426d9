/* llm-infer: generate text from prompts on the CPU. See llm-infer(1). The
 * forward pass over KV caches is lib/infer.c, batching and beam search
 * lib/generate.c, sampling lib/sample.c, chat templates lib/chat.c. */
#include "clock.h"
#include "chat.h"
#include "chat_encode.h"
#include "cli.h"
#include "gen_request.h"
#include "generate.h"
#include "infer.h"
#include "strbuf.h"
#include "tokenizer.h"
#include "unicode.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static llm_strlist prompts, stops, stop_tokens, biases;
static int64_t max_tokens = 128, top_k, seed, samples = 1, beams, top_logprobs, batch = 16;
static double temperature = 0.8, top_p = 1.0, min_p, repeat_penalty = 1.0, presence, frequency, length_penalty = 1.0;
static const char *format, *requests_path, *chat_name, *system_text;
static int ignore_eos, interactive, stats;

static const llm_opt options[] = {
    {"prompt", 'p', LLM_OPT_LIST, &prompts, "PROMPT", "a prompt; repeatable (default: one per line of stdin)", 0, 0},
    {"requests", 'r', LLM_OPT_STR, &requests_path, "FILE", "JSON lines of requests, run as one batch ('-': stdin)", 0, 0},
    {"chat", 0, LLM_OPT_FLAG, &interactive, NULL, "chat: each line of stdin is a user message", 0, 0},
    {"chat-template", 0, LLM_OPT_STR, &chat_name, "NAME", "chatml, llama2 or llama3 (default: the model's)", 0, 0},
    {"system", 0, LLM_OPT_STR, &system_text, "TEXT", "--chat: a system message first", 0, 0},
    {"max-tokens", 'n', LLM_OPT_INT, &max_tokens, "N", "tokens to generate at most (default 128)", 1, 1 << 24},
    {"temp", 0, LLM_OPT_DOUBLE, &temperature, "T", "temperature (default 0.8; 0: greedy)", 0, 0},
    {"top-k", 0, LLM_OPT_INT, &top_k, "K", "sample among the K most likely tokens (default 0: all)", 0, 1 << 24},
    {"top-p", 0, LLM_OPT_DOUBLE, &top_p, "P", "nucleus sampling (default 1: off)", 0, 0},
    {"min-p", 0, LLM_OPT_DOUBLE, &min_p, "P", "drop tokens below P times the most likely one (default 0: off)", 0, 0},
    {"repeat-penalty", 0, LLM_OPT_DOUBLE, &repeat_penalty, "R", "divide the logits of tokens seen before by R (default 1: off)", 0, 0},
    {"presence-penalty", 0, LLM_OPT_DOUBLE, &presence, "X", "subtract X from generated tokens' logits (OpenAI's; -2..2)", 0, 0},
    {"frequency-penalty", 0, LLM_OPT_DOUBLE, &frequency, "X", "subtract X per occurrence (OpenAI's; -2..2)", 0, 0},
    {"logit-bias", 0, LLM_OPT_LIST, &biases, "ID=B", "add B (-100..100) to token ID's logit; repeatable", 0, 0},
    {"seed", 0, LLM_OPT_INT, &seed, "S", "the sampler's seed (default 0); sample i uses S + i", 0, INT64_MAX},
    {"stop", 0, LLM_OPT_LIST, &stops, "STR", "stop before STR (not printed); repeatable", 0, 0},
    {"stop-token", 0, LLM_OPT_LIST, &stop_tokens, "ID", "stop at token ID; repeatable", 0, 0},
    {"ignore-eos", 0, LLM_OPT_FLAG, &ignore_eos, NULL, "go on past the model's end token (printed as its text)", 0, 0},
    {"samples", 0, LLM_OPT_INT, &samples, "N", "samples per prompt (default 1)", 1, 1024},
    {"beams", 0, LLM_OPT_INT, &beams, "B", "beam search of width B (2..32); --samples N gives the N best", 0, LLM_GEN_MAX_BEAMS},
    {"length-penalty", 0, LLM_OPT_DOUBLE, &length_penalty, "X", "beam scores: log-probability over length^X (default 1)", 0, 0},
    {"logprobs", 0, LLM_OPT_INT, &top_logprobs, "K", "-f jsonl: the K most likely alternatives of each token (0..20)", 0, LLM_GEN_MAX_TOP_LOGPROBS},
    {"batch", 'b', LLM_OPT_INT, &batch, "N", "sequences run at once (default 16)", 1, 4096},
    {"format", 'f', LLM_OPT_STR, &format, "FMT", "text (default) or jsonl: ids, text, logprobs, finish reason, timings", 0, 0},
    {"stats", 0, LLM_OPT_FLAG, &stats, NULL, "print totals and tokens/s as a JSON line on stderr at the end", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd cmd = {
    .name = "llm-infer",
    .summary = "generate text from prompts",
    .synopsis = "MODEL [-p PROMPT]... [-n MAX_TOKENS] [--temp T] [--top-k K] [--top-p P] [--min-p P] [--seed S] [--stop STR]...\n"
                "MODEL --requests FILE [-f jsonl]\n"
                "MODEL --chat [--chat-template NAME] [--system TEXT]",
    .opts = options,
    .footer = "MODEL is a model file, fp32 or quantized (llm-quantize). Without -p or --requests, each line of\n"
              "stdin is a prompt. All prompts run together as one batch; results come out in input order.\n"
              "Text goes to stdout as it is made when there is one prompt. See llm-infer(1).",
};

/* ---- the model and its tokenizer ---- */

typedef struct {
    llm_infer *m;
    llm_tokenizer *tok;
    llm_tok_scratch *ts;
    llm_chat_format chat;
    int has_chat;
    llm_chat_segments segs;
} model;

/* --chat-template, else the model's "chat_template" metadata. */
static void chat_format(model *md, const char *path)
{
    llm_err err;
    int unrecognised;
    if (llm_gen_chat_format(chat_name, llm_infer_meta(md->m, "chat_template"), &md->chat, &md->has_chat, &unrecognised,
                            &err))
        llm_usage_error("--chat-template must be chatml, llama2 or llama3, not '%s'", chat_name);
    if (unrecognised) llm_warning("%s: chat template not recognised (give --chat-template)", path);
}

/* The prompt ids of a messages list, rendered with the chat template and
 * the assistant's header; the template's end token added to q's stops. */
static int encode_messages(model *md, json_t *messages, llm_ids *ids, llm_gen_request *q, llm_err *err)
{
    if (!md->has_chat) return llm_errf(err, "\"messages\" need a chat template: the model has none (give --chat-template)");
    uint32_t end;
    int has_end;
    if (llm_gen_encode_messages(md->tok, md->ts, md->chat, messages, &md->segs, ids, &end, &has_end, err)) return -1;
    return has_end ? llm_gen_request_stop_id(q, end, err) : 0;
}

/* ---- requests and their results ---- */


typedef struct {
    llm_gen_request gr;
    llm_ids prompt;
    char *prompt_text;       /* echoed in JSON lines (NULL for messages) */
    char *id_json;           /* the request's "id", echoed */
    llm_gen_result *res;
    size_t done;
    double t_first, t_done;
    int streaming;
    size_t streamed;         /* bytes of text already written */
} request;

typedef struct {
    request *reqs;
    size_t n, cap, next_out;   /* results are printed in input order */
    int jsonl;
    double t0;
    size_t completion_tokens, prompt_tokens;
} run;

static void *xmemdup(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    if (!q) llm_die("out of memory");
    if (n) memcpy(q, p, n);
    return q;
}

/* A choice's fields of a JSON line: "text" ... "finish_reason". */
static void choice_json(llm_strbuf *b, const request *q, const llm_gen_result *r)
{
    /* a model can make bytes that are not UTF-8 (a character cut between
     * tokens): JSON gets U+FFFD for them, as llm-serve writes them */
    llm_strbuf clean = {0};
    llm_utf8_sanitized(&clean, r->text, r->text_len);
    llm_sb_add(&clean, "", 1);
    llm_sb_puts(b, "\"text\":");
    llm_sb_json_string(b, clean.data);
    llm_sb_free(&clean);
    llm_sb_puts(b, ",\"ids\":[");
    for (size_t k = 0; k < r->n; k++) llm_sb_printf(b, k ? ",%u" : "%u", r->ids[k]);
    llm_sb_puts(b, "],\"logprobs\":[");
    for (size_t k = 0; k < r->n; k++) llm_sb_printf(b, k ? ",%.6g" : "%.6g", r->lps[k]);
    llm_sb_puts(b, "]");
    if (r->n_top) {
        llm_sb_puts(b, ",\"top_logprobs\":[");
        for (size_t k = 0; k < r->n; k++) {
            llm_sb_puts(b, k ? ",[" : "[");
            for (size_t j = 0; j < r->n_top; j++)
                llm_sb_printf(b, "%s{\"id\":%u,\"logprob\":%.6g}", j ? "," : "", r->top_ids[k * r->n_top + j],
                              r->top_lps[k * r->n_top + j]);
            llm_sb_puts(b, "]");
        }
        llm_sb_puts(b, "]");
    }
    if (q->gr.p.beams >= 2) llm_sb_printf(b, ",\"score\":%.6g", r->score);
    llm_sb_printf(b, ",\"finish_reason\":\"%s\"", r->finish);
}

static void print_result(run *R, request *q)
{
    llm_strbuf b = {0};
    if (!R->jsonl) {
        for (size_t i = 0; i < q->gr.p.n; i++) {
            if (!q->streaming) llm_sb_add(&b, q->res[i].text, q->res[i].text_len);
            llm_sb_add(&b, "\n", 1);
        }
    } else {
        size_t completion = 0;
        for (size_t i = 0; i < q->gr.p.n; i++) completion += q->res[i].n;
        llm_sb_puts(&b, "{");
        if (q->id_json) llm_sb_printf(&b, "\"id\":%s,", q->id_json);
        if (q->prompt_text) {
            llm_sb_puts(&b, "\"prompt\":");
            llm_sb_json_string(&b, q->prompt_text);
            llm_sb_puts(&b, ",");
        }
        choice_json(&b, q, &q->res[0]);   /* the first choice, at the top */
        if (q->gr.p.n > 1) {
            llm_sb_puts(&b, ",\"choices\":[");
            for (size_t i = 0; i < q->gr.p.n; i++) {
                llm_sb_printf(&b, "%s{\"index\":%zu,", i ? "," : "", i);
                choice_json(&b, q, &q->res[i]);
                llm_sb_puts(&b, "}");
            }
            llm_sb_puts(&b, "]");
        }
        double gen = q->t_done - q->t_first;
        llm_sb_printf(&b, ",\"prompt_tokens\":%zu,\"completion_tokens\":%zu,\"prompt_seconds\":%.4f,\"seconds\":%.4f,"
                          "\"tokens_per_s\":%.2f}\n",
                      q->prompt.n, completion, q->t_first - R->t0, q->t_done - R->t0,
                      completion > q->gr.p.n && gen > 0 ? (double)(completion - q->gr.p.n) / gen : 0.0);
    }
    fwrite(b.data, 1, b.len, stdout);
    fflush(stdout);
    llm_sb_free(&b);
}

static void on_event(void *ctx, const llm_gen_event *e)
{
    run *R = ctx;
    request *q = e->user;
    if (!q->t_first) q->t_first = llm_seconds();
    if (!e->done) {
        if (q->streaming && e->delta_len) {
            fwrite(e->delta, 1, e->delta_len, stdout);
            fflush(stdout);
            q->streamed += e->delta_len;
        }
        return;
    }
    llm_gen_result *r = &q->res[e->choice];
    if (llm_gen_result_copy(r, e)) llm_die("out of memory");
    if (q->streaming && e->text_len > q->streamed)   /* held back for a stop string that did not come */
        fwrite(e->text + q->streamed, 1, e->text_len - q->streamed, stdout);
    R->completion_tokens += e->n_ids;
    if (++q->done < q->gr.p.n) return;
    q->t_done = llm_seconds();
    while (R->next_out < R->n && R->reqs[R->next_out].done == R->reqs[R->next_out].gr.p.n) print_result(R, &R->reqs[R->next_out++]);
}

static void free_request(request *q)
{
    for (size_t i = 0; q->res && i < q->gr.p.n; i++) {
        llm_gen_result_free(&q->res[i]);
    }
    free(q->res);
    llm_ids_free(&q->prompt);
    free(q->prompt_text);
    free(q->id_json);
    llm_gen_request_free(&q->gr);
}

/* ---- the parameters: command line, then a request's fields ---- */

static uint32_t parse_id(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || v > UINT32_MAX || (*end && *end != '=')) llm_usage_error("%s: '%s' is not a token id", what, s);
    return (uint32_t)v;
}

/* The command line's parameters: every request's defaults. */
static llm_gen_params defaults;
static llm_logit_bias *default_bias;
static uint32_t *default_stop_ids;

static void read_defaults(void)
{
    llm_gen_params *p = &defaults;
    p->sampling = (llm_sampling){.temperature = temperature, .top_p = top_p, .min_p = min_p, .top_k = (size_t)top_k,
                                 .repetition_penalty = repeat_penalty, .presence_penalty = presence,
                                 .frequency_penalty = frequency};
    p->seed = (uint64_t)seed;
    p->max_tokens = (size_t)max_tokens;
    p->n = (size_t)samples;
    p->beams = (size_t)beams;
    p->length_penalty = length_penalty;
    p->top_logprobs = (size_t)top_logprobs;
    p->ignore_eos = ignore_eos;
    p->stop = (const char *const *)stops.items;
    p->n_stop = (size_t)stops.count;
    default_stop_ids = calloc(stop_tokens.count + 1, sizeof *default_stop_ids);
    default_bias = calloc(biases.count + 1, sizeof *default_bias);
    if (!default_stop_ids || !default_bias) llm_die("out of memory");
    for (int i = 0; i < stop_tokens.count; i++) default_stop_ids[i] = parse_id(stop_tokens.items[i], "--stop-token");
    p->stop_ids = default_stop_ids;
    p->n_stop_ids = (size_t)stop_tokens.count;
    for (int i = 0; i < biases.count; i++) {
        const char *eq = strchr(biases.items[i], '=');
        char *end;
        double v = eq ? strtod(eq + 1, &end) : NAN;
        if (!eq || end == eq + 1 || *end || !(v >= -100 && v <= 100))
            llm_usage_error("--logit-bias wants ID=BIAS with BIAS in -100..100, not '%s'", biases.items[i]);
        default_bias[i] = (llm_logit_bias){parse_id(biases.items[i], "--logit-bias"), (float)v};
    }
    p->sampling.logit_bias = default_bias;
    p->sampling.n_logit_bias = (size_t)biases.count;
    const char *bad = llm_gen_params_problem(p, NULL);
    if (bad) llm_usage_error("%s", bad);
}

static request *new_request(run *R)
{
    if (R->n == R->cap) {
        R->cap = R->cap ? R->cap * 2 : 16;
        R->reqs = realloc(R->reqs, R->cap * sizeof *R->reqs);
        if (!R->reqs) llm_die("out of memory");
    }
    request *q = &R->reqs[R->n++];
    memset(q, 0, sizeof *q);
    llm_err err;
    if (llm_gen_request_init(&q->gr, &defaults, &err)) llm_die_err(&err);
    return q;
}

/* A request's fields (OpenAI's names; others are ignored) over the defaults. */
static int read_fields(request *q, json_t *o, llm_err *err)
{
    if (llm_gen_request_read(&q->gr, o, NULL, err)) return -1;
    json_t *x = json_object_get(o, "id");
    if (x && !(q->id_json = json_dumps(x, JSON_COMPACT | JSON_ENCODE_ANY))) llm_die("out of memory");
    return 0;
}

static void encode_prompt(model *md, request *q, const char *text)
{
    llm_err err;
    q->prompt_text = xmemdup(text, strlen(text) + 1);
    if (llm_tok_encode(md->tok, md->ts, text, strlen(text), LLM_TOK_ADD_SPECIAL, &q->prompt, &err)) llm_die_err(&err);
}

/* One line of a requests file: {"prompt": "..."} or {"messages": [...]}. */
static int read_request(model *md, run *R, const char *line, llm_err *err)
{
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    if (!o) return llm_errf(err, "not JSON: %s", je.text);
    int rc = 0;
    request *q = new_request(R);
    json_t *prompt = json_object_get(o, "prompt"), *messages = json_object_get(o, "messages");
    if (!json_is_object(o)) rc = llm_errf(err, "a request must be a JSON object");
    else if (!prompt == !messages) rc = llm_errf(err, "a request has either \"prompt\" or \"messages\"");
    else if (prompt && !json_is_string(prompt)) rc = llm_errf(err, "\"prompt\" must be a string");
    if (!rc) rc = read_fields(q, o, err);
    if (!rc && prompt) {
        q->prompt_text = xmemdup(json_string_value(prompt), json_string_length(prompt) + 1);
        rc = llm_tok_encode(md->tok, md->ts, q->prompt_text, json_string_length(prompt), LLM_TOK_ADD_SPECIAL,
                            &q->prompt, err);
    } else if (!rc) {
        rc = encode_messages(md, messages, &q->prompt, &q->gr, err);
    }
    json_decref(o);
    return rc;
}

/* Runs every request of R as one batch; results print in order. */
static void run_all(model *md, run *R, int streaming)
{
    llm_err err;
    llm_gen *g = llm_gen_new(md->m, md->tok, (size_t)batch, on_event, R, &err);
    if (!g) llm_die_err(&err);
    for (size_t i = 0; i < R->n; i++) {
        request *q = &R->reqs[i];
        q->streaming = streaming && R->n == 1 && q->gr.p.n == 1 && q->gr.p.beams < 2 && !R->jsonl;
        q->res = calloc(q->gr.p.n, sizeof *q->res);
        if (!q->res) llm_die("out of memory");
        R->prompt_tokens += q->prompt.n;
        if (llm_gen_add(g, q->prompt.v, q->prompt.n, &q->gr.p, q, &err)) {
            if (R->n > 1) llm_die("request %zu: %s", i + 1, err.msg);
            llm_die_err(&err);
        }
    }
    R->t0 = llm_seconds();
    int rc;
    while ((rc = llm_gen_step(g, &err)) > 0) {}
    if (rc < 0) llm_die_err(&err);
    llm_gen_free(g);
}

static void print_stats(const run *R)
{
    double s = llm_seconds() - R->t0;
    fprintf(stderr, "{\"requests\":%zu,\"prompt_tokens\":%zu,\"completion_tokens\":%zu,\"seconds\":%.4f,"
                    "\"tokens_per_s\":%.2f,\"batch\":%" PRId64 "}\n",
            R->n, R->prompt_tokens, R->completion_tokens, s, s > 0 ? R->completion_tokens / s : 0.0, batch);
}

static void reset_run(run *R)
{
    for (size_t i = 0; i < R->n; i++) free_request(&R->reqs[i]);
    R->n = R->next_out = 0;
}

/* --chat: a conversation, each line of stdin a user message. */
static void chat_loop(model *md, run *R, int streaming)
{
    json_t *messages = json_array();
    if (system_text) json_array_append_new(messages, json_pack("{ssss}", "role", "system", "content", system_text));
    int tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    for (;;) {
        if (tty) fputs("> ", stderr);
        if ((len = getline(&line, &cap, stdin)) <= 0) break;
        if (line[len - 1] == '\n') line[--len] = 0;
        if (len == 0) continue;
        json_array_append_new(messages, json_pack("{ssss}", "role", "user", "content", line));
        request *q = new_request(R);
        llm_err err;
        if (encode_messages(md, messages, &q->prompt, &q->gr, &err)) llm_die_err(&err);
        q->gr.p.n = 1;
        q->gr.p.beams = 0;
        run_all(md, R, streaming);
        json_array_append_new(messages, json_pack("{ssss}", "role", "assistant", "content", q->res[0].text));
        reset_run(R);
    }
    if (tty) fputs("\n", stderr);
    free(line);
    json_decref(messages);
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    char **args;
    int nargs = llm_cli_parse(&cmd, argc, argv, &args);
    if (nargs != 1) llm_usage_error("give one MODEL");
    if (format && strcmp(format, "text") && strcmp(format, "jsonl")) llm_usage_error("--format must be text or jsonl");
    if (!!prompts.count + !!requests_path + interactive > 1) llm_usage_error("give one of -p, --requests and --chat");
    run R = {.jsonl = format && !strcmp(format, "jsonl")};
    if (interactive && R.jsonl) llm_usage_error("--chat writes text, not --format jsonl");
    read_defaults();   /* the command line's parameters, checked once */
    llm_err err;
    model md = {0};
    if (llm_infer_open(&md.m, args[0], &err)) llm_die_err(&err);
    const char *tok_json = llm_infer_meta(md.m, "tokenizer");
    if (!tok_json) llm_die("%s: the model has no tokenizer in its metadata", args[0]);
    if (llm_tok_from_json(tok_json, strlen(tok_json), args[0], &md.tok, &err)) llm_die_err(&err);
    if (!(md.ts = llm_tok_scratch_new(md.tok))) llm_die("out of memory");
    chat_format(&md, args[0]);
    int streaming = isatty(STDOUT_FILENO);
    if (interactive) {
        chat_loop(&md, &R, streaming);
    } else {
        if (prompts.count) {
            for (int i = 0; i < prompts.count; i++) encode_prompt(&md, new_request(&R), prompts.items[i]);
        } else {
            FILE *in = stdin;
            const char *name = "stdin";
            if (requests_path && strcmp(requests_path, "-")) {
                if (!(in = fopen(requests_path, "r"))) llm_die("%s: %s", requests_path, strerror(errno));
                name = requests_path;
            }
            char *line = NULL;
            size_t cap = 0, lineno = 0;
            ssize_t len;
            while ((len = getline(&line, &cap, in)) > 0) {
                lineno++;
                if (line[len - 1] == '\n') line[--len] = 0;
                if (len == 0) continue;
                if (!requests_path) encode_prompt(&md, new_request(&R), line);
                else if (read_request(&md, &R, line, &err)) llm_die("%s:%zu: %s", name, lineno, err.msg);
            }
            if (ferror(in)) llm_die("%s: %s", name, strerror(errno));
            free(line);
            if (in != stdin) fclose(in);
        }
        for (size_t i = 0; i < R.n; i++)
            if (R.reqs[i].prompt.n == 0) llm_die("request %zu: an empty prompt: nothing to continue", i + 1);
        if (R.n) run_all(&md, &R, streaming);
        if (stats) print_stats(&R);
    }
    reset_run(&R);
    free(R.reqs);
    free(default_bias);
    free(default_stop_ids);
    llm_chat_segments_free(&md.segs);
    llm_tok_scratch_free(md.ts);
    llm_tok_free(md.tok);
    llm_infer_close(md.m);
    return 0;
}
