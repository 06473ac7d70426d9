#!/usr/bin/env bash
# bench/bench_shard.sh — llm-shard's throughput and memory, on the King James
# Bible (Debian's bible-kjv) cut into its 1189 chapters as documents,
# tokenized with a BPE trained on it (8000 tokens), and that doc stream given
# 100 times (about 220 MB of token data; skipped with a message where
# bible-kjv is missing).
#  1. MB/s of token data for a stream to /dev/null, a shard set (-o, with its
#     checksums and fsync) and a shuffled shard set, against the target of
#     300 MB/s and against cat reading the same files, measured in the same run;
#  2. peak memory (the kernel's maximum resident set) of --shuffle --mem 16M
#     on that input (14 times the budget) against the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bible >/dev/null 2>&1; then echo "# shard: skipped: bible-kjv is not installed"; exit 0; fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/llmux-bench-shard.XXXXXX")
trap 'rm -rf "$dir"' EXIT
bible -f "gen1:1-rev22:21" > "$dir/kjv.txt"
# one JSON line per chapter ("Ge1:1 ...": the book and chapter before the colon)
python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
docs, key, buf = [], None, []
for line in open(f"{d}/kjv.txt"):
    k = line.split(":", 1)[0]
    if k != key and buf:
        docs.append("".join(buf)); buf = []
    key = k; buf.append(line)
docs.append("".join(buf))
with open(f"{d}/kjv.jsonl", "w") as f:
    for t in docs: f.write(json.dumps({"text": t}) + "\n")
PY
bin/llm-tokenize train --vocab-size 8000 --special '<|endoftext|>' -o "$dir/tok.json" "$dir/kjv.txt"
bin/llm-tokenize -t "$dir/tok.json" "$dir/kjv.jsonl" -o "$dir/kjv.stream"
inputs=()
for _ in $(seq 100); do inputs+=("$dir/kjv.stream"); done
# token data: the tokens fields of the doc records, as llm-inspect counts them
tokens=$(bin/llm-inspect "$dir/kjv.stream" | jq -s 'map(select(.type == "doc") | .tokens | length) | add')
width=$(bin/llm-inspect --head 0 "$dir/kjv.stream" | jq .token_width)
mb=$(echo "$tokens * $width * 100 / 1000000" | bc -l)
best() {   # best of 3 wall seconds of a command
    local b=999 t
    for _ in 1 2 3; do
        rm -rf "$dir/out"
        t=$( { /usr/bin/env time -f %e "$@" > /dev/null; } 2>&1 | tail -n 1)
        b=$(echo "if ($t < $b) $t else $b" | bc -l)
    done
    echo "$b"
}
printf '# shard: %d docs x 100 = %.0f MB of token data (%d-byte tokens), seq 1024\n' 1189 "$mb" "$width"
cat_s=$(best cat "${inputs[@]}")
for mode in stream set shuffled; do
    case $mode in
    stream) s=$(best bin/llm-shard --seq 1024 "${inputs[@]}") ;;
    set) s=$(best bin/llm-shard --seq 1024 -o "$dir/out" "${inputs[@]}") ;;
    shuffled) s=$(best bin/llm-shard --seq 1024 --shuffle -o "$dir/out" "${inputs[@]}") ;;
    esac
    echo "$mode $s $cat_s $mb" | awk '{ r = $4 / ($2 > 0.001 ? $2 : 0.001); c = $4 / ($3 > 0.001 ? $3 : 0.001);
        printf "shard %-8s %7.0f MB/s: %.2fx the 300 MB/s target; cat of the same files %.0f MB/s (%.2fx of it)\n", $1, r, r / 300, c, r / c }'
done
rm -rf "$dir/out"
peak_kb=$(python3 - "$dir/out" "${inputs[@]}" <<'PY'
import resource, subprocess, sys
out, files = sys.argv[1], sys.argv[2:]
subprocess.run(["bin/llm-shard", "--seq", "1024", "--shuffle", "--mem", "16M", "-o", out] + files, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
)
echo "$peak_kb $mb" | awk '{ printf "shard --shuffle --mem 16M on %.0f MB (%.0fx the budget): peak resident %.1f MB = %.2f of the budget\n", $2, $2 / 16.777216, $1 / 1024, $1 / 16384 }'
