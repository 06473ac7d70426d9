#!/usr/bin/env bats
# llm-tokenize on valid input: the formats (stream, ids, count), input kinds
# (files, JSON lines, directories, archives, stdin), ordered output with any
# number of threads, -o, decode, train, and model files as tokenizers.
# Ids are checked against references in t/conformance; here the plumbing.

bats_require_minimum_version 1.5.0

setup_file() {
    ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
    export ROOT
    export TOK=$ROOT/bin/llm-tokenize INSPECT=$ROOT/bin/llm-inspect
    [ -x "$TOK" ] || make -C "$ROOT" -s bin/llm-tokenize >&2
    [ -x "$INSPECT" ] || make -C "$ROOT" -s bin/llm-inspect >&2
    export REFS=$ROOT/../shared/refs/tokenizers
    # a corpus and a small byte-level tokenizer trained on it, shared by the tests
    export F=$BATS_FILE_TMPDIR
    python3 - "$F" <<'EOF'
import random, sys
d = sys.argv[1]
rng = random.Random(7)
words = ("in the beginning god created heaven and earth light darkness waters firmament day night "
         "evening morning it was good naïve café 日本 🙂 don't 1234").split()
with open(d + "/corpus.txt", "w", encoding="utf-8") as f:
    for _ in range(800):
        f.write(" ".join(rng.choice(words) for _ in range(rng.randint(3, 15))) + "\n")
EOF
    "$TOK" train --vocab-size 600 --special '<|endoftext|>' --special '<|pad|>' -o "$F/tok.json" "$F/corpus.txt"
}

setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
    export T=$F/tok.json
}

# docs DIR N: N small text files (some nested) with distinct texts, no newlines
docs() {
    python3 - "$1" "$2" <<'EOF'
import os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(n)
words = "in the beginning god created heaven and earth light darkness café 日本".split()
for i in range(n):
    sub = os.path.join(d, f"s{i % 3}") if i % 4 == 0 else d
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"doc{i:05d}.txt"), "w", encoding="utf-8") as f:
        f.write(f"document {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(0, 400))))
EOF
}

# texts_in_order DIR: the files' texts, one per line, in the order llm-tokenize walks DIR
texts_in_order() {
    python3 - "$1" <<'EOF'
import os, sys
def walk(d):
    for name in sorted(os.listdir(d), key=lambda s: s.encode()):
        p = os.path.join(d, name)
        if os.path.isdir(p):
            yield from walk(p)
        else:
            yield p
for p in walk(sys.argv[1]):
    print(open(p, encoding="utf-8").read())
EOF
}

@test "--help prints the synopsis and exits 0" {
    run --separate-stderr "$TOK" --help
    [ "$status" -eq 0 ]
    [[ $output == *"llm-tokenize -t TOK"* ]]
    [[ $output == *"decode -t TOK"* ]]
    [[ $output == *"train --vocab-size N"* ]]
    run "$TOK" decode --help
    [ "$status" -eq 0 ]
    run "$TOK" train --help
    [ "$status" -eq 0 ]
}

@test "train writes a tokenizer.json (BPE, specials first) and nothing else" {
    mkdir out
    run --separate-stderr "$TOK" train --vocab-size 400 --pattern cl100k_base --special '<|endoftext|>' -o out/t.json "$F/corpus.txt"
    [ "$status" -eq 0 ]
    [ "$(ls -A out)" = t.json ]
    [ "$(jq -r .model.type out/t.json)" = BPE ]
    [ "$(jq '.model.vocab["<|endoftext|>"]' out/t.json)" -eq 0 ]
    [ "$(jq -c '[.added_tokens[] | [.id, .content, .special]]' out/t.json)" = '[[0,"<|endoftext|>",true]]' ]
    [ "$(jq '.model.vocab | length' out/t.json)" -le 400 ]
    [ "$(jq '.model.vocab | length' out/t.json)" -gt 257 ]
    [ "$(jq '.model.merges | length' out/t.json)" -eq $(( $(jq '.model.vocab | length' out/t.json) - 257 )) ]
    # and it tokenizes
    printf 'in the beginning' > a.txt
    run --separate-stderr "$TOK" -t out/t.json --format ids a.txt
    [ "$status" -eq 0 ]
    [[ $output =~ ^\[[0-9,]+\]$ ]]
}

@test "--format ids: one JSON array per document per line" {
    printf 'in the beginning' > a.txt
    printf '' > empty.txt
    printf '{"text":"god created"}\n\n{"text":"heaven"}\n' > b.jsonl
    run --separate-stderr "$TOK" -t "$T" --format ids a.txt empty.txt b.jsonl
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 4 ]
    [ "${lines[1]}" = "[]" ]
    for l in "${lines[@]}"; do jq -e 'type == "array" and all(type == "number")' <<<"$l" >/dev/null; done
    [ "$(jq length <<<"${lines[0]}")" -ge 1 ]
}

@test "--format stream is readable with llm-inspect, and its tokens are the ids" {
    docs d 20
    "$TOK" -t "$T" --format ids d > ids.txt
    run --separate-stderr "$TOK" -t "$T" --format stream -o s.stream d
    [ "$status" -eq 0 ]
    run --separate-stderr "$INSPECT" s.stream
    [ "$status" -eq 0 ]
    [ "$(head -n 1 <<<"$output" | jq -r '.type, .format, .kind' | tr '\n' ' ')" = "header llmux-stream docs " ]
    [ "$(head -n 1 <<<"$output" | jq '.vocab_size')" -eq "$(jq '[.model.vocab[]] | max + 1' "$T")" ]
    [ "$(head -n 1 <<<"$output" | jq '.eos_id')" -eq 0 ]
    [ "$(tail -n 1 <<<"$output")" = '{"type":"end","records":20}' ]
    diff <(sed '1d;$d' <<<"$output" | jq -c .tokens) ids.txt
    [ "$(sed '1d;$d' <<<"$output" | jq -s -c '[.[].id]')" = "$(jq -n -c '[range(20)]')" ]
}

@test "the default format is stream when stdout is not a terminal" {
    printf 'in the beginning' > a.txt
    "$TOK" -t "$T" a.txt > s.stream
    run "$INSPECT" s.stream
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 3 ]
}

@test "--format count sums documents, tokens and bytes" {
    docs d 25
    "$TOK" -t "$T" --format ids d > ids.txt
    run --separate-stderr "$TOK" -t "$T" --format count d
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 1 ]
    [ "$(jq .documents <<<"$output")" -eq 25 ]
    [ "$(jq .tokens <<<"$output")" -eq "$(jq -s 'map(length) | add' ids.txt)" ]
    [ "$(jq .bytes <<<"$output")" -eq "$(find d -type f -exec cat {} + | wc -c)" ]
    [ "$(jq .skipped <<<"$output")" -eq 0 ]
}

@test "-j 1 and -j 2 give the same output, in input order: a directory of many files" {
    docs d 3000
    run --separate-stderr "$TOK" -t "$T" --format ids -j 1 d
    [ "$status" -eq 0 ]
    one=$output
    run --separate-stderr "$TOK" -t "$T" --format ids -j 2 d
    [ "$status" -eq 0 ]
    [ "$output" = "$one" ]
    [ "${#lines[@]}" -eq 3000 ]
    # input order: decoding gives the files' texts in walk order
    diff <(printf '%s\n' "$one" | "$TOK" decode -t "$T"; echo) <(texts_in_order d)
    "$TOK" -t "$T" --format stream -j 1 d > s1
    "$TOK" -t "$T" --format stream -j 2 d > s2
    cmp s1 s2
}

@test "-j 1 and -j 2 give the same output, in input order: a large JSONL file" {
    python3 - <<'EOF'
import json, random
rng = random.Random(3)
words = "in the beginning god created heaven and earth light darkness café 日本 🙂".split()
with open("big.jsonl", "w", encoding="utf-8") as f, open("texts.txt", "w", encoding="utf-8") as t:
    for i in range(4000):
        text = f"{i} " + " ".join(rng.choice(words) for _ in range(rng.choice([0, 5, 50, 500])))
        f.write(json.dumps({"text": text, "id": i}) + "\n")
        t.write(text + "\n")
EOF
    [ "$(stat -c %s big.jsonl)" -gt 2000000 ]
    "$TOK" -t "$T" --format ids -j 1 big.jsonl > o1
    "$TOK" -t "$T" --format ids -j 2 big.jsonl > o2
    cmp o1 o2
    [ "$(wc -l < o1)" -eq 4000 ]
    diff <("$TOK" decode -t "$T" o1; echo) texts.txt
}

@test "-j 1 and -j 2 give the same output, in input order: a tar.gz with many members" {
    docs d 2000
    tar --sort=name -czf d.tar.gz -C d .
    "$TOK" -t "$T" --format ids -j 1 d.tar.gz > o1
    "$TOK" -t "$T" --format ids -j 2 d.tar.gz > o2
    cmp o1 o2
    # tar's member order is the walk order here
    "$TOK" -t "$T" --format ids d > od
    cmp o1 od
}

@test "directories are read recursively in byte order; hidden files are read, .git is not" {
    mkdir -p d/b d/a/x d/.git d/.hidden
    printf 'one' > d/a/x/1.txt
    printf 'two' > d/a/2.txt
    printf 'three' > d/b/3.txt
    printf 'four' > d/B.txt
    printf 'five' > d/.hidden/5.txt
    printf 'git' > d/.git/config
    run --separate-stderr "$TOK" -t "$T" --format ids d
    [ "$status" -eq 0 ]
    # byte order: .hidden, B.txt, a/2.txt, a/x/1.txt, b/3.txt
    [ "$(printf '%s\n' "$output" | "$TOK" decode -t "$T" --separator ,)" = "five,four,two,one,three" ]
}

@test "archives: tar, tar.gz, tar.xz, tar.zst and zip give the directory's documents" {
    docs d 40
    printf '{"text":"from jsonl one"}\n{"text":"from jsonl two"}\n' > d/zz.jsonl
    "$TOK" -t "$T" --format ids d > want
    [ "$(wc -l < want)" -eq 42 ]
    tar --sort=name -cf d.tar -C d .
    tar --sort=name -czf d.tar.gz -C d .
    tar --sort=name -cJf d.tar.xz -C d .
    tar --sort=name --zstd -cf d.tar.zst -C d .
    python3 - <<'EOF'
import os, zipfile
with zipfile.ZipFile("d.zip", "w", zipfile.ZIP_DEFLATED) as z:
    def walk(d, rel=""):
        for name in sorted(os.listdir(d), key=lambda s: s.encode()):
            p = os.path.join(d, name)
            if os.path.isdir(p):
                z.write(p, rel + name + "/")
                walk(p, rel + name + "/")
            else:
                z.write(p, rel + name)
    walk("d")
EOF
    for a in d.tar d.tar.gz d.tar.xz d.tar.zst d.zip; do
        run --separate-stderr "$TOK" -t "$T" --format ids "$a"
        [ "$status" -eq 0 ] || { echo "$a: $stderr" >&2; return 1; }
        diff <(printf '%s\n' "$output") want || { echo "$a differs" >&2; return 1; }
    done
    # a member named .jsonl is JSON lines
    [ "$("$TOK" -t "$T" --format ids d.zip | tail -n 1 | "$TOK" decode -t "$T")" = "from jsonl two" ]
    # an archive named as something else is still an archive (content decides)
    cp d.tar.gz data.bin
    "$TOK" -t "$T" --format ids data.bin | cmp - want
}

@test "stdin: no FILE and - read stdin, detected like a file; --jsonl reads JSON lines" {
    printf 'in the beginning' > a.txt
    "$TOK" -t "$T" --format ids a.txt > want
    run --separate-stderr bash -c '"$TOK" -t "$T" --format ids < a.txt'
    [ "$status" -eq 0 ] && [ "$output" = "$(cat want)" ]
    run --separate-stderr bash -c 'cat a.txt | "$TOK" -t "$T" --format ids -'
    [ "$status" -eq 0 ] && [ "$output" = "$(cat want)" ]
    # - between files keeps its place
    printf 'heaven' > b.txt
    run --separate-stderr bash -c 'cat a.txt | "$TOK" -t "$T" --format ids b.txt - b.txt'
    [ "$status" -eq 0 ]
    [ "${lines[1]}" = "$(cat want)" ] && [ "${lines[0]}" = "${lines[2]}" ]
    # an archive through a pipe
    docs d 10
    tar --sort=name -czf d.tar.gz -C d .
    run --separate-stderr bash -c 'cat d.tar.gz | "$TOK" -t "$T" --format ids'
    [ "$status" -eq 0 ]
    [ "$output" = "$("$TOK" -t "$T" --format ids d)" ]
    # JSON lines on stdin
    run --separate-stderr bash -c 'printf "{\"text\":\"in the beginning\"}\n" | "$TOK" -t "$T" --format ids --jsonl'
    [ "$status" -eq 0 ] && [ "$output" = "$(cat want)" ]
}

@test "--field names the JSONL text field" {
    printf '{"body":"in the beginning","text":"other"}\n{"body":"heaven","text":"x"}\n' > f.jsonl
    printf 'in the beginning' > a.txt
    run --separate-stderr "$TOK" -t "$T" --format ids --field body f.jsonl
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 2 ]
    [ "${lines[0]}" = "$("$TOK" -t "$T" --format ids a.txt)" ]
    run --separate-stderr bash -c 'printf "{\"body\":\"in the beginning\"}\n" | "$TOK" -t "$T" --format ids --jsonl --field body'
    [ "$status" -eq 0 ] && [ "$output" = "$("$TOK" -t "$T" --format ids a.txt)" ]
}

@test "-o writes the file atomically: all of it on success, nothing on failure" {
    docs d 30
    mkdir o
    for fmt in stream ids count; do
        run --separate-stderr "$TOK" -t "$T" --format $fmt -o o/out.$fmt d
        [ "$status" -eq 0 ] && [ -z "$output" ]
        [ -s o/out.$fmt ]
    done
    cmp o/out.ids <("$TOK" -t "$T" --format ids d)
    "$INSPECT" o/out.stream > /dev/null
    [ "$(jq .documents o/out.count)" -eq 30 ]
    # a failure leaves no file, and an existing file as it was
    printf 'bad \xff' > d/zzz.txt
    run --separate-stderr "$TOK" -t "$T" --format ids -o o/new.ids d
    [ "$status" -eq 1 ]
    [ ! -e o/new.ids ]
    echo old > o/old.stream
    run --separate-stderr "$TOK" -t "$T" -o o/old.stream d
    [ "$status" -eq 1 ]
    [ "$(cat o/old.stream)" = old ]
    # and no temporary file is left behind
    [ "$(ls -A o | sort | tr '\n' ' ')" = "old.stream out.count out.ids out.stream " ]
}

@test "decode reads a stream or ids lines back to the text" {
    python3 - <<'EOF'
import json
texts = ["in the beginning", "naïve café 日本 🙂", "", "two  spaces\tand tab", "god created"]
with open("t.jsonl", "w", encoding="utf-8") as f:
    for t in texts:
        f.write(json.dumps({"text": t}) + "\n")
open("want.txt", "w", encoding="utf-8").write("|".join(texts))
EOF
    "$TOK" -t "$T" --format stream t.jsonl > s.stream
    "$TOK" -t "$T" --format ids t.jsonl > ids.txt
    run --separate-stderr "$TOK" decode -t "$T" --separator '|' s.stream
    [ "$status" -eq 0 ] && [ "$output" = "$(cat want.txt)" ]
    run --separate-stderr "$TOK" decode -t "$T" --separator '|' ids.txt
    [ "$status" -eq 0 ] && [ "$output" = "$(cat want.txt)" ]
    run --separate-stderr bash -c '"$TOK" decode -t "$T" --separator "|" < s.stream'
    [ "$status" -eq 0 ] && [ "$output" = "$(cat want.txt)" ]
    run --separate-stderr bash -c 'cat ids.txt | "$TOK" decode -t "$T" --separator "|" -'
    [ "$status" -eq 0 ] && [ "$output" = "$(cat want.txt)" ]
    # the default separator is a newline
    [ "$("$TOK" decode -t "$T" ids.txt | head -n 2 | tail -n 1)" = "naïve café 日本 🙂" ]
}

@test "--bytes: any bytes round-trip through a byte-level tokenizer" {
    python3 -c 'import random; r = random.Random(5); open("b.bin", "wb").write(bytes(r.randrange(256) for _ in range(20000)) + bytes(range(256)))'
    run --separate-stderr "$TOK" -t "$T" --bytes --format ids b.bin
    [ "$status" -eq 0 ]
    printf '%s\n' "$output" | "$TOK" decode -t "$T" > back.bin
    cmp back.bin b.bin
    "$TOK" -t "$T" --bytes -o s.stream b.bin
    "$TOK" decode -t "$T" s.stream | cmp - b.bin
}

@test "--allow-special: special-token strings become their ids only when allowed" {
    printf 'in<|endoftext|>the<|pad|>' > a.txt
    run --separate-stderr "$TOK" -t "$T" --format ids --allow-special a.txt
    [ "$status" -eq 0 ]
    [ "$(jq -c '[.[] | select(. < 2)]' <<<"$output")" = '[0,1]' ]
    run --separate-stderr "$TOK" -t "$T" --format ids a.txt
    [ "$status" -eq 0 ]
    [ "$(jq -c '[.[] | select(. < 2)]' <<<"$output")" = '[]' ]
    [ "$(printf '%s\n' "$output" | "$TOK" decode -t "$T")" = 'in<|endoftext|>the<|pad|>' ]
}

@test "a model file with an embedded tokenizer is accepted as -t" {
    # safetensors written by hand: u64 header length, JSON header, data
    python3 - "$T" <<'EOF'
import json, struct, sys
tok = open(sys.argv[1], encoding="utf-8").read()
hdr = json.dumps({"__metadata__": {"tokenizer": tok, "format": "pt"},
                  "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open("model.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + b"\0\0\0\0")
EOF
    docs d 10
    run --separate-stderr "$TOK" -t model.safetensors --format ids d
    [ "$status" -eq 0 ]
    [ "$output" = "$("$TOK" -t "$T" --format ids d)" ]
    "$TOK" -t model.safetensors --format ids d | "$TOK" decode -t model.safetensors > /dev/null
}

@test "tiktoken rank files by name: gpt2, cl100k_base, o200k_base" {
    [ -d "$REFS" ] || skip "$REFS is absent (../shared/refs)"
    printf 'hello world' > a.txt
    [ "$("$TOK" -t "$REFS/gpt2.tiktoken" --format ids a.txt)" = "[31373,995]" ]
    [ "$("$TOK" -t "$REFS/cl100k_base.tiktoken" --format ids a.txt)" = "[15339,1917]" ]
    [ "$("$TOK" -t "$REFS/o200k_base.tiktoken" --format ids a.txt)" = "[24912,2375]" ]
    # --pattern names the encoding of a file whose name does not
    cp "$REFS/cl100k_base.tiktoken" ranks
    [ "$("$TOK" -t ranks --pattern cl100k_base --format ids a.txt)" = "[15339,1917]" ]
    run "$TOK" -t "$REFS/o200k_base.tiktoken" a.txt
    [ "$(head -n 1 <<<"$output")" != "" ]
    "$TOK" -t "$REFS/o200k_base.tiktoken" -o s a.txt
    [ "$("$INSPECT" s | head -n 1 | jq -c '[.tokenizer, .token_width, .vocab_size, .eos_id]')" = '["o200k_base",4,200019,199999]' ]
}
