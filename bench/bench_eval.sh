#!/usr/bin/env bash
# bench/bench_eval.sh — llm-eval's throughput against the forward pass's
# own, measured in the same run on the same model and tokens: a GPT-2 small
# shape (BENCH_EVAL_PRESET to change; random weights, context 256, GPT-2's
# vocabulary of 50257) in F32 and Q8_0.
#
#   language modelling  llm-eval DATA on 16 sequences of 128 tokens, against
#                       build/t/llmux-ppl (one sequence per pass, every
#                       position's logits): tokens/s and the ratio;
#   multiple choice     16 questions of 4 choices: questions/s and tokens/s
#                       (the tokens llm-eval runs: each context once, then
#                       the choices), against llm-infer's prefill of the
#                       same texts (context + choice as one prompt each,
#                       --requests, -n 1): its tokens/s, and the ratio of
#                       questions/s (what sharing the context gains);
#   generation          16 prompts, 8 greedy tokens each, against llm-infer
#                       --temp 0 on the same prompts at the same batch:
#                       tokens/s (prompt and generated) and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${BENCH_EVAL_PRESET:-gpt2-small}
dir=$(mktemp -d "${TMPDIR:-/tmp}/llmux-bench-eval.XXXXXX")
trap 'rm -rf "$dir"' EXIT
[ -x build/t/llmux-ppl ] || make -s build/t/llmux-ppl
for i in $(seq 1 400); do echo "Verse $i. In the beginning God created the heaven and the earth, and the earth was without form and void."; done > "$dir/text.txt"
jq -cR '{text: .}' "$dir/text.txt" > "$dir/text.jsonl"
bin/llm-tokenize train --vocab-size 512 --special '<|endoftext|>' -o "$dir/tok.json" "$dir/text.txt"
bin/llm-tokenize -t "$dir/tok.json" "$dir/text.jsonl" | bin/llm-shard --seq 128 -o "$dir/data"
vocab=$(case $PRESET in gpt2*) echo 50257 ;; llama-1b) echo 128256 ;; *) echo 32000 ;; esac)
bin/llm-train --init "$PRESET" --vocab "$vocab" --ctx 256 --tokenizer "$dir/tok.json" "$dir/data" --steps 0 -o "$dir/f32.safetensors" 2> /dev/null
bin/llm-quantize -q q8_0 "$dir/f32.safetensors" -o "$dir/q8_0.safetensors" > /dev/null
# 16 questions: a context of 14 words, four choices of 4 words (random, from a fixed seed)
words=(in the beginning god created heaven and earth was without form void darkness upon face of deep spirit moved
       waters said let there be light saw that it good divided from)
RANDOM=1
say() { local out=() i; for ((i = 0; i < $1; i++)); do out+=("${words[RANDOM % ${#words[@]}]}"); done; echo "${out[*]}"; }
for q in $(seq 1 16); do
    ctx=$(say 14) c1=$(say 4) c2=$(say 4) c3=$(say 4) c4=$(say 4)
    jq -nc --arg x "$ctx" --arg a "$c1" --arg b "$c2" --arg c "$c3" --arg d "$c4" \
        '{context: $x, choices: [$a, $b, $c, $d], gold: 0}' >> "$dir/mc.jsonl"
    for c in "$c1" "$c2" "$c3" "$c4"; do
        jq -nc --arg p "$ctx $c" '{prompt: $p, max_tokens: 1, temperature: 0}' >> "$dir/mc-prompts.jsonl"
    done
    jq -nc --arg p "$ctx" '{prompt: $p, answer: "x", max_tokens: 8, stop: []}' >> "$dir/gen.jsonl"
done
jq -r '.prompt' "$dir/gen.jsonl" > "$dir/gen-prompts.txt"
now() { date +%s.%N; }
r2() { jq -n "$1 * 100 | round / 100"; }
echo "# llm-eval, $PRESET shape (random weights, vocab $vocab), $(nproc) threads; references measured in the same run"
for t in f32 q8_0; do
    m="$dir/$t.safetensors"
    # language modelling
    t0=$(now); build/t/llmux-ppl "$m" "$dir/data" 16 > "$dir/ppl.json"; t1=$(now)
    ref=$(jq -n --argjson s "$(awk "BEGIN { print $t1 - $t0 }")" "$(jq .tokens "$dir/ppl.json") / \$s")
    bin/llm-eval "$m" "$dir/data" --limit 16 > "$dir/lm.json"
    ours=$(jq .tokens_per_s "$dir/lm.json")
    same=$(jq -n --slurpfile a "$dir/ppl.json" --slurpfile b "$dir/lm.json" '$a[0].loss == $b[0].metrics.loss')
    echo "lm $t: $(r2 "$ours") tokens/s; llmux-ppl $(r2 "$ref") tokens/s: $(r2 "$ours / $ref")x (the same loss: $same)"
    # multiple choice
    bin/llm-eval "$m" --task "$dir/mc.jsonl" > "$dir/mc.json"
    bin/llm-infer "$m" --requests "$dir/mc-prompts.jsonl" --stats 2> "$dir/infer.json" > /dev/null
    q=$(jq .examples_per_s "$dir/mc.json"); tps=$(jq .tokens_per_s "$dir/mc.json")
    ipt=$(jq '.prompt_tokens / .seconds' "$dir/infer.json"); iq=$(jq '16 / .seconds' "$dir/infer.json")
    echo "mc $t: $(r2 "$q") questions/s, $(r2 "$tps") tokens/s ($(jq .counts.tokens "$dir/mc.json") tokens); llm-infer prefill of each choice: $(r2 "$iq") questions/s, $(r2 "$ipt") tokens/s ($(jq .prompt_tokens "$dir/infer.json") tokens): tokens/s $(r2 "$tps / $ipt")x, questions/s $(r2 "$q / $iq")x"
    # generation
    bin/llm-eval "$m" --task "$dir/gen.jsonl" > "$dir/gen.json"
    bin/llm-infer "$m" -n 8 --temp 0 --batch 16 --stats < "$dir/gen-prompts.txt" 2> "$dir/ginfer.json" > /dev/null
    gt=$(jq .tokens_per_s "$dir/gen.json"); it=$(jq '(.prompt_tokens + .completion_tokens) / .seconds' "$dir/ginfer.json")
    echo "gen $t: $(r2 "$gt") tokens/s; llm-infer --batch 16 $(r2 "$it") tokens/s: $(r2 "$gt / $it")x"
done
