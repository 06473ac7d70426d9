#!/usr/bin/env bats
# llm-quantize: a trained model's matrices to blocks, the report, and bad input.

setup() {
    ROOT="$BATS_TEST_DIRNAME/.."
    PATH="$ROOT/bin:$PATH"
    cd "$BATS_TEST_TMPDIR"
    for i in $(seq 1 20); do echo "Verse $i. In the beginning God created the heaven and the earth."; done > text.txt
    jq -cR '{text: .}' text.txt > text.jsonl
    llm-tokenize train --vocab-size 300 --special '<|endoftext|>' -o tok.json text.txt
    llm-tokenize -t tok.json text.jsonl | llm-shard --seq 16 -o data
    llm-train --arch llama --layers 2 --heads 4 --kv-heads 2 --dim 256 --ffn 512 --ctx 16 --tokenizer tok.json \
        data --steps 2 -o model.safetensors
}

@test "every type: matrices become blocks, the rest stays, the errors are reported" {
    for q in q8_0 q4_0 q4_k; do
        llm-quantize -q "$q" model.safetensors -o "m-$q.safetensors" > "report-$q.jsonl"
        # the file passes the reader's checks, and its metadata names every quantized tensor
        llm-inspect --compact "m-$q.safetensors" > info.json
        [ "$(jq -r '.metadata.quantization | fromjson | [.[] | .type] | unique | .[]' info.json)" = "$q" ]
        [ "$(jq -r '.metadata.quantization | fromjson | has("layers.0.attn.q.weight")' info.json)" = true ]
        [ "$(jq -r '.metadata.quantization | fromjson | has("tok_embeddings.weight")' info.json)" = false ]
        # no optimizer state or training state in a model for inference
        [ "$(jq '[.tensors[] | select(.name | startswith("optim."))] | length' info.json)" -eq 0 ]
        [ "$(jq '.metadata | has("training")' info.json)" = false ]
        [ "$(jq '.metadata | has("tokenizer") and has("config")' info.json)" = true ]
        # a line per tensor and a total; the total's sizes add up
        [ "$(tail -n 1 "report-$q.jsonl" | jq .total)" = true ]
        [ "$(jq -s '[.[] | select(.rmse and (.total | not)) | .bytes_after] + [.[] | select(.kept) | .bytes] | add' "report-$q.jsonl")" -eq \
          "$(tail -n 1 "report-$q.jsonl" | jq .bytes_after)" ]
    done
    # fewer bits, more error, smaller files
    e8=$(tail -n 1 report-q8_0.jsonl | jq .rmse); e4=$(tail -n 1 report-q4_0.jsonl | jq .rmse)
    [ "$(jq -n "$e8 < $e4 / 4")" = true ]
    [ "$(stat -c %s m-q4_0.safetensors)" -lt "$(stat -c %s m-q8_0.safetensors)" ]
}

@test "--keep leaves matching tensors as they are" {
    llm-quantize -q q8_0 --keep 'layers.1.*' --keep '*.o.weight' model.safetensors -o m.safetensors > report.jsonl
    [ "$(jq -r 'select(.kept == "--keep") | .tensor' report.jsonl | sort | tr '\n' ' ')" = \
      "layers.0.attn.o.weight layers.1.attn.k.weight layers.1.attn.o.weight layers.1.attn.q.weight layers.1.attn.v.weight layers.1.ffn.down.weight layers.1.ffn.gate.weight layers.1.ffn.up.weight " ]
    [ "$(llm-inspect --compact m.safetensors | jq -r '.metadata.quantization | fromjson | has("layers.1.attn.q.weight")')" = false ]
}

@test "bad input: usage errors, files that are not models, nothing written" {
    run llm-quantize model.safetensors -o m.safetensors
    [ "$status" -eq 2 ]
    run llm-quantize -q q3_x model.safetensors -o m.safetensors
    [ "$status" -eq 2 ]
    [[ "$output" == *"q3_x"* ]]
    run llm-quantize -q q8_0 nothing.safetensors -o m.safetensors
    [ "$status" -eq 1 ]
    [[ "$output" == *"nothing.safetensors"* ]]
    head -c 1000 model.safetensors > cut.safetensors
    run llm-quantize -q q8_0 cut.safetensors -o m.safetensors
    [ "$status" -eq 1 ]
    [[ "$output" == *"cut.safetensors"* ]]
    llm-quantize -q q8_0 model.safetensors -o q.safetensors > /dev/null
    run llm-quantize -q q4_0 q.safetensors -o m.safetensors
    [ "$status" -eq 1 ]
    [[ "$output" == *"already quantized"* ]]
    [ ! -e m.safetensors ]
}
