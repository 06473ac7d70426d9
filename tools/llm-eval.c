/* llm-eval: evaluate a model on data or task files, one JSON line per task.
 * See llm-eval(1) and llm-tasks(5). The work is in lib/eval_*.c: task files
 * (eval_task), few-shot prompts (eval_prompt), batched log-likelihoods
 * (eval_loglik), generation (eval_gen), language-modelling loss (eval_lm),
 * a run (eval_run), the result line (eval_result), suites (eval_suite), the
 * history tables (eval_history). */
#include "cli.h"
#include "eval_hash.h"
#include "eval_history.h"
#include "eval_prompt.h"
#include "eval_result.h"
#include "eval_run.h"
#include "eval_suite.h"
#include "eval_task.h"
#include "infer.h"
#include "strbuf.h"
#include "tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *task_path, *suite_path, *text_path, *history_path, *shots_path, *details_path, *name_opt;
static int64_t shots = -1, seed, limit, window_opt, stride_opt, max_tokens, batch = 16;
static llm_strlist stops;
static int skip_bad;

static const llm_opt options[] = {
    {"task", 't', LLM_OPT_STR, &task_path, "FILE", "a task file: JSON lines of mc, cloze or gen examples (llm-tasks(5))", 0, 0},
    {"suite", 's', LLM_OPT_STR, &suite_path, "FILE", "a suite: JSON lines naming tasks, data and text to run in turn", 0, 0},
    {"text", 0, LLM_OPT_STR, &text_path, "FILE", "language modelling on a text file, as one document", 0, 0},
    {"window", 0, LLM_OPT_INT, &window_opt, "N", "--text: tokens per window (default: the model's context)", 1, 1 << 30},
    {"stride", 0, LLM_OPT_INT, &stride_opt, "N", "--text: new tokens scored per window (default: the window)", 1, 1 << 30},
    {"shots", 'k', LLM_OPT_INT, &shots, "K", "few-shot examples before each question (default: the task's, else 0)", 0, 1 << 20},
    {"shots-file", 0, LLM_OPT_STR, &shots_path, "FILE", "draw the shots from FILE (default: the task's \"split\":\"train\" lines)", 0, 0},
    {"seed", 0, LLM_OPT_INT, &seed, "S", "the seed of the shots' draw (default 0)", 0, INT64_MAX},
    {"max-tokens", 'n', LLM_OPT_INT, &max_tokens, "N", "gen: tokens to generate at most (default: the task's, else 32)", 1, 1 << 24},
    {"stop", 0, LLM_OPT_LIST, &stops, "STR", "gen: stop before STR; repeatable (default: the task's, else \"\\n\\n\")", 0, 0},
    {"limit", 0, LLM_OPT_INT, &limit, "N", "the first N examples or sequences only", 1, INT64_MAX},
    {"batch", 'b', LLM_OPT_INT, &batch, "N", "sequences run at once (default 16)", 1, 4096},
    {"name", 0, LLM_OPT_STR, &name_opt, "NAME", "the task's name in the output (default: the header's, else the file's)", 0, 0},
    {"skip-bad", 0, LLM_OPT_FLAG, &skip_bad, NULL, "skip bad lines with a warning, and count them, instead of failing", 0, 0},
    {"details", 0, LLM_OPT_STR, &details_path, "FILE", "write one JSON line per example to FILE (scores, choice, text)", 0, 0},
    {"history", 0, LLM_OPT_STR, &history_path, "FILE", "print the results in FILE (and in other operands) as tables", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd cmd = {
    .name = "llm-eval",
    .summary = "evaluate a model on data or task files, one JSON line per task",
    .synopsis = "MODEL DATA [--limit N]\n"
                "MODEL --text FILE [--window N] [--stride N]\n"
                "MODEL --task FILE [--shots K] [--shots-file FILE] [--seed S] [--skip-bad] [--details FILE]\n"
                "MODEL --suite FILE\n"
                "--history FILE...",
    .opts = options,
    .footer = "MODEL is a model file, fp32 or quantized. DATA is a shard set or a sequence stream (llm-shard):\n"
              "its loss, perplexity and bits per byte. Each task prints one JSON line on stdout when it is done,\n"
              "so that `llm-eval ... >> evals.jsonl` keeps a history; --history shows it. See llm-eval(1).",
};

/* ---- the model, and where results go ---- */

typedef struct {
    const char *path;
    char hash[LLM_EVAL_HASH_LEN + 1];
    llm_infer *m;
    llm_tokenizer *tok;
    llm_eval_tok et;
    int has_et;
    FILE *details;
    const char *task_name;   /* for the details lines */
    llm_progress progress;
} session;

static void warn(void *ctx, const char *msg) { llm_warning("%s", msg); }

static void on_progress(void *ctx, uint64_t done)
{
    session *s = ctx;
    llm_progress_update(&s->progress, done);
}

static void on_detail(void *ctx, const char *json, size_t len)
{
    session *s = ctx;
    if (!s->details || len < 2) return;
    llm_strbuf b = {0};
    llm_sb_puts(&b, "{\"task\":");
    llm_sb_json_string(&b, s->task_name);
    llm_sb_puts(&b, ",");
    llm_sb_add(&b, json + 1, len - 1);   /* the line after its '{' */
    if (!b.failed) fwrite(b.data, 1, b.len, s->details);
    llm_sb_free(&b);
}

static void need_tokenizer(session *s)
{
    if (s->has_et) return;
    const char *tj = llm_infer_meta(s->m, "tokenizer");
    if (!tj) llm_die("%s: the model has no tokenizer in its metadata (tasks and --text need one)", s->path);
    llm_err err;
    if (!s->tok && llm_tok_from_json(tj, strlen(tj), s->path, &s->tok, &err)) llm_die_err(&err);
    if (llm_eval_tok_init(&s->et, s->tok, &err)) llm_die_err(&err);
    s->has_et = 1;
}

/* The model's tokenizer if it has one (for bits per byte), else NULL. */
static const llm_tokenizer *maybe_tokenizer(session *s)
{
    if (s->tok) return s->tok;
    const char *tj = llm_infer_meta(s->m, "tokenizer");
    llm_err err;
    if (tj && llm_tok_from_json(tj, strlen(tj), s->path, &s->tok, &err)) llm_die_err(&err);
    return s->tok;
}

static void emit(const llm_eval_result *r)
{
    llm_strbuf b = {0};
    llm_eval_result_json(r, &b);
    if (b.failed) llm_die("out of memory");
    fwrite(b.data, 1, b.len, stdout);
    fflush(stdout);
    llm_sb_free(&b);
}

static void hash_of(const char *path, char *hex)
{
    llm_err err;
    if (strcmp(path, "-") == 0) { hex[0] = 0; return; }
    if (llm_eval_hash_path(path, hex, &err)) llm_die_err(&err);
}

static char *base_name(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *b = path + n;
    while (b > path && b[-1] != '/') b--;
    size_t k = (size_t)(path + n - b);
    if (k > 6 && !strncmp(b + k - 6, ".jsonl", 6)) k -= 6;
    else if (k > 4 && !strncmp(b + k - 4, ".txt", 4)) k -= 4;
    char *s = strndup(b, k);
    if (!s) llm_die("out of memory");
    return s;
}

/* One evaluation's settings (the command line's, or a suite line's over them). */
typedef struct {
    llm_eval_suite_kind kind;
    const char *path, *name, *shots_file;
    int has_shots;
    uint64_t shots, seed, limit, max_tokens, window, stride;
} job;

static void start(session *s, llm_eval_result *r, const char *task, const char *data, uint64_t total)
{
    memset(r, 0, sizeof *r);
    r->started = time(NULL);
    r->model = s->path;
    memcpy(r->model_hash, s->hash, sizeof r->model_hash);
    r->task = task;
    r->data = data;
    hash_of(data, r->data_hash);
    s->task_name = task;
    llm_progress_start(&s->progress, task, total);
}

static void run_job(session *s, const job *j, llm_eval_result *r, char **owned_name)
{
    llm_err err;
    llm_eval_opts o = {.batch = (size_t)batch, .limit = j->limit, .has_shots = j->has_shots, .shots = j->shots,
                       .seed = j->seed, .skip_bad = skip_bad, .warn = warn, .progress = on_progress,
                       .progress_ctx = s, .detail = on_detail, .detail_ctx = s};
    if (j->kind == LLM_SUITE_DATA) {
        *owned_name = j->name ? NULL : base_name(j->path);
        const char *name = j->name ? j->name : *owned_name;
        start(s, r, name, j->path, 0);
        if (llm_eval_run_data(s->m, maybe_tokenizer(s), j->path, &o, r, &err)) llm_die_err(&err);
    } else if (j->kind == LLM_SUITE_TEXT) {
        need_tokenizer(s);
        *owned_name = j->name ? NULL : base_name(j->path);
        const char *name = j->name ? j->name : *owned_name;
        start(s, r, name, j->path, 0);
        if (llm_eval_run_text(s->m, &s->et, j->path, (size_t)j->window, (size_t)j->stride, &o, r, &err))
            llm_die_err(&err);
    } else {
        need_tokenizer(s);
        llm_eval_task t, pool;
        if (llm_eval_task_load(&t, j->path, skip_bad, 0, warn, NULL, &err)) llm_die_err(&err);
        if (j->shots_file) {
            if (llm_eval_task_load(&pool, j->shots_file, skip_bad, 1, warn, NULL, &err)) llm_die_err(&err);
            o.pool = &pool;
        }
        if (j->max_tokens) t.max_tokens = (size_t)j->max_tokens;
        if (stops.count) {   /* --stop: the task's stop strings */
            for (size_t i = 0; i < t.n_stop; i++) free(t.stop[i]);
            free(t.stop);
            if (!(t.stop = calloc((size_t)stops.count, sizeof *t.stop))) llm_die("out of memory");
            for (int i = 0; i < stops.count; i++)
                if (!(t.stop[i] = strdup(stops.items[i]))) llm_die("out of memory");
            t.n_stop = (size_t)stops.count;
            t.has_stop = 1;
        }
        if (!(*owned_name = strdup(j->name ? j->name : t.name))) llm_die("out of memory");
        start(s, r, *owned_name, j->path, llm_eval_task_total(&t, &o));
        if (j->shots_file) {
            r->shots_file = j->shots_file;
            hash_of(j->shots_file, r->shots_hash);
        }
        if (llm_eval_run_task(s->m, &s->et, &t, &o, r, &err)) llm_die_err(&err);
        llm_eval_task_free(&t);
        if (j->shots_file) llm_eval_task_free(&pool);
    }
    llm_progress_end(&s->progress);
    if (s->details) fflush(s->details);
    emit(r);
}

/* ---- --history ---- */

static int history(char **files, int nfiles)
{
    llm_eval_history *h = llm_eval_history_new();
    if (!h) llm_die("out of memory");
    llm_err err;
    if (llm_eval_history_read(h, history_path, skip_bad, warn, NULL, &err)) llm_die_err(&err);
    for (int i = 0; i < nfiles; i++)
        if (llm_eval_history_read(h, files[i], skip_bad, warn, NULL, &err)) llm_die_err(&err);
    llm_strbuf b = {0};
    llm_eval_history_table(h, &b);
    if (b.failed) llm_die("out of memory");
    if (b.len) fwrite(b.data, 1, b.len, stdout);
    if (llm_eval_history_bad(h)) llm_warning("%zu bad lines skipped", llm_eval_history_bad(h));
    llm_sb_free(&b);
    llm_eval_history_free(h);
    return 0;
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    char **args;
    int nargs = llm_cli_parse(&cmd, argc, argv, &args);
    if (history_path) {
        if (task_path || suite_path || text_path) llm_usage_error("--history takes result files, not a model to evaluate");
        int rc = history(args, nargs);
        free(args);
        return rc;
    }
    int modes = !!task_path + !!suite_path + !!text_path;
    if (nargs < 1) llm_usage_error("give a MODEL (and DATA, --text, --task or --suite), or --history FILE");
    if (modes > 1 || (modes == 1 && nargs != 1) || (modes == 0 && nargs != 2))
        llm_usage_error(modes ? "give one MODEL and one of DATA, --text, --task and --suite"
                              : "give MODEL and DATA (a shard set or sequence stream), or --text, --task or --suite");
    if ((window_opt || stride_opt) && !text_path && !suite_path) llm_usage_error("--window and --stride are for --text");
    if (window_opt && stride_opt > window_opt) llm_usage_error("--stride must be at most --window");
    if ((shots >= 0 || shots_path) && !task_path && !suite_path) llm_usage_error("--shots and --shots-file are for tasks");
    if (name_opt && suite_path) llm_usage_error("--name names one evaluation; a suite's lines have \"name\"");

    session s = {.path = args[0]};
    llm_err err;
    if (llm_infer_open(&s.m, s.path, &err)) llm_die_err(&err);
    hash_of(s.path, s.hash);
    size_t ctx_len = llm_infer_config(s.m)->ctx_len;
    if (window_opt && (size_t)window_opt > ctx_len)
        llm_usage_error("--window %lld is longer than the model's context of %zu", (long long)window_opt, ctx_len);
    if (details_path && !(s.details = fopen(details_path, "w"))) llm_die("%s: %s", details_path, strerror(errno));

    job base = {.path = NULL, .name = name_opt, .shots_file = shots_path, .has_shots = shots >= 0,
                .shots = shots >= 0 ? (uint64_t)shots : 0, .seed = (uint64_t)seed, .limit = (uint64_t)limit,
                .max_tokens = (uint64_t)max_tokens, .window = (uint64_t)window_opt, .stride = (uint64_t)stride_opt};
    llm_eval_result r;
    char *owned = NULL;
    if (!suite_path) {
        job j = base;
        j.kind = task_path ? LLM_SUITE_TASK : text_path ? LLM_SUITE_TEXT : LLM_SUITE_DATA;
        j.path = task_path ? task_path : text_path ? text_path : args[1];
        run_job(&s, &j, &r, &owned);
        free(owned);
    } else {
        llm_eval_suite suite;
        if (llm_eval_suite_load(&suite, suite_path, &err)) llm_die_err(&err);
        time_t t0 = time(NULL);
        double acc_sum = 0, seconds = 0;
        uint64_t n_acc = 0, examples = 0, tokens = 0;
        for (size_t i = 0; i < suite.n; i++) {
            const llm_eval_suite_entry *e = &suite.e[i];
            job j = base;
            j.kind = e->kind;
            j.path = e->path;
            j.name = e->name;
            if (e->shots_file) j.shots_file = e->shots_file;
            if (e->has_shots) j.has_shots = 1, j.shots = e->shots;
            if (e->has_seed) j.seed = e->seed;
            if (e->limit) j.limit = e->limit;
            if (e->max_tokens) j.max_tokens = e->max_tokens;
            if (e->window) j.window = e->window;
            if (e->stride) j.stride = e->stride;
            if (j.window > ctx_len)
                llm_die("%s:%zu: a window of %llu tokens is longer than the model's context of %zu", suite.path, e->line,
                        (unsigned long long)j.window, ctx_len);
            if (j.window && j.stride > j.window)
                llm_die("%s:%zu: the stride must be at most the window", suite.path, e->line);
            run_job(&s, &j, &r, &owned);
            free(owned);
            owned = NULL;
            double acc = llm_eval_get_metric(&r, "acc");
            if (!isnan(acc)) acc_sum += acc, n_acc++;
            seconds += r.seconds;
            examples += r.examples;
            tokens += r.tokens;
        }
        /* the suite's line: the mean accuracy of its tasks */
        memset(&r, 0, sizeof r);
        r.started = t0;
        r.model = s.path;
        memcpy(r.model_hash, s.hash, sizeof r.model_hash);
        r.task = suite.name;
        r.type = "suite";
        r.data = suite.path;
        hash_of(suite.path, r.data_hash);
        llm_eval_set_metric(&r, "acc", n_acc ? acc_sum / (double)n_acc : NAN);
        llm_eval_set_count(&r, "tasks", n_acc);
        r.seconds = seconds;
        r.examples = examples;
        r.tokens = tokens;
        emit(&r);
        llm_eval_suite_free(&suite);
    }
    if (s.details && fclose(s.details)) llm_die("%s: %s", details_path, strerror(errno));
    if (s.has_et) llm_eval_tok_free(&s.et);
    llm_tok_free(s.tok);
    llm_infer_close(s.m);
    free(args);
    return 0;
}
