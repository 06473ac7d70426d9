#!/usr/bin/env bats
# llm-shard -o DIR: shard sets, their manifest and checksums, and llm-inspect DIR.

setup() {
    ROOT="$BATS_TEST_DIRNAME/.."
    PATH="$ROOT/bin:$PATH"
    cd "$BATS_TEST_TMPDIR"
    for i in 1 2 3 4 5 6; do
        printf 'Document %s. In the beginning God created the heaven and the earth, and the earth was without form.\n' "$i" > "d$i.txt"
    done
    llm-tokenize train --vocab-size 300 --special '<|endoftext|>' -o tok.json d*.txt
    llm-tokenize -t tok.json d*.txt -o docs.stream
}

@test "a shard set holds exactly the sequences of the stream form" {
    for T in 3 16; do
        llm-shard --seq "$T" docs.stream > seqs.stream
        llm-shard --seq "$T" --shard-size 200 -o "set$T" docs.stream
        [ "$(ls "set$T/train" | grep -c '^shard-')" -gt 1 ]
        n=$(jq .sequences "set$T/train/manifest.json")
        [ "$n" -eq "$(llm-inspect seqs.stream | jq -c 'select(.type == "seq")' | wc -l)" ]
        diff <(llm-inspect seqs.stream | jq -c 'select(.type == "seq") | .tokens') \
             <(llm-inspect --head "$n" "set$T/train" | jq -c 'select(.type? == "seq") | .tokens')
        [ "$(llm-inspect --compact "set$T" | head -n 1 | jq .verified)" = true ]
    done
}

@test "masks are stored with the sequences" {
    llm-shard --seq 8 --no-cross-doc -o set docs.stream
    [ "$(jq .mask set/train/manifest.json)" = true ]
    llm-shard --seq 8 --no-cross-doc docs.stream > seqs.stream
    diff <(llm-inspect seqs.stream | jq -c 'select(.type == "seq") | .mask') \
         <(llm-inspect --head 1000 set | jq -c 'select(.type? == "seq") | .mask')
}

@test "a flipped byte or a truncated shard is found, naming the shard" {
    llm-shard --seq 4 --shard-size 100 -o set docs.stream
    cp -r set flipped
    printf '\x55' | dd of=flipped/train/shard-00001.bin bs=1 seek=80 conv=notrunc 2>/dev/null
    run llm-inspect flipped
    [ "$status" -eq 1 ]
    [[ "$output" == *"flipped/train/shard-00001.bin: checksum mismatch"* ]]
    cp -r set cut
    truncate -s 90 cut/train/shard-00002.bin
    run llm-inspect cut
    [ "$status" -eq 1 ]
    [[ "$output" == *"cut/train/shard-00002.bin"*"truncated"* ]]
    rm cut/train/shard-00000.bin
    run llm-inspect cut/train
    [ "$status" -eq 1 ]
    [[ "$output" == *"cut/train/shard-00000.bin"* ]]
}

@test "an existing directory is refused; a failed run leaves nothing" {
    llm-shard --seq 4 -o set docs.stream
    run llm-shard --seq 4 -o set docs.stream
    [ "$status" -eq 1 ]
    [[ "$output" == *"set/train: already exists"* ]]
    head -c 200 docs.stream > cut.stream
    run llm-shard --seq 4 -o partial cut.stream
    [ "$status" -eq 1 ]
    [ ! -e partial/train ]
    [ -z "$(ls -a partial | grep 'tmp')" ]
}

@test "--val splits by document, the same way for the same seed" {
    llm-shard --seq 4 --val 0.5 --seed 7 -o a docs.stream
    llm-shard --seq 4 --val 0.5 --seed 7 -o b docs.stream
    [ "$(jq .documents a/train/manifest.json)" -eq "$(jq .documents b/train/manifest.json)" ]
    diff <(llm-inspect --head 100 a | jq -c 'select(.type? == "seq")') <(llm-inspect --head 100 b | jq -c 'select(.type? == "seq")')
    # every document went to one split or the other
    [ $(( $(jq .documents a/train/manifest.json) + $(jq .documents a/val/manifest.json) )) -eq 6 ]
    # other seeds give other splits
    for s in 1 2 3 4 5; do
        llm-shard --seq 4 --val 0.5 --seed "$s" -o "s$s" docs.stream
        llm-inspect --head 100 "s$s/val" | jq -c 'select(.type? == "seq") | .tokens' | md5sum
    done | sort -u > splits
    [ "$(wc -l < splits)" -gt 1 ]
    run llm-shard --seq 4 --val 0.5 docs.stream
    [ "$status" -eq 2 ]
}
