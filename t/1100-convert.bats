#!/usr/bin/env bats
# llm-convert's command line and our own format: usage, detection, --dtype,
# quantized blocks copied as they are, and bad input that writes nothing.
# Each other format has its own file (t/111x-convert-*.bats) and conformance
# tests against transformers, gguf, onnxruntime (t/conformance/test_convert_*.py).

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

@test "usage: --to and -o are required, formats and dtypes are checked (exit 2)" {
    run llm-convert model.safetensors -o x
    [ "$status" -eq 2 ] && [[ "$output" == *"--to"* ]]
    run llm-convert model.safetensors --to llmux
    [ "$status" -eq 2 ] && [[ "$output" == *"-o"* ]]
    run llm-convert model.safetensors --to pickle -o x
    [ "$status" -eq 2 ] && [[ "$output" == *"pickle"* ]]
    run llm-convert model.safetensors --to llmux --dtype f64 -o x
    [ "$status" -eq 2 ] && [[ "$output" == *"f64"* ]]
    run llm-convert model.safetensors --from onnx --to llmux -o x
    [ "$status" -eq 2 ]
    [ ! -e x ]
    llm-convert --help | grep -q -- "--dtype"
}

@test "llmux to llmux: the same tensors (optimizer state left behind); --dtype bf16 and back to f32" {
    llm-convert model.safetensors --to llmux -o same.safetensors
    # every tensor but the optimizer's, with the same dtype, shape and statistics
    jq_tensors='[.tensors[] | select(.name | startswith("optim.") | not) | {name, dtype, shape, stats}] | sort_by(.name)'
    [ "$(llm-inspect --stats model.safetensors | jq -cS "$jq_tensors")" = "$(llm-inspect --stats same.safetensors | jq -cS "$jq_tensors")" ]
    [ "$(llm-inspect same.safetensors | jq '[.tensors[].name | select(startswith("optim."))] | length')" = 0 ]
    # and converting the converted file again changes nothing, byte for byte
    llm-convert same.safetensors --to llmux -o same2.safetensors
    cmp same.safetensors same2.safetensors
    a=$(llm-infer model.safetensors -p "In the" -n 16 --temp 0 -f jsonl | jq -c .ids)
    [ "$(llm-infer same.safetensors -p "In the" -n 16 --temp 0 -f jsonl | jq -c .ids)" = "$a" ]
    llm-convert model.safetensors --to llmux --dtype bf16 -o bf16.safetensors
    [ "$(llm-inspect bf16.safetensors | jq -r '[.tensors[].dtype] | unique | join(",")')" = BF16 ]
    llm-convert bf16.safetensors --to llmux --dtype f32 -o back.safetensors
    [ "$(llm-inspect back.safetensors | jq -r '[.tensors[].dtype] | unique | join(",")')" = F32 ]
    # bf16 -> f32 is exact: converting back to bf16 gives the same file
    llm-convert back.safetensors --to llmux --dtype bf16 -o bf16b.safetensors
    cmp bf16.safetensors bf16b.safetensors
    # the metadata that matters is carried
    [ "$(llm-inspect bf16.safetensors | jq -r '.metadata.config')" = "$(llm-inspect model.safetensors | jq -r '.metadata.config')" ]
    [ "$(llm-inspect bf16.safetensors | jq -r '.metadata.tokenizer')" = "$(llm-inspect model.safetensors | jq -r '.metadata.tokenizer')" ]
}

@test "quantized blocks are copied as they are, whatever --dtype says for the float tensors" {
    # as they are: the same file, byte for byte (llm-quantize writes the metadata we write)
    llm-convert q8.safetensors --to llmux -o q8a.safetensors
    cmp q8.safetensors q8a.safetensors
    # with --dtype f16 the norms and embeddings change type, the blocks do not
    llm-convert q8.safetensors --to llmux --dtype f16 -o q8b.safetensors
    [ "$(llm-inspect q8.safetensors | jq -c '.metadata.quantization')" = "$(llm-inspect q8b.safetensors | jq -c '.metadata.quantization')" ]
    [ "$(llm-inspect q8b.safetensors | jq -r '[.tensors[] | select(.dtype != "U8") | .dtype] | unique | join(",")')" = F16 ]
    blobs='[.tensors[] | select(.dtype == "U8") | {name, bytes}]'
    [ "$(llm-inspect q8.safetensors | jq -c "$blobs")" = "$(llm-inspect q8b.safetensors | jq -c "$blobs")" ]
}

@test "bad input: a one-line message naming the file, exit 1, nothing written" {
    run llm-convert missing.safetensors --to llmux -o out.safetensors
    [ "$status" -eq 1 ] && [[ "$output" == *"missing.safetensors"* ]]
    head -c 1000 model.safetensors > cut.safetensors
    run llm-convert cut.safetensors --to llmux -o out.safetensors
    [ "$status" -eq 1 ] && [[ "$output" == *"cut.safetensors"* ]]
    printf 'hello there, not a model at all' > junk.bin
    run llm-convert junk.bin --to llmux -o out.safetensors
    [ "$status" -eq 1 ] && [[ "$output" == *"junk.bin"* ]]
    mkdir -p emptydir
    run llm-convert emptydir --to llmux -o out.safetensors
    [ "$status" -eq 1 ] && [[ "$output" == *"config.json"* ]]
    # a model file without a config: not an llmux model
    llm-tokenize -t tok.json text.jsonl > docs.stream
    run llm-convert data/train/$(ls data/train | head -1) --from llmux --to llmux -o out.safetensors
    [ "$status" -eq 1 ]
    [ ! -e out.safetensors ]
    [ "$(ls -a | grep -c '^\.out\|tmp')" -eq 0 ]
}
