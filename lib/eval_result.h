/* eval_result.h — one evaluation's result, and the JSON line it is written as.
 *
 * The line (llm-eval(1) OUTPUT), keys in this order, absent ones left out:
 *   {"time":"2026-01-02T03:04:05Z","model":PATH,"model_hash":HEX,
 *    "task":NAME,"type":"lm"|"mc"|"cloze"|"gen"|"suite",
 *    "data":PATH,"data_hash":HEX,"shots":K,"seed":S,
 *    "shots_file":PATH,"shots_hash":HEX,
 *    "metrics":{NAME:NUMBER,...},"counts":{NAME:INTEGER,...},
 *    "seconds":S,"examples_per_s":X,"tokens_per_s":X}
 * time is UTC, ISO 8601, to the second, when the evaluation started. A
 * metric that is not a number (no tokens to average over) is null. */
#ifndef LLMUX_EVAL_RESULT_H
#define LLMUX_EVAL_RESULT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "eval_hash.h"
#include "strbuf.h"

#define LLM_EVAL_MAX_METRICS 8
#define LLM_EVAL_MAX_COUNTS 8

typedef struct {
    time_t started;
    const char *model, *data, *shots_file, *task, *type;
    char model_hash[LLM_EVAL_HASH_LEN + 1], data_hash[LLM_EVAL_HASH_LEN + 1], shots_hash[LLM_EVAL_HASH_LEN + 1];
    int has_shots;             /* write "shots" and "seed" */
    uint64_t shots, seed;
    const char *metric_names[LLM_EVAL_MAX_METRICS];
    double metric_values[LLM_EVAL_MAX_METRICS];
    size_t n_metrics;
    const char *count_names[LLM_EVAL_MAX_COUNTS];
    uint64_t count_values[LLM_EVAL_MAX_COUNTS];
    size_t n_counts;
    double seconds;
    uint64_t examples, tokens; /* for examples_per_s and tokens_per_s: what went through the model */
} llm_eval_result;

/* Adds (or replaces) a metric or a count; names are static strings. */
void llm_eval_set_metric(llm_eval_result *r, const char *name, double value);
void llm_eval_set_count(llm_eval_result *r, const char *name, uint64_t value);
/* The value of a metric, or NAN when there is none. */
double llm_eval_get_metric(const llm_eval_result *r, const char *name);

/* "2026-01-02T03:04:05Z" into buf (at least 21 bytes). */
void llm_eval_iso_time(time_t t, char *buf, size_t n);

/* Appends the JSON line, with its newline. */
void llm_eval_result_json(const llm_eval_result *r, llm_strbuf *out);

#endif
