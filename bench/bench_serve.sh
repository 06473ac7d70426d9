#!/usr/bin/env bash
# bench/bench_serve.sh — llm-serve under load against one client, measured in
# the same run on the same server: a Llama-shaped model of about 13M
# parameters in F32 (4 layers, width 512, feed-forward 1536, 8 heads of which
# 4 for keys and values, context 256; a BPE of 512 tokens trained on
# tinyshakespeare, then a few llm-train steps on it: about 15 s), served by
# bin/llm-serve --port 0 --max-seqs 64.
#
#   single  one streaming client, sequential requests for 10 s
#           (BENCH_SERVE_SINGLE_SECONDS): tokens/s, the reference;
#   load    64 streaming clients (BENCH_SERVE_CLIENTS) for 30 s
#           (BENCH_SERVE_SECONDS), each looping requests like the single
#           one: aggregate tokens/s, its ratio to the single client's
#           (target 4x: reported, and BELOW TARGET under it; not the exit
#           status), every stream checked (status, SSE, finish_reason,
#           usage, data: [DONE]), and the peak of the KV blocks used
#           against the budget from GET /metrics sampled every second.
#
# Each request: POST /v1/completions, stream, max_tokens 64, ignore_eos,
# temperature 1, a seed of its own. Exit status 1 on any error or stream
# without [DONE], a KV peak over the budget, or a server that does not exit
# 0 on SIGTERM. Builds nothing: bin/ must be made. The client is
# bench/bench_serve.py (Python 3's standard library: $PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/llm-serve ] || { echo "bench_serve: bin/llm-serve is not built (make all)" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/llmux-bench-serve.XXXXXX")
trap 'rm -rf "$dir"' EXIT
text=../shared/refs/data/tinyshakespeare.txt
if [ ! -r "$text" ]; then
    text="$dir/text.txt"
    for i in $(seq 1 2000); do echo "Verse $i. In the beginning God created the heaven and the earth, and the earth was without form and void."; done > "$text"
fi
bin/llm-tokenize train --vocab-size 512 --special '<|endoftext|>' -o "$dir/tok.json" "$text"
jq -cR '{text: .}' "$text" | bin/llm-tokenize -t "$dir/tok.json" | bin/llm-shard --seq 128 -o "$dir/data"
t0=$(date +%s.%N)
bin/llm-train --arch llama --layers 4 --heads 8 --kv-heads 4 --dim 512 --ffn 1536 --ctx 256 --tokenizer "$dir/tok.json" \
    "$dir/data" --steps "${BENCH_SERVE_TRAIN_STEPS:-20}" --lr 3e-3 -o "$dir/model.safetensors" > /dev/null 2>&1
echo "# llm-serve under load, llama shape 4x512 (ffn 1536, ctx 256, vocab 512, F32), $(nproc) threads; model made in $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }") s"
${PYTHON:-python3} bench/bench_serve.py "$dir/model.safetensors" --server bin/llm-serve --log "$dir/llm-serve.log" --max-seqs 64
