#!/usr/bin/env bats
# What training and evaluation read (lib/batch.c, through build/t/llmux-readseq):
# the tokens that went in, from a shard set or the stream form, shuffled or
# not, for 1, 2 and 3 ranks; and llm-shard --shuffle.

setup() {
    ROOT="$BATS_TEST_DIRNAME/.."
    PATH="$ROOT/bin:$ROOT/build/t:$PATH"
    cd "$BATS_TEST_TMPDIR"
    for i in $(seq 1 12); do
        printf 'Document %s. In the beginning God created the heaven and the earth, and the earth was without form and void, %s.\n' "$i" "$(seq -s ' ' 1 "$i")" > "d$i.txt"
    done
    llm-tokenize train --vocab-size 300 --special '<|endoftext|>' -o tok.json d*.txt
    llm-tokenize -t tok.json d*.txt -o docs.stream
}

@test "the reader yields exactly the tokens that went in: documents joined by the end token" {
    eos=$(llm-inspect --head 0 docs.stream | jq .eos_id)
    llm-inspect docs.stream | jq -r --argjson eos "$eos" 'select(.type == "doc") | .tokens + [$eos] | .[]' > in.txt
    for T in 3 8 33; do
        llm-shard --seq "$T" --shard-size 300 -o "set$T" docs.stream
        # sequences overlap by one token: every row but the first starts with the previous one's last
        llmux-readseq "set$T" | awk 'NR == 1 { print $1 } { for (i = 2; i <= NF; i++) print $i }' > out.txt
        [ "$(wc -l < out.txt)" -gt "$T" ]
        cmp out.txt <(head -n "$(wc -l < out.txt)" in.txt)
        # what is left over is less than one sequence
        [ $(( $(wc -l < in.txt) - $(wc -l < out.txt) )) -lt "$T" ]
    done
}

@test "the stream form reads as the shard set does" {
    for T in 3 8 33; do
        llm-shard --seq "$T" docs.stream > "seqs$T.stream"
        llm-shard --seq "$T" --shard-size 300 -o "set$T" docs.stream
        cmp <(llmux-readseq "seqs$T.stream") <(llmux-readseq "set$T")
        cmp <(llmux-readseq "seqs$T.stream" 1 3 9 1) <(llmux-readseq "set$T/train" 1 3 9 1)
    done
    llm-shard --seq 5 --no-cross-doc docs.stream > masked.stream
    llm-shard --seq 5 --no-cross-doc -o masked docs.stream
    cmp <(llmux-readseq masked.stream) <(llmux-readseq masked)
    grep -q ' | ' <(llmux-readseq masked.stream)
}

@test "ranks 1, 2 and 3 get disjoint shares that cover the set, shuffled or not" {
    for T in 3 8; do
        for shuffled in "" --shuffle; do
            rm -rf set && llm-shard --seq "$T" $shuffled --shard-size 300 -o set docs.stream
            llmux-readseq set | sort > all
            n=$(wc -l < all)
            [ "$n" -eq "$(jq .train.sequences <(llm-inspect --compact set | jq -s '{train: .[0]}'))" ]
            for w in 1 2 3; do
                for order in 0 1; do
                    for r in $(seq 0 $((w - 1))); do llmux-readseq set "$r" "$w" 11 "$order"; done | sort > got
                    cmp all got
                done
            done
        done
    done
}

@test "--shuffle scatters the sequences by --seed, the same whatever --mem" {
    llm-shard --seq 4 -o plain docs.stream
    llm-shard --seq 4 --shuffle --seed 3 -o a docs.stream
    llm-shard --seq 4 --shuffle --seed 3 --mem 16M -o b docs.stream
    llm-shard --seq 4 --shuffle --seed 4 -o c docs.stream
    cmp <(llmux-readseq plain | sort) <(llmux-readseq a | sort)
    ! cmp -s <(llmux-readseq plain) <(llmux-readseq a)
    cmp <(llmux-readseq a) <(llmux-readseq b)
    ! cmp -s <(llmux-readseq a) <(llmux-readseq c)
    cmp <(llm-inspect --head 1000 a | jq -c 'select(.type? == "seq")') <(llm-inspect --head 1000 b | jq -c 'select(.type? == "seq")')
    # the stream form, shuffled, holds the same sequences in the same order
    llm-shard --seq 4 --shuffle --seed 3 docs.stream > a.stream
    cmp <(llmux-readseq a.stream) <(llmux-readseq a)
    # masks travel with their sequences
    llm-shard --seq 6 --no-cross-doc -o m docs.stream
    llm-shard --seq 6 --no-cross-doc --shuffle --seed 1 -o ms docs.stream
    cmp <(llmux-readseq m | sort) <(llmux-readseq ms | sort)
    # a shuffle leaves no temporary files behind
    [ -z "$(ls -A a | grep -v -e '^train$')" ]
}

@test "--shuffle options: usage errors" {
    run llm-shard --seq 4 --mem 64M docs.stream
    [ "$status" -eq 2 ]
    [[ "$output" == *"--mem and --tmp are for --shuffle"* ]]
    run llm-shard --seq 4 --shuffle --mem 1M docs.stream
    [ "$status" -eq 2 ]
    [[ "$output" == *"--mem must be at least 16M"* ]]
    run llm-shard --seq 4 --shuffle --tmp /nonexistent -o x docs.stream
    [ "$status" -eq 1 ]
    [[ "$output" == *"/nonexistent"* ]]
    [ ! -e x/train ]
}

@test "training and evaluation refuse a damaged set, a truncated stream or the wrong kind" {
    llm-shard --seq 4 --shard-size 100 -o set docs.stream
    cp -r set flipped
    printf '\x55' | dd of=flipped/train/shard-00001.bin bs=1 seek=70 conv=notrunc 2>/dev/null
    run llmux-readseq flipped
    [ "$status" -eq 1 ]
    [[ "$output" == *"flipped/train/shard-00001.bin: checksum mismatch"* ]]
    cp -r set cut
    truncate -s 100 cut/train/shard-00000.bin
    run llmux-readseq cut/train
    [ "$status" -eq 1 ]
    [[ "$output" == *"cut/train/shard-00000.bin"*"truncated"* ]]
    llm-shard --seq 4 docs.stream > seqs.stream
    head -c $(( $(stat -c %s seqs.stream) - 5 )) seqs.stream > short.stream
    run llmux-readseq short.stream
    [ "$status" -eq 1 ]
    [[ "$output" == *"short.stream: truncated"* ]]
    run llmux-readseq docs.stream
    [ "$status" -eq 1 ]
    [[ "$output" == *"docs.stream: a stream of kind 'docs', not seqs"* ]]
    run llmux-readseq nothing-here
    [ "$status" -eq 1 ]
    [[ "$output" == *"nothing-here"* ]]
}
