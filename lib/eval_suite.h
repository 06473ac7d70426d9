/* eval_suite.h — a suite: JSON lines each naming one evaluation, run one
 * after another (as LLM Foundry's gauntlet lists its tasks):
 *   {"task":"arc.jsonl","shots":5}       a task file (llm-tasks(5))
 *   {"data":"data/val"}                  a shard set or sequence stream
 *   {"text":"wiki.txt","window":512}     a text file
 * with any of "name" (the task name in the results), "shots", "seed",
 * "shots_file", "limit", "max_tokens" (tasks), "window", "stride" (text),
 * which override the command line's for that line. Relative paths are from
 * the suite file's directory. Other fields are an error. */
#ifndef LLMUX_EVAL_SUITE_H
#define LLMUX_EVAL_SUITE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum { LLM_SUITE_TASK, LLM_SUITE_DATA, LLM_SUITE_TEXT } llm_eval_suite_kind;

typedef struct {
    size_t line;
    llm_eval_suite_kind kind;
    char *path;              /* resolved */
    char *name;              /* or NULL */
    char *shots_file;        /* resolved, or NULL */
    int has_shots, has_seed;
    uint64_t shots, seed, limit;   /* limit 0: not given */
    uint64_t max_tokens, window, stride;   /* 0: not given */
} llm_eval_suite_entry;

typedef struct {
    char *path, *name;       /* name: the file name without .jsonl */
    llm_eval_suite_entry *e;
    size_t n;
} llm_eval_suite;

int llm_eval_suite_load(llm_eval_suite *s, const char *path, llm_err *err);
void llm_eval_suite_free(llm_eval_suite *s);

#endif
