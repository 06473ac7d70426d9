#!/usr/bin/env bats
# llm-inspect on every class of bad msgpack stream: exit status 1 (never a
# signal, never a hang), exactly one line on stderr naming the file (or
# <stdin>) and the problem. Records before the bad one may have been printed,
# but only as whole JSON lines; a bad header prints nothing.

bats_require_minimum_version 1.5.0

setup_file() {
    ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
    export ROOT
    export INSPECT=$ROOT/bin/llm-inspect TESTGEN=$ROOT/build/t/llmux-testgen
    [ -x "$INSPECT" ] || make -C "$ROOT" -s bin/llm-inspect >&2
    [ -x "$TESTGEN" ] || make -C "$ROOT" -s build/t/llmux-testgen >&2
    # A msgpack packer small enough to read (no packages needed). Python types
    # map to msgpack: dict -> map (a tuple of pairs allows any key), list ->
    # array, str -> str, bytes -> bin, int, float, None, bool; Raw(b'..') is
    # copied as it is. Lengths always use the 32-bit forms.
    cat >"$BATS_FILE_TMPDIR/prelude.py" <<'EOF'
import struct, sys
class Raw(bytes): pass
def pack(o):
    if isinstance(o, Raw): return bytes(o)
    if o is None: return b'\xc0'
    if o is True: return b'\xc3'
    if o is False: return b'\xc2'
    if isinstance(o, int):
        if 0 <= o < 128: return bytes([o])
        if -32 <= o < 0: return struct.pack('b', o)
        if o >= 0: return b'\xcf' + struct.pack('>Q', o)
        return b'\xd3' + struct.pack('>q', o)
    if isinstance(o, float): return b'\xcb' + struct.pack('>d', o)
    if isinstance(o, str):
        b = o.encode()
        return (bytes([0xa0 | len(b)]) if len(b) < 32 else b'\xdb' + struct.pack('>I', len(b))) + b
    if isinstance(o, (bytes, bytearray)): return b'\xc6' + struct.pack('>I', len(o)) + bytes(o)
    if isinstance(o, list): return b'\xdd' + struct.pack('>I', len(o)) + b''.join(pack(x) for x in o)
    if isinstance(o, dict): o = tuple(o.items())
    if isinstance(o, tuple): return b'\xdf' + struct.pack('>I', len(o)) + b''.join(pack(k) + pack(v) for k, v in o)
    raise TypeError(o)
def H(**kw):
    """a valid header; H(version=2) changes a field, H(kind=...) with ... drops it"""
    h = {'type': 'header', 'format': 'llmux-stream', 'version': 1, 'kind': 'docs', 'token_width': 4}
    h.update(kw)
    return {k: v for k, v in h.items() if v is not Ellipsis}
def E(n): return {'type': 'end', 'records': n}
def D(i=0, tokens=b'\x01\x00\x00\x00'): return {'type': 'doc', 'id': i, 'tokens': tokens}
def stream(path, *objs):
    open(path, 'wb').write(b''.join(pack(o) for o in objs))
EOF
}

setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
}

py() {
    python3 -c "$(cat "$BATS_FILE_TMPDIR/prelude.py")"$'\n'"$(cat)"
}

# run_inspect ARGS...: llm-inspect ARGS with stdout in out.json (so that a
# half-written last line shows), stderr in $stderr, status in $status.
run_inspect() {
    run --separate-stderr timeout 10 bash -c '"$INSPECT" "$@" >out.json' _ "$@"
}

# check_bad NAME REGEX [empty]: the last run_inspect failed cleanly; with
# "empty", stdout must be empty too.
check_bad() {
    local name=$1 re=$2 want_empty=${3:-} fail=
    if [ "$status" -eq 124 ]; then fail="hung (killed by timeout after 10 s)"
    elif [ "$status" -gt 128 ]; then fail="killed by signal $((status - 128))"
    elif [ "$status" -ne 1 ]; then fail="exit status $status, want 1"
    elif [ -z "$stderr" ]; then fail="nothing on stderr"
    elif [[ $stderr == *$'\n'* ]]; then fail="more than one line on stderr"
    elif [[ $stderr != "llm-inspect: "* ]]; then fail="stderr does not start with 'llm-inspect: '"
    elif [[ $stderr != *"$name"* ]]; then fail="stderr does not name '$name'"
    elif ! grep -Eqi -- "$re" <<<"$stderr"; then fail="stderr does not match /$re/"
    elif [ "$want_empty" = empty ] && [ -s out.json ]; then fail="something on stdout"
    elif [ -s out.json ] && [ "$(tail -c 1 out.json | od -An -c | tr -d ' ')" != '\n' ]; then
        fail="stdout ends in a half-written line"
    fi
    if [ -n "$fail" ]; then
        {
            echo "llm-inspect on $name: $fail"
            echo "--- stderr:"; printf '%s\n' "$stderr"
            echo "--- stdout (first 300 bytes):"; head -c 300 out.json; echo
        } >&2
        return 1
    fi
}

# bad FILE REGEX [OPTIONS...]: a bad record after the header.
bad() {
    local file=$1 re=$2
    shift 2
    run_inspect "$@" "$file"
    check_bad "$file" "$re" || return 1
    # what was printed is whole JSON lines
    [ ! -s out.json ] || jq -c . out.json >/dev/null || { echo "stdout is not JSON lines" >&2; return 1; }
}

# bad_header FILE REGEX [OPTIONS...]: refused before anything is printed.
bad_header() {
    local file=$1 re=$2
    shift 2
    run_inspect "$@" "$file"
    check_bad "$file" "$re" empty
}

@test "the streams used below are valid" {
    "$TESTGEN" stream w4.stream 4 3
    "$TESTGEN" stream w2.stream 2 3
    py <<'EOF'
stream('ok.stream', H(), D(0), D(1), E(2))
EOF
    for f in w4 w2 ok; do
        run_inspect $f.stream
        [ "$status" -eq 0 ]
        [ -z "$stderr" ]
        [ "$(jq -r .type out.json | tail -n 1)" = end ]
    done
}

@test "empty file" {
    : >empty.stream
    bad_header empty.stream 'empty'
    run_inspect --format stream - <empty.stream
    check_bad '<stdin>' 'empty' empty
}

@test "truncated at every byte of a small valid stream (width 4)" {
    "$TESTGEN" stream full.stream 4 3
    local size n failures=0
    size=$(stat -c %s full.stream)
    for ((n = 0; n < size; n++)); do
        head -c "$n" full.stream >cut.stream
        run_inspect cut.stream
        check_bad cut.stream 'truncated|empty|cut off' || { failures=$((failures + 1)); echo "(prefix of $n bytes)" >&2; }
    done
    [ "$failures" -eq 0 ]
}

@test "truncated at every byte of a small valid stream (width 2)" {
    "$TESTGEN" stream full.stream 2 3
    local size n failures=0
    size=$(stat -c %s full.stream)
    for ((n = 0; n < size; n++)); do
        head -c "$n" full.stream >cut.stream
        run_inspect cut.stream
        check_bad cut.stream 'truncated|empty|cut off' || { failures=$((failures + 1)); echo "(prefix of $n bytes)" >&2; }
    done
    [ "$failures" -eq 0 ]
}

@test "truncated streams from a pipe, every 5th byte" {
    "$TESTGEN" stream full.stream 4 3
    local size n failures=0
    size=$(stat -c %s full.stream)
    for ((n = 0; n < size; n += 5)); do
        run --separate-stderr timeout 10 bash -c 'head -c "$1" full.stream | "$INSPECT" >out.json' _ "$n"
        check_bad '<stdin>' 'truncated|empty|cut off' || { failures=$((failures + 1)); echo "(prefix of $n bytes)" >&2; }
    done
    [ "$failures" -eq 0 ]
}

@test "garbage: 0xc1, the byte msgpack never uses" {
    printf '\xc1' >c1.stream
    bad_header c1.stream 'invalid msgpack at byte 0'
    py <<'EOF'
stream('mid.stream', H(), Raw(b'\x82\xa4type\xa3doc\xa1x\xc1'), E(1))
EOF
    bad mid.stream 'invalid msgpack at byte'
}

@test "garbage: text and random bytes" {
    printf 'hello, world\n' >text.stream
    bad_header text.stream 'not an llmux stream'
    head -c 4096 /dev/urandom >random.stream
    bad_header random.stream '.'
}

@test "a safetensors file read as a stream" {
    "$TESTGEN" safetensors model.safetensors
    run_inspect --format stream model.safetensors
    check_bad model.safetensors 'not an llmux stream|invalid msgpack|truncated|larger than' empty
}

@test "header that is not a map" {
    py <<'EOF'
stream('array.stream', ['type', 'header'], E(0))
stream('int.stream', 42, E(0))
stream('str.stream', 'llmux-stream', E(0))
stream('nil.stream', None)
EOF
    for f in array int str nil; do bad_header $f.stream 'not an llmux stream'; done
}

@test "header with the wrong format" {
    py <<'EOF'
stream('other.stream', H(format='mds'), E(0))
stream('noformat.stream', H(format=...), E(0))
stream('binformat.stream', H(format=b'llmux-stream'), E(0))
stream('case.stream', H(format='LLMUX-STREAM'), E(0))
EOF
    for f in other noformat binformat case; do bad_header $f.stream 'not an llmux stream|format'; done
}

@test "header of the wrong type, or with a bad key" {
    py <<'EOF'
stream('type.stream', H(type='doc'), E(0))
stream('notype.stream', H(type=...), E(0))
stream('key.stream', tuple(H().items()) + ((7, 'x'),), E(0))
EOF
    bad_header type.stream '"header"'
    bad_header notype.stream "type"
    bad_header key.stream 'not a string'
}

@test "header with the wrong version" {
    py <<'EOF'
stream('v2.stream', H(version=2), E(0))
stream('v0.stream', H(version=0), E(0))
stream('vneg.stream', H(version=-1), E(0))
stream('vstr.stream', H(version='1'), E(0))
stream('vfloat.stream', H(version=1.0), E(0))
stream('vnone.stream', H(version=...), E(0))
EOF
    for f in v2 v0 vneg vstr vfloat vnone; do bad_header $f.stream 'version'; done
}

@test "header with a bad token_width" {
    py <<'EOF'
for name, w in [('w0', 0), ('w1', 1), ('w3', 3), ('w8', 8), ('wbig', 2**32 + 4), ('wneg', -4),
                ('wstr', '4'), ('wfloat', 4.0), ('wnil', None), ('wmissing', ...)]:
    stream(name + '.stream', H(token_width=w), E(0))
EOF
    for f in w0 w1 w3 w8 wbig wneg wstr wfloat wnil wmissing; do bad_header $f.stream 'token_width'; done
}

@test "header with a bad kind or token_fields" {
    py <<'EOF'
stream('nokind.stream', H(kind=...), E(0))
stream('intkind.stream', H(kind=1), E(0))
stream('tf.stream', H(token_fields='tokens'), E(0))
stream('tfint.stream', H(token_fields=['tokens', 1]), E(0))
EOF
    bad_header nokind.stream 'kind'
    bad_header intkind.stream 'kind'
    bad_header tf.stream 'token_fields'
    bad_header tfint.stream 'token_fields'
}

@test "missing end record" {
    py <<'EOF'
stream('noend.stream', H(), D(0), D(1))
stream('headeronly.stream', H())
EOF
    bad noend.stream 'without its end record|truncated'
    bad headeronly.stream 'without its end record|truncated'
}

@test "end record with the wrong count" {
    py <<'EOF'
stream('more.stream', H(), D(0), D(1), E(3))
stream('less.stream', H(), D(0), D(1), E(1))
stream('neg.stream', H(), D(0), E(-1))
stream('str.stream', H(), D(0), E('1'))
stream('none.stream', H(), D(0), {'type': 'end'})
stream('huge.stream', H(), D(0), E(2**64 - 1))
EOF
    bad more.stream 'counts 3 records.* 2'
    bad less.stream 'counts 1 records.* 2'
    bad neg.stream "records"
    bad str.stream "records"
    bad none.stream "records"
    bad huge.stream "counts 18446744073709551615"
}

@test "data after the end record" {
    py <<'EOF'
stream('byte.stream', H(), D(0), E(1), Raw(b'\x00'))
stream('record.stream', H(), D(0), E(1), D(1))
stream('end2.stream', H(), E(0), E(0))
stream('junk.stream', H(), E(0), Raw(b'\xc1'))
stream('nl.stream', H(), E(0), Raw(b'\n'))
EOF
    for f in byte record end2 junk nl; do bad $f.stream 'after the end record'; done
}

@test "a second header" {
    py <<'EOF'
stream('twice.stream', H(), D(0), H(), D(1), E(2))
stream('cat.stream', H(), E(0), H(), E(0))
EOF
    bad twice.stream 'second header'
    bad cat.stream 'second header|after the end record'
}

@test "records that are not maps with string keys and a string type" {
    py <<'EOF'
stream('int.stream', H(), 5, E(1))
stream('array.stream', H(), ['doc'], E(1))
stream('notype.stream', H(), {'id': 1}, E(1))
stream('inttype.stream', H(), {'type': 1}, E(1))
stream('key.stream', H(), (('type', 'doc'), (1, 2)), E(1))
stream('binkey.stream', H(), (('type', 'doc'), (b'tokens', b'\x00\x00\x00\x00')), E(1))
stream('nilkey.stream', H(), (('type', 'doc'), (None, 2)), E(1))
EOF
    bad int.stream 'not a map'
    bad array.stream 'not a map'
    bad notype.stream "'type'"
    bad inttype.stream "'type'"
    bad key.stream 'key that is not a string'
    bad binkey.stream 'key that is not a string'
    bad nilkey.stream 'key that is not a string'
}

@test "a record larger than --max-record" {
    py <<'EOF'
stream('big.stream', H(), D(0, b'\x00' * 400), E(1))
EOF
    bad big.stream 'larger than the limit of 256' --max-record 256
    bad big.stream 'larger than the limit of 400' --max-record=400
    # and the header itself
    bad_header big.stream 'larger than the limit of 16' --max-record 16
    # the same stream passes with room for the record
    run_inspect --max-record 1K big.stream
    [ "$status" -eq 0 ]
}

@test "a record of exactly --max-record bytes is accepted, one byte more is not" {
    py <<'EOF'
stream('exact.stream', H(), D(0, b'\x00' * 100), E(1))
import os
open('size', 'w').write(str(len(pack(D(0, b'\x00' * 100)))))
EOF
    local size
    size=$(cat size)
    run_inspect --max-record "$size" exact.stream
    [ "$status" -eq 0 ]
    run_inspect --max-record "$((size - 1))" exact.stream
    check_bad exact.stream "larger than the limit of $((size - 1))"
}

@test "declared lengths of 4 GiB are refused without allocating them" {
    py <<'EOF'
stream('bin32.stream', H(), Raw(b'\x82\xa4type\xa3doc\xa6tokens\xc6\xff\xff\xff\xff'), E(1))
stream('str32.stream', H(), Raw(b'\x82\xa4type\xa3doc\xa4text\xdb\xff\xff\xff\xff'), E(1))
stream('ext32.stream', H(), Raw(b'\x82\xa4type\xa3doc\xa1e\xc9\xff\xff\xff\xff\x01'), E(1))
stream('array32.stream', H(), Raw(b'\x82\xa4type\xa3doc\xa1a\xdd\xff\xff\xff\xff'), E(1))
stream('map32.stream', H(), Raw(b'\x82\xa4type\xa3doc\xa1m\xdf\xff\xff\xff\xff'), E(1))
stream('hdrmap32.stream', Raw(b'\xdf\xff\xff\xff\xff'))
EOF
    # 512 MiB of address space: far below what any of these declare
    for f in bin32 str32 ext32 array32 map32; do
        run --separate-stderr timeout 10 bash -c 'ulimit -v 524288; "$INSPECT" "$1" >out.json' _ $f.stream
        check_bad $f.stream 'larger than the limit'
    done
    run --separate-stderr timeout 10 bash -c 'ulimit -v 524288; "$INSPECT" "$1" >out.json' _ hdrmap32.stream
    check_bad hdrmap32.stream 'larger than the limit' empty
}

@test "a declared 4 GiB bin with --max-record 8G in a short file ends cleanly" {
    py <<'EOF'
stream('bin32.stream', H(), Raw(b'\x82\xa4type\xa3doc\xa6tokens\xc6\xff\xff\xff\xff\x00\x00'))
EOF
    run --separate-stderr timeout 10 bash -c 'ulimit -v 1048576; "$INSPECT" --max-record 8G "$1" >out.json' _ bin32.stream
    check_bad bin32.stream 'truncated|cut off|out of memory'
}

@test "deep nesting: 100000 nested arrays" {
    py <<'EOF'
deep = b'\x91' * 100000 + b'\xc0'
stream('record.stream', H(), Raw(b'\x82\xa4type\xa3doc\xa1x' + deep), E(1))
stream('whole.stream', H(), Raw(deep), E(1))
stream('header.stream', Raw(deep), E(0))
stream('maps.stream', H(), Raw(b'\x82\xa4type\xa3doc\xa1x' + b'\x81\xa1k' * 100000 + b'\xc0'), E(1))
EOF
    bad record.stream 'nest|decoded'
    bad whole.stream 'nest|decoded|not a map'
    bad_header header.stream 'nest|decoded|not an llmux stream'
    bad maps.stream 'nest|decoded'
}

@test "moderate nesting (20 deep) is accepted" {
    py <<'EOF'
stream('deep20.stream', H(), Raw(b'\x82\xa4type\xa3doc\xa1x' + b'\x91' * 20 + b'\xc0'), E(1))
EOF
    run_inspect deep20.stream
    [ "$status" -eq 0 ]
    [ "$(sed -n 2p out.json)" = '{"type":"doc","x":[[[[[[[[[[[[[[[[[[[[null]]]]]]]]]]]]]]]]]]]]}' ]
}

@test "a tokens field whose length is not a multiple of the token width" {
    py <<'EOF'
stream('w4.stream', H(), D(0, b'\x01\x00\x00'), E(1))
stream('w2.stream', H(token_width=2), D(0, b'\x01\x00\x02'), E(1))
stream('tf.stream', H(token_fields=['inputs']), {'type': 'seq', 'inputs': b'\x01\x00\x00\x00\x02'}, E(1))
EOF
    bad w4.stream 'multiple of the token width'
    bad w2.stream 'multiple of the token width'
    bad tf.stream 'multiple of the token width'
}

@test "a directory and a missing file" {
    mkdir dir.stream
    bad_header dir.stream 'directory'
    bad_header missing.stream 'No such file'
    bad_header missing.stream 'No such file' --format stream
}

@test "bad streams on stdin name <stdin>" {
    py <<'EOF'
stream('less.stream', H(), D(0), D(1), E(1))
EOF
    run --separate-stderr timeout 10 bash -c '"$INSPECT" <less.stream >out.json'
    check_bad '<stdin>' 'counts 1 records'
    run --separate-stderr timeout 10 bash -c 'cat less.stream | "$INSPECT" - >out.json'
    check_bad '<stdin>' 'counts 1 records'
}

@test "error offsets name the record's byte offset" {
    py <<'EOF'
h = pack(H()); d = pack(D(0))
stream('at.stream', H(), D(0), 5, E(2))
open('offset', 'w').write(str(len(h) + len(d)))
EOF
    bad at.stream "record at byte $(cat offset) is not a map"
}

@test "llm-inspect x.stream | head -c 10 ends quietly" {
    "$TESTGEN" stream long.stream 4 20000
    run --separate-stderr timeout 10 bash -c '"$INSPECT" long.stream | head -c 10; echo " status ${PIPESTATUS[0]}"'
    [ -z "$stderr" ]
    [[ $output == '{"type":"h status 141' || $output == '{"type":"h status 0' ]]
}

@test "map keys that are maps nested in map keys: shown with placeholders, at once (was exponential)" {
    # found by the stream fuzzer: each level of keys escaped the quotes of the levels below again
    python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' 87a474797065a6686561646572a6666f726d6174ac6c6c6d75782d73747265616da776657273696f6e01a46b696e64a4646f6373ab746f6b656e5f776964746804a9746f6b656e697a6572a77465737467656eaa766f6361625f73697a65ce00030d4084a474797065a3646f63a2696400a6746f32656e73c40400000000a481818181818181818181818181818181818181818181814179008181818181818181818125818181810000000000000000000000000000000000000000d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6c8ffffffd6d6d6d6736bc402000184a474736bc40301000182a474797065a3656e64a77265636f7264730a > "$BATS_TEST_TMPDIR/nested-keys.stream"
    run timeout 10 "$INSPECT" "$BATS_TEST_TMPDIR/nested-keys.stream"
    [ "$status" -eq 1 ]
    [[ "${lines[1]}" == *'<map>'* ]]
    [[ "$output" == *"nested-keys.stream: record at byte 238 is not a map"* ]]
}
