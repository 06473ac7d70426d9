/* fuzz_serve_request.c — libFuzzer target for llm-serve's request bodies
 * (tools/serve/openai.c): the bytes are a body for /v1/completions (first
 * byte even) or /v1/chat/completions (odd), parsed as the HTTP side parses
 * it. A body that is accepted must keep the parser's promises (a prompt that
 * fits the context with its max_tokens, n within --max-n, a job id); its
 * finished answer and its stream are then written from made-up results (the
 * generated text from the body's own bytes, invalid UTF-8 included) and must
 * be JSON. A refused body must have a one-line message and a 4xx status.
 * A broken promise is __builtin_trap. Build and run: t/fuzz/run SECONDS. */
#include "../../tools/serve/server.h"

#include "bpe_train.h"
#include "pretok.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static server S;

/* a tokenizer with chatml's tokens, trained on a few lines */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    llm_err err;
    llm_pretok *p;
    static const char text[] = "In the beginning God created the heaven and the earth. And the earth was without form.";
    static const char *const specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    llm_strbuf json = {0};
    CHECK(!llm_pretok_new(&p, llm_pretok_portable_pattern("gpt2"), &err));
    llm_bpe_trainer *t = llm_bpe_trainer_new(p);
    CHECK(t && !llm_bpe_trainer_add_text(t, text, sizeof text - 1, &err));
    CHECK(!llm_bpe_trainer_finish(t, 280, specials, 3, llm_pretok_portable_pattern("gpt2"), &json, &err));
    CHECK(!llm_tok_from_json(json.data, json.len, "fuzz", &S.tok, &err));
    llm_bpe_trainer_free(t);
    llm_pretok_free(p);
    llm_sb_free(&json);
    S.model_name = "fuzz";
    S.chat = LLM_CHAT_CHATML;
    S.has_chat = 1;
    S.ctx = 64;
    S.vocab = llm_tok_vocab_size(S.tok);
    S.max_n = 4;
    pthread_mutex_init(&S.lock, NULL);
    return 0;
}

static void check_json(const char *s, size_t n)
{
    json_error_t je;
    json_t *v = json_loadb(s, n, JSON_ALLOW_NUL, &je);   /* "\u0000" is JSON */
    CHECK(v);
    json_decref(v);
}

/* The stream's chunks: each "data: JSON" or "data: [DONE]", blank-line separated. */
static void check_stream(const llm_strbuf *b)
{
    size_t i = 0;
    int done = 0;
    while (i < b->len) {
        CHECK(!done && b->len - i > 8 && !memcmp(b->data + i, "data: ", 6));
        const char *end = memmem(b->data + i, b->len - i, "\n\n", 2);
        CHECK(end);
        size_t n = (size_t)(end - (b->data + i)) - 6;
        if (n == 6 && !memcmp(b->data + i + 6, "[DONE]", 6)) done = 1;
        else check_json(b->data + i + 6, n);
        i = (size_t)(end - b->data) + 2;
    }
    CHECK(done);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int chat = data[0] & 1;
    json_error_t je;
    json_t *body = json_loadb((const char *)data + 1, size - 1, 0, &je);
    if (!body) return 0;
    job *j = job_new();
    CHECK(j);
    char msg[512];
    const char *param = NULL;
    int status = parse_completion(&S, body, chat, j, &param, msg, sizeof msg);
    json_decref(body);
    if (status) {
        CHECK(status >= 400 && status < 600 && msg[0] && !strchr(msg, '\n'));
        job_release(j);
        return 0;
    }
    const llm_gen_params *p = &j->gr.p;
    CHECK(j->prompt.n >= 1 && j->prompt.n + p->max_tokens <= S.ctx && p->n >= 1 && p->n <= S.max_n);
    CHECK(j->nch == p->n && j->ch && j->id[0] && j->chat == chat);
    /* made-up results: the body's bytes as text, its tokens as ids */
    size_t k = p->top_logprobs, n_ids = j->prompt.n < p->max_tokens ? j->prompt.n : p->max_tokens;
    llm_strbuf stream = {0};
    int end = 0;
    for (size_t c = 0; c < j->nch; c++) {
        job_choice *ch = &j->ch[c];
        tok_event *ev = calloc(n_ids + 1, sizeof *ev);
        CHECK(ev);
        for (size_t i = 0; i < n_ids; i++) {
            ev[i].delta = malloc(2);
            ev[i].delta[0] = (char)data[(i + c) % size];
            ev[i].delta_len = 1;
            ev[i].id = j->prompt.v[i];
            ev[i].logprob = -(double)i;
            if (k) {
                ev[i].top_ids = calloc(k, sizeof *ev[i].top_ids);
                ev[i].top_lps = calloc(k, sizeof *ev[i].top_lps);
            }
        }
        ch->ev = ev, ch->nev = ch->cap = n_ids;
        char text[41];   /* a done event's text is NUL-terminated */
        size_t tl = size > 40 ? 40 : size;
        memcpy(text, data, tl);
        text[tl] = 0;
        llm_gen_event e = {.done = 1, .text = text, .text_len = tl,
                           .ids = j->prompt.v, .logprobs = NULL, .n_ids = 0, .n_top = k, .finish = "length"};
        double *lps = calloc(n_ids + 1, sizeof *lps);
        uint32_t *tids = calloc(n_ids * k + 1, sizeof *tids);
        double *tlps = calloc(n_ids * k + 1, sizeof *tlps);
        e.logprobs = lps, e.all_top_ids = tids, e.all_top_lps = tlps, e.n_ids = n_ids;
        CHECK(!llm_gen_result_copy(&ch->r, &e));
        free(lps), free(tids), free(tlps);
        ch->done = 1;
        j->ndone++;
    }
    j->completion_tokens = n_ids * j->nch;
    j->state = JOB_DONE;
    char *answer = answer_json(&S, j);
    CHECK(answer);
    check_json(answer, strlen(answer));
    free(answer);
    stream_chunks(&S, j, &stream, &end);
    CHECK(end);
    check_stream(&stream);
    llm_sb_free(&stream);
    job_release(j);
    return 0;
}
