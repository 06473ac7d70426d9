#!/usr/bin/env bats
# llm-eval: language modelling (shard sets, sequence streams, text windows),
# the JSON line, content hashes, --history, and the cron example.

setup_file() {
    cd "$BATS_FILE_TMPDIR"
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    for i in $(seq 1 40); do echo "Verse $i. In the beginning God created the heaven and the earth."; done > text.txt
    jq -cR '{text: .}' text.txt > text.jsonl
    llm-tokenize train --vocab-size 300 --special '<|endoftext|>' -o tok.json text.txt
    llm-tokenize -t tok.json text.jsonl | llm-shard --seq 16 --val 0.2 -o data
    llm-tokenize -t tok.json text.jsonl | llm-shard --seq 16 > seqs.stream
    llm-train --arch llama --layers 2 --heads 4 --kv-heads 2 --dim 64 --ffn 128 --ctx 64 --tokenizer tok.json \
        data --steps 30 --lr 1e-2 --val data/val --log train.jsonl -o model.safetensors
    llm-quantize -q q8_0 model.safetensors -o q8.safetensors > /dev/null
}

setup() {
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    cd "$BATS_FILE_TMPDIR"
}

@test "the loss on a validation set is llm-train's validation loss, to the digit, and llmux-ppl's" {
    llm-eval model.safetensors data/val > val.jsonl
    [ "$(jq 'select(.val_loss) | .val_loss' train.jsonl)" = "$(jq .metrics.loss val.jsonl)" ]
    [ "$(jq 'select(.val_loss) | .val_tokens' train.jsonl)" = "$(jq .counts.tokens val.jsonl)" ]
    ppl=$("$BATS_TEST_DIRNAME/../build/t/llmux-ppl" model.safetensors data/val)
    [ "$(echo "$ppl" | jq .loss)" = "$(jq .metrics.loss val.jsonl)" ]
    [ "$(echo "$ppl" | jq .sequences)" = "$(jq .counts.sequences val.jsonl)" ]
    # ppl is e^loss; bpb is the loss in bits over the bytes of the scored tokens
    jq -e '(.metrics.ppl - (.metrics.loss | exp) | fabs) < 1e-4' val.jsonl
    jq -e '(.metrics.bpb - .metrics.loss * .counts.tokens / (2 | log) / .counts.bytes | fabs) < 1e-4' val.jsonl
    # a quantized model evaluates too, close to the original
    llm-eval q8.safetensors data/val | jq -e --slurpfile f val.jsonl '(.metrics.loss - $f[0].metrics.loss | fabs) < 0.05'
}

@test "the JSON line: its fields in order, the hashes, the time" {
    llm-eval model.safetensors data/val > val.jsonl
    [ "$(wc -l < val.jsonl)" -eq 1 ]
    [ "$(jq -c 'keys_unsorted' val.jsonl)" = '["time","model","model_hash","task","type","data","data_hash","metrics","counts","seconds","examples_per_s","tokens_per_s"]' ]
    jq -e '.time | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")' val.jsonl
    jq -e '.model == "model.safetensors" and .task == "val" and .type == "lm" and .data == "data/val"' val.jsonl
    jq -e '(.model_hash | test("^[0-9a-f]{16}$")) and (.data_hash | test("^[0-9a-f]{16}$"))' val.jsonl
    jq -e '.metrics | keys_unsorted == ["loss","ppl","bpb"]' val.jsonl
    jq -e '.counts | keys_unsorted == ["sequences","tokens","bytes"]' val.jsonl
    # the time is now, in UTC
    t=$(date -u -d "$(jq -r .time val.jsonl)" +%s)
    [ $(( $(date -u +%s) - t )) -lt 120 ]
    # (t/unit/test_eval.c checks the hash against XXH3-64's test vector)
    # the same file gives the same hash; another model file another
    [ "$(llm-eval model.safetensors data/val | jq -r .model_hash)" = "$(jq -r .model_hash val.jsonl)" ]
    cp model.safetensors copy.safetensors
    [ "$(llm-eval copy.safetensors data/val | jq -r .model_hash)" = "$(jq -r .model_hash val.jsonl)" ]
    [ "$(llm-eval q8.safetensors data/val | jq -r .model_hash)" != "$(jq -r .model_hash val.jsonl)" ]
    # a directory holding train and val sets is read (and hashed) as its train set
    [ "$(llm-eval model.safetensors data | jq -r .data_hash)" = "$(llm-eval model.safetensors data/train | jq -r .data_hash)" ]
}

@test "a sequence stream evaluates like the shard set of the same sequences; --limit" {
    a=$(llm-eval model.safetensors seqs.stream | jq -c '{metrics, counts}')
    llm-tokenize -t tok.json text.jsonl | llm-shard --seq 16 -o all
    b=$(llm-eval model.safetensors all | jq -c '{metrics, counts}')
    [ "$a" = "$b" ]
    llm-eval model.safetensors seqs.stream --limit 3 | jq -e '.counts.sequences == 3 and .counts.tokens == 48'
    [ "$(llm-eval model.safetensors seqs.stream --name mine | jq -r .task)" = mine ]
}

@test "--text: every token scored once, the bytes of the file, windows and strides" {
    llm-eval model.safetensors --text text.txt > t.jsonl
    jq -e '.type == "lm" and .task == "text" and .counts.bytes == '"$(wc -c < text.txt)" t.jsonl
    n=$(llm-tokenize -t tok.json --format ids text.txt | jq length)
    # the end-of-text token goes first, so that every token of the text is scored
    jq -e ".counts.tokens == $n" t.jsonl
    # windows of the whole context, not overlapping: tokens / 64, rounded up
    jq -e ".counts.windows == (($n + 63) / 64 | floor)" t.jsonl
    llm-eval model.safetensors --text text.txt --window 32 --stride 8 > w.jsonl
    jq -e ".counts.tokens == $n and .counts.windows == (($n + 7) / 8 | floor)" w.jsonl
    # more context for each token: the loss is not worse (trained on that text)
    jq -e --slurpfile a t.jsonl '.metrics.loss <= $a[0].metrics.loss + 0.05' w.jsonl
    llm-eval model.safetensors --text text.txt --window 32 --stride 8 --limit 2 | jq -e '.counts.windows == 2 and .counts.tokens == 16'
    # an empty text: nothing to score
    : > empty.txt
    llm-eval model.safetensors --text empty.txt | jq -e '.metrics.loss == null and .counts.tokens == 0'
}

@test "--history: a table per model and task, rows in the order appended" {
    rm -f evals.jsonl
    llm-eval model.safetensors data/val >> evals.jsonl
    llm-eval q8.safetensors data/val >> evals.jsonl
    llm-eval model.safetensors data/val >> evals.jsonl
    llm-eval model.safetensors --text text.txt >> evals.jsonl
    llm-eval --history evals.jsonl > table.txt
    cat table.txt
    [ "$(grep -c '^== ' table.txt)" -eq 3 ]
    [ "$(sed -n 1p table.txt)" = "== model.safetensors  val (lm)" ]
    [ "$(sed -n 2p table.txt | tr -s ' ')" = "time hash loss ppl bpb n seconds" ]
    [ "$(sed -n 3p table.txt | awk '{print $2}')" = "$(jq -r -s '.[0].model_hash[0:8]' evals.jsonl)" ]
    [ "$(sed -n 3p table.txt | awk '{print $3}')" = "$(jq -r -s '.[0].metrics.loss * 10000 | round / 10000 | tostring' evals.jsonl | sed 's/$/00000/; s/\(\.[0-9]\{4\}\).*/\1/')" ]
    [ "$(sed -n 3p table.txt | awk '{print $6}')" = 9 ]
    [ "$(sed -n 5p table.txt)" = "" ]
    [ "$(sed -n 6p table.txt)" = "== q8.safetensors  val (lm)" ]
    [ "$(sed -n 10p table.txt)" = "== model.safetensors  text (lm)" ]
    # columns line up: every row of a table as long as its header
    awk 'NF && !/^==/ { print length($0) }' table.txt | sort -u | wc -l | grep -q '^[1-3]$'
    # several files and stdin; a line that is not a result
    [ "$(llm-eval --history - < evals.jsonl)" = "$(cat table.txt)" ]
    echo '{"not": "a result"}' >> evals.jsonl
    run llm-eval --history evals.jsonl
    [ "$status" -eq 1 ]
    [ "$output" = "llm-eval: evals.jsonl:5: no \"time\" string: not an llm-eval result" ]
    run llm-eval --history evals.jsonl --skip-bad
    [ "$status" -eq 0 ]
    [[ "$output" == *"1 bad lines skipped"* ]]
}

@test "the cron example appends one line per task and no half lines" {
    ex="$BATS_TEST_DIRNAME/../examples/cron"
    [ -x "$ex/eval.sh" ]
    grep -q 'eval.sh' "$ex/crontab"
    mkdir -p cron && cp "$ex"/*.jsonl cron/
    # a suite over this test's data: the validation set and a task
    printf '%s\n' '{"data": "../data/val", "name": "val"}' '{"task": "kjv-mc.jsonl", "limit": 3}' > cron/suite.jsonl
    "$ex/eval.sh" model.safetensors cron/suite.jsonl history.jsonl
    "$ex/eval.sh" model.safetensors cron/suite.jsonl history.jsonl
    [ "$(wc -l < history.jsonl)" -eq 6 ]
    jq -e -s 'map(.task) == ["val","kjv-mc","suite","val","kjv-mc","suite"]' history.jsonl
    jq -e -s '.[0].data == "data/val"' history.jsonl
    llm-eval --history history.jsonl | grep -q '^== model.safetensors  kjv-mc (mc)$'
}
