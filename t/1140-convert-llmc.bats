#!/usr/bin/env bats
# llm-convert and llm.c's GPT-2 checkpoints (lib/cv_llmc.c): the header and
# size of what we write, the round trip, models llm.c cannot hold, and bad
# .bin files that write nothing. t/conformance/test_convert_llmc.py checks
# the format itself with a reader and a writer of its own and transformers.

setup_file() {
    cd "$BATS_FILE_TMPDIR"
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    source "$BATS_TEST_DIRNAME/helpers/tiny.bash"
    tiny_corpus
    llm-train --arch gpt2 --layers 2 --heads 4 --dim 64 --ffn 256 --ctx 64 --tokenizer tok.json \
        data --steps 10 --lr 1e-2 -o gpt2.safetensors
    llm-train --arch llama --layers 2 --heads 4 --kv-heads 2 --dim 64 --ffn 128 --ctx 64 --untied \
        --tokenizer tok.json data --steps 0 -o llama.safetensors
    llm-train --arch gpt2 --layers 1 --heads 4 --dim 64 --ffn 128 --ctx 64 --tokenizer tok.json \
        data --steps 0 -o gpt2-ffn.safetensors
    llm-convert gpt2.safetensors --to llmc -o good.bin
}

setup() {
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    cd "$BATS_FILE_TMPDIR"
}

# header int32 number $2 of file $1 (as a signed decimal)
peek() { od -A n -t d4 -j $(($2 * 4)) -N 4 "$1" | tr -d ' '; }

# sets header int32 number $2 of file $1 to $3 (little-endian)
poke() {
    local v=$(($3 & 0xffffffff))
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $((v & 255)) $((v >> 8 & 255)) $((v >> 16 & 255)) $((v >> 24 & 255)))" |
        dd of="$1" bs=4 seek="$2" conv=notrunc status=none
}

# a failed conversion of $1: exit 1, one line naming the file and $2, nothing written
refused() {
    rm -f out.safetensors
    run llm-convert "$1" --from llmc --to llmux -o out.safetensors
    echo "status $status: $output"
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *"$1"* ]]
    [[ "$output" == *"$2"* ]]
    [ ! -e out.safetensors ]
    [ "$(ls -a | grep -c '^\.out')" -eq 0 ]
}

@test "the header says what the config says; the vocabulary padded to 128 with zero rows; the exact size" {
    [ "$(peek good.bin 0)" = 20240326 ] && [ "$(peek good.bin 1)" = 3 ]
    cfg=$(llm-inspect gpt2.safetensors | jq -r .metadata.config)
    V=$(jq .vocab_size <<< "$cfg"); C=$(jq .dim <<< "$cfg"); L=$(jq .n_layers <<< "$cfg"); T=$(jq .ctx_len <<< "$cfg")
    Vp=$(( (V + 127) / 128 * 128 ))
    [ "$(peek good.bin 2)" = "$T" ] && [ "$(peek good.bin 3)" = "$V" ] && [ "$(peek good.bin 4)" = "$L" ]
    [ "$(peek good.bin 5)" = "$(jq .n_heads <<< "$cfg")" ] && [ "$(peek good.bin 6)" = "$C" ] && [ "$(peek good.bin 7)" = "$Vp" ]
    # the rest of the header is zero, and so are wte's padded rows
    [ "$(od -v -A n -t x1 -j 32 -N 992 good.bin | tr -d ' 0\n')" = "" ]
    [ "$(od -v -A n -t x1 -j $((1024 + V * C * 4)) -N $(((Vp - V) * C * 4)) good.bin | tr -d ' 0\n')" = "" ]
    params=$((Vp * C + T * C + L * (12 * C * C + 13 * C) + 2 * C))
    [ "$(stat -c %s good.bin)" -eq $((1024 + 4 * params)) ]
    llm-convert gpt2.safetensors --to llmc --dtype bf16 -o good-bf16.bin
    [ "$(peek good-bf16.bin 1)" = 5 ]
    [ "$(stat -c %s good-bf16.bin)" -eq $((1024 + 2 * params)) ]
}

@test "round trip: detected as llmc, the same tensors, the same .bin again; bf16 stays bf16" {
    llm-convert good.bin --to llmux -o back.safetensors 2> msg
    grep -q '(llmc)' msg
    jq_tensors='[.tensors[] | select(.name | startswith("optim.") | not) | {name, dtype, shape, stats}] | sort_by(.name)'
    [ "$(llm-inspect --stats gpt2.safetensors | jq -cS "$jq_tensors")" = "$(llm-inspect --stats back.safetensors | jq -cS "$jq_tensors")" ]
    [ "$(llm-inspect back.safetensors | jq -r .metadata.config)" = "$(llm-inspect gpt2.safetensors | jq -r .metadata.config)" ]
    # llm.c keeps its tokenizer elsewhere
    [ "$(llm-inspect back.safetensors | jq '.metadata | has("tokenizer")')" = false ]
    llm-convert back.safetensors --to llmc -o again.bin
    cmp good.bin again.bin
    llm-convert gpt2.safetensors --to llmc --dtype bf16 -o b.bin
    llm-convert b.bin --to llmux -o b.safetensors
    [ "$(llm-inspect b.safetensors | jq -r '[.tensors[].dtype] | unique | join(",")')" = BF16 ]
    llm-convert b.safetensors --to llmc -o b2.bin   # as read: version 5
    cmp b.bin b2.bin
}

@test "models llm.c cannot hold are refused, naming what does not fit; nothing written" {
    run llm-convert llama.safetensors --to llmc -o l.bin
    echo "$output"
    [ "$status" -eq 1 ] && [ "${#lines[@]}" -eq 1 ]
    [[ "$output" == *"l.bin"* && "$output" == *"llama"* && "$output" == *"untied"* && "$output" == *"ffn_dim 128"* ]]
    [ ! -e l.bin ]
    run llm-convert gpt2-ffn.safetensors --to llmc -o f.bin
    [ "$status" -eq 1 ] && [[ "$output" == *"ffn_dim 128 is not 4 x dim"* ]]
    [ ! -e f.bin ]
    run llm-convert gpt2.safetensors --to llmc --dtype f16 -o h.bin
    [ "$status" -eq 1 ] && [[ "$output" == *"f16"* ]]
    [ ! -e h.bin ]
    # an existing output is left as it was
    echo keep > kept.bin
    run llm-convert llama.safetensors --to llmc -o kept.bin
    [ "$status" -eq 1 ] && [ "$(cat kept.bin)" = keep ]
    [ "$(ls -a | grep -c '^\.[a-z].*tmp')" -eq 0 ]
}

@test "bad magic and version: one line naming the file and the field, exit 1, nothing written" {
    cp good.bin magic.bin && poke magic.bin 0 20240327
    refused magic.bin "magic"
    # without --from it is not detected as llm.c's at all
    run llm-convert magic.bin --to llmux -o out.safetensors
    [ "$status" -eq 1 ] && [[ "$output" == *magic.bin* ]] && [ ! -e out.safetensors ]
    for v in 0 1 2 4 6 -3; do
        cp good.bin version.bin && poke version.bin 1 "$v"
        refused version.bin "version $v"
    done
}

@test "truncated and extra bytes: exit 1, nothing written" {
    head -c 1000 good.bin > short.bin
    refused short.bin "truncated"
    head -c -4 good.bin > cut.bin
    refused cut.bin "truncated"
    head -c 1024 good.bin > header-only.bin
    refused header-only.bin "truncated"
    cp good.bin long.bin && printf 'abcd' >> long.bin
    refused long.bin "4 extra bytes"
    # a version 5 header on float32 data: twice the bytes it says
    cp good.bin v5.bin && poke v5.bin 1 5
    refused v5.bin "extra bytes"
    : > empty.bin
    refused empty.bin "truncated"
}

@test "zero, negative and inconsistent sizes: the field named, exit 1, nothing written" {
    i=2
    for f in max_seq_len vocab_size num_layers num_heads channels padded_vocab_size; do
        cp good.bin zero.bin && poke zero.bin $i 0
        refused zero.bin "$f is 0"
        cp good.bin neg.bin && poke neg.bin $i -5
        refused neg.bin "$f is -5"
        i=$((i + 1))
    done
    cp good.bin vp.bin && poke vp.bin 7 100
    refused vp.bin "padded_vocab_size 100 is less than vocab_size"
    cp good.bin heads.bin && poke heads.bin 5 5
    refused heads.bin "channels 64 is not a multiple of num_heads 5"
    cp good.bin big.bin && poke big.bin 4 100000
    refused big.bin "num_layers 100000"
    cp good.bin rest.bin && poke rest.bin 9 1
    refused rest.bin "[9]"
    # a size that is wrong but consistent: the file size no longer matches
    cp good.bin layers.bin && poke layers.bin 4 3
    refused layers.bin "truncated"
}
