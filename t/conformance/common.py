"""Helpers shared by the conformance tests: where the programs are, running
them, and an independent reading of a safetensors header (struct + json)."""
import json
import os
import struct
import subprocess

ROOT = os.environ.get("LLMUX_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSPECT = os.path.join(ROOT, "bin", "llm-inspect")
TESTGEN = os.path.join(ROOT, "build", "t", "llmux-testgen")


def run(args, stdin=None, check=True):
    """Runs a program; with check, a non-zero exit fails the test with its stderr."""
    p = subprocess.run([str(a) for a in args], input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited with {p.returncode}: {p.stderr.decode(errors='replace').strip()}")
    return p


def inspect_json(path):
    """`llm-inspect --compact FILE` parsed: one JSON document on one line."""
    out = run([INSPECT, "--compact", path]).stdout.decode()
    assert out.endswith("\n") and out.count("\n") == 1, f"--compact printed more than one line: {out!r}"
    return json.loads(out)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in a JSON object: {keys}"
    return dict(pairs)


def read_header(path_or_bytes):
    """Returns (N, header as a dict in file order, data section bytes), checking
    the framing on the way: N fits the file, the header is one JSON object
    without duplicate keys, padded with spaces only."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            data = f.read()
    assert len(data) >= 8, "file shorter than 8 bytes"
    (n,) = struct.unpack("<Q", data[:8])
    assert 8 + n <= len(data), f"header length {n} runs past the file ({len(data)} bytes)"
    text = data[8:8 + n].decode("utf-8")
    header = json.loads(text, object_pairs_hook=_no_duplicates)
    assert isinstance(header, dict)
    body = text.rstrip(" ")
    assert json.loads(body) == header and body.endswith("}"), "header is padded with something other than spaces"
    return n, header, data[8 + n:]


def header_tensors(header):
    return {k: v for k, v in header.items() if k != "__metadata__"}
