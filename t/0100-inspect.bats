#!/usr/bin/env bats
# llm-inspect on valid files: what it prints, for people and for jq.

setup() {
    ROOT="$BATS_TEST_DIRNAME/.."
    PATH="$ROOT/bin:$PATH"
    GEN="$ROOT/build/t/llmux-testgen"
    cd "$BATS_TEST_TMPDIR"
}

@test "safetensors header prints as one JSON document jq reads" {
    "$GEN" safetensors m.safetensors
    run llm-inspect m.safetensors
    [ "$status" -eq 0 ]
    [ "$(echo "$output" | jq -r .format)" = safetensors ]
    [ "$(echo "$output" | jq '.tensors | length')" -eq 18 ]
    [ "$(echo "$output" | jq -r '.tensors[] | select(.name=="t_BF16") | "\(.dtype) \(.shape)"')" = 'BF16 [3,5]' ]
    [ "$(echo "$output" | jq -r '.metadata.format')" = llmux ]
    # offsets tile the data section and the sizes add up to the file size
    [ "$(echo "$output" | jq '([.tensors[].bytes] | add) + .header_bytes + 8 == .file_bytes')" = true ]
    [ "$(echo "$output" | jq -c '.tensors[] | select(.name=="q_weight") | .quantization')" = '{"type":"q8_0","shape":[2,64]}' ]
}

@test "--compact prints the document on one line" {
    "$GEN" safetensors m.safetensors
    run llm-inspect --compact m.safetensors
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 1 ]
    diff <(echo "$output" | jq -S .) <(llm-inspect m.safetensors | jq -S .)
}

@test "--stats summarises float tensors" {
    python3 - <<'PY'
import struct, json
vals = [1.0, -2.0, 3.0, float("nan"), float("inf"), 0.5]
data = struct.pack("<6f", *vals)
hdr = json.dumps({"x": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open("s.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + data)
PY
    run llm-inspect --stats s.safetensors
    [ "$status" -eq 0 ]
    # rms over the finite values: sqrt((1 + 4 + 9 + 0.25) / 4)
    [ "$(echo "$output" | jq '.tensors[0].stats == {"min":-2,"max":3,"mean":0.625,"rms":1.8874586088176875,"nan":1,"inf":1}')" = true ]
}

@test "a stream prints as JSON lines: header, records, end" {
    "$GEN" stream d.stream 4 5
    run llm-inspect d.stream
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 7 ]
    [ "$(echo "${lines[0]}" | jq -r .type)" = header ]
    [ "${lines[3]}" = '{"type":"doc","id":2,"tokens":[2000,2037,2074],"mask":[0,1,0]}' ]
    [ "${lines[6]}" = '{"type":"end","records":5}' ]
}

@test "u16 streams decode tokens with their width" {
    "$GEN" stream d.stream 2 3
    run llm-inspect d.stream
    [ "$status" -eq 0 ]
    [ "$(echo "${lines[0]}" | jq .token_width)" -eq 2 ]
    [ "${lines[2]}" = '{"type":"doc","id":1,"tokens":[1000,1037],"mask":[1,0]}' ]
}

@test "--head N stops after N records; stdin and - read a stream" {
    "$GEN" stream d.stream 4 1000
    run llm-inspect --head 2 d.stream
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 3 ]
    run bash -c "llm-inspect -n 1 < d.stream"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 2 ]
    run bash -c "cat d.stream | llm-inspect - | tail -n 1"
    [ "$output" = '{"type":"end","records":1000}' ]
}

@test "format is detected without the file name's help, and --format forces it" {
    "$GEN" safetensors m.safetensors
    "$GEN" stream d.stream 4 3
    cp m.safetensors model.bin
    cp d.stream data.bin
    [ "$(llm-inspect model.bin | jq -r .format)" = safetensors ]
    [ "$(llm-inspect data.bin | head -n 1 | jq -r .type)" = header ]
    run bash -c "llm-inspect --format safetensors < m.safetensors | jq -r .file"
    [ "$output" = "<stdin>" ]
    run llm-inspect --format stream m.safetensors
    [ "$status" -eq 1 ]
    [[ "$output" == *"m.safetensors"* ]]
    run llm-inspect --format yaml m.safetensors
    [ "$status" -eq 2 ]
}

@test "several files print one after another" {
    "$GEN" safetensors a.safetensors
    "$GEN" stream b.stream 4 2
    run llm-inspect --compact a.safetensors b.stream
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 5 ]
}

@test "a closed pipe ends quietly, as coreutils programs do" {
    "$GEN" stream big.stream 4 200000
    run bash -c "llm-inspect big.stream | head -n 2 >/dev/null; echo \${PIPESTATUS[0]}"
    [ "$output" = 141 ] || [ "$output" = 0 ]
    run bash -c "llm-inspect big.stream 2>&1 >/dev/full"
    [ "$status" -eq 1 ]
    [[ "$output" == *"write error"* ]]
}

@test "--help and --version" {
    run llm-inspect --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Usage:"* && "$output" == *"--head N"* ]]
    run llm-inspect --version
    [ "$status" -eq 0 ]
    [[ "$output" == "llm-inspect (llmux) "* ]]
}
