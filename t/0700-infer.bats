#!/usr/bin/env bats
# llm-infer: determinism, sampling options, stop strings, quantized models,
# prompts from stdin, and bad input.

setup_file() {
    cd "$BATS_FILE_TMPDIR"
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    source "$BATS_TEST_DIRNAME/helpers/tiny.bash"
    tiny_corpus
    tiny_llama
    llm-quantize -q q8_0 model.safetensors -o q8.safetensors > /dev/null
}

setup() {
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    cd "$BATS_FILE_TMPDIR"
}

@test "greedy is deterministic; a seed fixes the samples; other seeds differ" {
    a=$(llm-infer model.safetensors -p "In the" -n 20 --temp 0)
    b=$(llm-infer model.safetensors -p "In the" -n 20 --temp 0)
    [ "$a" = "$b" ]
    s1=$(llm-infer model.safetensors -p "In the" -n 20 --temp 1.5 --seed 1 -f jsonl | jq -c .ids)
    s1b=$(llm-infer model.safetensors -p "In the" -n 20 --temp 1.5 --seed 1 -f jsonl | jq -c .ids)
    [ "$s1" = "$s1b" ]
    for s in 2 3 4 5; do llm-infer model.safetensors -p "In the" -n 20 --temp 1.5 --seed $s -f jsonl | jq -c .ids; done | sort -u > seeds
    [ "$(wc -l < seeds)" -gt 1 ]
    # top-k 1 and a tiny top-p are greedy whatever the temperature
    g=$(llm-infer model.safetensors -p "In the" -n 20 --temp 0 -f jsonl | jq -c .ids)
    [ "$(llm-infer model.safetensors -p "In the" -n 20 --temp 2 --top-k 1 --seed 9 -f jsonl | jq -c .ids)" = "$g" ]
    [ "$(llm-infer model.safetensors -p "In the" -n 20 --temp 2 --top-p 1e-9 --seed 9 -f jsonl | jq -c .ids)" = "$g" ]
    [ "$(llm-infer model.safetensors -p "In the" -n 20 --temp 2 --min-p 0.999 --seed 9 -f jsonl | jq -c .ids)" = "$g" ]
}

@test "JSON lines: the fields, logprobs that are log-probabilities, and stop strings" {
    llm-infer model.safetensors -p "In the" -n 12 --temp 0 -f jsonl > out.jsonl
    [ "$(jq -c 'keys' out.jsonl)" = '["completion_tokens","finish_reason","ids","logprobs","prompt","prompt_seconds","prompt_tokens","seconds","text","tokens_per_s"]' ]
    jq -e '(.logprobs | all(. <= 0)) and (.ids | length) == .completion_tokens' out.jsonl
    text=$(jq -r .text out.jsonl)
    # stop at a word the greedy text holds: the text ends before it
    word=$(echo "$text" | awk '{print $2}')
    [ -n "$word" ]
    llm-infer model.safetensors -p "In the" -n 12 --temp 0 --stop "$word" -f jsonl > stopped.jsonl
    [ "$(jq -r .finish_reason stopped.jsonl)" = stop ]
    [[ "$text" == "$(jq -r .text stopped.jsonl)$word"* ]]
}

@test "prompts from stdin, one per line; a quantized model generates too" {
    printf 'In the\nAnd God\n\nVerse\n' | llm-infer model.safetensors -n 5 --temp 0 > lines
    [ "$(wc -l < lines)" -eq 3 ]
    llm-infer q8.safetensors -p "In the" -n 10 --temp 0 -f jsonl | jq -e '.completion_tokens > 0'
}

@test "bad input: one line, exit 1 or 2" {
    run llm-infer
    [ "$status" -eq 2 ]
    run llm-infer model.safetensors -p x --temp -1
    [ "$status" -eq 2 ]
    run llm-infer model.safetensors -p x --top-p 0
    [ "$status" -eq 2 ]
    run llm-infer nothing.safetensors -p x
    [ "$status" -eq 1 ]
    [[ "$output" == *"nothing.safetensors"* ]]
    head -c 5000 model.safetensors > cut.safetensors
    run llm-infer cut.safetensors -p x
    [ "$status" -eq 1 ]
    [[ "$output" == *"cut.safetensors"* ]]
    long=$(for i in $(seq 80); do printf 'beginning '; done)
    run llm-infer model.safetensors -p "$long"
    [ "$status" -eq 1 ]
    [[ "$output" == *"context"* ]]
    [ "$(echo "$output" | wc -l)" -eq 1 ]
}
