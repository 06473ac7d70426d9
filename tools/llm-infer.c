/* llm-infer: generate text from prompts on the CPU. See llm-infer(1); the
 * forward pass over a KV cache is lib/infer.c, sampling lib/sample.c. */
#include "cli.h"
#include "infer.h"
#include "sample.h"
#include "strbuf.h"
#include "tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static llm_strlist prompts, stops;
static int64_t max_tokens = 128, top_k, seed;
static double temperature = 0.8, top_p = 1.0, min_p;
static const char *format;
static int ignore_eos;

static const llm_opt options[] = {
    {"prompt", 'p', LLM_OPT_LIST, &prompts, "PROMPT", "a prompt; repeatable (default: one per line of stdin)", 0, 0},
    {"max-tokens", 'n', LLM_OPT_INT, &max_tokens, "N", "tokens to generate at most (default 128)", 0, 1 << 24},
    {"temp", 0, LLM_OPT_DOUBLE, &temperature, "T", "temperature (default 0.8; 0: greedy)", 0, 0},
    {"top-k", 0, LLM_OPT_INT, &top_k, "K", "sample among the K most likely tokens (default 0: all)", 0, 1 << 24},
    {"top-p", 0, LLM_OPT_DOUBLE, &top_p, "P", "nucleus sampling (default 1: off)", 0, 0},
    {"min-p", 0, LLM_OPT_DOUBLE, &min_p, "P", "drop tokens below P times the most likely one (default 0: off)", 0, 0},
    {"seed", 0, LLM_OPT_INT, &seed, "S", "the sampler's seed (default 0)", 0, INT64_MAX},
    {"stop", 0, LLM_OPT_LIST, &stops, "STR", "stop when the text ends with STR (not printed); repeatable", 0, 0},
    {"ignore-eos", 0, LLM_OPT_FLAG, &ignore_eos, NULL, "go on past the model's end token (printed as its text)", 0, 0},
    {"format", 'f', LLM_OPT_STR, &format, "FMT", "text (default) or jsonl: ids, text, logprobs, finish reason, timings", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd cmd = {
    .name = "llm-infer",
    .summary = "generate text from prompts",
    .synopsis = "MODEL [-p PROMPT]... [-n MAX_TOKENS] [--temp T] [--top-k K] [--top-p P] [--min-p P] [--seed S] [--stop STR]...",
    .opts = options,
    .footer = "MODEL is a model file, fp32 or quantized (llm-quantize). Without -p, each line of stdin is a\n"
              "prompt. Text goes to stdout as it is made. See llm-infer(1).",
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The length of the longest stop string that text ends with... or the
 * position where the first stop string occurs, when one does. */
static long stop_at(const char *text, size_t len)
{
    for (int i = 0; i < stops.count; i++) {
        const char *hit = memmem(text, len, stops.items[i], strlen(stops.items[i]));
        if (hit && *stops.items[i]) return hit - text;
    }
    return -1;
}

/* Bytes of text that could still become the start of a stop string: held
 * back from the output until they cannot. */
static size_t stop_prefix(const char *text, size_t len)
{
    size_t hold = 0;
    for (int i = 0; i < stops.count; i++) {
        size_t sl = strlen(stops.items[i]);
        for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
            if (k <= len && !memcmp(text + len - k, stops.items[i], k)) { hold = k; break; }
    }
    return hold;
}

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

static void json_out(llm_strbuf *b) { fwrite(b->data, 1, b->len, stdout); }

static void generate(llm_infer *m, const llm_tokenizer *tok, llm_tok_scratch *ts, llm_sampler *sampler, float *logits,
                     const char *prompt, int jsonl, int streaming)
{
    llm_err err;
    const llm_config *c = llm_infer_config(m);
    llm_ids ids = {0};
    if (llm_tok_encode(tok, ts, prompt, strlen(prompt), LLM_TOK_ADD_SPECIAL, &ids, &err)) llm_die_err(&err);
    if (ids.n == 0) llm_die("an empty prompt: nothing to continue");
    if (ids.n >= c->ctx_len)
        llm_die("the prompt is %zu tokens; the model's context is %zu", ids.n, c->ctx_len);
    uint32_t eos = 0;
    int has_eos = llm_tok_eos(tok, &eos) == 0;
    llm_infer_reset(m);
    double t0 = now();
    if (llm_infer_step(m, ids.v, ids.n, logits, 0, &err)) llm_die_err(&err);
    double t_prompt = now() - t0;
    llm_sampling sp = {temperature, top_p, min_p, (size_t)top_k};
    llm_rng rng;
    llm_rng_seed(&rng, (uint64_t)seed);
    size_t prompt_tokens = ids.n;
    llm_ids out = {0}, shown = {0};   /* shown: the ids the tokenizer has (a model may have more) */
    size_t tok_vocab = llm_tok_vocab_size(tok);
    llm_strbuf text = {0};
    double *logprobs = malloc(((size_t)max_tokens + 1) * sizeof *logprobs);
    size_t printed = 0;
    const char *finish = "length";
    for (int64_t i = 0; i < max_tokens; i++) {
        double lp;
        uint32_t next = llm_sample(sampler, logits, &sp, &rng, &lp);
        if (has_eos && next == eos && !ignore_eos) { finish = "stop"; break; }
        llm_ids_push(&out, next);
        logprobs[out.n - 1] = lp;
        if (next < tok_vocab) llm_ids_push(&shown, next);
        text.len = 0;
        if (llm_tok_decode(tok, shown.v, shown.n, &text, &err)) llm_die_err(&err);
        long at = stop_at(text.data, text.len);
        if (at >= 0) { text.len = (size_t)at; finish = "stop"; break; }
        if (!jsonl && streaming) {
            size_t ready = utf8_complete(text.data, text.len - stop_prefix(text.data, text.len));
            if (ready > printed) {
                fwrite(text.data + printed, 1, ready - printed, stdout);
                fflush(stdout);
                printed = ready;
            }
        }
        if (llm_infer_pos(m) >= c->ctx_len) break;
        if (i + 1 < max_tokens && llm_infer_step(m, &next, 1, logits, 0, &err)) llm_die_err(&err);
    }
    double seconds = now() - t0, t_gen = seconds - t_prompt;
    if (!jsonl) {
        if (text.len > printed) fwrite(text.data + printed, 1, text.len - printed, stdout);
        putchar('\n');
    } else {
        llm_strbuf b = {0};
        llm_sb_puts(&b, "{\"prompt\":");
        llm_sb_json_string(&b, prompt);
        llm_sb_puts(&b, ",\"text\":");
        if (text.data) llm_sb_add(&text, "", 1);   /* terminate */
        llm_sb_json_string(&b, text.data ? text.data : "");
        llm_sb_puts(&b, ",\"ids\":[");
        for (size_t i = 0; i < out.n; i++) llm_sb_printf(&b, i ? ",%u" : "%u", out.v[i]);
        llm_sb_puts(&b, "],\"logprobs\":[");
        for (size_t i = 0; i < out.n; i++) llm_sb_printf(&b, i ? ",%.6g" : "%.6g", logprobs[i]);
        llm_sb_printf(&b, "],\"finish_reason\":\"%s\",\"prompt_tokens\":%zu,\"completion_tokens\":%zu,"
                          "\"prompt_seconds\":%.4f,\"seconds\":%.4f,\"tokens_per_s\":%.2f}\n",
                      finish, prompt_tokens, out.n, t_prompt, seconds, out.n > 1 && t_gen > 0 ? (double)out.n / t_gen : 0.0);
        json_out(&b);
        llm_sb_free(&b);
    }
    fflush(stdout);
    free(logprobs);
    llm_sb_free(&text);
    llm_ids_free(&out);
    llm_ids_free(&shown);
    llm_ids_free(&ids);
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    char **args;
    int nargs = llm_cli_parse(&cmd, argc, argv, &args);
    if (nargs != 1) llm_usage_error("give one MODEL");
    if (format && strcmp(format, "text") && strcmp(format, "jsonl")) llm_usage_error("--format must be text or jsonl");
    if (temperature < 0) llm_usage_error("--temp must be 0 or more");
    if (top_p <= 0 || top_p > 1) llm_usage_error("--top-p must be above 0 and at most 1");
    if (min_p < 0 || min_p >= 1) llm_usage_error("--min-p must be at least 0 and below 1");
    int jsonl = format && !strcmp(format, "jsonl");
    llm_err err;
    llm_infer *m;
    if (llm_infer_open(&m, args[0], &err)) llm_die_err(&err);
    const char *tok_json = llm_infer_meta(m, "tokenizer");
    if (!tok_json) llm_die("%s: the model has no tokenizer in its metadata", args[0]);
    llm_tokenizer *tok;
    if (llm_tok_from_json(tok_json, strlen(tok_json), args[0], &tok, &err)) llm_die_err(&err);
    llm_tok_scratch *ts = llm_tok_scratch_new(tok);
    const llm_config *c = llm_infer_config(m);
    llm_sampler *sampler = llm_sampler_new(c->vocab_size);
    float *logits = malloc(c->vocab_size * sizeof *logits);
    if (!ts || !sampler || !logits) llm_die("out of memory");
    int streaming = isatty(STDOUT_FILENO);
    if (prompts.count) {
        for (int i = 0; i < prompts.count; i++) generate(m, tok, ts, sampler, logits, prompts.items[i], jsonl, streaming);
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        while ((len = getline(&line, &cap, stdin)) > 0) {
            if (line[len - 1] == '\n') line[--len] = 0;
            if (len == 0) continue;
            generate(m, tok, ts, sampler, logits, line, jsonl, streaming);
        }
        free(line);
    }
    free(logits);
    llm_sampler_free(sampler);
    llm_tok_scratch_free(ts);
    llm_tok_free(tok);
    llm_infer_close(m);
    return 0;
}
