#!/usr/bin/env bats
# llm-inspect on every class of bad safetensors input: exit status 1 (never a
# signal, never a hang), exactly one line on stderr naming the file and the
# problem, and nothing on stdout. Also the usage errors and --help/--version.

bats_require_minimum_version 1.5.0

setup_file() {
    ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
    export ROOT
    export INSPECT=$ROOT/bin/llm-inspect TESTGEN=$ROOT/build/t/llmux-testgen
    [ -x "$INSPECT" ] || make -C "$ROOT" -s bin/llm-inspect >&2
    [ -x "$TESTGEN" ] || make -C "$ROOT" -s build/t/llmux-testgen >&2
    # Python helpers (no packages needed): st(path, header, data=b'', n=None)
    # writes u64 n (default: the header's length) | header | data.
    cat >"$BATS_FILE_TMPDIR/prelude.py" <<'EOF'
import struct, sys
def st(path, header, data=b'', n=None):
    if isinstance(header, str): header = header.encode('utf-8')
    if isinstance(data, str): data = data.encode('latin-1')
    open(path, 'wb').write(struct.pack('<Q', len(header) if n is None else n) + header + data)
# one tensor: T('a', 'F32', [2], 0, 8) -> '"a":{...}'
def T(name, dtype, shape, begin, end):
    return '"%s":{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}' % (name, dtype, shape, begin, end)
EOF
}

setup() {
    cd "$BATS_TEST_TMPDIR" || return 1
}

# py <<'EOF' ... EOF: runs Python with the helpers above, in the test's directory.
py() {
    python3 -c "$(cat "$BATS_FILE_TMPDIR/prelude.py")"$'\n'"$(cat)"
}

# bad FILE REGEX [OPTIONS...]: llm-inspect OPTIONS FILE must fail cleanly, and
# its one line of stderr must match REGEX (grep -E, case-insensitive).
bad() {
    local file=$1 re=$2
    shift 2
    run --separate-stderr timeout 10 "$INSPECT" "$@" "$file"
    check_bad "$file" "$re"
}

# check_bad NAME REGEX: checks $status, $output and $stderr of the last run.
check_bad() {
    local name=$1 re=$2 fail=
    if [ "$status" -eq 124 ]; then fail="hung (killed by timeout after 10 s)"
    elif [ "$status" -gt 128 ]; then fail="killed by signal $((status - 128))"
    elif [ "$status" -ne 1 ]; then fail="exit status $status, want 1"
    elif [ -z "$stderr" ]; then fail="nothing on stderr"
    elif [[ $stderr == *$'\n'* ]]; then fail="more than one line on stderr"
    elif [[ $stderr != "llm-inspect: "* ]]; then fail="stderr does not start with 'llm-inspect: '"
    elif [[ $stderr != *"$name"* ]]; then fail="stderr does not name '$name'"
    elif ! grep -Eqi -- "$re" <<<"$stderr"; then fail="stderr does not match /$re/"
    elif [ -n "$output" ]; then fail="something on stdout"
    fi
    if [ -n "$fail" ]; then
        {
            echo "llm-inspect on $name: $fail"
            echo "--- stderr:"; printf '%s\n' "$stderr"
            echo "--- stdout (first 300 bytes):"; printf '%s\n' "${output:0:300}"
        } >&2
        return 1
    fi
}

# A small valid file: two tensors and metadata, 4-byte-aligned header.
small_file() {
    py <<'EOF'
hdr = '{"__metadata__":{"format":"pt"},' + T('a', 'F32', '[2]', 0, 8) + ',' + T('b', 'U8', '[3]', 8, 11) + '}'
hdr += ' ' * (-len(hdr) % 8)
st('small.safetensors', hdr, b'\x00\x00\x80\x3f\x00\x00\x00\x40\x01\x02\x03')
EOF
}

@test "the small valid file used below is valid" {
    small_file
    run --separate-stderr timeout 10 "$INSPECT" small.safetensors
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    [[ $output == *'"tensor_count": 2'* ]]
}

@test "empty file" {
    : >empty.safetensors
    bad empty.safetensors 'empty'
}

@test "empty file, auto-detected without the suffix" {
    : >empty
    run --separate-stderr timeout 10 "$INSPECT" empty
    check_bad empty 'empty'
}

@test "shorter than the 8-byte header length" {
    printf '\x02\x00\x00' >short.safetensors
    bad short.safetensors 'too short|header length'
}

@test "truncated at every byte of a small valid file" {
    small_file
    local size n failures=0
    size=$(stat -c %s small.safetensors)
    for ((n = 0; n < size; n++)); do
        head -c "$n" small.safetensors >"cut$n.safetensors"
        bad "cut$n.safetensors" '.' || failures=$((failures + 1))
        rm -f "cut$n.safetensors"
    done
    [ "$failures" -eq 0 ]
}

@test "truncated at every byte of a small valid file, read from a pipe" {
    small_file
    local size n failures=0
    size=$(stat -c %s small.safetensors)
    for ((n = 0; n < size; n++)); do
        run --separate-stderr timeout 10 bash -c 'head -c "$1" small.safetensors | "$INSPECT" --format safetensors -' _ "$n"
        check_bad '<stdin>' '.' || failures=$((failures + 1))
    done
    [ "$failures" -eq 0 ]
}

@test "truncated llmux-testgen file: every 7th byte and around the header's end" {
    "$TESTGEN" safetensors full.safetensors
    local size hend n failures=0 lens=()
    size=$(stat -c %s full.safetensors)
    hend=$(($(od -An -tu8 -N8 full.safetensors) + 8))
    for ((n = 0; n < size; n += 7)); do lens+=("$n"); done
    for ((n = hend - 9; n <= hend + 9; n++)); do lens+=("$n"); done
    lens+=($((size - 1)) $((size - 2)) 1 7 8 9)
    for n in "${lens[@]}"; do
        head -c "$n" full.safetensors >cut.safetensors
        bad cut.safetensors '.' || { failures=$((failures + 1)); echo "(prefix of $n bytes)" >&2; }
    done
    [ "$failures" -eq 0 ]
}

@test "wrong magic: a GGUF file" {
    printf 'GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' >model.safetensors
    bad model.safetensors 'header length'
}

@test "garbage: text" {
    printf 'hello, world, this is not a tensor file at all\n' >garbage.safetensors
    bad garbage.safetensors 'header'
}

@test "garbage: random bytes" {
    head -c 4096 /dev/urandom >random.safetensors
    bad random.safetensors '.'
}

@test "garbage: a zip file" {
    printf 'PK\x03\x04\x14\x00\x00\x00\x08\x00' >zip.safetensors
    bad zip.safetensors 'header length'
}

@test "header length beyond the end of the file" {
    py <<'EOF'
st('past.safetensors', '{}', n=1000)
EOF
    bad past.safetensors 'past the end|beyond'
}

@test "header length larger than 100000000" {
    py <<'EOF'
st('huge.safetensors', '{}', n=100000001)
st('max.safetensors', '{}', n=2**64 - 1)
st('sign.safetensors', '{}', n=2**63)
EOF
    bad huge.safetensors 'exceeds|limit|too large'
    bad max.safetensors 'exceeds|limit|too large'
    bad sign.safetensors 'exceeds|limit|too large'
}

@test "header length 0 and 1" {
    py <<'EOF'
st('zero.safetensors', '', n=0)
st('one.safetensors', '{', n=1)
EOF
    bad zero.safetensors "'\\{'|header"
    bad one.safetensors "'\\{'|header"
}

@test "header does not start with '{'" {
    py <<'EOF'
st('array.safetensors', '[1, 2]')
st('space.safetensors', ' {}')
st('string.safetensors', '"{}"')
EOF
    bad array.safetensors "start with '\\{'"
    bad space.safetensors "start with '\\{'"
    bad string.safetensors "start with '\\{'"
}

@test "invalid JSON" {
    py <<'EOF'
st('open.safetensors', '{"a":')
st('comma.safetensors', '{"a":{},}')
st('single.safetensors', "{'a':1}")
st('junk.safetensors', '{} x')
st('nul.safetensors', b'{}\x00\x00\x00\x00\x00\x00')
st('toobig.safetensors', '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,18446744073709551616]}}', b'\x00')
EOF
    for f in open comma single junk nul toobig; do bad $f.safetensors 'invalid JSON|JSON'; done
}

@test "invalid UTF-8 in the header" {
    py <<'EOF'
tail = ':{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
for name, bad in [('ff', b'\xff'), ('overlong', b'\xc0\xaf'), ('surrogate', b'\xed\xa0\x80'),
                  ('cut', b'\xe2\x82'), ('above', b'\xf4\x90\x80\x80')]:
    st(name + '.safetensors', b'{"a' + bad + b'"' + tail.encode(), b'\x01')
st('escaped.safetensors', '{"a\\ud800"' + tail, b'\x01')
EOF
    for f in ff overlong surrogate cut above escaped; do bad $f.safetensors 'UTF-8|unicode|decode|invalid JSON'; done
}

@test "duplicate keys" {
    py <<'EOF'
st('dup.safetensors', '{' + T('a', 'U8', '[1]', 0, 1) + ',' + T('a', 'U8', '[1]', 1, 2) + '}', b'\x01\x02')
st('dupmeta.safetensors', '{"__metadata__":{"k":"1","k":"2"}}')
st('dupfield.safetensors', '{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b'\x01')
EOF
    bad dup.safetensors 'duplicate'
    bad dupmeta.safetensors 'duplicate'
    bad dupfield.safetensors 'duplicate'
}

@test "unknown dtype" {
    py <<'EOF'
st('dtype.safetensors', '{' + T('a', 'F128', '[1]', 0, 16) + '}', b'\x00' * 16)
st('lower.safetensors', '{' + T('a', 'f32', '[1]', 0, 4) + '}', b'\x00' * 4)
st('nodtype.safetensors', '{"a":{"shape":[1],"data_offsets":[0,1]}}', b'\x00')
st('numdtype.safetensors', '{"a":{"dtype":7,"shape":[1],"data_offsets":[0,1]}}', b'\x00')
EOF
    bad dtype.safetensors "dtype.*F128"
    bad lower.safetensors "dtype.*f32"
    bad nodtype.safetensors 'dtype'
    bad numdtype.safetensors 'dtype'
}

@test "shape that is not a list of non-negative integers" {
    py <<'EOF'
for name, shape in [('float', '[2.5]'), ('string', '["3"]'), ('negative', '[-1]'), ('bool', '[true]'),
                    ('null', '[null]'), ('nested', '[[1]]'), ('scalarshape', '4'), ('noshape', None)]:
    if shape is None:
        st(name + '.safetensors', '{"a":{"dtype":"U8","data_offsets":[0,4]}}', b'\x00' * 4)
    else:
        st(name + '.safetensors', '{' + T('a', 'U8', shape, 0, 4) + '}', b'\x00' * 4)
EOF
    for f in float string negative bool null nested scalarshape noshape; do bad $f.safetensors "shape"; done
}

@test "shape product overflows 64 bits" {
    py <<'EOF'
st('prod.safetensors', '{' + T('a', 'U8', '[4294967296, 4294967296]', 0, 0) + '}')
st('prod3.safetensors', '{' + T('a', 'U8', '[2097152, 2097152, 2097152, 2097152]', 0, 0) + '}')
EOF
    bad prod.safetensors 'overflow'
    bad prod3.safetensors 'overflow'
}

@test "shape with a zero beside a huge dimension is fine (product 0)" {
    py <<'EOF'
st('zero.safetensors', '{' + T('a', 'F32', '[0, 9223372036854775807]', 0, 0) + '}')
EOF
    run --separate-stderr timeout 10 "$INSPECT" zero.safetensors
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
}

@test "byte size overflows 64 bits" {
    py <<'EOF'
st('bytes.safetensors', '{' + T('a', 'F32', '[4611686018427387904]', 0, 0) + '}')
st('bytes64.safetensors', '{' + T('a', 'F64', '[2305843009213693952]', 0, 0) + '}')
EOF
    bad bytes.safetensors 'overflow'
    bad bytes64.safetensors 'overflow'
}

@test "data_offsets past the end of the file" {
    py <<'EOF'
st('past.safetensors', '{' + T('a', 'U8', '[8]', 0, 8) + '}', b'\x00' * 4)
st('farpast.safetensors', '{' + T('a', 'U8', '[1]', 9223372036854775806, 9223372036854775807) + '}', b'\x00')
EOF
    bad past.safetensors 'past|end'
    bad farpast.safetensors 'past|end'
}

@test "data_offsets reversed" {
    py <<'EOF'
st('rev.safetensors', '{' + T('a', 'U8', '[4]', 4, 0) + '}', b'\x00' * 4)
EOF
    bad rev.safetensors 'backwards|reversed'
}

@test "data_offsets that are not a pair of non-negative integers" {
    py <<'EOF'
for name, offs in [('three', '[0,1,2]'), ('one', '[1]'), ('neg', '[-1,0]'), ('float', '[0,1.0]'),
                   ('str', '["0","1"]'), ('obj', '{"begin":0}')]:
    st(name + '.safetensors', '{"a":{"dtype":"U8","shape":[1],"data_offsets":%s}}' % offs, b'\x00')
st('nooffs.safetensors', '{"a":{"dtype":"U8","shape":[1]}}', b'\x00')
EOF
    for f in three one neg float str obj nooffs; do bad $f.safetensors 'data_offsets'; done
}

@test "size does not match the shape" {
    py <<'EOF'
st('small.safetensors', '{' + T('a', 'F32', '[2, 2]', 0, 12) + '}', b'\x00' * 12)
st('large.safetensors', '{' + T('a', 'F32', '[2]', 0, 12) + '}', b'\x00' * 12)
st('scalar.safetensors', '{' + T('a', 'F16', '[]', 0, 4) + '}', b'\x00' * 4)
EOF
    bad small.safetensors 'needs|mismatch'
    bad large.safetensors 'needs|mismatch'
    bad scalar.safetensors 'needs|mismatch'
}

@test "overlapping tensors" {
    py <<'EOF'
st('overlap.safetensors', '{' + T('a', 'U8', '[4]', 0, 4) + ',' + T('b', 'U8', '[4]', 2, 6) + '}', b'\x00' * 6)
st('same.safetensors', '{' + T('a', 'U8', '[4]', 0, 4) + ',' + T('b', 'U8', '[4]', 0, 4) + '}', b'\x00' * 4)
st('inside.safetensors', '{' + T('a', 'U8', '[8]', 0, 8) + ',' + T('b', 'U8', '[2]', 2, 4) + '}', b'\x00' * 8)
EOF
    bad overlap.safetensors 'overlap'
    bad same.safetensors 'overlap'
    bad inside.safetensors 'overlap'
}

@test "a hole between tensors, or before the first" {
    py <<'EOF'
st('hole.safetensors', '{' + T('a', 'U8', '[4]', 0, 4) + ',' + T('b', 'U8', '[4]', 6, 10) + '}', b'\x00' * 10)
st('front.safetensors', '{' + T('a', 'U8', '[4]', 2, 6) + '}', b'\x00' * 6)
EOF
    bad hole.safetensors 'hole'
    bad front.safetensors 'hole'
}

@test "trailing bytes after the last tensor" {
    py <<'EOF'
st('trail.safetensors', '{' + T('a', 'U8', '[4]', 0, 4) + '}', b'\x00' * 5)
st('trailempty.safetensors', '{}', b'\x00')
EOF
    bad trail.safetensors 'after the last tensor|trailing'
    bad trailempty.safetensors 'after the last tensor|trailing'
}

@test "tensor entry with an unknown field or not an object" {
    py <<'EOF'
st('field.safetensors', '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":1}}', b'\x00')
st('notobj.safetensors', '{"a":[1,2,3]}')
EOF
    bad field.safetensors "extra|unknown field"
    bad notobj.safetensors "not an object"
}

@test "__metadata__ with a non-string value, or not an object" {
    py <<'EOF'
st('num.safetensors', '{"__metadata__":{"step":100}}')
st('nested.safetensors', '{"__metadata__":{"config":{"n_layer":2}}}')
st('null.safetensors', '{"__metadata__":{"x":null}}')
st('list.safetensors', '{"__metadata__":["a"]}')
st('str.safetensors', '{"__metadata__":"a"}')
EOF
    bad num.safetensors "metadata.*step.*not a string"
    bad nested.safetensors "metadata.*config.*not a string"
    bad null.safetensors "metadata.*not a string"
    bad list.safetensors "metadata.*not an object"
    bad str.safetensors "metadata.*not an object"
}

@test "quantization metadata naming a missing tensor" {
    py <<'EOF'
st('q.safetensors', '{"__metadata__":{"quantization":"{\\"w\\":{\\"type\\":\\"q8_0\\",\\"shape\\":[32]}}"},'
   + T('v', 'U8', '[34]', 0, 34) + '}', b'\x00' * 34)
EOF
    bad q.safetensors "quantization.*'w'|'w'.*not in the file"
}

@test "quantization metadata with the wrong size" {
    py <<'EOF'
meta = lambda q: '{"__metadata__":{"quantization":"%s"},' % q.replace('"', '\\"')
st('size.safetensors', meta('{"w":{"type":"q8_0","shape":[64]}}') + T('w', 'U8', '[34]', 0, 34) + '}', b'\x00' * 34)
st('block.safetensors', meta('{"w":{"type":"q8_0","shape":[33]}}') + T('w', 'U8', '[34]', 0, 34) + '}', b'\x00' * 34)
st('type.safetensors', meta('{"w":{"type":"q9_9","shape":[32]}}') + T('w', 'U8', '[34]', 0, 34) + '}', b'\x00' * 34)
st('dtype.safetensors', meta('{"w":{"type":"q8_0","shape":[32]}}') + T('w', 'I8', '[34]', 0, 34) + '}', b'\x00' * 34)
st('2d.safetensors', meta('{"w":{"type":"q8_0","shape":[32]}}') + T('w', 'U8', '[2, 17]', 0, 34) + '}', b'\x00' * 34)
st('json.safetensors', meta('{"w":') + T('w', 'U8', '[34]', 0, 34) + '}', b'\x00' * 34)
st('entry.safetensors', meta('{"w":{"type":"q8_0"}}') + T('w', 'U8', '[34]', 0, 34) + '}', b'\x00' * 34)
st('ovf.safetensors', meta('{"w":{"type":"q8_0","shape":[4294967296,4294967296,32]}}') + T('w', 'U8', '[34]', 0, 34) + '}', b'\x00' * 34)
EOF
    bad size.safetensors "takes 68 bytes|size"
    bad block.safetensors "multiple of 32"
    bad type.safetensors "q9_9"
    bad dtype.safetensors "U8"
    bad 2d.safetensors "1-D"
    bad json.safetensors "quantization.*not a JSON object"
    bad entry.safetensors "quantization entry"
    bad ovf.safetensors "fits 64 bits|overflow"
}

@test "control characters in names from the file stay on one line" {
    py <<'EOF'
st('nlname.safetensors', '{"a\\nb":{"dtype":"X","shape":[1],"data_offsets":[0,4]}}', b'\x00' * 4)
st('nldtype.safetensors', '{"a":{"dtype":"X\\nY","shape":[1],"data_offsets":[0,4]}}', b'\x00' * 4)
st('nlmeta.safetensors', '{"__metadata__":{"k\\nz":1}}')
st('esc.safetensors', '{"a\\u001b[2J":{"dtype":"X","shape":[1],"data_offsets":[0,4]}}', b'\x00' * 4)
EOF
    bad nlname.safetensors 'dtype'
    bad nldtype.safetensors 'dtype'
    bad nlmeta.safetensors 'not a string'
    bad esc.safetensors 'dtype'
    [[ $stderr != *$'\e'* ]]
}

@test "control characters quoted from invalid JSON stay on one line" {
    py <<'EOF'
st('escnl.safetensors', b'{"a\\\n":1}')
st('escansi.safetensors', b'{"a":"\\\x1b[2J"}')
EOF
    bad escnl.safetensors 'invalid JSON'
    bad escansi.safetensors 'invalid JSON'
    [[ $stderr != *$'\e'* ]]
}

@test "a directory" {
    mkdir dir.safetensors
    bad dir.safetensors 'directory'
    mkdir plaindir
    bad plaindir 'directory'
}

@test "a missing file" {
    bad missing.safetensors 'No such file'
    bad no/such/dir/x.safetensors 'No such file'
}

@test "an unreadable file" {
    [ "$(id -u)" -ne 0 ] || skip "root reads any file"
    small_file
    chmod 000 small.safetensors
    bad small.safetensors 'Permission denied'
}

@test "bad safetensors from a pipe with --format safetensors name <stdin>" {
    py <<'EOF'
st('rev.safetensors', '{' + T('a', 'U8', '[4]', 4, 0) + '}', b'\x00' * 4)
EOF
    run --separate-stderr timeout 10 bash -c '"$INSPECT" --format safetensors - <rev.safetensors'
    check_bad '<stdin>' 'backwards'
    run --separate-stderr timeout 10 bash -c 'cat rev.safetensors | "$INSPECT" -f safetensors'
    check_bad '<stdin>' 'backwards'
    run --separate-stderr timeout 10 bash -c ': | "$INSPECT" -f safetensors'
    check_bad '<stdin>' 'empty'
}

@test "--stats on a bad file fails the same way" {
    py <<'EOF'
st('hole.safetensors', '{' + T('a', 'F32', '[1]', 0, 4) + ',' + T('b', 'F32', '[1]', 8, 12) + '}', b'\x00' * 12)
EOF
    bad hole.safetensors 'hole' --stats
}

@test "a bad file after a good one: the good one printed whole, then the error" {
    small_file
    printf 'junk' >bad.safetensors
    run --separate-stderr timeout 10 "$INSPECT" --compact small.safetensors bad.safetensors
    [ "$status" -eq 1 ]
    [[ $stderr == "llm-inspect: bad.safetensors: "* ]]
    [[ $stderr != *$'\n'* ]]
    [ "${#lines[@]}" -eq 1 ]
    python3 -c 'import json, sys; json.loads(sys.argv[1])' "$output"
}

# ---- usage ----

@test "unknown option: exit 2 and a pointer to --help" {
    run --separate-stderr timeout 10 "$INSPECT" --no-such-option x.safetensors
    [ "$status" -eq 2 ]
    [ -z "$output" ]
    [[ $stderr == *"--no-such-option"* ]]
    [[ $stderr == *"Try 'llm-inspect --help'"* ]]
    run --separate-stderr timeout 10 "$INSPECT" -Z x.safetensors
    [ "$status" -eq 2 ]
    [[ $stderr == *"Try 'llm-inspect --help'"* ]]
}

@test "bad option values: exit 2" {
    run --separate-stderr timeout 10 "$INSPECT" --format gguf x.safetensors
    [ "$status" -eq 2 ]
    [[ $stderr == *"Try 'llm-inspect --help'"* ]]
    run --separate-stderr timeout 10 "$INSPECT" --head -1 x.stream
    [ "$status" -eq 2 ]
    run --separate-stderr timeout 10 "$INSPECT" --head
    [ "$status" -eq 2 ]
    run --separate-stderr timeout 10 "$INSPECT" --max-record 12X x.stream
    [ "$status" -eq 2 ]
    run --separate-stderr timeout 10 "$INSPECT" --stats=1 x.safetensors
    [ "$status" -eq 2 ]
}

@test "--help and --version: exit 0, on stdout" {
    run --separate-stderr timeout 10 "$INSPECT" --help
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    [[ $output == *"Usage:"* ]]
    [[ $output == *"--max-record"* ]]
    run --separate-stderr timeout 10 "$INSPECT" -h
    [ "$status" -eq 0 ]
    [[ $output == *"Usage:"* ]]
    run --separate-stderr timeout 10 "$INSPECT" --version
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    [[ $output == "llm-inspect (llmux) "[0-9]* ]]
}

@test "no file and stdin a terminal: usage error" {
    command -v script >/dev/null || skip "script(1) not installed"
    run timeout 10 script -qec "$INSPECT" /dev/null
    [ "$status" -eq 2 ]
    [[ $output == *"terminal"* ]]
}

@test "llm-inspect x.safetensors | head -c 10 ends quietly" {
    # Large enough output (several pipe buffers) that the write after head exits hits EPIPE.
    py <<'EOF'
n = 4000
hdr = '{' + ','.join(T('tensor_%05d' % i, 'U8', '[1]', i, i + 1) for i in range(n)) + '}'
st('many.safetensors', hdr, b'\x00' * n)
EOF
    run --separate-stderr timeout 10 bash -c '"$INSPECT" many.safetensors | head -c 10; echo "status ${PIPESTATUS[0]}"'
    [ -z "$stderr" ]
    [[ $output == *"status 141" || $output == *"status 0" ]]
    [ "${output:0:10}" = $'{\n  "file"' ]
}
