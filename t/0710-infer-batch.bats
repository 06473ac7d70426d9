#!/usr/bin/env bats
# llm-infer: requests run as one batch (the same results as alone), n
# samples, beam search, top logprobs, penalties and logit bias, chat
# templates, requests files with bad lines, and the memory check.

setup_file() {
    cd "$BATS_FILE_TMPDIR"
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    source "$BATS_TEST_DIRNAME/helpers/tiny.bash"
    tiny_corpus '<|im_start|>' '<|im_end|>'
    tiny_llama
    llm-quantize -q q8_0 model.safetensors -o q8.safetensors > /dev/null
}

setup() {
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    cd "$BATS_FILE_TMPDIR"
}

@test "a batch of requests gives each the tokens it gets alone (fp32 and q8_0)" {
    printf '%s\n' '{"prompt":"In the","seed":1}' '{"prompt":"Verse 3","seed":7,"n":3}' \
        '{"prompt":"And God","seed":2,"max_tokens":5}' '{"prompt":"In the","seed":3,"temperature":0}' > req.jsonl
    for m in model q8; do
        llm-infer $m.safetensors --requests req.jsonl -n 20 --temp 1.2 -f jsonl > batch.jsonl
        [ "$(wc -l < batch.jsonl)" -eq 4 ]
        a=$(llm-infer $m.safetensors -p "In the" -n 20 --temp 1.2 --seed 1 -f jsonl | jq -c .ids)
        [ "$(sed -n 1p batch.jsonl | jq -c .ids)" = "$a" ]
        for i in 0 1 2; do   # sample i of a request is seeded by seed + i
            b=$(llm-infer $m.safetensors -p "Verse 3" -n 20 --temp 1.2 --seed $((7 + i)) -f jsonl | jq -c .ids)
            [ "$(sed -n 2p batch.jsonl | jq -c ".choices[$i].ids")" = "$b" ]
        done
        [ "$(sed -n 3p batch.jsonl | jq .completion_tokens)" -le 5 ]
        c=$(llm-infer $m.safetensors -p "In the" -n 20 --temp 0 -f jsonl | jq -c .ids)
        [ "$(sed -n 4p batch.jsonl | jq -c .ids)" = "$c" ]
        # and with one sequence at a time
        llm-infer $m.safetensors --requests req.jsonl -n 20 --temp 1.2 -f jsonl --batch 3 | cmp - batch.jsonl ||
            diff <(jq -c '[.ids, .choices]' batch.jsonl) <(llm-infer $m.safetensors --requests req.jsonl -n 20 --temp 1.2 -f jsonl --batch 3 | jq -c '[.ids, .choices]')
    done
}

@test "samples: --samples N gives N choices, the first as alone, the others different" {
    llm-infer model.safetensors -p "In the" -n 16 --temp 1.5 --seed 4 --samples 4 -f jsonl > s.jsonl
    jq -e '.choices | length == 4' s.jsonl
    [ "$(jq -c .ids s.jsonl)" = "$(jq -c .choices[0].ids s.jsonl)" ]
    [ "$(jq -c '[.choices[].ids] | unique | length' s.jsonl)" -gt 1 ]
    [ "$(jq .completion_tokens s.jsonl)" -eq "$(jq '[.choices[].ids | length] | add' s.jsonl)" ]
    # text output: one line per sample
    [ "$(llm-infer model.safetensors -p "In the" -n 8 --samples 3 | wc -l)" -eq 3 ]
}

@test "beam search: the best hypotheses by score, deterministic; n at most the beams" {
    llm-infer model.safetensors -p "In the" -n 12 --beams 4 --samples 3 -f jsonl > b.jsonl
    jq -e '.choices | length == 3' b.jsonl
    jq -e '[.choices[].score] | . == (sort | reverse)' b.jsonl
    # a beam's score is its logprob sum over its length (and the end token, when it stopped)
    jq -e '.choices[] | select(.finish_reason == "length") | ((.logprobs | add) / (.ids | length) - .score | fabs) < 1e-5' b.jsonl
    llm-infer model.safetensors -p "In the" -n 12 --beams 4 --samples 3 -f jsonl | cmp - b.jsonl ||
        [ "$(jq -c '[.choices[].ids]' b.jsonl)" = "$(llm-infer model.safetensors -p "In the" -n 12 --beams 4 --samples 3 -f jsonl | jq -c '[.choices[].ids]')" ]
    # the best beam is at least as likely per token as greedy
    g=$(llm-infer model.safetensors -p "In the" -n 12 --temp 0 -f jsonl | jq '(.logprobs | add) / (.ids | length)')
    jq -e --argjson g "$g" '.score >= $g - 1e-6' b.jsonl
    run llm-infer model.safetensors -p "In the" --beams 2 --samples 3
    [ "$status" -eq 2 ]
    run llm-infer model.safetensors -p "In the" --beams 1
    [ "$status" -eq 2 ]
}

@test "top logprobs: K alternatives per token, most likely first, the greedy token first" {
    llm-infer model.safetensors -p "In the" -n 8 --temp 0 --logprobs 3 -f jsonl > t.jsonl
    jq -e '.top_logprobs | length == 8' t.jsonl
    jq -e '[.top_logprobs[] | length == 3] | all' t.jsonl
    jq -e '[.top_logprobs[] | [.[].logprob] | . == (sort | reverse)] | all' t.jsonl
    jq -e '[range(0; 8) as $i | .top_logprobs[$i][0].id == .ids[$i]] | all' t.jsonl
    jq -e '[range(0; 8) as $i | (.top_logprobs[$i][0].logprob - .logprobs[$i] | fabs) < 1e-6] | all' t.jsonl
    run llm-infer model.safetensors -p "In the" --logprobs 21
    [ "$status" -eq 2 ]
}

@test "logit bias and penalties change what is chosen" {
    g=$(llm-infer model.safetensors -p "In the" -n 12 --temp 0 -f jsonl)
    first=$(echo "$g" | jq '.ids[0]')
    # -100 on the greedy token: it is never chosen
    llm-infer model.safetensors -p "In the" -n 12 --temp 0 --logit-bias "$first=-100" -f jsonl | jq -e --argjson t "$first" '.ids | index($t) == null'
    # +100 on a token: chosen every time
    llm-infer model.safetensors -p "In the" -n 5 --temp 0 --logit-bias "42=100" -f jsonl | jq -e '.ids == [42,42,42,42,42]'
    echo '{"prompt":"In the","temperature":0,"logit_bias":{"42":100},"max_tokens":3}' | llm-infer model.safetensors -r - -f jsonl | jq -e '.ids == [42,42,42]'
    # a frequency penalty makes repeats rarer than greedy has them
    reps() { jq '(.ids | length) - (.ids | unique | length)'; }
    r0=$(echo "$g" | reps)
    r1=$(llm-infer model.safetensors -p "In the" -n 12 --temp 0 --frequency-penalty 2 -f jsonl | reps)
    r2=$(llm-infer model.safetensors -p "In the" -n 12 --temp 0 --repeat-penalty 3 -f jsonl | reps)
    [ "$r0" -gt 0 ] && [ "$r1" -lt "$r0" ] && [ "$r2" -lt "$r0" ]
    run llm-infer model.safetensors -p x --logit-bias 5=200
    [ "$status" -eq 2 ]
    run llm-infer model.safetensors -p x --presence-penalty 3
    [ "$status" -eq 2 ]
}

@test "chat: messages rendered with the template; --chat answers each line" {
    echo '{"messages":[{"role":"user","content":"In the"}],"temperature":0,"max_tokens":8}' > chat.jsonl
    llm-infer model.safetensors --chat-template chatml -r chat.jsonl -f jsonl > c.jsonl
    want=$(printf '<|im_start|>user\nIn the<|im_end|>\n<|im_start|>assistant\n' | llm-tokenize -t tok.json --allow-special -f count | jq .tokens)
    [ "$(jq .prompt_tokens c.jsonl)" -eq "$want" ]
    # the template's end token ends the answer (forced here by a bias)
    end=$(printf '<|im_end|>' | llm-tokenize -t tok.json --allow-special -f ids | tr -d '[] \n')
    echo "{\"messages\":[{\"role\":\"user\",\"content\":\"In the\"}],\"temperature\":0,\"logit_bias\":{\"$end\":100}}" |
        llm-infer model.safetensors --chat-template chatml -r - -f jsonl | jq -e '.finish_reason == "stop" and .completion_tokens == 0'
    printf 'In the\nAnd God\n' | llm-infer model.safetensors --chat --chat-template chatml -n 6 --temp 0 > answers
    [ "$(wc -l < answers)" -eq 2 ]
    # without a template, messages are refused with the line named
    run llm-infer model.safetensors -r chat.jsonl
    [ "$status" -eq 1 ]
    [[ "$output" == *"chat.jsonl:1:"*"template"* ]]
    run llm-infer model.safetensors --chat-template llama3 -r chat.jsonl
    [ "$status" -eq 1 ]
    [[ "$output" == *"<|begin_of_text|>"* ]]
}

@test "requests files: a bad line is named, nothing is generated" {
    printf '%s\n' '{"prompt":"In the"}' '{"prompt":5}' > bad1.jsonl
    run llm-infer model.safetensors -r bad1.jsonl
    [ "$status" -eq 1 ]
    [ "$output" = "llm-infer: bad1.jsonl:2: \"prompt\" must be a string" ]
    for line in 'not json' '[1]' '{"prompt":"a","messages":[]}' '{"prompt":"a","n":0}' '{"prompt":"a","temperature":"hot"}' \
        '{"prompt":"a","stop":[1]}' '{"prompt":"a","logit_bias":{"x":1}}' '{"prompt":"a","top_p":2}' '{"prompt":"a","top_logprobs":50}'; do
        echo "$line" > bad.jsonl
        run llm-infer model.safetensors -r bad.jsonl
        [ "$status" -eq 1 ]
        [[ "$output" == "llm-infer: bad.jsonl:1: "* ]]
        [ "$(echo "$output" | wc -l)" -eq 1 ]
    done
    long=$(for i in $(seq 80); do printf 'beginning '; done)
    echo "{\"prompt\":\"$long\"}" > long.jsonl
    run llm-infer model.safetensors -r long.jsonl
    [ "$status" -eq 1 ]
    [[ "$output" == *"context"* ]]
}

@test "a model that does not fit in memory fails before any work, naming the sizes" {
    # a long context: its KV cache and activations take some 300 MB
    llm-train --arch llama --layers 2 --heads 4 --kv-heads 2 --dim 64 --ffn 128 --ctx 100000 --tokenizer tok.json \
        data --steps 0 -o long.safetensors
    llm-infer long.safetensors -p "In the" -n 2 > /dev/null
    run bash -c 'ulimit -v 200000; llm-infer long.safetensors -p "In the" -n 4'
    [ "$status" -eq 1 ]
    [[ "$output" == "llm-infer: long.safetensors: the model needs 0.3"*"RLIMIT_AS"* ]]
    [ "$(echo "$output" | wc -l)" -eq 1 ]
}
