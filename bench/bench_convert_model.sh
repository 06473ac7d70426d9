#!/usr/bin/env bash
# bench/bench_convert_model.sh — llm-convert's throughput against copying the
# same file (cp, then cat to /dev/null of the output: what any conversion
# must at least read and write), measured in the same run on one model: a
# GPT-2 small shape with random weights (F32, about 500 MB; BENCH_CONVERT_PRESET
# to change). Each conversion reads the model and writes it in the other
# format: llmux to llmux with --dtype bf16 (every tensor converted), to a
# Hugging Face directory (GPT-2's Conv1D transposes and the q/k/v fusion),
# Hugging Face back to llmux, to GGUF, GGUF back to llmux. MB/s counts the
# input file's bytes; the ratio is against cp's MB/s.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${BENCH_CONVERT_PRESET:-gpt2-small}
dir=$(mktemp -d "${TMPDIR:-/tmp}/llmux-bench-convert.XXXXXX")
trap 'rm -rf "$dir"' EXIT
for i in $(seq 1 200); do echo "Verse $i. In the beginning God created the heaven and the earth."; done > "$dir/text.txt"
jq -cR '{text: .}' "$dir/text.txt" > "$dir/text.jsonl"
bin/llm-tokenize train --vocab-size 512 --special '<|endoftext|>' -o "$dir/tok.json" "$dir/text.txt"
bin/llm-tokenize -t "$dir/tok.json" "$dir/text.jsonl" | bin/llm-shard --seq 64 -o "$dir/data"
bin/llm-train --init "$PRESET" --vocab 50257 --ctx 1024 --tokenizer "$dir/tok.json" "$dir/data" --steps 0 \
    -o "$dir/model.safetensors" 2> /dev/null
bytes=$(stat -c %s "$dir/model.safetensors")
mb=$(echo "$bytes / 1000000" | bc -l)

# best of 3 wall seconds of a command
best() {
    local b= t0 t1 s
    for _ in 1 2 3; do
        rm -rf "$dir/out" "$dir/out.safetensors"
        t0=$(date +%s.%N)
        "$@" > /dev/null 2>&1
        t1=$(date +%s.%N)
        s=$(echo "$t1 - $t0" | bc -l)
        if [ -z "$b" ] || [ "$(echo "$s < $b" | bc -l)" = 1 ]; then b=$s; fi
    done
    echo "$b"
}
copy() { cp "$dir/model.safetensors" "$dir/out.safetensors" && cat "$dir/out.safetensors" > /dev/null; }
bin/llm-convert "$dir/model.safetensors" --to hf -o "$dir/hf" 2> /dev/null
bin/llm-convert "$dir/model.safetensors" --to gguf -o "$dir/model.gguf" 2> /dev/null
ref=$(best copy)
printf '# llm-convert on %s (F32, %.0f MB), best of 3; cp + read back: %.3f s = %.0f MB/s\n' "$PRESET" "$mb" "$ref" \
    "$(echo "$mb / $ref" | bc -l)"
printf '%-22s %8s %8s %8s\n' conversion seconds MB/s "vs cp"
row() {
    local name=$1 s
    shift
    s=$(best "$@")
    printf '%-22s %8.3f %8.0f %8.2f\n' "$name" "$s" "$(echo "$mb / $s" | bc -l)" "$(echo "$ref / $s" | bc -l)"
}
row "llmux -> llmux bf16" bin/llm-convert "$dir/model.safetensors" --to llmux --dtype bf16 -o "$dir/out.safetensors"
row "llmux -> hf" bin/llm-convert "$dir/model.safetensors" --to hf -o "$dir/out"
row "hf -> llmux" bin/llm-convert "$dir/hf" --to llmux -o "$dir/out.safetensors"
row "llmux -> gguf" bin/llm-convert "$dir/model.safetensors" --to gguf -o "$dir/out.safetensors"
row "gguf -> llmux" bin/llm-convert "$dir/model.gguf" --to llmux -o "$dir/out.safetensors"
