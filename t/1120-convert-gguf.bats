#!/usr/bin/env bats
# llm-convert and GGUF: the round trip, and every class of bad GGUF input:
# exit status 1 (never a signal, never a hang), exactly one line on stderr
# naming the file and the key or tensor, nothing on stdout, and nothing
# written (no output, no temp file left behind).
# (t/conformance/test_convert_gguf.py checks the files against gguf-py.)

bats_require_minimum_version 1.5.0

setup_file() {
    ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
    export ROOT
    PATH="$ROOT/bin:$PATH"
    cd "$BATS_FILE_TMPDIR" || return 1
    . "$ROOT/t/helpers/tiny.bash"
    tiny_corpus
    llm-train --arch llama --layers 2 --heads 4 --kv-heads 2 --dim 64 --ffn 128 --ctx 32 --tokenizer tok.json \
        data --steps 2 -o llama.safetensors
    llm-train --arch gpt2 --layers 1 --heads 4 --dim 64 --ffn 128 --ctx 32 --tokenizer tok.json \
        data --steps 2 -o gpt2.safetensors
    llm-convert llama.safetensors --to gguf -o model.gguf 2>/dev/null
    # Python (no packages): load(path) -> a GGUF as a dict we can spoil;
    # save(g, path) writes it back (offsets as they were unless changed).
    cat >prelude.py <<'EOF'
import struct
def load(path):
    b = open(path, 'rb').read()
    pos = 24
    n_t, n_kv = struct.unpack_from('<QQ', b, 8)
    def string():
        nonlocal pos
        (n,) = struct.unpack_from('<Q', b, pos); s = b[pos + 8:pos + 8 + n]; pos += 8 + n; return s
    size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def value(t):
        nonlocal pos
        if t == 8: string(); return
        if t == 9:
            (et, n) = struct.unpack_from('<IQ', b, pos); pos += 12
            for _ in range(n): value(et)
            return
        pos += size[t]
    kv = []
    for _ in range(n_kv):
        k = string(); (t,) = struct.unpack_from('<I', b, pos); pos += 4
        start = pos; value(t); kv.append([k.decode(), t, b[start:pos]])
    ts = []
    for _ in range(n_t):
        name = string().decode(); (nd,) = struct.unpack_from('<I', b, pos); pos += 4
        ne = list(struct.unpack_from('<%dQ' % nd, b, pos)); pos += 8 * nd
        (ty, off) = struct.unpack_from('<IQ', b, pos); pos += 12
        ts.append({'name': name, 'ne': ne, 'type': ty, 'offset': off})
    data = (pos + 31) // 32 * 32
    return {'magic': b[:4], 'version': struct.unpack_from('<I', b, 4)[0], 'kv': kv, 't': ts, 'data': b[data:]}
def s(text): return struct.pack('<Q', len(text)) + text.encode()
def save(g, path):
    out = g['magic'] + struct.pack('<IQQ', g['version'], len(g['t']), len(g['kv']))
    for k, t, v in g['kv']: out += s(k) + struct.pack('<I', t) + v
    for t in g['t']:
        out += s(t['name']) + struct.pack('<I', len(t['ne'])) + struct.pack('<%dQ' % len(t['ne']), *t['ne'])
        out += struct.pack('<IQ', t['type'], t['offset'])
    out += b'\0' * (-len(out) % 32)
    open(path, 'wb').write(out + g['data'])
def key(g, k): return [e for e in g['kv'] if e[0] == k][0]
def tensor(g, n): return [t for t in g['t'] if t['name'] == n][0]
g = load('model.gguf')
EOF
}

setup() {
    PATH="$ROOT/bin:$PATH"
    cd "$BATS_FILE_TMPDIR" || return 1
    rm -rf out && mkdir out
}

# spoil NAME <<'EOF' ... EOF: NAME.gguf from model.gguf through the Python
# given (g is the loaded file; save(g, NAME) is appended).
spoil() {
    python3 -c "$(cat prelude.py)"$'\n'"$(cat)"$'\n'"save(g, '$1.gguf')"
}

# bad FILE REGEX [ARGS...]: llm-convert ARGS FILE --to llmux must fail
# cleanly, its one line of stderr naming FILE and matching REGEX (grep -E),
# and write nothing.
bad() {
    local file=$1 re=$2 fail=
    shift 2
    run --separate-stderr timeout 20 llm-convert "$@" "$file" --to llmux -o out/m.safetensors
    if [ "$status" -eq 124 ]; then fail="hung (killed by timeout)"
    elif [ "$status" -gt 128 ]; then fail="killed by signal $((status - 128))"
    elif [ "$status" -ne 1 ]; then fail="exit status $status, want 1"
    elif [ -z "$stderr" ]; then fail="nothing on stderr"
    elif [[ $stderr == *$'\n'* ]]; then fail="more than one line on stderr"
    elif [[ $stderr != "llm-convert: $file: "* ]]; then fail="stderr does not start with 'llm-convert: $file: '"
    elif ! grep -Eq -- "$re" <<<"$stderr"; then fail="stderr does not match /$re/"
    elif [ -n "$output" ]; then fail="something on stdout"
    elif [ -n "$(ls -A out)" ]; then fail="something was written: $(ls -A out)"
    fi
    if [ -n "$fail" ]; then
        printf 'llm-convert on %s: %s\n--- stderr:\n%s\n' "$file" "$fail" "$stderr" >&2
        return 1
    fi
}

@test "the round trip: llmux -> gguf -> llmux is the model again, byte for byte (llama and gpt2)" {
    for m in llama gpt2; do
        llm-convert $m.safetensors --to gguf -o out/$m.gguf
        llm-convert out/$m.gguf --to llmux -o out/$m.back.safetensors
        llm-convert $m.safetensors --to llmux -o out/$m.ref.safetensors
        cmp out/$m.back.safetensors out/$m.ref.safetensors
        # detected as GGUF; --from gguf says the same
        llm-convert --from gguf out/$m.gguf --to llmux -o out/$m.from.safetensors
        cmp out/$m.from.safetensors out/$m.ref.safetensors
    done
    # --dtype f16: matrices F16, vectors F32 for llama.cpp (llmux.widened), F16 again when read back
    llm-convert llama.safetensors --to gguf --dtype f16 -o out/f16.gguf
    llm-convert out/f16.gguf --to llmux -o out/f16.back.safetensors
    llm-convert llama.safetensors --to llmux --dtype f16 -o out/f16.ref.safetensors
    cmp out/f16.back.safetensors out/f16.ref.safetensors
    # gguf -> gguf keeps every byte too
    mkdir out/again
    llm-convert out/llama.gguf --to gguf -o out/again/llama.gguf
    cmp out/llama.gguf out/again/llama.gguf
}

@test "the spoiler reproduces the file it loads" {
    spoil same <<<''
    cmp same.gguf model.gguf
}

@test "a truncated file: in the header, a key, a tensor info, the data" {
    size=$(stat -c %s model.gguf)
    head -c 2 model.gguf > t0.gguf
    bad t0.gguf 'not a GGUF file' --from gguf
    head -c 20 model.gguf > t1.gguf
    bad t1.gguf 'truncated: the header'
    head -c 100 model.gguf > t2.gguf
    bad t2.gguf "truncated: the header counts 23 keys and 21 tensors, more than 100 bytes hold"
    head -c 700 model.gguf > t2b.gguf
    bad t2b.gguf "truncated: (key '|the name of key)"
    # in the middle of tokenizer.ggml.tokens
    off=$(grep -abo 'tokenizer.ggml.tokens' model.gguf | head -n 1 | cut -d: -f1)
    head -c $((off + 300)) model.gguf > t3.gguf
    bad t3.gguf "truncated: key 'tokenizer.ggml.tokens'"
    # in the tensor infos
    off=$(grep -abo 'blk.1.ffn_up.weight' model.gguf | head -n 1 | cut -d: -f1)
    head -c $((off + 19 + 6)) model.gguf > t4.gguf
    bad t4.gguf "truncated: tensor 'blk.1.ffn_up.weight'"
    # in the data: the last tensor lies past the end
    head -c $((size - 100)) model.gguf > t5.gguf
    bad t5.gguf "tensor 'output.weight': bytes .* lie past its end"
}

@test "bad magic, wrong versions" {
    spoil magic <<<"g['magic'] = b'GGUG'"
    bad magic.gguf 'not a Hugging Face directory, GGUF'
    bad magic.gguf 'not a GGUF file \(the magic is not "GGUF"\)' --from gguf
    spoil v4 <<<"g['version'] = 4"
    bad v4.gguf 'GGUF version 4 is not supported'
    spoil v1 <<<"g['version'] = 1"
    bad v1.gguf 'GGUF version 1 is not supported'
    # version 2 is read as 3 (the same layout, little-endian)
    spoil v2 <<<"g['version'] = 2"
    llm-convert v2.gguf --to llmux -o out/v2.safetensors
}

@test "a tensor past the end, misaligned, overlapping" {
    spoil past <<<"tensor(g, 'blk.0.ffn_down.weight')['offset'] = len(g['data']) - 32"
    bad past.gguf "tensor 'blk.0.ffn_down.weight': bytes \[[0-9]+, [0-9]+\) of the data section lie past its end"
    spoil huge <<<"tensor(g, 'blk.0.ffn_down.weight')['offset'] = 2**63 + 32 * 5"
    bad huge.gguf "tensor 'blk.0.ffn_down.weight': bytes .* lie past its end"
    spoil misaligned <<<"tensor(g, 'blk.0.attn_k.weight')['offset'] += 4"
    bad misaligned.gguf "tensor 'blk.0.attn_k.weight': offset [0-9]+ is not a multiple of the alignment 32"
    spoil overlap <<<"tensor(g, 'blk.0.attn_k.weight')['offset'] = tensor(g, 'blk.0.attn_q.weight')['offset']"
    bad overlap.gguf "tensors '.*' and '.*' overlap"
}

@test "unknown and unsupported tensor types" {
    spoil t99 <<<"tensor(g, 'blk.0.attn_v.weight')['type'] = 99"
    bad t99.gguf "tensor 'blk.0.attn_v.weight' has unknown type 99"
    # Q5_0: known to ggml, not read here (64 weights in 2 blocks fit the F32 tensor's place)
    spoil q5 <<<"tensor(g, 'blk.1.attn_norm.weight')['type'] = 6"
    bad q5.gguf "tensor 'blk.1.attn_norm.weight' is Q5_0, which llm-convert does not read"
    # Q4_K's blocks of 256 do not divide 64 columns
    spoil q4k <<<"tensor(g, 'blk.0.attn_q.weight')['type'] = 12"
    bad q4k.gguf "tensor 'blk.0.attn_q.weight' is Q4_K, whose blocks of 256 do not divide ne\[0\] = 64"
}

@test "missing keys, keys of the wrong type, bad values" {
    spoil nolayers <<<"g['kv'] = [e for e in g['kv'] if e[0] != 'llama.block_count']"
    bad nolayers.gguf "key 'llama.block_count' is missing"
    spoil noarch <<<"g['kv'] = [e for e in g['kv'] if e[0] != 'general.architecture']"
    bad noarch.gguf "key 'general.architecture' is missing"
    spoil noeps <<<"g['kv'] = [e for e in g['kv'] if e[0] != 'llama.attention.layer_norm_rms_epsilon']"
    bad noeps.gguf "key 'llama.attention.layer_norm_rms_epsilon' is missing"
    spoil strdim <<<"e = key(g, 'llama.embedding_length'); e[1] = 8; e[2] = s('64')"
    bad strdim.gguf "key 'llama.embedding_length' is STRING, not an integer"
    spoil falcon <<<"key(g, 'general.architecture')[2] = s('falcon')"
    bad falcon.gguf "key 'general.architecture' is 'falcon': llm-convert reads llama and gpt2"
    spoil heads <<<"key(g, 'llama.attention.head_count')[2] = struct.pack('<I', 3)"
    bad heads.gguf "keys 'llama.embedding_length' 64, 'llama.attention.head_count' 3 and 'llama.attention.head_count_kv' 2 do not divide"
    spoil align <<<"key(g, 'general.alignment')[2] = struct.pack('<I', 24)"
    bad align.gguf "key 'general.alignment' is 24, not a power of two"
    spoil twice <<<"g['kv'].append(list(key(g, 'llama.block_count')))"
    bad twice.gguf "key 'llama.block_count' appears twice"
    spoil vtype <<<"key(g, 'llama.block_count')[1] = 13"
    bad vtype.gguf "key 'llama.block_count' has unknown value type 13"
    spoil boolv <<<"key(g, 'tokenizer.ggml.add_bos_token')[2] = b'\x07'"
    bad boolv.gguf "key 'tokenizer.ggml.add_bos_token': a BOOL of 7"
    spoil rope <<<"g['kv'].append(['llama.rope.scaling.type', 8, s('linear')])"
    bad rope.gguf "key 'llama.rope.scaling.type' is 'linear': rope scaling is not supported"
    spoil wide <<<"g['kv'].append(['llmux.widened', 9, struct.pack('<IQ', 8, 1) + s('blk.0.attn_q.weight:F16')])"
    bad wide.gguf "key 'llmux.widened': entry 0 is not 'NAME:F16' or 'NAME:BF16'"
    spoil bigstr <<<"key(g, 'general.name')[2] = struct.pack('<Q', 2**62) + b'x'"
    bad bigstr.gguf "truncated: key 'general.name'"
}

@test "shapes that do not match the keys, missing and unknown tensors" {
    spoil shape <<<"tensor(g, 'blk.0.attn_q.weight')['ne'] = [64, 32]"
    bad shape.gguf "tensor 'blk.0.attn_q.weight' has ne \[64, 32\], the keys make it \[64, 64\]"
    spoil ffn <<<"key(g, 'llama.feed_forward_length')[2] = struct.pack('<I', 96)"
    bad ffn.gguf "tensor 'blk.0.ffn_gate.weight' has ne \[64, 128\], the keys make it \[64, 96\]"
    spoil vocab <<<"key(g, 'llama.vocab_size')[2] = struct.pack('<I', 301)"
    bad vocab.gguf "key 'llama.vocab_size' is 301 but tensor 'token_embd.weight' has 300 rows"
    spoil gone <<<"g['t'] = [t for t in g['t'] if t['name'] != 'blk.1.ffn_down.weight']"
    bad gone.gguf "tensor 'blk.1.ffn_down.weight' is missing"
    spoil extra <<<"g['t'].append(dict(tensor(g, 'blk.1.ffn_norm.weight'), name='rope_freqs.weight'))"
    bad extra.gguf "tensor 'rope_freqs.weight' is not part of the llama model the keys describe|overlap"
    spoil dup <<<"g['t'].append(dict(tensor(g, 'blk.1.ffn_norm.weight')))"
    bad dup.gguf "tensor 'blk.1.ffn_norm.weight' appears twice"
    spoil dims <<<"tensor(g, 'blk.0.attn_norm.weight')['ne'] = [64, 1, 1, 1, 1]"
    bad dims.gguf "tensor 'blk.0.attn_norm.weight' has 5 dimensions"
    spoil nametoo <<<"tensor(g, 'blk.0.attn_norm.weight')['name'] = 'x' * 70"
    bad nametoo.gguf "tensor [0-9]+ has a name of 70 bytes"
}

@test "a bad tokenizer: counts, types, an unknown pre-tokenizer" {
    spoil ntok <<<"e = key(g, 'tokenizer.ggml.token_type'); e[2] = e[2][:4] + struct.pack('<Q', 299) + e[2][12:-4]"
    bad ntok.gguf "key 'tokenizer.ggml.token_type' is not an array of 300 integers"
    # without tokenizer.huggingface.json the tokenizer is rebuilt from tokenizer.ggml.*
    spoil nohf <<<"g['kv'] = [e for e in g['kv'] if e[0] != 'tokenizer.huggingface.json']"
    llm-convert nohf.gguf --to llmux -o out/nohf.safetensors
    [ "$(llm-tokenize -t out/nohf.safetensors text.txt -f ids | md5sum)" = "$(llm-tokenize -t tok.json text.txt -f ids | md5sum)" ]
    rm out/nohf.safetensors
    spoil pre <<<"g['kv'] = [e for e in g['kv'] if e[0] != 'tokenizer.huggingface.json']; key(g, 'tokenizer.ggml.pre')[2] = s('falcon')"
    bad pre.gguf "key 'tokenizer.ggml.pre' is 'falcon'"
    spoil spm <<<"g['kv'] = [e for e in g['kv'] if e[0] != 'tokenizer.huggingface.json']; key(g, 'tokenizer.ggml.model')[2] = s('llama')"
    bad spm.gguf "key 'tokenizer.ggml.model' is 'llama'"
    spoil merges <<<"g['kv'] = [e for e in g['kv'] if e[0] != 'tokenizer.huggingface.json']; e = key(g, 'tokenizer.ggml.merges'); n = struct.unpack_from('<Q', e[2], 12)[0]; e[2] = e[2][:12] + s('nope nope') + e[2][20 + n:]"
    bad merges.gguf "tokenizer.ggml.tokens.*merge 0"
}

@test "a failed conversion leaves an existing output as it was" {
    spoil gone2 <<<"g['t'] = [t for t in g['t'] if t['name'] != 'output_norm.weight']"
    echo old > out/keep.gguf
    run --separate-stderr llm-convert gone2.gguf --to gguf -o out/keep.gguf
    [ "$status" -eq 1 ]
    [ "$(cat out/keep.gguf)" = old ]
    [ "$(ls -A out)" = keep.gguf ]
}
