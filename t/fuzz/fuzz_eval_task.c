/* fuzz_eval_task.c — libFuzzer target for llm-eval's task files
 * (lib/eval_task.c, and the regexes of lib/eval_match.c it compiles).
 *
 * The input is the text of a task file, loaded from a temporary file twice:
 * strict (a bad line fails the load, with an error message naming the
 * file and line) and with skip_bad (bad lines counted). Whatever loads must
 * keep the loader's promises: a type, examples whose mc gold is in range,
 * answers present. A broken promise is __builtin_trap. Build and run:
 * t/fuzz/run SECONDS. */
#include "eval_task.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void count_warning(void *ctx, const char *msg)
{
    CHECK(msg && *msg);
    ++*(size_t *)ctx;
}

static void check_loaded(const llm_eval_task *t)
{
    CHECK(t->type == LLM_EVAL_MC || t->type == LLM_EVAL_CLOZE || t->type == LLM_EVAL_GEN);
    CHECK(t->name && t->n <= t->cap && t->n_fewshot <= t->n);
    for (size_t i = 0; i < t->n; i++) {
        const llm_eval_example *e = &t->ex[i];
        CHECK(e->context && e->n_choices >= 1 && e->choices);
        CHECK(e->gold < e->n_choices);
        for (size_t c = 0; c < e->n_choices; c++) CHECK(e->choices[c]);
        char *const *stop;
        size_t n;
        llm_eval_example_stop(t, e, &stop, &n);
        for (size_t s = 0; s < n; s++) CHECK(stop[s]);
        (void)llm_eval_example_max_tokens(t, e);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/llmux-fuzz-task-XXXXXX.jsonl";
    int fd = mkstemps(path, 6);
    CHECK(fd >= 0);
    CHECK(size == 0 || write(fd, data, size) == (ssize_t)size);
    CHECK(close(fd) == 0);
    for (int skip = 0; skip <= 1; skip++) {
        llm_eval_task t;
        memset(&t, 0, sizeof t);
        llm_err err;
        size_t warnings = 0;
        if (llm_eval_task_load(&t, path, skip, 0, count_warning, &warnings, &err) == 0) {
            check_loaded(&t);
            CHECK(skip ? warnings == t.bad : warnings == 0);
        } else {
            CHECK(err.msg[0] != 0);
        }
        llm_eval_task_free(&t);
    }
    unlink(path);
    return 0;
}
