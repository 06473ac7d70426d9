/* eval_task.h — task files: JSON lines of examples to score a model on, with
 * an optional header line (llm-tasks(5)).
 *
 * Three types:
 *   mc     multiple choice: {"context":TEXT,"choices":[TEXT,...],"gold":I}
 *          scored by the log-likelihood of each choice after the context;
 *   cloze  the last word: {"text":TEXT} (the word after the last space, the
 *          space with it) or {"context":TEXT,"answer":TEXT}; scored by
 *          whether greedy decoding gives the answer, and its likelihood;
 *   gen    generation: {"prompt":TEXT,"answer":TEXT or [TEXT,...]} and
 *          optionally "match" (exact, contains, regex), "stop", "max_tokens";
 *          the greedy continuation of the prompt is matched with the answers.
 * A line may say its "type"; otherwise the header's, otherwise the fields
 * tell ("choices": mc, "prompt": gen, "text" or "answer": cloze). A line
 * with "split":"train" is a few-shot example, never scored. Other fields are
 * ignored. A header is a first line with "task" (the name) and any of
 * "type", "description", "target_delimiter", "fewshot_delimiter", "shots",
 * "max_tokens", "stop", "match"; it takes no other field.
 *
 * A line that breaks these rules is reported as "FILE:LINE: problem"; with
 * skip_bad the loader warns (through the callback) and goes on, counting it. */
#ifndef LLMUX_EVAL_TASK_H
#define LLMUX_EVAL_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum { LLM_EVAL_NONE = 0, LLM_EVAL_MC, LLM_EVAL_CLOZE, LLM_EVAL_GEN } llm_eval_type;
typedef enum { LLM_MATCH_EXACT = 0, LLM_MATCH_CONTAINS, LLM_MATCH_REGEX } llm_eval_match_kind;

#define LLM_EVAL_DEFAULT_MAX_TOKENS 32

typedef struct {
    size_t line;             /* 1-based line of its file */
    int fewshot;             /* "split":"train": a few-shot example only */
    char *context;           /* mc, cloze: the text before the answer; gen: the prompt */
    char **choices;          /* mc: the choices; cloze: the answer; gen: the accepted answers */
    size_t n_choices;
    size_t gold;             /* mc: the index of the right choice (cloze, gen: 0) */
    int joined;              /* cloze {"text"}: the answer carries its space: no target delimiter */
    /* gen: the line's own settings (has_*: given on the line) */
    int has_match, has_stop;
    llm_eval_match_kind match;
    char **stop;
    size_t n_stop;
    size_t max_tokens;       /* 0: the task's */
    void **regex;            /* match regex: each answer compiled (eval_match.h) */
} llm_eval_example;

typedef struct {
    char *path;
    char *name;              /* the header's "task", else the file name without .jsonl */
    llm_eval_type type;
    char *description, *target_delim, *fewshot_delim;
    int has_shots;
    uint64_t shots;
    size_t max_tokens;       /* gen: default LLM_EVAL_DEFAULT_MAX_TOKENS */
    int has_stop;
    char **stop;             /* gen: default [fewshot_delim] */
    size_t n_stop;
    llm_eval_match_kind match;
    llm_eval_example *ex;
    size_t n, cap;
    size_t n_fewshot;        /* examples with fewshot set */
    size_t bad;              /* lines skipped (skip_bad) */
} llm_eval_task;

typedef void (*llm_eval_warn_fn)(void *ctx, const char *msg);

/* Loads a task file. With skip_bad a bad example line is passed to warn
 * ("FILE:LINE: problem") and counted in t->bad; without, it fails with that
 * message. A file without an example to score fails too, unless
 * allow_no_scored (a few-shot file). */
int llm_eval_task_load(llm_eval_task *t, const char *path, int skip_bad, int allow_no_scored, llm_eval_warn_fn warn,
                       void *ctx, llm_err *err);
void llm_eval_task_free(llm_eval_task *t);

const char *llm_eval_type_name(llm_eval_type type);
const char *llm_eval_match_name(llm_eval_match_kind kind);
int llm_eval_match_parse(const char *s, llm_eval_match_kind *kind);

/* The settings an example runs with: its own, else the task's. */
size_t llm_eval_example_max_tokens(const llm_eval_task *t, const llm_eval_example *e);
llm_eval_match_kind llm_eval_example_match(const llm_eval_task *t, const llm_eval_example *e);
void llm_eval_example_stop(const llm_eval_task *t, const llm_eval_example *e, char *const **stop, size_t *n);

#endif
