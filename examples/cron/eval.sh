#!/usr/bin/env bash
# examples/cron/eval.sh — what the crontab line runs: evaluate a model on a
# suite and append one JSON line per task to a history file, which
# `llm-eval --history` shows as tables.
#
#   examples/cron/eval.sh MODEL [SUITE [HISTORY]]
#
# SUITE defaults to examples/cron/kjv-suite.jsonl (the demo's validation set and
# two small tasks from the King James Bible), HISTORY to evals.jsonl.
# A run that finds the previous one still going exits quietly (flock), so a
# slow evaluation never overlaps the next; a model file being rewritten is
# read as the old or the new one (llm-train writes a temporary file and
# renames it). llm-eval writes each line only when its task is complete, so
# the history never holds half a line; a failed task stops the run with a
# message on stderr (cron mails it) and exit status 1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model=${1:?usage: eval.sh MODEL [SUITE [HISTORY]]}
suite=${2:-$here/kjv-suite.jsonl}
history=${3:-evals.jsonl}
PATH=$here/../../bin:$PATH

exec 9>>"$history.lock"
if ! flock -n 9; then
    echo "eval.sh: an evaluation is still running; not starting another" >&2
    exit 0
fi
llm-eval "$model" --suite "$suite" >> "$history"
