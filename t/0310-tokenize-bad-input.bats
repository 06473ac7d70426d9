#!/usr/bin/env bats
# llm-tokenize on bad input: bad documents (invalid UTF-8, NUL, malformed JSON
# lines, a missing field), corrupt and truncated archives, unknown or damaged
# tokenizers, missing files. Each is exit status 1 (never a signal, never a
# hang) with one line on stderr naming the file and the line or member; usage
# errors are exit status 2. --skip-bad skips bad documents, says how many on
# stderr, exits 0, and writes the good documents; it does not skip broken
# archives or tokenizers.

bats_require_minimum_version 1.5.0

setup_file() {
    ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
    export ROOT
    export TOK=$ROOT/bin/llm-tokenize
    [ -x "$TOK" ] || make -C "$ROOT" -s bin/llm-tokenize >&2
    export REFS=$ROOT/../shared/refs/tokenizers
    export F=$BATS_FILE_TMPDIR
    python3 - "$F" <<'EOF'
import random, sys
rng = random.Random(7)
words = "in the beginning god created heaven and earth light darkness waters café 日本".split()
with open(sys.argv[1] + "/corpus.txt", "w", encoding="utf-8") as f:
    for _ in range(500):
        f.write(" ".join(rng.choice(words) for _ in range(rng.randint(3, 15))) + "\n")
EOF
    "$TOK" train --vocab-size 500 --special '<|endoftext|>' -o "$F/tok.json" "$F/corpus.txt"
}

setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
    export T=$F/tok.json
}

# bad NAME REGEX ARGS...: llm-tokenize ARGS must fail with status 1 and one
# line on stderr that names NAME and matches REGEX (grep -E, case-insensitive).
bad() {
    local name=$1 re=$2
    shift 2
    run --separate-stderr timeout 20 "$TOK" "$@"
    check_status 1 "$name" "$re"
}

# usage REGEX ARGS...: the same for usage errors: status 2.
usage() {
    local re=$1
    shift
    run --separate-stderr timeout 20 "$TOK" "$@"
    check_status 2 "" "$re"
}

check_status() {
    local want=$1 name=$2 re=$3 fail= first=${stderr%%$'\n'*}
    if [ "$status" -eq 124 ]; then fail="hung (killed by timeout)"
    elif [ "$status" -gt 128 ]; then fail="killed by signal $((status - 128))"
    elif [ "$status" -ne "$want" ]; then fail="exit status $status, want $want"
    elif [ -z "$stderr" ]; then fail="nothing on stderr"
    elif [ "$want" -eq 1 ] && [[ $stderr == *$'\n'* ]]; then fail="more than one line on stderr"
    elif [[ $first != "llm-tokenize: "* ]]; then fail="stderr does not start with 'llm-tokenize: '"
    elif [[ $first != *"$name"* ]]; then fail="stderr does not name '$name'"
    elif ! grep -Eqi -- "$re" <<<"$first"; then fail="stderr does not match /$re/"
    fi
    if [ -n "$fail" ]; then
        { echo "$fail"; echo "--- stderr:"; printf '%s\n' "$stderr"; } >&2
        return 1
    fi
}

# skipped N: --skip-bad's report on stderr
skipped() {
    grep -Eq "skipped $1 bad documents?\$" <<<"$stderr" || { echo "no 'skipped $1 bad documents' in: $stderr" >&2; return 1; }
}

# ---- bad documents ----

@test "invalid UTF-8 in a text file: file and byte offset" {
    printf 'in the \xc3\x28 beginning' > bad.txt
    bad bad.txt 'invalid UTF-8 at byte 7' -t "$T" --format ids bad.txt
    for b in '\xff' '\xc0\x80' '\xed\xa0\x80' '\xf4\x90\x80\x80' 'ab\xe2\x82'; do
        printf "$b" > b.txt
        bad b.txt 'invalid UTF-8' -t "$T" --format ids b.txt
    done
}

@test "a NUL byte in a text file" {
    printf 'abc\0def' > nul.txt
    bad nul.txt 'NUL' -t "$T" --format ids nul.txt
}

@test "malformed JSON lines: file and line" {
    printf '{"text":"a"}\n{"text": broken\n' > m.jsonl
    bad m.jsonl:2 'invalid JSON' -t "$T" --format ids m.jsonl
    printf '{"text":"a"}\n\n[1,2]\n' > arr.jsonl
    bad arr.jsonl:3 'not a JSON object' -t "$T" --format ids arr.jsonl
    printf '{"text":"a"}\n{"text":"b"' > cut.jsonl
    bad cut.jsonl:2 'invalid JSON' -t "$T" --format ids cut.jsonl
    printf '{"text":"a\\u0000b"}\n' > z.jsonl
    bad z.jsonl:1 'U\+0000' -t "$T" --format ids z.jsonl
    printf '{"text":"a"}\n{"text":"\xff"}\n' > u.jsonl
    bad u.jsonl:2 '' -t "$T" --format ids u.jsonl
}

@test "a JSON line without the field, or with a non-string field" {
    printf '{"text":"a"}\n{"other":"b"}\n' > nf.jsonl
    bad nf.jsonl:2 "no string field 'text'" -t "$T" --format ids nf.jsonl
    printf '{"text":5}\n' > num.jsonl
    bad num.jsonl:1 "no string field 'text'" -t "$T" --format ids num.jsonl
    printf '{"text":"a"}\n' > f.jsonl
    bad f.jsonl:1 "no string field 'body'" -t "$T" --format ids --field body f.jsonl
}

@test "bad documents inside an archive name the member (and line)" {
    mkdir d
    printf 'fine' > d/a.txt
    printf 'bad \xff' > d/b.txt
    tar --sort=name -czf d.tar.gz -C d .
    bad "d.tar.gz: member './b.txt'" 'invalid UTF-8 at byte 4' -t "$T" --format ids d.tar.gz
    rm d/b.txt
    printf '{"text":"ok"}\n{"nope":1}\n' > d/c.jsonl
    tar --sort=name -cf d.tar -C d .
    bad "d.tar: member './c.jsonl'" "line 2: no string field 'text'" -t "$T" --format ids d.tar
}

@test "--skip-bad skips bad documents, reports the count, exits 0, keeps the good ones" {
    mkdir d
    printf 'one' > d/1.txt
    printf 'bad \xff' > d/2.txt
    printf 'three' > d/3.txt
    printf 'x\0y' > d/4.txt
    printf '{"text":"five"}\n{"text": oops\n{"other":1}\n{"text":"six"}\n[]\n' > d/5.jsonl
    run --separate-stderr "$TOK" -t "$T" --format ids --skip-bad d
    [ "$status" -eq 0 ]
    skipped 5
    [ "${#lines[@]}" -eq 4 ]
    [ "$(printf '%s\n' "$output" | "$TOK" decode -t "$T" --separator ,)" = "one,three,five,six" ]
    # each skipped document is named in a warning
    [[ $stderr == *"d/2.txt: invalid UTF-8"* ]]
    [[ $stderr == *"d/5.jsonl:2: invalid JSON"* ]]
    # stream and count formats too
    run --separate-stderr "$TOK" -t "$T" --format count --skip-bad d
    [ "$status" -eq 0 ]
    skipped 5
    [ "$(jq -c '[.documents, .skipped]' <<<"$output")" = "[4,5]" ]
    run --separate-stderr "$TOK" -t "$T" --skip-bad -o s.stream d
    [ "$status" -eq 0 ]
    skipped 5
    [ "$("$ROOT/bin/llm-inspect" s.stream | tail -n 1)" = '{"type":"end","records":4}' ]
    # without --skip-bad: the first bad document, no output file
    run --separate-stderr "$TOK" -t "$T" -o s2.stream d
    [ "$status" -eq 1 ]
    [ ! -e s2.stream ]
}

@test "--max-doc: a larger document or JSON line is a bad document" {
    head -c 5000 /dev/zero | tr '\0' a > big.txt
    printf 'small' > a.txt
    bad big.txt 'larger than the limit of 1024 bytes' -t "$T" --format count --max-doc 1k big.txt
    python3 -c 'print("{\"text\":\"" + "a" * 3000 + "\"}")' > long.jsonl
    bad long.jsonl:1 'longer than 1024 bytes' -t "$T" --format count --max-doc 1k long.jsonl
    run --separate-stderr "$TOK" -t "$T" --format count --max-doc 1k --skip-bad big.txt long.jsonl a.txt
    [ "$status" -eq 0 ]
    skipped 2
    [ "$(jq -c '[.documents, .skipped]' <<<"$output")" = "[1,2]" ]
}

@test "--skip-bad with one bad document" {
    printf 'good' > a.txt
    printf '\xff' > b.txt
    run --separate-stderr "$TOK" -t "$T" --format ids --skip-bad a.txt b.txt
    [ "$status" -eq 0 ]
    skipped 1
    [ "${#lines[@]}" -eq 1 ]
}

@test "--skip-bad skips a zip member with a bad CRC" {
    python3 - <<'EOF'
import zipfile
with zipfile.ZipFile("c.zip", "w", zipfile.ZIP_STORED) as z:
    z.writestr("a.txt", "first document")
    z.writestr("b.txt", "second document")
    z.writestr("c.txt", "third document")
data = bytearray(open("c.zip", "rb").read())
i = data.index(b"second document")
data[i] ^= 0x20   # "Second": the CRC no longer matches
open("c.zip", "wb").write(bytes(data))
EOF
    bad "c.zip: member 'b.txt'" 'crc' -t "$T" --format ids c.zip
    run --separate-stderr "$TOK" -t "$T" --format ids --skip-bad c.zip
    [ "$status" -eq 0 ]
    skipped 1
    [ "$(printf '%s\n' "$output" | "$TOK" decode -t "$T" --separator ,)" = "first document,third document" ]
}

# ---- corrupt and truncated archives ----

big_tree() {
    mkdir -p big
    python3 -c '
import random
r = random.Random(2)
for i in range(120):
    open("big/f%03d.txt" % i, "w").write("".join(r.choice("abcdefghij klmnop\n") for _ in range(3000)))'
}

@test "a truncated tar, tar.gz, tar.xz, tar.zst: exit 1 naming the file, even with --skip-bad" {
    big_tree
    tar --sort=name -cf big.tar -C big .
    tar --sort=name -czf big.tar.gz -C big .
    tar --sort=name -cJf big.tar.xz -C big .
    tar --sort=name --zstd -cf big.tar.zst -C big .
    for a in big.tar big.tar.gz big.tar.xz big.tar.zst; do
        head -c $(( $(stat -c %s $a) / 2 )) $a > cut-$a
        bad "cut-$a" 'member|truncated' -t "$T" --format count cut-$a
        bad "cut-$a" 'member|truncated' -t "$T" --format count --skip-bad cut-$a
    done
}

@test "a tar.gz cut before its first member is an error, not a text document" {
    big_tree
    tar --sort=name -czf big.tar.gz -C big .
    head -c 100 big.tar.gz > cut.tar.gz
    bad cut.tar.gz 'truncated|archive|gzip' -t "$T" --format count cut.tar.gz
    bad cut.tar.gz 'truncated|archive|gzip' -t "$T" --format count --skip-bad cut.tar.gz
}

@test "a truncated gzip text file says so" {
    python3 -c 'open("t.txt", "w").write("in the beginning " * 500)'
    gzip -c t.txt | head -c 60 > t.txt.gz
    bad t.txt.gz 'truncated' -t "$T" --format count t.txt.gz
}

@test "a corrupt tar header: exit 1 naming the file, even with --skip-bad" {
    big_tree
    tar --sort=name -cf big.tar -C big .
    python3 - <<'EOF'
data = bytearray(open("big.tar", "rb").read())
# the header of member ./f001.txt: break its checksum
off = data.index(b"./f001.txt\0")
assert off % 512 == 0
data[off + 148:off + 156] = b"0000000\0"
open("badsum.tar", "wb").write(bytes(data))
EOF
    bad badsum.tar 'member|checksum|header|damaged' -t "$T" --format count badsum.tar
    bad badsum.tar 'member|checksum|header|damaged' -t "$T" --format count --skip-bad badsum.tar
}

@test "a truncated zip: exit 1 naming the file and member" {
    python3 - <<'EOF'
import zipfile
with zipfile.ZipFile("z.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for i in range(40):
        z.writestr(f"f{i:02d}.txt", ("in the beginning god created %d " % i) * 200)
EOF
    head -c $(( $(stat -c %s z.zip) / 2 )) z.zip > cut.zip
    bad cut.zip 'member|truncated|zip' -t "$T" --format count cut.zip
}

# ---- tokenizers ----

@test "a truncated or invalid tokenizer.json" {
    printf 'in the beginning' > a.txt
    head -c 2000 "$T" > trunc.json
    bad trunc.json 'JSON' -t trunc.json --format ids a.txt
    printf '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "zz"]]}}' > m.json
    bad m.json 'merge 0' -t m.json --format ids a.txt
    printf '{}' > empty.json
    bad empty.json 'model' -t empty.json --format ids a.txt
}

@test "a tokenizer.json with an unsupported model, normalizer, pre-tokenizer or decoder names it" {
    printf 'in the beginning' > a.txt
    jq '.model.type = "WordPiece"' "$T" > wp.json
    bad wp.json 'WordPiece' -t wp.json --format ids a.txt
    jq '.model.type = "Unigram"' "$T" > ug.json
    bad ug.json 'Unigram' -t ug.json --format ids a.txt
    jq '.normalizer = {"type": "Lowercase"}' "$T" > lc.json
    bad lc.json 'Lowercase' -t lc.json --format ids a.txt
    jq '.normalizer = {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "NFKD"}]}' "$T" > nfkd.json
    bad nfkd.json 'NFKD' -t nfkd.json --format ids a.txt
    jq '.pre_tokenizer = {"type": "Whitespace"}' "$T" > ws.json
    bad ws.json 'Whitespace' -t ws.json --format ids a.txt
    jq '.decoder = {"type": "WordPiece", "prefix": "##", "cleanup": true}' "$T" > dec.json
    bad dec.json 'WordPiece' -t dec.json --format ids a.txt
    jq '.model.dropout = 0.1' "$T" > drop.json
    bad drop.json 'dropout' -t drop.json --format ids a.txt
}

@test "a damaged rank file names the line" {
    [ -f "$REFS/gpt2.tiktoken" ] || skip "$REFS is absent (../shared/refs)"
    printf 'in the beginning' > a.txt
    { head -n 1000 "$REFS/gpt2.tiktoken"; echo 'not-base64!! 1000'; tail -n +1002 "$REFS/gpt2.tiktoken"; } > gpt2.tiktoken
    bad gpt2.tiktoken:1001 '' -t gpt2.tiktoken --format ids a.txt
    { head -n 1000 "$REFS/gpt2.tiktoken"; echo 'SGVsbG8='; tail -n +1002 "$REFS/gpt2.tiktoken"; } > gpt2.tiktoken
    bad gpt2.tiktoken:1001 '' -t gpt2.tiktoken --format ids a.txt
    { head -n 1000 "$REFS/gpt2.tiktoken"; echo 'SGVsbG8= 12x'; tail -n +1002 "$REFS/gpt2.tiktoken"; } > gpt2.tiktoken
    bad gpt2.tiktoken:1001 'rank' -t gpt2.tiktoken --format ids a.txt
    printf 'garbage' > x.tiktoken
    bad x.tiktoken '' -t x.tiktoken --pattern gpt2 --format ids a.txt
}

@test "a rank file whose encoding cannot be told, and unknown --pattern names" {
    [ -f "$REFS/gpt2.tiktoken" ] || skip "$REFS is absent (../shared/refs)"
    printf 'in the beginning' > a.txt
    cp "$REFS/gpt2.tiktoken" ranks.txt
    bad ranks.txt "encoding" -t ranks.txt --format ids a.txt
    usage "pattern" -t ranks.txt --pattern gpt5 --format ids a.txt
    usage "pattern" train --vocab-size 300 --pattern nope -o x.json a.txt
    [ ! -e x.json ]
}

@test "a --pattern that does not fit the rank file is refused" {
    [ -f "$REFS/o200k_base.tiktoken" ] || skip "$REFS is absent (../shared/refs)"
    printf 'a<|endoftext|>b' > a.txt
    bad o200k_base.tiktoken 'pattern|gpt2|rank' -t "$REFS/o200k_base.tiktoken" --pattern gpt2 --format ids a.txt
}

@test "a model file without a tokenizer, a missing or unreadable tokenizer" {
    printf 'in the beginning' > a.txt
    python3 - <<'EOF'
import json, struct
hdr = json.dumps({"__metadata__": {"format": "pt"}, "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
hdr += b" " * (-len(hdr) % 8)
open("model.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + b"\0\0\0\0")
EOF
    bad model.safetensors 'tokenizer' -t model.safetensors --format ids a.txt
    bad nope.json 'No such file' -t nope.json --format ids a.txt
    mkdir dir.json
    bad dir.json '' -t dir.json --format ids a.txt
}

# ---- missing files ----

@test "a missing input file is found up front: no output" {
    printf 'in the beginning' > a.txt
    bad missing.txt 'No such file or directory' -t "$T" --format ids a.txt missing.txt
    [ -z "$output" ]
    bad missing.txt 'No such file or directory' -t "$T" --format ids --skip-bad a.txt missing.txt
    bad missing.txt 'No such file or directory' -t "$T" -o out.stream a.txt missing.txt
    [ ! -e out.stream ]
    bad missing.txt 'No such file' train --vocab-size 300 -o x.json missing.txt
    [ ! -e x.json ]
    bad missing.ids 'No such file' decode -t "$T" missing.ids
}

@test "a dangling symlink in a directory is an error" {
    mkdir d
    printf 'fine' > d/a.txt
    ln -s nowhere d/b.txt
    bad d/b.txt '' -t "$T" --format ids d
}

# ---- decode ----

@test "decode: bad ids lines and bad streams" {
    bad '<stdin>:2' 'not a JSON array' decode -t "$T" <<<$'[1,2]\n{"a":1}'
    bad '<stdin>:1' 'element 1' decode -t "$T" <<<'[1,-5]'
    bad '<stdin>:1' 'not in the vocabulary' decode -t "$T" <<<'[999999]'
    printf 'in the beginning' > a.txt
    "$TOK" -t "$T" -o s.stream a.txt
    head -c $(( $(stat -c %s s.stream) - 3 )) s.stream > cut.stream
    bad cut.stream 'truncat|cut|end' decode -t "$T" cut.stream
    printf 'hello' > text.txt
    bad text.txt 'stream' decode -t "$T" text.txt
}

@test "decode refuses a stream from another tokenizer" {
    [ -f "$REFS/gpt2.tiktoken" ] || skip "$REFS is absent (../shared/refs)"
    printf 'in the beginning' > a.txt
    "$TOK" -t "$REFS/gpt2.tiktoken" -o s.stream a.txt
    bad s.stream 'gpt2' decode -t "$T" s.stream
}

@test "--bytes with a tokenizer that only reads text" {
    printf '{"model":{"type":"BPE","vocab":{"a":0,"b":1,"<unk>":2},"merges":[],"unk_token":"<unk>"},"normalizer":{"type":"Prepend","prepend":"_"}}' > sp.json
    printf 'ab\xffab' > b.bin
    bad b.bin 'invalid UTF-8' -t sp.json --bytes --format ids b.bin
}

@test "instruction data: a record that is not instruction data names the line" {
    "$TOK" train --vocab-size 300 --special '<|begin_of_text|>' --special '<|start_header_id|>' \
        --special '<|end_header_id|>' --special '<|eot_id|>' -o l3.json "$F/corpus.txt"
    printf '{"prompt":"a","response":"b"}\n{"messages":[{"role":"robot","content":"x"}]}\n' > i.jsonl
    bad i.jsonl:2 'role' -t l3.json --instruct --chat-template llama3 --format stream i.jsonl
    bad i.jsonl:2 'chat format' -t "$T" --instruct --chat-template none --format stream i.jsonl
    printf '{"prompt":"a","response":"b"}\n' > ok.jsonl
    bad ok.jsonl 'im_start' -t "$T" --instruct --chat-template chatml --format stream ok.jsonl
}

# ---- usage errors: status 2 ----

@test "usage errors exit 2" {
    printf 'in the beginning' > a.txt
    usage 'tokenizer|-t' --format ids a.txt
    usage 'format' -t "$T" --format bogus a.txt
    usage 'bogus' -t "$T" --bogus a.txt
    usage '-j|jobs' -t "$T" -j 0 a.txt
    usage '-j|jobs' -t "$T" -j x a.txt
    usage 'stream' -t "$T" --instruct --format ids a.txt
    usage 'chat-template' -t "$T" --instruct --chat-template vicuna --format stream a.txt
    usage 'one FILE' decode -t "$T" a b
    usage 'tokenizer|-t' decode a.txt
    usage 'vocab-size' train -o x.json a.txt
    usage '-o' train --vocab-size 300 a.txt
    usage 'FILE' train --vocab-size 300 -o x.json
    usage 'vocab-size' train --vocab-size 10 -o x.json a.txt
    usage 'max-doc' -t "$T" --max-doc lots a.txt
    [ ! -e x.json ]
}
