/* llm-train: advance a model by N training steps on the CPU. See
 * llm-train(1); the model is lib/model.c, the steps lib/train.c. */
#include "clock.h"
#include "batch.h"
#include "cli.h"
#include "llmk.h"
#include "model_file.h"
#include "peak.h"
#include "tokenizer.h"
#include "train.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *init_preset, *tok_path, *out_path, *val_path, *log_path, *arch_name, *sched_name;
static int64_t steps = -1, batch, seq, accum, layers, heads, kv_heads, dim, ffn, vocab, ctx, warmup = -1, total_steps;
static int64_t seed = -1, keep = 2, save_every, val_every, val_seqs, threads;
static double lr = -1, min_lr = -1, weight_decay = -1, beta1 = -1, beta2 = -1, eps = -1, clip = -1, rope_theta;
static int qkv_bias, untied, no_shuffle;

static const llm_opt options[] = {
    {"init", 0, LLM_OPT_STR, &init_preset, "PRESET", "start from fresh weights of a preset (or of --arch and sizes)", 0, 0},
    {"tokenizer", 0, LLM_OPT_STR, &tok_path, "TOK", "with --init or --arch: the tokenizer.json (its vocabulary sizes the model)", 0, 0},
    {"arch", 0, LLM_OPT_STR, &arch_name, "ARCH", "fresh weights of gpt2 or llama, of the sizes below (or a preset's, changed)", 0, 0},
    {"layers", 0, LLM_OPT_INT, &layers, "N", "transformer blocks", 1, 1024},
    {"heads", 0, LLM_OPT_INT, &heads, "N", "attention heads", 1, 4096},
    {"kv-heads", 0, LLM_OPT_INT, &kv_heads, "N", "key/value heads (grouped-query attention; llama)", 1, 4096},
    {"dim", 0, LLM_OPT_INT, &dim, "N", "model width", 1, 1 << 17},
    {"ffn", 0, LLM_OPT_INT, &ffn, "N", "feed-forward width", 1, 1 << 19},
    {"vocab", 0, LLM_OPT_INT, &vocab, "N", "vocabulary (default: the tokenizer's)", 1, 1 << 24},
    {"ctx", 0, LLM_OPT_INT, &ctx, "N", "longest sequence", 1, 1 << 20},
    {"rope-theta", 0, LLM_OPT_DOUBLE, &rope_theta, "X", "base of the rotary embedding (llama; default 10000)", 0, 0},
    {"qkv-bias", 0, LLM_OPT_FLAG, &qkv_bias, NULL, "biases on q, k and v (llama; as Qwen2)", 0, 0},
    {"untied", 0, LLM_OPT_FLAG, &untied, NULL, "a separate output matrix (llama; presets say)", 0, 0},
    {"steps", 0, LLM_OPT_INT, &steps, "N", "optimizer steps to take (required; 0 writes the model as it is)", 0, INT64_MAX},
    {"output", 'o', LLM_OPT_STR, &out_path, "OUT", "the checkpoint to write (required)", 0, 0},
    {"batch", 0, LLM_OPT_INT, &batch, "B", "sequences per micro-batch (default 4)", 1, 1 << 20},
    {"seq", 0, LLM_OPT_INT, &seq, "T", "tokens per sequence (default: the data's, at most the context)", 1, 1 << 20},
    {"accum", 0, LLM_OPT_INT, &accum, "K", "micro-batches per step (gradient accumulation; default 1)", 1, 1 << 20},
    {"lr", 0, LLM_OPT_DOUBLE, &lr, "LR", "peak learning rate (default 6e-4)", 0, 0},
    {"min-lr", 0, LLM_OPT_DOUBLE, &min_lr, "LR", "learning rate at the end of the schedule (default lr/10)", 0, 0},
    {"warmup", 0, LLM_OPT_INT, &warmup, "N", "steps of linear warmup (default 0)", 0, INT64_MAX},
    {"schedule", 0, LLM_OPT_STR, &sched_name, "KIND", "cosine (default), linear or constant", 0, 0},
    {"total-steps", 0, LLM_OPT_INT, &total_steps, "N", "where the schedule ends (default: this run's last step)", 1, INT64_MAX},
    {"weight-decay", 0, LLM_OPT_DOUBLE, &weight_decay, "X", "AdamW's decoupled weight decay (default 0.1)", 0, 0},
    {"beta1", 0, LLM_OPT_DOUBLE, &beta1, "X", "AdamW's beta1 (default 0.9)", 0, 0},
    {"beta2", 0, LLM_OPT_DOUBLE, &beta2, "X", "AdamW's beta2 (default 0.95)", 0, 0},
    {"eps", 0, LLM_OPT_DOUBLE, &eps, "X", "AdamW's epsilon (default 1e-8)", 0, 0},
    {"clip", 0, LLM_OPT_DOUBLE, &clip, "X", "clip the gradients' global norm to X (default 1; 0: no clipping)", 0, 0},
    {"seed", 0, LLM_OPT_INT, &seed, "S", "initialisation and data order (default 0)", 0, INT64_MAX},
    {"no-shuffle", 0, LLM_OPT_FLAG, &no_shuffle, NULL, "read the data in order, epoch after epoch", 0, 0},
    {"val", 0, LLM_OPT_STR, &val_path, "DATA", "validation data: its loss at the end (and every --val-every steps)", 0, 0},
    {"val-every", 0, LLM_OPT_INT, &val_every, "N", "evaluate on --val every N steps", 1, INT64_MAX},
    {"val-seqs", 0, LLM_OPT_INT, &val_seqs, "N", "evaluate on the first N validation sequences (default all)", 1, INT64_MAX},
    {"log", 0, LLM_OPT_STR, &log_path, "FILE", "append one JSON line per step (and per evaluation) to FILE ('-': stdout)", 0, 0},
    {"save-every", 0, LLM_OPT_INT, &save_every, "N", "also write OUT's rolling checkpoints every N steps", 1, INT64_MAX},
    {"keep", 0, LLM_OPT_INT, &keep, "K", "rolling checkpoints to keep (default 2)", 1, 1000000},
    {"threads", 'j', LLM_OPT_INT, &threads, "N", "threads (default: all cores)", 1, 1024},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd cmd = {
    .name = "llm-train",
    .summary = "train a transformer on the CPU, N steps at a time",
    .synopsis = "MODEL DATA --steps N -o OUT [options]\n"
                "--init PRESET --tokenizer TOK DATA --steps N -o OUT [options]\n"
                "--arch gpt2|llama --layers N --heads N --dim N --ffn N --ctx N --tokenizer TOK DATA --steps N -o OUT [options]",
    .opts = options,
    .footer = "DATA is a shard set or a sequence stream from llm-shard. MODEL is a model or a checkpoint\n"
              "(OUT of an earlier run continues exactly where it stopped). Presets: gpt2-tiny, gpt2-small,\n"
              "gpt2-medium, gpt2-large, llama-tiny, llama-small, llama-1b. SIGINT or SIGTERM writes OUT and\n"
              "exits 0. See llm-train(1).",
};

static volatile sig_atomic_t stop_requested;
static void on_stop(int sig) { (void)sig; stop_requested = 1; }

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) llm_die("%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = (n + 65536 + 1) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) llm_die("%s: out of memory", path);
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) llm_die("%s: read failed", path);
    fclose(f);
    buf[n] = 0;
    return buf;
}

/* --init: the configuration from a preset or --arch and sizes, the tokenizer's vocabulary */
static void make_model(llm_model_file *f)
{
    llm_err err;
    llm_config c;
    if (!tok_path) llm_usage_error("--init needs --tokenizer TOK (its vocabulary sizes the model, and it is stored with it)");
    if (arch_name && init_preset) llm_usage_error("--init PRESET or --arch ARCH, not both");
    if (arch_name) {
        memset(&c, 0, sizeof c);
        if (!strcmp(arch_name, "gpt2")) c.arch = LLM_ARCH_GPT2;
        else if (!strcmp(arch_name, "llama")) c.arch = LLM_ARCH_LLAMA;
        else llm_usage_error("--arch must be gpt2 or llama");
        if (!layers || !heads || !dim || !ffn || !ctx) llm_usage_error("--arch needs --layers, --heads, --dim, --ffn and --ctx");
        c.norm_eps = 1e-5f;
        c.rope_theta = 10000.0f;
        c.tied_embeddings = c.arch == LLM_ARCH_GPT2;
        c.qkv_bias = c.arch == LLM_ARCH_GPT2;
    } else if (llm_config_preset(&c, init_preset, &err)) {
        llm_usage_error("%s", err.msg);
    }
    if (layers) c.n_layers = (size_t)layers;
    if (heads) c.n_heads = c.n_kv_heads = (size_t)heads;
    if (kv_heads) c.n_kv_heads = (size_t)kv_heads;
    if (dim) c.dim = (size_t)dim;
    if (ffn) c.ffn_dim = (size_t)ffn;
    if (ctx) c.ctx_len = (size_t)ctx;
    if (rope_theta) c.rope_theta = (float)rope_theta;
    if (qkv_bias) c.qkv_bias = 1;
    if (untied) c.tied_embeddings = 0;
    char *tok_json = read_text(tok_path);
    llm_tokenizer *tok;
    if (llm_tok_from_json(tok_json, strlen(tok_json), tok_path, &tok, &err)) llm_die_err(&err);
    c.vocab_size = vocab ? (size_t)vocab : llm_tok_vocab_size(tok);
    if (c.vocab_size < llm_tok_vocab_size(tok))
        llm_usage_error("--vocab %zu is smaller than the tokenizer's %zu tokens", c.vocab_size, llm_tok_vocab_size(tok));
    llm_tok_free(tok);
    if (llm_model_file_new(f, &c, &err)) llm_usage_error("%s", err.msg);
    llm_params_init(f->w, &c, f->params, f->nparams, (uint64_t)(seed < 0 ? 0 : seed));
    f->tokenizer = tok_json;
}

/* OUT.step-00000100.safetensors beside OUT (the extension kept last) */
static void rolling_name(char *buf, size_t size, uint64_t step)
{
    const char *dot = strrchr(out_path, '.'), *slash = strrchr(out_path, '/');
    if (dot && (!slash || dot > slash) && dot != out_path)
        snprintf(buf, size, "%.*s.step-%08llu%s", (int)(dot - out_path), out_path, (unsigned long long)step, dot);
    else
        snprintf(buf, size, "%s.step-%08llu", out_path, (unsigned long long)step);
}

static void save(llm_model_file *f, llm_train_state *s, const char *path)
{
    llm_err err;
    free(f->training);
    f->training = llm_train_state_to_json(s);
    if (!f->training) llm_die("out of memory");
    if (llm_model_file_write(f, path, &err)) llm_die_err(&err);
}

static FILE *log_file;

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
    if (!log_file) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(log_file, fmt, ap);
    va_end(ap);
    fputc('\n', log_file);
    fflush(log_file);
}

static void evaluate(llm_trainer *t, llm_seqset *val, uint64_t step)
{
    llm_err err;
    double loss;
    uint64_t n;
    double t0 = llm_seconds();
    if (llm_trainer_eval(t, val, (uint64_t)val_seqs, &loss, &n, &err)) llm_die_err(&err);
    log_line("{\"step\":%llu,\"val_loss\":%.6f,\"val_ppl\":%.4f,\"val_tokens\":%llu,\"seconds\":%.3f}",
             (unsigned long long)step, loss, exp(loss), (unsigned long long)n, llm_seconds() - t0);
    if (llm_progress_enabled())
        fprintf(stderr, "%s: step %llu: val loss %.4f (ppl %.2f, %llu tokens)\n", llm_progname(), (unsigned long long)step,
                loss, exp(loss), (unsigned long long)n);
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    char **args;
    int nargs = llm_cli_parse(&cmd, argc, argv, &args);
    if (steps < 0) llm_usage_error("--steps N is required");
    if (!out_path) llm_usage_error("-o OUT is required");
    int fresh = init_preset || arch_name;
    if (fresh && nargs != 1) llm_usage_error("with --init or --arch, give DATA only");
    if (!fresh && nargs != 2) llm_usage_error("give MODEL and DATA (or --init PRESET --tokenizer TOK and DATA)");
    if (!fresh && (tok_path || layers || heads || kv_heads || dim || ffn || vocab || ctx || rope_theta || qkv_bias || untied))
        llm_usage_error("--tokenizer and the model sizes are for --init; MODEL has its own");
    if (sched_name && strcmp(sched_name, "cosine") && strcmp(sched_name, "linear") && strcmp(sched_name, "constant"))
        llm_usage_error("--schedule must be cosine, linear or constant");
    if (val_every && !val_path) llm_usage_error("--val-every needs --val DATA");
    if (threads) llmk_set_threads((int)threads);
    const char *data_path = args[nargs - 1];
    llm_err err;

    llm_model_file f;
    llm_train_state s;
    llm_train_state_defaults(&s);
    int resuming = 0;
    if (fresh) {
        make_model(&f);
    } else {
        if (llm_model_file_read(&f, args[0], 1, &err)) llm_die_err(&err);
        if (f.training) {
            if (llm_train_state_from_json(&s, f.training, &err)) llm_die("%s: %s", args[0], err.msg);
            resuming = f.m != NULL;
        }
    }
    /* options given now override the checkpoint's */
    if (seed >= 0) s.seed = (uint64_t)seed;
    if (batch) s.batch = (size_t)batch;
    if (accum) s.accum = (size_t)accum;
    if (lr >= 0) s.sched.lr = lr;
    if (min_lr >= 0) s.sched.min_lr = min_lr;
    else if (lr >= 0 && !resuming) s.sched.min_lr = lr / 10;
    if (warmup >= 0) s.sched.warmup = (uint64_t)warmup;
    if (sched_name) llm_schedule_parse(sched_name, &s.sched.kind);
    if (total_steps) s.sched.total_steps = (uint64_t)total_steps;
    else if (!resuming || !s.sched.total_steps) s.sched.total_steps = s.step + (uint64_t)steps;
    if (weight_decay >= 0) s.weight_decay = weight_decay;
    if (beta1 >= 0) s.beta1 = beta1;
    if (beta2 >= 0) s.beta2 = beta2;
    if (eps >= 0) s.eps = eps;
    if (clip >= 0) s.clip = clip;

    llm_batcher *data;
    if (llm_batcher_open(&data, data_path, s.seed, !no_shuffle, 0, 1, &err)) llm_die_err(&err);
    size_t data_seq = llm_batcher_seq_len(data);
    if (seq) s.seq = (size_t)seq;
    else if (!s.seq) s.seq = data_seq < f.cfg.ctx_len ? data_seq : f.cfg.ctx_len;
    if (s.seq > data_seq) llm_usage_error("--seq %zu is longer than the data's sequences (%zu)", s.seq, data_seq);
    if (s.seq > f.cfg.ctx_len) llm_usage_error("--seq %zu is longer than the model's context (%zu)", s.seq, f.cfg.ctx_len);
    if (resuming && s.cursor[0] && llm_batcher_restore(data, s.cursor, &err))
        llm_die("%s: the checkpoint's data position does not fit %s: %s", args[0], data_path, err.msg);
    llm_seqset *val = NULL;
    if (val_path && llm_seqset_open(val_path, &val, &err)) llm_die_err(&err);
    if (val && llm_seqset_verify(val, &err)) llm_die_err(&err);

    if (fresh && steps == 0 && !val) {
        /* a fresh model, as it is: no moments and no training state yet */
        if (llm_model_file_write(&f, out_path, &err)) llm_die_err(&err);
        llm_batcher_close(data);
        llm_model_file_free(&f);
        return 0;
    }
    llm_trainer *t;
    if (llm_trainer_new(&t, &f, &s, &err)) llm_die_err(&err);
    if (log_path) {
        log_file = strcmp(log_path, "-") ? fopen(log_path, "a") : stdout;
        if (!log_file) llm_die("%s: %s", log_path, strerror(errno));
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    double peak = steps > 0 ? llm_fp32_peak_gflops(llmk_threads()) : 0;
    double flops_per_token = llm_model_flops_per_token(&f.cfg, s.seq);
    /* what the run needs at the least: parameters, gradients, two moments, activations */
    double floor_bytes = 4.0 * (4.0 * (double)f.total + (double)llm_acts_floats(&f.cfg, s.batch, s.seq, 1));
    log_line("{\"event\":\"start\",\"step\":%llu,\"parameters\":%zu,\"threads\":%d,\"peak_gflops\":%.1f,"
             "\"flops_per_token\":%.0f,\"memory_floor_bytes\":%.0f}",
             (unsigned long long)s.step, f.total, llmk_threads(), peak, flops_per_token, floor_bytes);
    uint64_t first = s.step, last = s.step + (uint64_t)steps;
    int progress = llm_progress_enabled();
    while (s.step < last && !stop_requested) {
        llm_step_result r;
        double t0 = llm_seconds();
        int rc = llm_trainer_step(t, data, &r, &err);
        if (rc == LLM_TRAIN_DIVERGED) {
            /* the parameters are those of the last good step: keep them */
            save(&f, &s, out_path);
            llm_die("%s (the last good state, step %llu, is in %s)", err.msg, (unsigned long long)s.step, out_path);
        }
        if (rc) llm_die_err(&err);
        double dt = llm_seconds() - t0, tokens = (double)(s.batch * s.accum * s.seq);
        double tps = tokens / dt, mfu = peak > 0 ? tps * flops_per_token / (peak * 1e9) : 0;
        log_line("{\"step\":%llu,\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%.6f,\"tokens_per_s\":%.1f,\"mfu\":%.4f,"
                 "\"tokens\":%llu,\"seconds\":%.4f}",
                 (unsigned long long)s.step, r.loss, r.lr, r.grad_norm, tps, mfu, (unsigned long long)s.tokens, dt);
        if (progress)
            fprintf(stderr, "\r%s: step %llu/%llu loss %.4f lr %.3g %.0f tok/s mfu %.1f%%\033[K", llm_progname(),
                    (unsigned long long)s.step, (unsigned long long)last, r.loss, r.lr, tps, 100 * mfu);
        if (val && val_every && s.step % (uint64_t)val_every == 0 && s.step < last) {
            if (progress) fputc('\n', stderr);
            evaluate(t, val, s.step);
        }
        if (save_every && s.step % (uint64_t)save_every == 0 && s.step < last) {
            char path[PATH_MAX];
            rolling_name(path, sizeof path, s.step);
            save(&f, &s, path);
            if (s.step >= (uint64_t)(save_every * keep)) {   /* the one that falls out of the last K */
                rolling_name(path, sizeof path, s.step - (uint64_t)(save_every * keep));
                unlink(path);
            }
        }
    }
    if (progress && s.step > first) fputc('\n', stderr);
    if (val) evaluate(t, val, s.step);
    save(&f, &s, out_path);
    if (stop_requested && progress)
        fprintf(stderr, "%s: stopped at step %llu; %s continues from here\n", llm_progname(), (unsigned long long)s.step, out_path);
    llm_trainer_free(t);
    llm_batcher_close(data);
    llm_seqset_close(val);
    llm_model_file_free(&f);
    if (log_file && log_file != stdout) fclose(log_file);
    return 0;
}
