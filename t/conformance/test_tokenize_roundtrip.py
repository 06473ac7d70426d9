"""decode(encode(x)) == x for every byte string, with byte-level tokenizers:
random byte strings (all 256 values, invalid UTF-8, NULs) encoded with
`llm-tokenize --bytes`, then `llm-tokenize decode` of the ids, as JSON-array
lines (--format ids) and as a stream (--format stream), must give the bytes
back exactly. The stream is also read with the msgpack package: its tokens
equal the ids lines, and the references (tiktoken, tokenizers) decode them to
the same bytes.

Tokenizers: the tiktoken rank files (gpt2, cl100k_base, o200k_base) and a
byte-level tokenizer.json that `llm-tokenize train` writes.
"""
import json
import os
import random
import struct

import pytest

from common import run
from test_tokenize_tiktoken import REFS, SEED, TOKENIZE, encoding, ids_lines, random_bytes, stress_text

msgpack = pytest.importorskip("msgpack")

# between documents in decode's output: long enough never to occur in the data
SEP = "\u241e<llmux-document-boundary-7c1f9a>\u241e"


def tokenizer(name, tmp_path_factory):
    if name.endswith(".json"):
        d = tmp_path_factory.mktemp("trained")
        rng = random.Random(SEED + 5)
        train = d / "train.txt"
        train.write_text("".join(stress_text(rng, 30) for _ in range(200)), encoding="utf-8")
        out = d / name
        run([TOKENIZE, "train", "--vocab-size", 1000, "--pattern", name[:-5], "--special", "<|endoftext|>",
             "-o", out, train])
        return out
    path = os.path.join(REFS, f"{name}.tiktoken")
    if not os.path.exists(path):
        pytest.skip(f"{path} is absent (../shared/refs)")
    return path


TOKENIZERS = ["gpt2", "cl100k_base", "o200k_base", "o200k_base.json", "llama3.json"]


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """A directory of byte documents (one file each, in name order)."""
    rng = random.Random(SEED + 3)
    data = [bytes(range(256)), bytes(range(255, -1, -1)), b"", b"\x00", b"\n", b"\r\n", b"\xff" * 3, b"  \x80"]
    data += [random_bytes(rng, rng.choice([1, 3, 16, 100, 1000])) for _ in range(150)]
    data += [bytes(rng.randrange(256) for _ in range(5000))]
    d = tmp_path_factory.mktemp("bytes") / "docs"
    d.mkdir()
    for i, b in enumerate(data):
        (d / f"{i:04d}").write_bytes(b)
    return d, data


def read_stream(raw):
    """(header, [tokens of each doc]) from a stream, read with msgpack alone."""
    recs = _unpack(raw)
    header, end = recs[0], recs[-1]
    assert header.get("type") == "header" and end.get("type") == "end"
    width = header.get("token_width", 4)
    fmt = "<%d" + ("H" if width == 2 else "I")
    docs = []
    for r in recs[1:-1]:
        assert r["type"] == "doc"
        b = r["tokens"]
        assert len(b) % width == 0
        docs.append(list(struct.unpack(fmt % (len(b) // width), b)))
    assert end.get("records") == len(docs)
    return header, docs


def _unpack(raw):
    u = msgpack.Unpacker(raw=False, strict_map_key=False)
    u.feed(raw)
    return list(u)


def decode(tok, data):
    return run([TOKENIZE, "decode", "-t", tok, "--separator", SEP], stdin=data).stdout


def split_docs(out, n):
    parts = out.split(SEP.encode())
    assert len(parts) == n, f"{len(parts)} documents back, {n} sent"
    return parts


@pytest.mark.parametrize("name", TOKENIZERS)
def test_ids_round_trip(name, docs, tmp_path_factory):
    tok = tokenizer(name, tmp_path_factory)
    d, data = docs
    ids = run([TOKENIZE, "-t", tok, "--format", "ids", "--bytes", "-j", "2", d]).stdout
    lines = ids_lines(ids)
    assert len(lines) == len(data)
    back = split_docs(decode(tok, ids), len(data))
    bad = [i for i, (a, b) in enumerate(zip(back, data)) if a != b]
    assert not bad, f"seed {SEED}: {len(bad)} documents differ, first {bad[0]}: {data[bad[0]][:60]!r} came back as {back[bad[0]][:60]!r}"


@pytest.mark.parametrize("name", TOKENIZERS)
def test_stream_round_trip(name, docs, tmp_path_factory):
    tok = tokenizer(name, tmp_path_factory)
    d, data = docs
    stream = run([TOKENIZE, "-t", tok, "--format", "stream", "--bytes", "-j", "2", d]).stdout
    header, toks = read_stream(stream)
    ids = ids_lines(run([TOKENIZE, "-t", tok, "--format", "ids", "--bytes", "-j", "1", d]).stdout)
    assert toks == ids
    back = split_docs(decode(tok, stream), len(data))
    assert back == data
    # the references read the same ids as the same bytes
    if name.endswith(".json"):
        Tokenizer = pytest.importorskip("tokenizers").Tokenizer
        hf = Tokenizer.from_file(str(tok))
        for t, b in zip(toks, data):
            try:
                text = b.decode("utf-8")
            except UnicodeDecodeError:
                continue
            assert hf.decode(t, skip_special_tokens=False) == text
    else:
        enc = encoding(name)
        assert header["vocab_size"] == enc.n_vocab
        for t, b in zip(toks, data):
            assert enc.decode_bytes(t) == b


def test_separator_default_is_newline(tmp_path):
    tok = tokenizer("gpt2", None)
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"text": "a b"}) + "\n" + json.dumps({"text": "c"}) + "\n")
    ids = run([TOKENIZE, "-t", tok, "--format", "ids", src]).stdout
    assert run([TOKENIZE, "decode", "-t", tok], stdin=ids).stdout == b"a b\nc"
    assert run([TOKENIZE, "decode", "-t", tok, "--separator", ""], stdin=ids).stdout == b"a bc"
