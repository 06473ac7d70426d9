/* eval_history.h — the JSON lines llm-eval appended over time, as tables:
 * one per model path and task, in the order each pair first appears, its
 * rows in the order read (the order they were appended: oldest first).
 *
 *   == MODEL  TASK (TYPE)
 *   time                  hash      loss    ppl      bpb     n     seconds
 *   2026-01-02T03:04:05Z  1f2e3d4c  4.0875  59.5909  1.6203  446   2.9
 *
 * Columns: time, the first 8 hex digits of model_hash (which file the path
 * held then), each metric any row of the table has (in the order first
 * seen; 4 decimals; "-" where a row lacks it), n (the examples, sequences or
 * windows counted), seconds. Text columns are left-aligned, numbers right,
 * two spaces apart; a blank line between tables. */
#ifndef LLMUX_EVAL_HISTORY_H
#define LLMUX_EVAL_HISTORY_H

#include <stddef.h>

#include "err.h"
#include "eval_task.h"
#include "strbuf.h"

typedef struct llm_eval_history llm_eval_history;

llm_eval_history *llm_eval_history_new(void);
void llm_eval_history_free(llm_eval_history *h);
/* Reads a file of result lines ('-': standard input). A line that is not a
 * result (JSON with "time", "model", "task" strings and a "metrics" object)
 * fails as "FILE:LINE: problem", or with skip_bad is passed to warn and
 * counted. */
int llm_eval_history_read(llm_eval_history *h, const char *path, int skip_bad, llm_eval_warn_fn warn, void *ctx,
                          llm_err *err);
size_t llm_eval_history_bad(const llm_eval_history *h);
size_t llm_eval_history_rows(const llm_eval_history *h);
/* Appends the tables. */
void llm_eval_history_table(const llm_eval_history *h, llm_strbuf *out);

#endif
