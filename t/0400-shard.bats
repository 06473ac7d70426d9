#!/usr/bin/env bats
# llm-shard: doc streams into sequence streams.

setup() {
    ROOT="$BATS_TEST_DIRNAME/.."
    PATH="$ROOT/bin:$PATH"
    cd "$BATS_TEST_TMPDIR"
    printf 'In the beginning God created the heaven and the earth. And the earth was without form, and void.\n' > a.txt
    printf 'And God said, Let there be light: and there was light.\n' > b.txt
    printf 'And God saw the light, that it was good.\n' > c.txt
    llm-tokenize train --vocab-size 300 --special '<|endoftext|>' -o tok.json a.txt b.txt c.txt
    llm-tokenize -t tok.json a.txt b.txt c.txt -o docs.stream
}

# the documents' tokens, each followed by the end token (id 0: the first special)
doc_tokens() { llm-inspect docs.stream | jq -c 'select(.type == "doc") | .tokens + [0]' | jq -s -c 'add'; }

@test "packed sequences are the document stream cut into overlapping windows" {
    for T in 1 5 16 64; do
        llm-shard --seq "$T" docs.stream > seqs.stream
        header=$(llm-inspect seqs.stream | head -n 1)
        [ "$(echo "$header" | jq -r .kind)" = seqs ]
        [ "$(echo "$header" | jq .seq_len)" -eq "$T" ]
        # rebuild the stream: each sequence's first T tokens, then the last sequence's final token
        rebuilt=$(llm-inspect seqs.stream | jq -c 'select(.type == "seq") | .tokens' | jq -s -c --argjson T "$T" '
            if length == 0 then [] else (map(.[0:$T]) | add) + [last[$T]] end')
        all=$(doc_tokens)
        n=$(echo "$rebuilt" | jq length)
        # every sequence has T + 1 tokens, and together they are a prefix of the stream
        [ "$(llm-inspect seqs.stream | jq -c 'select(.type == "seq") | .tokens | length' | sort -u)" = "$((T + 1))" ]
        [ "$(echo "$all" | jq -c --argjson n "$n" '.[0:$n]')" = "$rebuilt" ]
        # and what is left over is shorter than a sequence
        [ $(( $(echo "$all" | jq length) - n )) -lt "$T" ]
    done
}

@test "--no-cross-doc: each document on its own, padded, with a mask" {
    llm-shard --seq 8 --no-cross-doc docs.stream > seqs.stream
    [ "$(llm-inspect seqs.stream | head -n 1 | jq -r .mask)" = loss ]
    # padding is masked out; real tokens are trained
    run bash -c "llm-inspect seqs.stream | jq -c 'select(.type == \"seq\") | [.tokens, .mask] | transpose[] | select(.[1] == 0)' | jq -s -c 'map(.[0]) | unique'"
    [ "$output" = "[0]" ]   # only the pad (= end) token is ever masked
    # a document of n tokens (its end token included) takes ceil((n - 1) / 8) sequences
    want=$(llm-inspect docs.stream | jq -s '[.[] | select(.type == "doc") | (.tokens | length) + 1 | ((. - 2) / 8 | floor) + 1] | add')
    [ "$(llm-inspect seqs.stream | jq -c 'select(.type == "seq")' | wc -l)" -eq "$want" ]
    # and the first sequence starts with the first document
    [ "$(llm-inspect seqs.stream | jq -c 'select(.type == "seq") | .tokens[0:4]' | head -n 1)" = \
      "$(llm-inspect docs.stream | jq -c 'select(.type == "doc") | .tokens[0:4]' | head -n 1)" ]
}

@test "instruction masks are carried through" {
    printf '%s\n' '{"prompt":"Who made light?","response":"God."}' '{"prompt":"Was it good?","response":"Yes."}' > sft.jsonl
    llm-tokenize -t tok.json --instruct --chat-template none sft.jsonl -o sft.stream
    llm-shard --seq 4 sft.stream > sft-seqs.stream
    [ "$(llm-inspect sft-seqs.stream | head -n 1 | jq -r .mask)" = loss ]
    trained=$(llm-inspect sft.stream | jq -c 'select(.type == "doc") | [.tokens, .mask] | transpose | map(select(.[1] == 1) | .[0])' | jq -s -c add)
    [ "$trained" != "[]" ]
}

@test "bad input: not a doc stream, no --seq, a truncated stream" {
    run llm-shard docs.stream
    [ "$status" -eq 2 ]
    llm-shard --seq 4 docs.stream > seqs.stream
    run llm-shard --seq 4 seqs.stream
    [ "$status" -eq 1 ]
    [[ "$output" == *"seqs.stream"*"not docs"* ]]
    head -c 40 docs.stream > cut.stream
    run llm-shard --seq 4 cut.stream
    [ "$status" -eq 1 ]
    [[ "$output" == *"cut.stream"* ]]
}
