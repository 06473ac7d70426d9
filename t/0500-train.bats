#!/usr/bin/env bats
# llm-train: fresh models, exact continuation, signals, rolling checkpoints,
# divergence, masks, and bad input.

setup() {
    ROOT="$BATS_TEST_DIRNAME/.."
    PATH="$ROOT/bin:$PATH"
    cd "$BATS_TEST_TMPDIR"
    for i in $(seq 1 30); do
        echo "Verse $i. In the beginning God created the heaven and the earth. And the earth was without form, and void."
    done > text.txt
    llm-tokenize train --vocab-size 300 --special '<|endoftext|>' -o tok.json text.txt
    jq -cR '{text: .}' text.txt > text.jsonl   # a document per line
    llm-tokenize -t tok.json text.jsonl -o docs.stream
    llm-shard --seq 16 --val 0.2 --seed 1 -o data docs.stream
    TINY=(--arch gpt2 --layers 2 --heads 2 --dim 32 --ffn 64 --ctx 16 --tokenizer tok.json)
}

@test "a fresh model from a preset or from sizes; --steps 0 writes it untrained" {
    llm-train --init llama-tiny --ctx 16 --tokenizer tok.json data --steps 0 -o llama.safetensors
    cfg=$(llm-inspect --compact llama.safetensors | jq -c '.metadata.config | fromjson')
    [ "$(jq -r .arch <<< "$cfg")" = llama ]
    [ "$(jq .vocab_size <<< "$cfg")" -eq 300 ]
    [ "$(jq .n_kv_heads <<< "$cfg")" -eq 2 ]
    llm-train "${TINY[@]}" data --steps 0 -o gpt2.safetensors
    [ "$(llm-inspect --compact gpt2.safetensors | jq '.metadata.config | fromjson | .dim')" -eq 32 ]
    # the tokenizer travels with the model
    cmp <(llm-inspect --compact gpt2.safetensors | jq -r .metadata.tokenizer | jq -S .) <(jq -S . tok.json)
    # the same seed, the same weights; another seed, others
    llm-train "${TINY[@]}" data --steps 0 -o again.safetensors
    llm-train "${TINY[@]}" --seed 5 data --steps 0 -o other.safetensors
    cmp gpt2.safetensors again.safetensors
    ! cmp -s gpt2.safetensors other.safetensors
}

@test "two runs of 4 steps give, bit for bit, what one run of 8 gives" {
    for arch in gpt2 llama; do
        if [ $arch = gpt2 ]; then m=("${TINY[@]}"); else m=(--init llama-tiny --layers 2 --dim 32 --heads 4 --ffn 64 --ctx 16 --tokenizer tok.json); fi
        llm-train "${m[@]}" data --steps 8 --total-steps 8 --warmup 2 --batch 2 --accum 2 -o one.safetensors --log one.jsonl
        llm-train "${m[@]}" data --steps 4 --total-steps 8 --warmup 2 --batch 2 --accum 2 -o two.safetensors --log two.jsonl
        llm-train two.safetensors data --steps 4 -o two.safetensors --log two.jsonl
        [ "$(jq -s 'map(select(.loss)) | length' one.jsonl)" -eq 8 ]
        cmp <(jq -c 'select(.loss) | {step, loss, lr, grad_norm, tokens}' one.jsonl) \
            <(jq -c 'select(.loss) | {step, loss, lr, grad_norm, tokens}' two.jsonl)
        cmp one.safetensors two.safetensors
        # and it learns
        [ "$(jq -s 'map(select(.loss)) | .[-1].loss < .[0].loss' one.jsonl)" = true ]
        rm one.jsonl two.jsonl
    done
}

@test "the log has the documented fields; --val reports the validation loss" {
    llm-train "${TINY[@]}" data --steps 3 --val data/val --val-every 2 -o m.safetensors --log log.jsonl
    [ "$(jq -sc '[.[] | select(.loss) | keys] | unique' log.jsonl)" = '[["grad_norm","loss","lr","mfu","seconds","step","tokens","tokens_per_s"]]' ]
    [ "$(jq -sc '[.[] | select(.val_loss) | .step]' log.jsonl)" = '[2,3]' ]
    [ "$(jq -sc '[.[] | select(.event == "start") | keys]' log.jsonl)" = '[["event","flops_per_token","memory_floor_bytes","parameters","peak_gflops","step","threads"]]' ]
    jq -se 'map(select(.val_loss)) | all(.val_loss > 0 and .val_ppl > 1 and .val_tokens > 0)' log.jsonl
    jq -se 'map(select(.loss)) | all(.mfu > 0 and .tokens_per_s > 0)' log.jsonl
}

@test "SIGINT and SIGTERM write the checkpoint and exit 0" {
    for sig in INT TERM; do
        rm -f m.safetensors log.jsonl
        llm-train "${TINY[@]}" data --steps 100000 -o m.safetensors --log log.jsonl &
        pid=$!
        for _ in $(seq 100); do [ -s log.jsonl ] && break; sleep 0.1; done
        kill -$sig $pid
        wait $pid
        step=$(llm-inspect --compact m.safetensors | jq '.metadata.training | fromjson | .step')
        [ "$step" -ge 1 ]
        [ "$step" -eq "$(jq -s 'map(select(.loss)) | .[-1].step' log.jsonl)" ]
    done
}

@test "--save-every keeps the last --keep rolling checkpoints" {
    mkdir run
    llm-train "${TINY[@]}" data --steps 7 --save-every 2 --keep 2 -o run/m.safetensors
    [ "$(ls run | tr '\n' ' ')" = "m.safetensors m.step-00000004.safetensors m.step-00000006.safetensors " ]
    [ "$(llm-inspect --compact run/m.step-00000006.safetensors | jq '.metadata.training | fromjson | .step')" -eq 6 ]
}

@test "a diverging run stops with a message and keeps the last good state" {
    run llm-train "${TINY[@]}" data --steps 20 --lr 1e30 --clip 0 --schedule constant -o m.safetensors
    [ "$status" -eq 1 ]
    [[ "$output" == *"diverged"* ]]
    [ "$(echo "$output" | wc -l)" -eq 1 ]
    step=$(llm-inspect --stats --compact m.safetensors | jq '.metadata.training | fromjson | .step')
    # the saved parameters are finite
    [ "$(llm-inspect --stats --compact m.safetensors | jq '[.tensors[] | .stats.nan + .stats.inf] | add')" -eq 0 ]
    [ "$step" -lt 20 ]
}

@test "loss masks: only the trained targets count" {
    printf '%s\n' '{"prompt":"In the beginning","response":" God created the heaven and the earth."}' \
                  '{"prompt":"And the earth","response":" was without form, and void."}' > instr.jsonl
    llm-tokenize -t tok.json --instruct --chat-template none instr.jsonl -o instr.stream
    llm-shard --seq 16 --no-cross-doc --shuffle -o idata instr.stream
    n=$(jq .sequences idata/train/manifest.json)
    llm-train "${TINY[@]}" idata --steps 1 --batch "$n" --no-shuffle -o m.safetensors --log log.jsonl
    # targets are tokens 1..T of each sequence: their mask bytes
    want=$(llm-inspect --head 100 idata | jq -s '[.[] | select(.type? == "seq") | .mask[1:] | add] | add')
    [ "$(jq 'select(.loss) | .tokens' log.jsonl)" -eq "$want" ]
    [ "$want" -lt $(( n * 16 )) ]
}

@test "finetuning starts from a model file without training state" {
    llm-train "${TINY[@]}" data --steps 0 -o base.safetensors
    llm-train base.safetensors data --steps 2 --lr 1e-4 -o ft.safetensors --log log.jsonl
    [ "$(jq -sc 'map(select(.loss) | .step)' log.jsonl)" = "[1,2]" ]
}

@test "bad input: one line naming the file, exit 1 or 2, no output written" {
    run llm-train "${TINY[@]}" data -o m.safetensors
    [ "$status" -eq 2 ]
    [[ "$output" == *"--steps N is required"* ]]
    run llm-train data --steps 1 -o m.safetensors
    [ "$status" -eq 2 ]
    run llm-train --init nonesuch --tokenizer tok.json data --steps 1 -o m.safetensors
    [ "$status" -eq 2 ]
    [[ "$output" == *"unknown preset 'nonesuch'"* ]]
    cp -r data bad
    printf '\x55' | dd of=bad/train/shard-00000.bin bs=1 seek=70 conv=notrunc 2>/dev/null
    run llm-train "${TINY[@]}" bad --steps 1 -o m.safetensors
    [ "$status" -eq 1 ]
    [[ "$output" == *"bad/train/shard-00000.bin: checksum mismatch"* ]]
    [ ! -e m.safetensors ]
    run llm-train nothing.safetensors data --steps 1 -o m.safetensors
    [ "$status" -eq 1 ]
    [[ "$output" == *"nothing.safetensors"* ]]
    printf 'not a model' > junk.safetensors
    run llm-train junk.safetensors data --steps 1 -o m.safetensors
    [ "$status" -eq 1 ]
    [[ "$output" == *"junk.safetensors"* ]]
    # a model whose vocabulary is smaller than the data's tokens
    llm-train --arch gpt2 --layers 1 --heads 1 --dim 8 --ffn 8 --ctx 16 --vocab 300 --tokenizer tok.json data --steps 0 -o small.safetensors
    llm-tokenize train --vocab-size 400 --special '<|endoftext|>' -o big.json text.txt
    llm-tokenize -t big.json text.jsonl | llm-shard --seq 16 -o bigdata
    run llm-train small.safetensors bigdata --steps 1 -o m.safetensors
    [ "$status" -eq 1 ]
    [[ "$output" == *"outside the model's vocabulary"* ]]
    [ ! -e m.safetensors ]
    run llm-train small.safetensors data --steps 1 --seq 64 -o m.safetensors
    [ "$status" -eq 2 ]
}
