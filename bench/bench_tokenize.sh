#!/usr/bin/env bash
# bench/bench_tokenize.sh — encoding speed against tiktoken, measured in the
# same run, on the King James Bible (Debian's bible-kjv) with the reference
# rank files in ../shared/refs/tokenizers (skipped with a message where either
# is missing):
#  1. single-thread encode MB/s, ours (bench_tokenize: in process, loading not
#     counted) against tiktoken's encode_ordinary, for gpt2, cl100k_base, o200k_base;
#  2. 2 threads against 1 on the KJV repeated 8 times: the encoding pool in
#     process (loading not counted, as in 1), and the whole program;
#  3. the worst case: 1 MB of letters without spaces and 1 MB of one repeated
#     character against their 0.25 MB versions (ours; tiktoken's for comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${LLMUX_VENV:-$HOME/.cache/llmux/venv}/bin/python
REFS=${LLMUX_REFS:-../shared/refs/tokenizers}
if ! command -v bible >/dev/null 2>&1; then echo "# tokenize: skipped: bible-kjv is not installed"; exit 0; fi
if [ ! -f "$REFS/gpt2.tiktoken" ]; then echo "# tokenize: skipped: no reference rank files in $REFS"; exit 0; fi
if [ ! -x "$PY" ] || ! "$PY" -c "import tiktoken" 2>/dev/null; then
    echo "# tokenize: skipped: no tiktoken in $PY ('make conformance' creates the venv)"; exit 0
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/llmux-bench-tok.XXXXXX")
trap 'rm -rf "$dir"' EXIT
bible -f "gen1:1-rev22:21" > "$dir/kjv.txt"
for i in 1 2 3 4 5 6 7 8; do cat "$dir/kjv.txt"; done > "$dir/kjv8.txt"
"$PY" - "$dir" <<'PY'
import random, sys
d = sys.argv[1]
random.seed(1)
for n, tag in [(1 << 18, "256k"), (1 << 20, "1m")]:
    open(f"{d}/letters_{tag}.txt", "w").write("".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n)))
    open(f"{d}/same_{tag}.txt", "w").write("a" * n)
PY

# tiktoken, timed in the same way: best of 3, loading not counted
tiktoken_seconds() {   # ENCODING FILE
    "$PY" - "$1" "$REFS/$1.tiktoken" "$2" <<'PY'
import sys, time, inspect, re
import tiktoken, tiktoken_ext.openai_public as openai_public
from tiktoken.load import load_tiktoken_bpe
name, ranks, path = sys.argv[1:4]
# tiktoken's own pattern for the encoding, read from its source (no download)
src = inspect.getsource(getattr(openai_public, name))
if "r50k_pat_str" in src:
    pat = openai_public.r50k_pat_str
else:
    env = {}
    body = src[src.index("pat_str"):]
    m = re.search(r'"pat_str":\s*(r"""(.*?)""")', src, re.S)
    if m:
        pat = m.group(2)
    else:   # o200k: pat_str = "|".join([...])
        block = src[src.index("pat_str = "):src.index("return")]
        exec(block, {}, env)
        pat = env["pat_str"]
enc = tiktoken.Encoding(name, pat_str=pat, mergeable_ranks=load_tiktoken_bpe(ranks), special_tokens={})
text = open(path, encoding="utf-8").read()
best = 1e9
for _ in range(3):
    t = time.perf_counter(); enc.encode_ordinary(text); best = min(best, time.perf_counter() - t)
print(f"{best:.6f}")
PY
}
ours_seconds() { build/bench/bench_tokenize "$REFS/$1.tiktoken" "$2" 3 | jq -r .seconds; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

mb=$(awk -v n="$(stat -c %s "$dir/kjv.txt")" 'BEGIN { printf "%.2f", n / 1e6 }')
echo "# tokenize: KJV ($mb MB), single thread, best of 3"
for enc in gpt2 cl100k_base o200k_base; do
    ours=$(ours_seconds "$enc" "$dir/kjv.txt")
    theirs=$(tiktoken_seconds "$enc" "$dir/kjv.txt")
    echo "tokenize $enc: llmux $(ratio "$mb" "$ours") MB/s, tiktoken $(ratio "$mb" "$theirs") MB/s: $(ratio "$theirs" "$ours")x tiktoken"
done

best_wall() {   # best of 3 wall seconds of a command
    local best=
    for _ in 1 2 3; do
        local s e
        s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N)
        best=$(awk -v b="$best" -v t="$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')" 'BEGIN { print (b == "" || t < b) ? t : b }')
    done
    echo "$best"
}
p1=$(build/bench/bench_tokenize "$REFS/gpt2.tiktoken" "$dir/kjv8.txt" 3 1 | jq -r .seconds)
p2=$(build/bench/bench_tokenize "$REFS/gpt2.tiktoken" "$dir/kjv8.txt" 3 2 | jq -r .seconds)
echo "tokenize threads (KJV x8, gpt2, encoding in process): 1 thread ${p1}s, 2 threads ${p2}s: $(ratio "$p1" "$p2")x (2 cores)"
j1=$(best_wall bin/llm-tokenize -t "$REFS/gpt2.tiktoken" -j 1 --format count "$dir/kjv8.txt")
j2=$(best_wall bin/llm-tokenize -t "$REFS/gpt2.tiktoken" -j 2 --format count "$dir/kjv8.txt")
echo "tokenize threads (KJV x8, gpt2, whole program with loading): -j 1 ${j1}s, -j 2 ${j2}s: $(ratio "$j1" "$j2")x"

for kind in letters same; do
    small=$(ours_seconds gpt2 "$dir/${kind}_256k.txt")
    big=$(ours_seconds gpt2 "$dir/${kind}_1m.txt")
    tsmall=$(tiktoken_seconds gpt2 "$dir/${kind}_256k.txt")
    tbig=$(tiktoken_seconds gpt2 "$dir/${kind}_1m.txt")
    echo "tokenize worst case ($kind, gpt2): 1 MB costs $(ratio "$big" "$small")x 0.25 MB (tiktoken $(ratio "$tbig" "$tsmall")x); 1 MB: llmux ${big}s, tiktoken ${tbig}s"
done
