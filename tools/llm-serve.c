/* llm-serve — an OpenAI-compatible HTTP server over one model, with
 * continuous batching and a paged KV cache. See man/man1/llm-serve.1; the
 * parts are in tools/serve/ (server.h says how they fit). */
#include "clock.h"
#include "cli.h"
#include "serve/server.h"
#include "sysmem.h"

#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *host = "127.0.0.1", *api_key, *model_name, *chat_name;
static int64_t port = 8080, max_seqs = 64, kv_blocks, max_n = 16, max_queue = 1024, max_tokens;
static uint64_t max_body = 1 << 20;
static double timeout_s = 600, drain_s = 10;

static const llm_opt options[] = {
    {"host", 0, LLM_OPT_STR, &host, "ADDR", "the address to bind (default 127.0.0.1)", 0, 0},
    {"port", 0, LLM_OPT_INT, &port, "N", "the port (default 8080; 0: any free one)", 0, 65535},
    {"api-key", 0, LLM_OPT_STR, &api_key, "KEY", "requests need Authorization: Bearer KEY (or $LLMUX_API_KEY)", 0, 0},
    {"max-seqs", 0, LLM_OPT_INT, &max_seqs, "N", "sequences decoding at once (default 64)", 1, 4096},
    {"kv-blocks", 0, LLM_OPT_INT, &kv_blocks, "N",
     "KV cache budget in blocks of 32 positions (default: --max-seqs whole contexts)", 1, INT32_MAX},
    {"model-name", 0, LLM_OPT_STR, &model_name, "NAME", "the model's name in the API (default: the file's)", 0, 0},
    {"chat-template", 0, LLM_OPT_STR, &chat_name, "NAME", "chatml, llama2 or llama3 (default: the model's)", 0, 0},
    {"max-body", 0, LLM_OPT_SIZE, &max_body, "BYTES", "the largest request body (default 1M)", 0, 0},
    {"max-tokens", 0, LLM_OPT_INT, &max_tokens, "N", "the most tokens a request may ask for (default: the context)", 1,
     1 << 24},
    {"max-n", 0, LLM_OPT_INT, &max_n, "N", "the largest n of a request (default 16)", 1, 1024},
    {"max-queue", 0, LLM_OPT_INT, &max_queue, "N", "requests waiting before new ones get 503 (default 1024)", 1, 1 << 20},
    {"timeout", 0, LLM_OPT_DOUBLE, &timeout_s, "SECONDS", "a request's deadline, body to last token (default 600)", 0, 0},
    {"drain", 0, LLM_OPT_DOUBLE, &drain_s, "SECONDS", "on SIGTERM, time for running requests to finish (default 10)", 0,
     0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd cmd = {
    "llm-serve",
    "serve a model over HTTP with the OpenAI API (completions, chat, streaming)",
    "MODEL [--host ADDR] [--port N] [--api-key KEY] [--max-seqs N] [--kv-blocks N]",
    options,
    "Endpoints: POST /v1/completions, /v1/chat/completions, /tokenize, /detokenize; GET /v1/models,\n"
    "/health, /metrics, / (a chat page). SIGTERM or SIGINT: stop accepting, let requests finish for\n"
    "--drain seconds, exit 0.",
};

/* The file's name without its directory and .safetensors. */
static char *default_name(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base), ext = strlen(".safetensors");
    if (n > ext && !strcmp(base + n - ext, ".safetensors")) n -= ext;
    return strndup(base, n);
}

/* Opens the model, its tokenizer and chat format, and the KV budget. */
static void load(server *S)
{
    llm_err err;
    if (llm_infer_open(&S->m, S->model_path, &err)) llm_die_err(&err);
    const llm_config *c = llm_infer_config(S->m);
    S->ctx = c->ctx_len;
    S->vocab = c->vocab_size;
    S->kv_block_bytes = llm_infer_kv_block_bytes(S->m);
    size_t per_seq = (S->ctx + LLM_KV_BLOCK - 1) / LLM_KV_BLOCK, blocks = (size_t)kv_blocks;
    if (!blocks) {   /* --max-seqs whole contexts, within half of the free memory */
        const char *what;
        uint64_t half = llm_mem_available(&what) / 2, fit = half / S->kv_block_bytes;
        blocks = S->max_seqs * per_seq;
        if (blocks > fit) blocks = fit > per_seq ? (size_t)fit : per_seq;
    }
    if (llm_infer_kv_limit(S->m, blocks, &err)) llm_die("%s: %s", S->model_path, err.msg);
    const char *tok_json = llm_infer_meta(S->m, "tokenizer");
    if (!tok_json) llm_die("%s: the model has no tokenizer in its metadata", S->model_path);
    if (llm_tok_from_json(tok_json, strlen(tok_json), S->model_path, &S->tok, &err)) llm_die_err(&err);
    int unrecognised;
    if (llm_gen_chat_format(chat_name, llm_infer_meta(S->m, "chat_template"), &S->chat, &S->has_chat, &unrecognised,
                            &err))
        llm_usage_error("--chat-template must be chatml, llama2 or llama3, not '%s'", chat_name);
    if (unrecognised)
        llm_warning("%s: chat template not recognised: /v1/chat/completions answers 400 (give --chat-template)",
                    S->model_path);
    S->kv_max = blocks;
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    char **args;
    int nargs = llm_cli_parse(&cmd, argc, argv, &args);
    if (nargs != 1) llm_usage_error("give one MODEL");
    if (!(timeout_s > 0) || !(drain_s >= 0)) llm_usage_error("--timeout must be above 0 and --drain 0 or more");
    llm_chat_format fmt;
    if (chat_name && (llm_chat_format_parse(chat_name, &fmt) || fmt == LLM_CHAT_NONE))
        llm_usage_error("--chat-template must be chatml, llama2 or llama3, not '%s'", chat_name);
    if (!api_key && getenv("LLMUX_API_KEY") && *getenv("LLMUX_API_KEY")) api_key = getenv("LLMUX_API_KEY");
    if (api_key && !*api_key) llm_usage_error("--api-key is empty");
    if (access(args[0], R_OK)) llm_die("%s: cannot read the model", args[0]);

    /* signals: SIGTERM and SIGINT are waited for below; every thread inherits the mask */
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    static server S;
    S.model_path = args[0], S.host = host, S.api_key = api_key;
    S.port = (unsigned)port, S.max_seqs = (size_t)max_seqs, S.max_body = max_body, S.max_n = (size_t)max_n;
    S.max_queue = (size_t)max_queue, S.max_tokens = (size_t)max_tokens, S.timeout = timeout_s;
    char *name = model_name ? strdup(model_name) : default_name(args[0]);
    if (!name) llm_die("out of memory");
    S.model_name = name;
    S.started = (long long)time(NULL);
    S.seed_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    pthread_mutex_init(&S.lock, NULL);
    pthread_cond_init(&S.work, NULL);
    pthread_cond_init(&S.progress, NULL);

    char msg[256];
    unsigned bound;
    struct MHD_Daemon *d = http_start(&S, &bound, msg, sizeof msg);
    if (!d) llm_die("%s", msg);
    int v6 = strchr(host, ':') != NULL;
    fprintf(stderr, "llm-serve: listening on http://%s%s%s:%u\n", v6 ? "[" : "", host, v6 ? "]" : "", bound);
    double t0 = llm_seconds();
    load(&S);
    pthread_t engine;
    if (engine_start(&S, &engine)) llm_die("cannot start the engine");
    pthread_mutex_lock(&S.lock);
    S.ready = 1;
    pthread_mutex_unlock(&S.lock);
    fprintf(stderr,
            "llm-serve: ready in %.2f s: model '%s', context %zu, KV cache %zu blocks of %d positions (%.1f MB), "
            "%zu sequences at once\n",
            llm_seconds() - t0, S.model_name, S.ctx, S.kv_max, LLM_KV_BLOCK, S.kv_max * (double)S.kv_block_bytes / 1e6,
            S.max_seqs);

    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "llm-serve: %s: no new connections; requests running get %g s to finish\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", drain_s);
    pthread_mutex_lock(&S.lock);
    S.stopping = 1;
    pthread_mutex_unlock(&S.lock);
    MHD_socket listen_fd = MHD_quiesce_daemon(d);
    if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
    double deadline = llm_seconds() + drain_s;
    for (;;) {
        pthread_mutex_lock(&S.lock);
        int busy = S.waiting || S.running || S.inbox;
        pthread_mutex_unlock(&S.lock);
        if (!busy || llm_seconds() >= deadline) break;
        usleep(20000);
    }
    pthread_mutex_lock(&S.lock);
    size_t cancelled = S.waiting + S.running;
    S.quit = 1;
    pthread_cond_broadcast(&S.work);
    pthread_cond_broadcast(&S.progress);
    pthread_mutex_unlock(&S.lock);
    pthread_join(engine, NULL);
    MHD_stop_daemon(d);
    if (cancelled) fprintf(stderr, "llm-serve: %zu requests cancelled at the deadline\n", cancelled);
    fprintf(stderr, "llm-serve: stopped\n");
    llm_tok_free(S.tok);
    llm_infer_close(S.m);
    free(name);
    return 0;
}
