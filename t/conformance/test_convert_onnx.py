"""llm-convert --to onnx against ONNX's own checker and onnxruntime.

For a GPT-2 (tied), a Llama (grouped-query attention, untied) and a Qwen2
(q, k and v biases, one KV head, tied) model trained a few steps by
llm-train (test_infer_torch's trained()):
  a) onnx.checker.check_model(full_check=True) accepts the file (the
     graph, the opset, and strict shape inference through every node);
  b) onnxruntime's logits for a prompt with an empty past, then for one
     more token with the returned presents as the past, are within 1e-4
     relative (per row, by norm: |ort - ours| / |ours|) of llmux's own
     (build/t/llmux-logits: lib/infer.c, what llm-infer runs); a batch of
     two different prompts of one length gives each its own logits;
  c) a greedy loop in onnxruntime over the presents generates the same 32
     tokens as `llm-infer --temp 0 -n 32`.
Why 1e-4: both sides compute in float32 (unit roundoff 6e-8) with different
kernels and summation orders (GEMMs of 64..256 terms, softmax, norms; ours
takes norms and attention sums in double): in practice they agree to about
3e-7 relative (2e-6 for a 600M-parameter model of dim 2048), and 1e-4
leaves room for that across machines, while a wrong graph stays well above
it even where the part it gets wrong barely matters after 30 steps of
training (one layer's q bias zeroed: 3e-3; a norm's weights flattened to
their mean: 3e-3).

Besides: weights stored as float16 and bfloat16 (read so, or --dtype) match
ours on the same rounded weights; quantized (q8_0) tensors become float32
exactly as gguf's dequantizer makes them, and the model on them matches
ours on an f32 file of those floats; the tensors in OUT.data (ONNX's external
data, LLMUX_ONNX_EXTERNAL=1) give the same model; a conversion that fails
while writing leaves no file behind; and lib/onnx/onnx-subset.proto has
ONNX's field numbers, types and labels (against the onnx package's own
descriptors).
"""
import json
import os
import re
import resource
import signal
import subprocess

import numpy as np
import pytest

from common import ROOT, run
from test_infer_torch import trained
from test_train_torch import BIN, config_of
from test_train_torch import data  # noqa: F401  the module-scoped fixture

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
tokenizers = pytest.importorskip("tokenizers")

LOGITS = os.path.join(ROOT, "build", "t", "llmux-logits")
PROTO = os.path.join(ROOT, "lib", "onnx", "onnx-subset.proto")
PROMPT = "In the beginning God created"
PROMPT2 = "And God saw the light, that"
N = 32
TOL = 1e-4


def convert(src, dst, *args, env=None):
    p = subprocess.run([f"{BIN}/llm-convert", str(src), "--to", "onnx", "-o", str(dst), *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
                       env=None if env is None else {**os.environ, **env})
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return dst


def onnx_of(d, name, *args, suffix=""):
    dst = d / f"{name}{suffix}.onnx"
    if not dst.exists():
        convert(trained(d, name), dst, *args)
    return dst


def prompt_ids(d, text=PROMPT):
    return tokenizers.Tokenizer.from_file(str(d / "tok.json")).encode(text).ids


def ours_logits(model, *steps):
    out = run([LOGITS, model, *(",".join(map(str, s)) for s in steps)]).stdout
    return [np.array(s, dtype=np.float64) for s in json.loads(out)]


class Decoder:
    """An onnxruntime session of our graph, and its past."""

    def __init__(self, path):
        self.s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.pasts = [i for i in self.s.get_inputs() if i.name.startswith("past_key_values.")]
        self.outputs = [o.name for o in self.s.get_outputs()]

    def empty(self, batch):
        return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), np.float32) for i in self.pasts}

    def run(self, ids, past):
        """Logits [batch, seq, vocab] and the next past."""
        feed = {"input_ids": np.asarray(ids, dtype=np.int64), **past}
        out = dict(zip(self.outputs, self.s.run(None, feed)))
        nxt = {k: out[k.replace("past_key_values.", "present.")] for k in past}
        return out["logits"], nxt


def rel_rows(got, want):
    """The worst row's |got - want| / |want|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return max(np.linalg.norm(g - w) / np.linalg.norm(w) for g, w in zip(got, want))


def check_logits(path, model, ids, more):
    """b) for one file: the prompt, then one more token over the presents."""
    dec = Decoder(path)
    want = ours_logits(model, ids, [more])
    logits, past = dec.run([ids], dec.empty(1))
    assert rel_rows(logits[0], want[0]) < TOL
    cfg = config_of(model) if str(model).endswith(".safetensors") else None
    for k, v in past.items():
        assert v.shape[2] == len(ids), (k, v.shape)
        if cfg:
            assert v.shape == (1, cfg["n_kv_heads"], len(ids), cfg["dim"] // cfg["n_heads"])
    logits, past = dec.run([[more]], past)
    assert logits.shape[1] == 1
    assert rel_rows(logits[0], want[1]) < TOL
    assert all(v.shape[2] == len(ids) + 1 for v in past.values())


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2"])
def test_checker_accepts(data, name):  # noqa: F811
    path = onnx_of(data, name)
    onnx.checker.check_model(str(path), full_check=True)
    m = onnx.load(str(path))
    assert m.opset_import[0].version == 17 and m.ir_version == 8
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["config"]) == config_of(trained(data, name))
    assert json.loads(meta["tokenizer"]) == json.loads((data / "tok.json").read_text())
    names = [i.name for i in m.graph.initializer]
    assert len(names) == len(set(names))
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in m.graph.initializer)


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2"])
def test_logits_match_ours(data, name):  # noqa: F811
    ids = prompt_ids(data)
    check_logits(onnx_of(data, name), trained(data, name), ids, 17)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_batch_rows_are_independent(data, name):  # noqa: F811
    a, b = prompt_ids(data), prompt_ids(data, PROMPT2)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    dec = Decoder(onnx_of(data, name))
    logits, past = dec.run([a, b], dec.empty(2))
    model = trained(data, name)
    for row, ids in zip(logits, (a, b)):
        assert rel_rows(row, ours_logits(model, ids)[0]) < TOL
    logits, _ = dec.run([[5], [9]], past)
    assert rel_rows(logits[0], ours_logits(model, a, [5])[1]) < TOL
    assert rel_rows(logits[1], ours_logits(model, b, [9])[1]) < TOL


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2"])
def test_greedy_matches_llm_infer(data, name):  # noqa: F811
    model = trained(data, name)
    got = json.loads(run([f"{BIN}/llm-infer", model, "-p", PROMPT, "-n", N, "--temp", "0", "-f", "jsonl"]).stdout)
    ids = prompt_ids(data)
    assert got["prompt_tokens"] == len(ids)
    eos = tokenizers.Tokenizer.from_file(str(data / "tok.json")).token_to_id("<|endoftext|>")
    dec = Decoder(onnx_of(data, name))
    logits, past = dec.run([ids], dec.empty(1))
    gen = []
    while len(gen) < N:
        t = int(np.argmax(logits[0, -1]))
        if t == eos:
            break
        gen.append(t)
        logits, past = dec.run([[t]], past)
    assert gen == got["ids"], (gen, got["ids"])


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_weights(data, dtype):  # noqa: F811
    """Float16 weights as read (an f16 llmux file), bfloat16 by --dtype: stored
    so, Cast to float32 in the graph; ours runs the same rounded weights."""
    src = trained(data, "llama")
    half = data / f"llama.{dtype}.safetensors"
    if not half.exists():
        run([f"{BIN}/llm-convert", src, "--to", "llmux", "--dtype", dtype, "-o", half])
    path = data / f"llama.{dtype}.onnx"
    if dtype == "f16":
        convert(half, path)
    else:
        convert(src, path, "--dtype", "bf16")
    onnx.checker.check_model(str(path), full_check=True)
    m = onnx.load(str(path))
    want = onnx.TensorProto.FLOAT16 if dtype == "f16" else onnx.TensorProto.BFLOAT16
    assert all(i.data_type == want for i in m.graph.initializer)
    check_logits(path, half, prompt_ids(data), 17)


def test_quantized_is_dequantized(data):  # noqa: F811
    gguf = pytest.importorskip("gguf")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from onnx import numpy_helper
    q8 = data / "llama.q8_0.safetensors"
    if not q8.exists():
        run([f"{BIN}/llm-quantize", "-q", "q8_0", trained(data, "llama"), "-o", q8])
    path = convert(q8, data / "llama.q8_0.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    with open(q8, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    quant = json.loads(meta["quantization"])
    assert quant, "llm-quantize quantized nothing"
    raw = safetensors_numpy.load_file(str(q8))
    f32 = {}
    for k, v in raw.items():
        if k in quant:
            assert quant[k]["type"] == "q8_0"
            deq = gguf.quants.dequantize(v.reshape(-1, 34), gguf.GGMLQuantizationType.Q8_0)
            f32[k] = deq.reshape(quant[k]["shape"]).astype(np.float32)
        else:
            f32[k] = v.astype(np.float32)
    assert sorted(f32) == sorted(inits)
    for k in f32:   # bit for bit
        assert inits[k].dtype == np.float32 and np.array_equal(inits[k].view(np.uint32), f32[k].view(np.uint32)), k
    # ours, on an f32 file of those floats
    plain = data / "llama.q8_0-as-f32.safetensors"
    safetensors_numpy.save_file(f32, str(plain), metadata={k: v for k, v in meta.items() if k != "quantization"})
    check_logits(path, plain, prompt_ids(data), 17)


def test_external_data(data, tmp_path):  # noqa: F811
    path = convert(trained(data, "llama"), tmp_path / "ext.onnx", env={"LLMUX_ONNX_EXTERNAL": "1"})
    ext = tmp_path / "ext.onnx.data"
    assert ext.exists() and path.stat().st_size < 64 * 1024 < ext.stat().st_size
    onnx.checker.check_model(str(path), full_check=True)
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        assert t.data_location == onnx.TensorProto.EXTERNAL
        loc = {e.key: e.value for e in t.external_data}
        assert loc["location"] == "ext.onnx.data" and int(loc["offset"]) % 4096 == 0
    # the same initializers as the inline file, and the same logits
    from onnx import numpy_helper
    a = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(onnx_of(data, "llama"))).graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    check_logits(path, trained(data, "llama"), prompt_ids(data), 17)


@pytest.mark.parametrize("external", ["0", "1"])
def test_failure_leaves_nothing(data, tmp_path, external):  # noqa: F811
    """A write that fails (the file size limit: EFBIG, SIGXFSZ ignored) exits 1
    and leaves no file, temporary or final."""
    src = trained(data, "llama")
    out = tmp_path / "out"
    out.mkdir()

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    p = subprocess.run([f"{BIN}/llm-convert", str(src), "--to", "onnx", "-o", str(out / "m.onnx")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, preexec_fn=limit,
                       env={**os.environ, "LLMUX_ONNX_EXTERNAL": external})
    assert p.returncode == 1, p.stderr
    assert b"m.onnx" in p.stderr
    assert list(out.iterdir()) == []


# ---- lib/onnx/onnx-subset.proto against the onnx package's descriptors ----

SCALARS = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "uint64": "TYPE_UINT64", "string": "TYPE_STRING",
           "bytes": "TYPE_BYTES", "float": "TYPE_FLOAT", "double": "TYPE_DOUBLE"}


def parse_proto(text):
    """{message path: {"fields": [(label, type, name, number, packed, oneof)], "enums": {name: {value: n}}}}"""
    text = re.sub(r"//[^\n]*", "", text)
    tokens = re.findall(r"[A-Za-z_][\w.]*|\d+|[{}=;\[\]]", text)
    msgs, stack, i = {}, [], 0
    while i < len(tokens):
        t = tokens[i]
        if t in ("syntax", "package"):
            i = tokens.index(";", i) + 1
        elif t == "message":
            stack.append(("message", tokens[i + 1]))
            msgs[".".join(n for k, n in stack if k == "message")] = {"fields": [], "enums": {}}
            i += 3
        elif t in ("enum", "oneof"):
            stack.append((t, tokens[i + 1]))
            if t == "enum":
                path = ".".join(n for k, n in stack if k == "message")
                msgs[path]["enums"][tokens[i + 1]] = {}
            i += 3
        elif t == "}":
            stack.pop()
            i += 1
        elif stack and stack[-1][0] == "enum":
            path = ".".join(n for k, n in stack if k == "message")
            msgs[path]["enums"][stack[-1][1]][t] = int(tokens[i + 2])
            i += 4
        else:
            label = "optional"
            if t in ("optional", "repeated", "required"):
                label, i = t, i + 1
            typ, name, num = tokens[i], tokens[i + 1], int(tokens[i + 3])
            i += 4
            packed = False
            if tokens[i] == "[":
                end = tokens.index("]", i)
                packed = tokens[i + 1:end] == ["packed", "=", "true"]
                i = end + 1
            assert tokens[i] == ";", tokens[i - 4:i + 1]
            i += 1
            oneof = stack[-1][1] if stack[-1][0] == "oneof" else None
            path = ".".join(n for k, n in stack if k == "message")
            msgs[path]["fields"].append((label, typ, name, num, packed, oneof))
    return msgs


def test_proto_subset_has_onnx_numbers():
    from google.protobuf.descriptor import FieldDescriptor as FD
    from onnx import onnx_ml_pb2
    msgs = parse_proto(open(PROTO).read())
    want = {"ModelProto", "GraphProto", "NodeProto", "AttributeProto", "TensorProto", "ValueInfoProto", "TypeProto",
            "TypeProto.Tensor", "TensorShapeProto", "TensorShapeProto.Dimension", "OperatorSetIdProto",
            "StringStringEntryProto"}
    assert want <= set(msgs), want - set(msgs)
    for path, m in msgs.items():
        d = onnx_ml_pb2.DESCRIPTOR.message_types_by_name[path.split(".")[0]]
        for part in path.split(".")[1:]:
            d = d.nested_types_by_name[part]
        for label, typ, name, num, packed, oneof in m["fields"]:
            f = d.fields_by_name.get(name)
            assert f is not None, f"{path}.{name} is not ONNX's"
            assert f.number == num, (path, name, num, f.number)
            assert f.is_repeated == (label == "repeated"), (path, name)
            assert f.is_packed == packed, (path, name)
            assert (f.containing_oneof.name if f.containing_oneof else None) == oneof, (path, name)
            if typ in SCALARS:
                assert f.type == getattr(FD, SCALARS[typ]), (path, name, typ)
            else:
                ref = f.message_type or f.enum_type
                assert ref is not None and ref.name == typ.split(".")[-1], (path, name, typ)
        for ename, values in m["enums"].items():
            e = d.enum_types_by_name[ename]
            for v, n in values.items():
                assert e.values_by_name[v].number == n, (path, ename, v)
