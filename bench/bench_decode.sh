#!/usr/bin/env bash
# bench/bench_decode.sh — decoding at batch 1 against the memory-bandwidth
# bound, measured in the same run: a Llama-shaped model of about 1B
# parameters (the llama-1b preset: the shape of Llama 3.2 1B, random weights,
# context cut to 512; BENCH_DECODE_PRESET to change) in F32, Q8_0 and Q4_0.
# The bound is the read bandwidth of all threads (build/bench/bench_membw)
# over the bytes of weights a token reads: every tensor of the file but the
# token embeddings, of which a token reads one row (unless they are tied, and
# so also the output layer). Prints tokens/s and the fraction of the bound
# (issue 6's target: 0.7), and prefill tokens/s for a prompt of about 180
# tokens (the context is cut to 512).
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${BENCH_DECODE_PRESET:-llama-1b}
dir=$(mktemp -d "${TMPDIR:-/tmp}/llmux-bench-decode.XXXXXX")
trap 'rm -rf "$dir"' EXIT
for i in $(seq 1 50); do echo "Verse $i. In the beginning God created the heaven and the earth."; done > "$dir/text.txt"
bin/llm-tokenize train --vocab-size 300 --special '<|endoftext|>' -o "$dir/tok.json" "$dir/text.txt"
bin/llm-tokenize -t "$dir/tok.json" "$dir/text.txt" | bin/llm-shard --seq 16 -o "$dir/data"
vocab=$([ "$PRESET" = llama-1b ] && echo 128256 || echo 32000)
bin/llm-train --init "$PRESET" --vocab "$vocab" --ctx 512 --tokenizer "$dir/tok.json" "$dir/data" --steps 0 -o "$dir/f32.safetensors"
bin/llm-quantize -q q8_0 "$dir/f32.safetensors" -o "$dir/q8_0.safetensors" > /dev/null
bin/llm-quantize -q q4_0 "$dir/f32.safetensors" -o "$dir/q4_0.safetensors" > /dev/null
bw=$(build/bench/bench_membw 1024 | jq .read_gb_per_s)
prompt=$(for i in $(seq 1 60); do printf 'In the beginning '; done)
echo "# decode at batch 1, $PRESET shape, random weights, $(nproc) threads; read bandwidth $bw GB/s (bench_membw, same run)"
for t in f32 q8_0 q4_0; do
    bytes=$(bin/llm-inspect --compact "$dir/$t.safetensors" | jq '(.metadata.config | fromjson | .tied_embeddings) as $tied
        | [.tensors[] | select($tied or .name != "tok_embeddings.weight") | .bytes] | add')
    bin/llm-infer "$dir/$t.safetensors" -p "In the beginning" -n 24 --temp 0 --ignore-eos -f jsonl > "$dir/$t.jsonl"
    bin/llm-infer "$dir/$t.safetensors" -p "$prompt" -n 1 --temp 0 -f jsonl > "$dir/$t.prefill.jsonl"
    jq -r --arg t "$t" --argjson bytes "$bytes" --argjson bw "$bw" --slurpfile pf "$dir/$t.prefill.jsonl" '
        ($bw * 1e9 / $bytes) as $bound
        | "decode \($t): \(.tokens_per_s * 100 | round / 100) tokens/s; bound \($bound * 100 | round / 100) tokens/s (\($bytes / 1e9 * 100 | round / 100) GB per token): \(.tokens_per_s / $bound * 100 | round / 100) of it (target 0.7); prefill \($pf[0].prompt_tokens) tokens: \($pf[0].prompt_tokens / $pf[0].prompt_seconds * 10 | round / 10) tokens/s"' "$dir/$t.jsonl"
done
# Aggregate decoding: B prompts run as one batch (each 32 tokens after a
# four-token prompt), total generated tokens over the run's seconds, against
# batch 1 of the same format in the same run. (F32 decodes in groups of 4
# sequences, so that a sequence's result does not depend on its batch:
# lib/infer.c; quantized formats in groups of up to 31.)
echo "# aggregate decode tokens/s, $PRESET shape: batch 1, 4, 16 (each sequence 32 tokens, --ignore-eos)"
for t in f32 q8_0 q4_0; do
    line="aggregate $t:"
    base=
    for b in 1 4 16; do
        for i in $(seq 1 "$b"); do echo "In the beginning"; done |
            bin/llm-infer "$dir/$t.safetensors" -n 32 --temp 0 --ignore-eos --batch "$b" --stats 2> "$dir/stats.json" > /dev/null
        tps=$(jq .tokens_per_s "$dir/stats.json")
        base=${base:-$tps}
        line="$line batch $b $(jq -n "$tps * 100 | round / 100") tokens/s ($(jq -n "$tps / $base * 100 | round / 100")x);"
    done
    echo "$line"
done
