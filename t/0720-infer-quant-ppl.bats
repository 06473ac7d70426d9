#!/usr/bin/env bats
# Quantized models stay close to their original: perplexity on a validation
# split of a real corpus (the KJV, verses as documents, as in make demo),
# through the same forward pass llm-infer runs. Issue 6's bounds: q8_0
# within 0.5% of fp32, q4_0 and nf4 within 5%. (q4_k is held to 5% too.)
# The fp32 figure is also llm-train's own validation loss, to the digit.

setup_file() {
    cd "$BATS_FILE_TMPDIR"
    PATH="$BATS_TEST_DIRNAME/../bin:$BATS_TEST_DIRNAME/../build/t:$PATH"
    command -v bible > /dev/null || skip "bible-kjv is not installed (make deps)"
    bible -f "gen1:1-rev22:21" > kjv.txt
    llm-tokenize train --vocab-size 2048 --special '<|endoftext|>' -o tok.json kjv.txt
    jq -cR '{text: .}' kjv.txt > kjv.jsonl
    llm-tokenize -t tok.json kjv.jsonl | llm-shard --seq 128 --val 0.02 --seed 1 --shuffle -o data
    llm-train --init gpt2-tiny --ctx 128 --tokenizer tok.json data --steps 120 --batch 16 --lr 3e-3 --warmup 10 \
        --val data/val --val-every 120 --log train.jsonl -o model.safetensors
    for q in q8_0 q4_0 q4_k nf4; do llm-quantize -q $q model.safetensors -o $q.safetensors > /dev/null; done
}

setup() {
    PATH="$BATS_TEST_DIRNAME/../bin:$BATS_TEST_DIRNAME/../build/t:$PATH"
    cd "$BATS_FILE_TMPDIR"
    command -v bible > /dev/null || skip "bible-kjv is not installed (make deps)"
}

@test "fp32 through the inference path: the validation loss llm-train reports" {
    llmux-ppl model.safetensors data/val > fp32.json
    want=$(jq -r 'select(.val_loss) | .val_loss' train.jsonl | tail -1)
    jq -e --argjson w "$want" '(.loss - $w | fabs) < 1e-5' fp32.json
}

@test "perplexity: q8_0 within 0.5% of fp32; q4_0, q4_k and nf4 within 5%" {
    [ -f fp32.json ] || llmux-ppl model.safetensors data/val > fp32.json
    base=$(jq .ppl fp32.json)
    for q in q8_0 q4_0 q4_k nf4; do
        llmux-ppl $q.safetensors data/val > $q.json
        bound=$([ $q = q8_0 ] && echo 0.005 || echo 0.05)
        echo "$q: $(jq .ppl $q.json) vs fp32 $base (bound $bound)"
        jq -e --argjson b "$base" --argjson r "$bound" '.ppl / $b - 1 < $r and .ppl / $b - 1 > -$r' $q.json
    done
}
