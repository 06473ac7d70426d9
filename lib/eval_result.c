/* The JSON line of an evaluation: see eval_result.h. */
#include "eval_result.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void llm_eval_set_metric(llm_eval_result *r, const char *name, double value)
{
    for (size_t i = 0; i < r->n_metrics; i++)
        if (!strcmp(r->metric_names[i], name)) { r->metric_values[i] = value; return; }
    if (r->n_metrics == LLM_EVAL_MAX_METRICS) return;
    r->metric_names[r->n_metrics] = name;
    r->metric_values[r->n_metrics++] = value;
}

void llm_eval_set_count(llm_eval_result *r, const char *name, uint64_t value)
{
    for (size_t i = 0; i < r->n_counts; i++)
        if (!strcmp(r->count_names[i], name)) { r->count_values[i] = value; return; }
    if (r->n_counts == LLM_EVAL_MAX_COUNTS) return;
    r->count_names[r->n_counts] = name;
    r->count_values[r->n_counts++] = value;
}

double llm_eval_get_metric(const llm_eval_result *r, const char *name)
{
    for (size_t i = 0; i < r->n_metrics; i++)
        if (!strcmp(r->metric_names[i], name)) return r->metric_values[i];
    return NAN;
}

void llm_eval_iso_time(time_t t, char *buf, size_t n)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm)) snprintf(buf, n, "1970-01-01T00:00:00Z");
}

static void key_string(llm_strbuf *b, const char *key, const char *value)
{
    if (!value) return;
    llm_sb_printf(b, ",\"%s\":", key);
    llm_sb_json_string(b, value);
}

/* A finite number as JSON: 6 decimals (loss, accuracy and perplexity alike);
 * null when it is not finite. */
static void number(llm_strbuf *b, double v)
{
    if (isfinite(v)) llm_sb_printf(b, "%.6f", v);
    else llm_sb_puts(b, "null");
}

void llm_eval_result_json(const llm_eval_result *r, llm_strbuf *b)
{
    char when[32];
    llm_eval_iso_time(r->started, when, sizeof when);
    llm_sb_printf(b, "{\"time\":\"%s\"", when);
    key_string(b, "model", r->model);
    if (r->model && r->model_hash[0]) key_string(b, "model_hash", r->model_hash);
    key_string(b, "task", r->task);
    key_string(b, "type", r->type);
    key_string(b, "data", r->data);
    if (r->data && r->data_hash[0]) key_string(b, "data_hash", r->data_hash);
    if (r->has_shots)
        llm_sb_printf(b, ",\"shots\":%llu,\"seed\":%llu", (unsigned long long)r->shots, (unsigned long long)r->seed);
    key_string(b, "shots_file", r->shots_file);
    if (r->shots_file && r->shots_hash[0]) key_string(b, "shots_hash", r->shots_hash);
    llm_sb_puts(b, ",\"metrics\":{");
    for (size_t i = 0; i < r->n_metrics; i++) {
        llm_sb_printf(b, "%s\"%s\":", i ? "," : "", r->metric_names[i]);
        number(b, r->metric_values[i]);
    }
    llm_sb_puts(b, "},\"counts\":{");
    for (size_t i = 0; i < r->n_counts; i++)
        llm_sb_printf(b, "%s\"%s\":%llu", i ? "," : "", r->count_names[i], (unsigned long long)r->count_values[i]);
    double s = r->seconds > 0 ? r->seconds : 0;
    llm_sb_printf(b, "},\"seconds\":%.3f", s);
    if (r->examples || r->tokens)
        llm_sb_printf(b, ",\"examples_per_s\":%.2f,\"tokens_per_s\":%.1f", s > 0 ? r->examples / s : 0.0,
                      s > 0 ? r->tokens / s : 0.0);
    llm_sb_puts(b, "}\n");
}
