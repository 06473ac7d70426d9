"""safetensors conformance: our reader and writer against the safetensors
package from PyPI (the Rust crate behind Hugging Face's loaders).

  a) files the package writes are read by `llm-inspect --compact` as their
     header says (checked with struct + json here, and with safe_open);
  b) `llmux-testgen copy` (our reader, then our writer) reproduces them byte
     for byte (metadata with two or more keys: the package orders those keys
     at random and we sort them, so there the headers are compared parsed and
     the data sections byte for byte);
  c) the file `llmux-testgen safetensors` writes loads in the package with
     exactly the bytes documented at the top of t/helpers/llmux-testgen.c.
"""
import json
import os
import zlib

import numpy as np
import pytest
import safetensors
import safetensors.numpy as stnp

from common import INSPECT, TESTGEN, header_tensors, inspect_json, read_header, run

# dtype code -> (element size, numpy type or None, the package's torch-style name)
DTYPES = {
    "F64": (8, np.float64, "float64"),
    "F32": (4, np.float32, "float32"),
    "F16": (2, np.float16, "float16"),
    "BF16": (2, None, "bfloat16"),
    "F8_E4M3": (1, None, "float8_e4m3fn"),
    "F8_E5M2": (1, None, "float8_e5m2"),
    "I64": (8, np.int64, "int64"),
    "I32": (4, np.int32, "int32"),
    "I16": (2, np.int16, "int16"),
    "I8": (1, np.int8, "int8"),
    "U64": (8, np.uint64, "uint64"),
    "U32": (4, np.uint32, "uint32"),
    "U16": (2, np.uint16, "uint16"),
    "U8": (1, np.uint8, "uint8"),
    "BOOL": (1, np.bool_, "bool"),
}
NUMPY_DTYPES = [d for d, (_, t, _) in DTYPES.items() if t is not None]
OTHER_DTYPES = [d for d, (_, t, _) in DTYPES.items() if t is None]


def nelem(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class Case:
    """Tensors (name, dtype, shape) with seeded random contents, and metadata,
    written by the package: save_file when every dtype is a numpy one (unless
    spec is forced), else serialize() with TensorSpec."""

    def __init__(self, ident, tensors, metadata=None, spec=False):
        self.ident = ident
        self.metadata = metadata
        self.spec = spec or any(DTYPES[d][1] is None for _, d, _ in tensors)
        rng = np.random.default_rng(zlib.crc32(ident.encode()))
        self.tensors = []
        for name, dtype, shape in tensors:
            nbytes = nelem(shape) * DTYPES[dtype][0]
            if dtype == "BOOL":
                raw = rng.integers(0, 2, nbytes, dtype=np.uint8).tobytes()
            else:
                raw = rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
            self.tensors.append((name, dtype, list(shape), raw))

    def write(self, path):
        if not self.spec:
            arrays = {n: np.frombuffer(raw, dtype=DTYPES[d][1]).reshape(s).copy() for n, d, s, raw in self.tensors}
            stnp.save_file(arrays, str(path), metadata=self.metadata)
            return
        keep = []
        specs = {}
        for name, dtype, shape, raw in self.tensors:
            buf = np.frombuffer(raw, dtype=np.uint8).copy()
            keep.append(buf)
            specs[name] = safetensors.TensorSpec(dtype=DTYPES[dtype][2], shape=shape,
                                                 data_ptr=buf.ctypes.data, data_len=len(raw))
        data = bytes(safetensors.serialize(specs, metadata=self.metadata))
        del keep
        with open(path, "wb") as f:
            f.write(data)

    def numpy_arrays(self):
        return {n: np.frombuffer(raw, dtype=DTYPES[d][1]).reshape(s) for n, d, s, raw in self.tensors}


ODD_SHAPES = [("scalar", []), ("empty", [0]), ("vector", [7]), ("odd", [3, 1, 2]),
              ("zero_mid", [2, 0, 3]), ("ones", [1, 1, 1, 1, 5]), ("prime", [11, 13])]

CASES = [Case(f"dtype-{d}", [(n, d, s) for n, s in ODD_SHAPES], {"dtype": d}) for d in DTYPES]
CASES += [
    Case("numpy-all-dtypes",
         [(f"w.{d.lower()}", d, [i % 4 + 1, 3]) for i, d in enumerate(reversed(NUMPY_DTYPES))], {"format": "np"}),
    Case("all-dtypes-serialize",
         [(f"{chr(ord('z') - i)}_{d}", d, [2, i + 1]) for i, d in enumerate(DTYPES)], {"format": "pt"}),
    Case("numpy-via-serialize", [(f"t{i}", d, [5]) for i, d in enumerate(NUMPY_DTYPES)], {"format": "pt"}, spec=True),
    Case("no-metadata", [("a", "F32", [4, 4]), ("b", "I64", [3]), ("c", "U8", [9])], None),
    Case("empty-metadata", [("a", "F32", [2])], {}),
    Case("metadata-only", [], {"format": "pt"}),
    Case("nothing", [], None),
    Case("huge-empty-dims", [("a", "F32", [2**40, 0]), ("b", "I8", [0, 2**62]), ("c", "U16", [0, 3, 2**31])],
         {"format": "pt"}),
    Case("names", [(n, "F32", [2]) for n in
                   ["model.layers.10.mlp.weight", "model.layers.2.mlp.weight", "Z", "a", "_", "é", "ẞ", "€uro",
                    "日本", "a b", 'quo"te', "back\\slash", "tab\there", "x" * 200, "0", "~"]], {"format": "pt"}),
    Case("many-tensors", [(f"layer.{i}.{p}", d, [i % 5 + 1, (i * 7) % 3 + 1])
                          for i in range(40) for p, d in (("w", "F16"), ("b", "F32"), ("idx", "I32"))],
         {"format": "pt"}),
    Case("large", [("emb", "F32", [300, 257]), ("norm", "F16", [513]), ("bytes", "U8", [4099]),
                   ("ids", "I64", [1000])], {"format": "pt"}),
    Case("metadata-2-keys", [("a", "F32", [3])], {"format": "pt", "step": "100"}),
    Case("metadata-many", [("a", "BF16", [3, 2]), ("b", "F32", [1])], {
        "format": "pt",
        "config": json.dumps({"n_layer": 12, "n_embd": 768, "name": "gpt2 \u00e9\u4e2d"}),
        "unicode": "\u00e9t\u00e9 \u65e5\u672c\u8a9e \U0001f600",
        "escapes": 'quote " backslash \\ newline \n tab \t ctrl \x01 \x1f slash /',
        "empty": "",
        "z_long": "x" * 5000,
    }),
    Case("quantized-q8_0", [("q_weight", "U8", [136]), ("norm", "F32", [64])],
         {"quantization": json.dumps({"q_weight": {"type": "q8_0", "shape": [2, 64]}}, separators=(",", ":"))}),
]
IDS = [c.ident for c in CASES]


def quant_of(metadata):
    return json.loads(metadata["quantization"]) if metadata and "quantization" in metadata else {}


# ---- a) files the package writes, read by llm-inspect ----

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_inspect_reads_python_file(case, tmp_path):
    path = tmp_path / "py.safetensors"
    case.write(path)
    n, header, data = read_header(path)
    tensors = header_tensors(header)
    # the header says what the case asked for (else this test checks nothing)
    assert {k: (v["dtype"], v["shape"]) for k, v in tensors.items()} == \
        {name: (d, s) for name, d, s, _ in case.tensors}

    doc = inspect_json(path)
    assert doc["format"] == "safetensors"
    assert doc["file"] == str(path)
    assert doc["file_bytes"] == os.path.getsize(path)
    assert doc["header_bytes"] == n
    assert doc["metadata"] == header.get("__metadata__", {})
    assert doc["tensor_count"] == len(tensors)
    names = [t["name"] for t in doc["tensors"]]
    assert len(names) == len(set(names)), f"a tensor listed twice: {names}"
    got = {t["name"]: {f: t[f] for f in ("dtype", "shape", "data_offsets")} for t in doc["tensors"]}
    assert got == {k: {f: v[f] for f in ("dtype", "shape", "data_offsets")} for k, v in tensors.items()}
    for t in doc["tensors"]:
        assert t["bytes"] == t["data_offsets"][1] - t["data_offsets"][0]
    begins = [t["data_offsets"][0] for t in doc["tensors"]]
    assert begins == sorted(begins), "tensors are not listed in data-section order"
    quant = quant_of(case.metadata)
    for t in doc["tensors"]:
        if t["name"] in quant:
            assert t["quantization"] == quant[t["name"]]
        else:
            assert "quantization" not in t
    assert doc["parameter_count"] == sum(nelem(quant[k]["shape"]) if k in quant else nelem(v["shape"])
                                         for k, v in tensors.items())

    # what the package itself sees in the file
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(got)
        for k in f.keys():
            sl = f.get_slice(k)
            assert sl.get_shape() == got[k]["shape"]
            assert sl.get_dtype() == got[k]["dtype"]
        assert (f.metadata() or {}) == doc["metadata"]


# ---- b) our reader then our writer reproduces the package's file ----

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_copy_reproduces_python_file(case, tmp_path):
    src, dst = tmp_path / "py.safetensors", tmp_path / "ours.safetensors"
    case.write(src)
    run([TESTGEN, "copy", src, dst])
    a, b = src.read_bytes(), dst.read_bytes()
    na, ha, da = read_header(a)
    nb, hb, db = read_header(b)
    if len(case.metadata or {}) <= 1:
        assert a == b, f"not byte-identical:\n python: {a[8:8 + na]!r}\n llmux:  {b[8:8 + nb]!r}"
    else:
        assert hb == ha
        assert list(header_tensors(hb)) == list(header_tensors(ha)), "tensors in another order in the header"
        assert list(hb["__metadata__"]) == sorted(hb["__metadata__"]), "metadata keys not sorted"
        assert nb == na
        assert db == da
    # and the package reads our copy back with the same bytes
    flat = dict(safetensors.deserialize(b))
    assert sorted(flat) == sorted(n for n, _, _, _ in case.tensors)
    for name, dtype, shape, raw in case.tensors:
        assert flat[name]["dtype"] == dtype and list(flat[name]["shape"]) == shape
        assert bytes(flat[name]["data"]) == raw, f"{name}: data differs"
    if all(DTYPES[d][1] is not None for _, d, _, _ in case.tensors):
        loaded = stnp.load_file(str(dst))
        want = case.numpy_arrays()
        assert sorted(loaded) == sorted(want)
        for k, arr in want.items():
            assert loaded[k].dtype == arr.dtype and loaded[k].shape == arr.shape
            assert loaded[k].tobytes() == arr.tobytes()


# ---- c) the file llmux-testgen writes, loaded by the package ----

# Tensor k of the testgen file, in our dtype order (lib/dtype.h).
TESTGEN_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
                 "I32", "U32", "F32", "F64", "I64", "U64"]
TESTGEN_META = {
    "format": "llmux",
    "note": 'written by llmux-testgen: \u00e9\n"q"',
    "quantization": '{"q_weight":{"type":"q8_0","shape":[2,64]}}',
}


def pattern_bytes(k, dtype):
    """The documented pattern: (31*j + 17*k + 7) & 0xff; BOOL (j + k) & 1."""
    n = 15 * DTYPES[dtype][0]
    if dtype == "BOOL":
        return bytes((j + k) & 1 for j in range(n))
    return bytes((31 * j + 17 * k + 7) & 0xFF for j in range(n))


def pattern_expected():
    """name -> (dtype, shape, bytes) for every tensor the testgen file holds."""
    want = {f"t_{d}": (d, [3, 5], pattern_bytes(k, d)) for k, d in enumerate(TESTGEN_ORDER)}
    want["q_weight"] = ("U8", [136], bytes((13 * j + 1) & 0xFF for j in range(136)))
    want["scalar"] = ("F32", [], np.float32(1.5).tobytes())
    want["empty"] = ("F32", [0], b"")
    return want


@pytest.fixture(scope="module")
def testgen_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("testgen") / "ours.safetensors"
    run([TESTGEN, "safetensors", path])
    return path


def test_testgen_numpy_dtypes_load_bit_exact(testgen_file):
    # safetensors.numpy.load_file() gives up on the whole file at its BF16
    # tensor (numpy has no bfloat16), so load the numpy dtypes one by one
    # through safe_open(framework="numpy"), the same path load_file takes.
    want = pattern_expected()
    with safetensors.safe_open(str(testgen_file), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(want)
        checked = 0
        for name, (dtype, shape, raw) in want.items():
            if DTYPES[dtype][1] is None:
                continue
            arr = f.get_tensor(name)
            assert arr.dtype == np.dtype(DTYPES[dtype][1]), name
            assert list(arr.shape) == shape, name
            assert arr.tobytes() == raw, f"{name}: bytes differ from the documented pattern"
            checked += 1
        assert checked == len(NUMPY_DTYPES) + 3   # + q_weight, scalar, empty
    assert float(safetensors.safe_open(str(testgen_file), framework="numpy").get_tensor("scalar")) == 1.5


def test_testgen_deserialize_bit_exact(testgen_file):
    flat = safetensors.deserialize(testgen_file.read_bytes())
    got = {name: (v["dtype"], list(v["shape"]), bytes(v["data"])) for name, v in flat}
    assert len(got) == len(flat)
    want = pattern_expected()
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs"
    for d in OTHER_DTYPES:   # the ones numpy cannot hold, said explicitly
        assert got[f"t_{d}"][2] == want[f"t_{d}"][2]


def test_testgen_metadata(testgen_file):
    with safetensors.safe_open(str(testgen_file), framework="numpy") as f:
        meta = f.metadata()
    assert meta == TESTGEN_META
    assert json.loads(meta["quantization"]) == {"q_weight": {"type": "q8_0", "shape": [2, 64]}}
    assert inspect_json(testgen_file)["metadata"] == TESTGEN_META


def test_testgen_header_is_spec_exact(testgen_file):
    n, header, data = read_header(testgen_file)
    assert (8 + n) % 8 == 0, "header not padded to a multiple of 8"
    assert list(header["__metadata__"]) == sorted(TESTGEN_META)
    spans = sorted(tuple(v["data_offsets"]) for v in header_tensors(header).values())
    at = 0
    for b, e in spans:
        assert b == at, f"hole or overlap at {b} (expected {at})"
        at = e
    assert at == len(data), "data section longer than its tensors"


def test_testgen_matches_python_serialize(testgen_file):
    # The same tensors and metadata serialized by the package: the same layout,
    # the same bytes (metadata has three keys, so compare that part parsed).
    flat = safetensors.deserialize(testgen_file.read_bytes())
    keep, specs = [], {}
    for name, v in flat:
        buf = np.frombuffer(bytes(v["data"]), dtype=np.uint8).copy()
        keep.append(buf)
        torch_name = DTYPES[v["dtype"]][2]
        specs[name] = safetensors.TensorSpec(dtype=torch_name, shape=list(v["shape"]),
                                             data_ptr=buf.ctypes.data, data_len=len(buf))
    theirs = bytes(safetensors.serialize(specs, metadata=TESTGEN_META))
    ours = testgen_file.read_bytes()
    nt, ht, dt = read_header(theirs)
    no, ho, do = read_header(ours)
    assert ho == ht
    assert list(header_tensors(ho)) == list(header_tensors(ht))
    assert no == nt
    assert do == dt


# ---- dtypes the package writes that llmux does not read ----

@pytest.mark.parametrize("torch_name", ["complex64", "float8_e8m0fnu", "float4_e2m1fn_x2", "float8_e4m3fnuz",
                                        "float8_e5m2fnuz"])
def test_inspect_refuses_unknown_dtype(torch_name, tmp_path):
    buf = np.zeros(16, dtype=np.uint8)
    nbytes = 16 if torch_name == "complex64" else 2   # two elements (float4: two bytes of packed pairs)
    spec = safetensors.TensorSpec(dtype=torch_name, shape=[2], data_ptr=buf.ctypes.data, data_len=nbytes)
    code = spec.dtype
    if code in DTYPES:
        pytest.skip(f"{torch_name} is {code}, a dtype llmux reads")
    path = tmp_path / "py.safetensors"
    path.write_bytes(bytes(safetensors.serialize({"x": spec}, metadata=None)))
    p = run([INSPECT, "--compact", path], check=False)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, f"exit {p.returncode}, stderr {err!r}"
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line on stderr: {err!r}"
    assert str(path) in err and code in err, f"the message names neither the file nor {code}: {err!r}"
    assert p.stdout == b""
