"""Stream conformance: llmux msgpack streams against the msgpack package from
PyPI (and numpy for the token bytes).

  a) streams `llmux-testgen stream` writes decode with msgpack.Unpacker into
     exactly the documented header, records and end record;
  b) streams Python's msgpack writes (other key orders, extra fields, nested
     maps, floats, negative ints, unicode, token_fields, wide encodings) print
     with `llm-inspect FILE` as JSON lines equal to what was packed;
  c) broken streams written by Python are refused: exit 1, one line on
     stderr naming the file.
"""
import json
import struct

import msgpack
import numpy as np
import pytest

from common import INSPECT, TESTGEN, run

# ---- a) our writer, Python's reader ----

HEADER_KEYS = ["type", "format", "version", "kind", "token_width", "tokenizer", "vocab_size"]


def pattern_record(i, width):
    """Record i as documented at the top of t/helpers/llmux-testgen.c."""
    n = i % 7 + 1
    mod = 65536 if width == 2 else 200000
    tokens = [(i * 1000 + j * 37) % mod for j in range(n)]
    mask = bytes((i + j) & 1 for j in range(n))
    return tokens, mask


def decode_all(data):
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True)
    unpacker.feed(data)
    objs = list(unpacker)
    return objs, unpacker.tell()


@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("n", [0, 1, 50, 3000])
def test_testgen_stream_decodes(width, n, tmp_path):
    path = tmp_path / "ours.stream"
    run([TESTGEN, "stream", path, width, n])
    data = path.read_bytes()
    objs, used = decode_all(data)
    assert used == len(data), f"{len(data) - used} bytes after the last object"
    assert len(objs) == n + 2
    header, records, end = objs[0], objs[1:-1], objs[-1]
    assert list(header) == HEADER_KEYS, "header fields in another order than stream.h documents"
    assert header == {"type": "header", "format": "llmux-stream", "version": 1, "kind": "docs",
                      "token_width": width, "tokenizer": "testgen", "vocab_size": 65536 if width == 2 else 200000}
    dt = "<u2" if width == 2 else "<u4"
    for i, rec in enumerate(records):
        assert list(rec) == ["type", "id", "tokens", "mask"], f"record {i}: fields {list(rec)}"
        assert rec["type"] == "doc" and rec["id"] == i
        assert isinstance(rec["tokens"], bytes) and isinstance(rec["mask"], bytes), f"record {i}: not bin"
        tokens, mask = pattern_record(i, width)
        assert len(rec["tokens"]) == width * len(tokens)
        assert np.frombuffer(rec["tokens"], dtype=dt).tolist() == tokens, f"record {i}: tokens"
        assert rec["mask"] == mask, f"record {i}: mask"
    assert end == {"type": "end", "records": n}
    assert list(end) == ["type", "records"]


@pytest.mark.parametrize("width", [2, 4])
def test_testgen_stream_to_stdout_is_the_same(width, tmp_path):
    path = tmp_path / "ours.stream"
    run([TESTGEN, "stream", path, width, 20])
    assert run([TESTGEN, "stream", "-", width, 20]).stdout == path.read_bytes()


@pytest.mark.parametrize("width", [2, 4])
def test_testgen_stream_inspects(width, tmp_path):
    # our reader on our writer, against the documented pattern
    path = tmp_path / "ours.stream"
    run([TESTGEN, "stream", path, width, 30])
    lines = [json.loads(l) for l in run([INSPECT, path]).stdout.decode().splitlines()]
    assert lines[0]["token_width"] == width
    for i, rec in enumerate(lines[1:-1]):
        tokens, mask = pattern_record(i, width)
        assert rec == {"type": "doc", "id": i, "tokens": tokens, "mask": list(mask)}
    assert lines[-1] == {"type": "end", "records": 30}
    assert len(lines) == 32


# ---- b) Python's writer, our reader ----

def pack(obj, **kw):
    return msgpack.packb(obj, use_bin_type=True, **kw)


def toks(values, width):
    return np.asarray(values, dtype="<u2" if width == 2 else "<u4").tobytes()


def expected_json(obj, token_fields=None, width=None):
    """What llm-inspect should print for a packed object: bin in a token field
    of a record (top level only) as integers, every other bin as bytes."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if token_fields is not None and isinstance(v, bytes) and k in token_fields:
                out[k] = np.frombuffer(v, dtype="<u2" if width == 2 else "<u4").tolist()
            else:
                out[k] = expected_json(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [expected_json(v) for v in obj]
    if isinstance(obj, bytes):
        return list(obj)
    return obj


class PyStream:
    """A stream packed by Python: header, records, end (each a dict), and
    optionally raw bytes for any part (wide encodings)."""

    def __init__(self, ident, header, records, end=None, pack_kw=None, raw=None):
        self.ident, self.header, self.records = ident, header, records
        self.end = end if end is not None else {"records": len(records), "type": "end"}
        self.pack_kw = pack_kw or {}
        self.raw = raw

    def data(self):
        if self.raw is not None:
            return self.raw
        return b"".join(pack(o, **self.pack_kw) for o in [self.header, *self.records, self.end])

    def expected_lines(self):
        width = self.header["token_width"]
        fields = self.header.get("token_fields", ["tokens"])
        out = [expected_json(o, fields, width) for o in [self.header, *self.records]]
        out.append({"type": "end", "records": len(self.records)})
        return out


def reordered_w4():
    header = {"token_width": 4, "kind": "docs", "vocab_size": 200019, "version": 1, "tokenizer": "o200k_base",
              "format": "llmux-stream", "created": "2024-05-01T12:00:00Z", "type": "header",
              "config": {"lr": 3e-4, "layers": [1, 2, 3], "neg": -7, "nested": {"deep": True, "none": None},
                         "name": "modèle \u65e5\u672c"}}
    rng = np.random.default_rng(4)
    records = [
        {"tokens": toks([0, 1, 255, 256, 65535, 65536, 200018, 2**32 - 1], 4), "type": "doc", "id": 0},
        {"type": "doc", "score": -1.25e-3, "id": 1, "text": "h\u00e9llo w\u00f6rld \u65e5\u672c \U0001f600 \"q\" \\",
         "tokens": toks(rng.integers(0, 2**32, 33, dtype=np.uint64), 4), "offset": -2**63, "big": 2**63 - 1,
         "small": -1, "neg8": -128, "neg16": -32769, "pi": 3.141592653589793, "huge": 1.5e300, "tiny": -5e-324},
        {"id": 2, "flags": [True, False, None, -3, "s", 0.5, [b"\x00\xff"]], "type": "doc",
         "meta": {"source": "web", "weights": [0.5, -0.5], "raw": b"\x00\x01\xff", "tokens": b"\x01\x02\x03\x04",
                  "deeper": {"a": {"b": {"c": []}}}},
         "mask": b"\x01\x00\x01", "tokens": toks([7, 8, 9], 4), "empty_map": {}, "empty_str": ""},
        {"type": "sequence", "tokens": b"", "id": 3},
    ]
    return PyStream("reordered-w4", header, records)


def width2():
    header = {"format": "llmux-stream", "type": "header", "kind": "docs", "token_width": 2, "version": 1,
              "vocab_size": 65536}
    rng = np.random.default_rng(2)
    records = [{"tokens": toks([0, 1, 65535, 256, 255], 2), "type": "doc"}]
    records += [{"type": "doc", "id": i, "tokens": toks(rng.integers(0, 65536, i % 13), 2),
                 "mask": bytes(rng.integers(0, 2, i % 13, dtype=np.uint8))} for i in range(1, 40)]
    return PyStream("width2", header, records)


def token_fields():
    header = {"type": "header", "format": "llmux-stream", "version": 1, "kind": "pairs", "token_width": 2,
              "token_fields": ["input_ids", "labels"]}
    records = [{"type": "pair", "input_ids": toks([1, 2, 3, 65535], 2), "labels": toks([2, 3, 4], 2),
                "tokens": b"\x05\x00\x06\x00", "mask": b"\x01\x01"},
               {"labels": toks([], 2), "type": "pair", "input_ids": toks([9], 2)}]
    return PyStream("token-fields", header, records)


def token_fields_w4():
    header = {"type": "header", "format": "llmux-stream", "version": 1, "kind": "pairs", "token_width": 4,
              "token_fields": ["prompt", "completion", "tokens"]}
    records = [{"type": "pair", "prompt": toks([100000, 3], 4), "completion": toks([4, 2**31], 4),
                "tokens": toks([1], 4), "other": toks([1], 4)}]
    return PyStream("token-fields-w4", header, records)


def float32():
    header = {"type": "header", "format": "llmux-stream", "version": 1, "kind": "metrics", "token_width": 4}
    records = [{"type": "metric", "loss": 0.1, "lr": -2.5, "big": 1e30, "step": 7}]
    s = PyStream("float32", header, records, pack_kw={"use_single_float": True})
    f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
    s.expected_lines = lambda: [expected_json(header, ["tokens"], 4),
                                {"type": "metric", "loss": f32(0.1), "lr": -2.5, "big": f32(1e30), "step": 7},
                                {"type": "end", "records": 1}]
    return s


def many_records():
    header = {"type": "header", "format": "llmux-stream", "version": 1, "kind": "docs", "token_width": 4}
    rng = np.random.default_rng(3)
    records = [{"type": "doc", "id": i, "tokens": toks(rng.integers(0, 200000, int(rng.integers(0, 60))), 4)}
               for i in range(3000)]
    return PyStream("many-records", header, records)


def big_record():
    header = {"type": "header", "format": "llmux-stream", "version": 1, "kind": "docs", "token_width": 4}
    rng = np.random.default_rng(5)
    records = [{"type": "doc", "id": 0, "tokens": toks(rng.integers(0, 2**32, 100000, dtype=np.uint64), 4)},
               {"type": "doc", "id": 1, "tokens": toks([1, 2], 4)},
               {"type": "doc", "id": 2, "text": "x" * 300000}]
    return PyStream("big-record", header, records)


def no_records():
    header = {"kind": "docs", "token_width": 4, "version": 1, "format": "llmux-stream", "type": "header"}
    return PyStream("no-records", header, [])


# Wide encodings, as other msgpack writers (Go, Java, hand-rolled C) produce
# them: map16/map32, str8/str16/str32, bin32, int64/uint64 for small values.
def _w_str(s, form):
    b = s.encode()
    return {"str8": b"\xd9" + struct.pack(">B", len(b)), "str16": b"\xda" + struct.pack(">H", len(b)),
            "str32": b"\xdb" + struct.pack(">I", len(b))}[form] + b


def _w_map(pairs, form):
    head = b"\xde" + struct.pack(">H", len(pairs)) if form == "map16" else b"\xdf" + struct.pack(">I", len(pairs))
    return head + b"".join(k + v for k, v in pairs)


def wide_encodings():
    u64 = lambda v: b"\xcf" + struct.pack(">Q", v)
    i64 = lambda v: b"\xd3" + struct.pack(">q", v)
    u16 = lambda v: b"\xcd" + struct.pack(">H", v)
    u32 = lambda v: b"\xce" + struct.pack(">I", v)
    bin32 = lambda b: b"\xc6" + struct.pack(">I", len(b)) + b
    bin16 = lambda b: b"\xc5" + struct.pack(">H", len(b)) + b
    tk = toks([1, 70000, 2**32 - 2], 4)
    header = _w_map([(_w_str("version", "str8"), i64(1)), (_w_str("type", "str16"), _w_str("header", "str32")),
                     (_w_str("format", "str32"), _w_str("llmux-stream", "str8")),
                     (_w_str("token_width", "str8"), u16(4)), (_w_str("kind", "str8"), _w_str("docs", "str16")),
                     (_w_str("count", "str8"), i64(-5))], "map32")
    rec = _w_map([(_w_str("type", "str8"), _w_str("doc", "str8")), (_w_str("id", "str8"), u64(0)),
                  (_w_str("tokens", "str32"), bin32(tk)), (_w_str("mask", "str8"), bin16(b"\x01\x00\x01")),
                  (_w_str("f", "str8"), b"\xcb" + struct.pack(">d", 2.5)),
                  (_w_str("g", "str8"), b"\xca" + struct.pack(">f", -0.5))], "map16")
    end = _w_map([(_w_str("type", "str8"), _w_str("end", "str8")), (_w_str("records", "str8"), u32(1))], "map16")
    s = PyStream("wide-encodings", {"token_width": 4}, [None])
    s.raw = header + rec + end
    s.expected_lines = lambda: [
        {"version": 1, "type": "header", "format": "llmux-stream", "token_width": 4, "kind": "docs", "count": -5},
        {"type": "doc", "id": 0, "tokens": [1, 70000, 2**32 - 2], "mask": [1, 0, 1], "f": 2.5, "g": -0.5},
        {"type": "end", "records": 1}]
    # the reference reads it too (so the bytes are msgpack, not our idea of it)
    objs, used = decode_all(s.raw)
    assert used == len(s.raw) and objs[1]["tokens"] == tk and objs[0]["version"] == 1
    return s


PY_STREAMS = [reordered_w4(), width2(), token_fields(), token_fields_w4(), float32(), many_records(),
              big_record(), no_records(), wide_encodings()]


def inspect_lines(args):
    p = run([INSPECT, *args])
    assert p.stderr == b"", f"llm-inspect wrote to stderr: {p.stderr!r}"
    return [json.loads(l) for l in p.stdout.decode().splitlines()]


@pytest.mark.parametrize("stream", PY_STREAMS, ids=[s.ident for s in PY_STREAMS])
def test_inspect_prints_python_stream(stream, tmp_path):
    path = tmp_path / "py.stream"
    path.write_bytes(stream.data())
    got = inspect_lines([path])
    want = stream.expected_lines()
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"line {i + 1} differs"


@pytest.mark.parametrize("how", ["no-extension", "format-option", "stdin"])
def test_inspect_finds_python_stream(how, tmp_path):
    # the same stream, named without .stream, given --format, or on stdin
    stream = reordered_w4()
    data = stream.data()
    path = tmp_path / ("py.stream" if how == "format-option" else "py")
    path.write_bytes(data)
    if how == "stdin":
        p = run([INSPECT, "-"], stdin=data)
        got = [json.loads(l) for l in p.stdout.decode().splitlines()]
    else:
        got = inspect_lines(["--format", "stream", path] if how == "format-option" else [path])
    assert got == stream.expected_lines()


# ---- c) broken streams ----

def _valid_parts():
    header = {"type": "header", "format": "llmux-stream", "version": 1, "kind": "docs", "token_width": 4}
    records = [{"type": "doc", "id": i, "tokens": toks(list(range(i * 10, i * 10 + 20)), 4)} for i in range(3)]
    return pack(header), [pack(r) for r in records], pack({"type": "end", "records": 3})


def broken_streams():
    h, recs, end = _valid_parts()
    body = b"".join(recs)
    return {
        "no-end-record": h + body,
        "no-end-record-no-records": h,
        "end-count-too-high": h + body + pack({"type": "end", "records": 4}),
        "end-count-too-low": h + body + pack({"type": "end", "records": 2}),
        "end-count-missing": h + body + pack({"type": "end"}),
        "end-count-negative": h + body + pack({"records": -3, "type": "end"}),
        "record-cut-in-half": h + recs[0] + recs[1][:len(recs[1]) // 2],
        "record-cut-after-first-byte": h + recs[0] + recs[1][:1],
        "end-record-cut": h + body + end[:-1],
        "header-cut": h[:len(h) // 2],
        "garbage-byte-c1-between-records": h + recs[0] + b"\xc1" + recs[1] + recs[2] + end,
        "garbage-text-between-records": h + recs[0] + b"garbage" + recs[1] + recs[2] + end,
        "garbage-ff-between-records": h + recs[0] + b"\xff\xfe\xfd" + recs[1] + recs[2] + end,
        "record-is-an-array": h + recs[0] + pack(["doc", 1, 2]) + recs[1] + recs[2] + end,
        "record-is-a-string": h + recs[0] + pack("doc") + recs[1] + recs[2] + end,
        "record-is-an-int": h + recs[0] + pack(5) + recs[1] + recs[2] + end,
        "record-is-nil": h + body + pack(None) + end,
        "record-without-type": h + recs[0] + pack({"id": 9, "tokens": b""}) + recs[1] + recs[2] + end,
        "record-with-int-key": h + recs[0] + pack({"type": "doc", 1: 2}) + recs[1] + recs[2] + end,
        "data-after-end-record": h + body + end + recs[0],
        "byte-after-end-record": h + body + end + b"\x00",
        "newline-after-end-record": h + body + end + b"\n",
        "second-end-record": h + body + end + end,
        "second-header": h + recs[0] + h + recs[1] + recs[2] + end,
        "empty-file": b"",
    }


BROKEN = broken_streams()


@pytest.mark.parametrize("ident", list(BROKEN))
def test_inspect_rejects_broken_stream(ident, tmp_path):
    path = tmp_path / f"{ident}.stream"
    path.write_bytes(BROKEN[ident])
    p = run([INSPECT, path], check=False)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, f"exit {p.returncode}, stderr {err!r}"
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line on stderr: {err!r}"
    assert str(path) in err, f"the message does not name the file: {err!r}"
    for line in p.stdout.decode().splitlines():
        assert json.loads(line).get("type") != "end", "printed an end record for a broken stream"
