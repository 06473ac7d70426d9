"""llm-convert and GGUF against the gguf package from PyPI (llama.cpp's own
Python reader and writer, gguf-py):

  a) gguf's GGUFReader reads our export of every model (gpt2; llama with
     grouped-query attention and untied embeddings; qwen2-like llama with
     q, k and v biases) in fp32, f16, bf16, q8_0, q4_0 and q4_k: every key
     llama.cpp's loader wants, with its value and type, and every tensor
     under llama.cpp's name, with ne in GGUF's order and the type we had
     (F32, F16, BF16, Q8_0, Q4_0, Q4_K: blocks copied, not re-quantized);
  b) its dequantized tensors (gguf.quants.dequantize) equal ours bit for bit
     (ours dequantized by llmux-quant -d) once the q/k row permutation of
     llama.cpp's converter is undone here (and gpt2's fused attn_qkv split),
     and the quantized tensors' bytes equal our blocks, rows reordered;
  c) our import of our export is our own model again, byte for byte:
     `llm-convert X.gguf --to llmux` and `llm-convert ORIG --to llmux` write
     the same file, and llm-infer gives the same greedy tokens on both;
  d) a GGUF written by gguf's own GGUFWriter, without the
     tokenizer.huggingface.json we add, imports to the same tensors and
     config, with a tokenizer rebuilt from tokenizer.ggml.* that encodes a
     text to the same ids as the original tokenizer;
  e) --dtype converts float tensors and leaves blocks alone; nf4 tensors are
     dequantized to F32 (GGUF has no nf4);
  f) where llama.cpp's Python binding (llama-cpp-python) can be imported,
     by this interpreter or by $LLMUX_LLAMA_CPP_PYTHON, llama.cpp itself
     loads our exports, tokenizes the prompt to our ids and continues it
     greedily with our tokens (fp32, f16, bf16, q8_0, q4_0: its Q4_K dot
     products round the activations to 8 bits, ours do not, so q4_k is left
     out). It compiles llama.cpp from source, so it is not among the pinned
     references; without it this test skips.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common import ROOT, read_header, run
from test_infer_torch import PROMPT, trained
from test_quant_gguf import ours_dequantize
from test_train_torch import BIN, CONFIGS
from test_train_torch import data  # noqa: F401  the module-scoped fixture

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402

CONVERT = os.path.join(BIN, "llm-convert")
GGUF_TYPE = {"F32": QT.F32, "F16": QT.F16, "BF16": QT.BF16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_k": QT.Q4_K}
# q4_k's blocks of 256 need wider matrices than the others' models have
WIDE = {
    "gpt2": ["--arch", "gpt2", "--layers", "1", "--heads", "4", "--dim", "256", "--ffn", "512", "--ctx", "96"],
    "llama": ["--arch", "llama", "--layers", "1", "--heads", "4", "--kv-heads", "2", "--dim", "256", "--ffn", "512",
              "--ctx", "96", "--untied"],
}
ARCHS = ["gpt2", "llama", "qwen2"]
VARIANTS = ["fp32", "f16", "bf16", "q8_0", "q4_0", "q4_k"]
CASES = [(a, v) for a in ARCHS for v in VARIANTS if not (v == "q4_k" and a == "qwen2")]


def wide(d, name):
    path = d / f"{name}.wide.safetensors"
    if not path.exists():
        run([f"{BIN}/llm-train", "--tokenizer", d / "tok.json", *WIDE[name], "--seed", "7", d / "data", "--steps", "5",
             "--lr", "3e-3", "-o", path])
    return path


def model(d, name, variant):
    """Our model of the architecture in the variant (made once per module)."""
    base = wide(d, name) if variant == "q4_k" else trained(d, name)
    if variant == "fp32":
        return base
    path = d / f"{name}.{variant}.safetensors"
    if not path.exists():
        if variant in ("f16", "bf16"):
            run([CONVERT, base, "--to", "llmux", "--dtype", variant, "-o", path])
        else:
            run([f"{BIN}/llm-quantize", "-q", variant, base, "-o", path])
    return path


def export(d, name, variant, *args):
    out = d / f"{name}.{variant}{''.join(args).replace('-', '')}.gguf"
    if not out.exists():
        run([CONVERT, model(d, name, variant), "--to", "gguf", *args, "-o", out])
    return out


def ours(path):
    """Our file's config, metadata and tensors: name -> (dtype or block type, logical shape, raw bytes)."""
    _, header, body = read_header(path)
    meta = header.pop("__metadata__", {})
    quant = json.loads(meta.get("quantization", "{}"))
    tensors = {}
    for name, t in header.items():
        if name.startswith("optim."):   # llm-train's checkpoint state: not part of the model
            continue
        b, e = t["data_offsets"]
        q = quant.get(name)
        tensors[name] = (q["type"] if q else t["dtype"], tuple(q["shape"] if q else t["shape"]), body[b:e])
    return json.loads(meta["config"]), meta, tensors


def floats(tmp_path, kind, shape, raw):
    if kind == "F32":
        x = np.frombuffer(raw, "<f4")
    elif kind == "F16":
        x = np.frombuffer(raw, "<f2").astype(np.float32)
    elif kind == "BF16":
        x = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        x = ours_dequantize(tmp_path, kind, np.frombuffer(raw, np.uint8))
    return x.reshape(shape)


def unpermute(w, heads):
    """Undoes llama.cpp's convert_hf_to_gguf permute of q/k rows (our order is
    transformers'): there, w.reshape(heads, 2, hd/2, ...).swapaxes(1, 2)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_names(cfg):
    """Our tensor name -> (GGUF name, first row, rows, heads to unpermute or 0)."""
    gpt2 = cfg["arch"] == "gpt2"
    hd = cfg["dim"] // cfg["n_heads"]
    q, kv = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
    m = {"tok_embeddings.weight": ("token_embd.weight", None), "norm.weight": ("output_norm.weight", None),
         "output.weight": ("output.weight", None)}
    if gpt2:
        m["pos_embeddings.weight"] = ("position_embd.weight", None)
        m["norm.bias"] = ("output_norm.bias", None)
    per = {"attn_norm": "attn_norm", "attn.o": "attn_output", "ffn_norm": "ffn_norm", "ffn.gate": "ffn_gate",
           "ffn.up": "ffn_up", "ffn.down": "ffn_down", "attn.q": "attn_q", "attn.k": "attn_k", "attn.v": "attn_v"}
    for layer in range(cfg["n_layers"]):
        for o, g in per.items():
            for s in ("weight", "bias"):
                ours_name, g_name = f"layers.{layer}.{o}.{s}", f"blk.{layer}.{g}.{s}"
                if gpt2 and o in ("attn.q", "attn.k", "attn.v"):
                    first = {"attn.q": 0, "attn.k": q, "attn.v": q + kv}[o]
                    m[ours_name] = (f"blk.{layer}.attn_qkv.{s}", (first, kv if o != "attn.q" else q, 0))
                elif not gpt2 and o in ("attn.q", "attn.k"):
                    m[ours_name] = (g_name, (0, q if o == "attn.q" else kv,
                                             cfg["n_heads"] if o == "attn.q" else cfg["n_kv_heads"]))
                else:
                    m[ours_name] = (g_name, None)
    return m


def field(reader, key):
    f = reader.fields[key]
    return f.contents(), f.types


@pytest.mark.parametrize("name,variant", CASES)
def test_gguf_reads_our_export(data, name, variant):  # noqa: F811
    cfg, meta, mine = ours(model(data, name, variant))
    r = gguf.GGUFReader(str(export(data, name, variant)))
    arch = cfg["arch"]
    V = gguf.GGUFValueType
    want = {
        "general.architecture": (arch, V.STRING), "general.alignment": (32, V.UINT32),
        f"{arch}.context_length": (cfg["ctx_len"], V.UINT32), f"{arch}.embedding_length": (cfg["dim"], V.UINT32),
        f"{arch}.block_count": (cfg["n_layers"], V.UINT32), f"{arch}.feed_forward_length": (cfg["ffn_dim"], V.UINT32),
        f"{arch}.attention.head_count": (cfg["n_heads"], V.UINT32),
        f"{arch}.attention.head_count_kv": (cfg["n_kv_heads"], V.UINT32),
        f"{arch}.vocab_size": (cfg["vocab_size"], V.UINT32),
        "tokenizer.ggml.model": ("gpt2", V.STRING), "tokenizer.ggml.pre": ("gpt-2", V.STRING),
        "tokenizer.ggml.eos_token_id": (0, V.UINT32), "tokenizer.ggml.bos_token_id": (0, V.UINT32),
        "tokenizer.huggingface.json": (meta["tokenizer"], V.STRING),
    }
    if arch == "llama":
        want[f"{arch}.rope.freq_base"] = (cfg["rope_theta"], V.FLOAT32)
        want[f"{arch}.rope.dimension_count"] = (cfg["dim"] // cfg["n_heads"], V.UINT32)
        want[f"{arch}.attention.layer_norm_rms_epsilon"] = (cfg["norm_eps"], V.FLOAT32)
    else:
        want[f"{arch}.attention.layer_norm_epsilon"] = (cfg["norm_eps"], V.FLOAT32)
    for key, (value, vtype) in want.items():
        got, types = field(r, key)
        assert types == [vtype], (key, types)
        if vtype == V.FLOAT32:
            assert np.float32(got) == np.float32(value), (key, got, value)
        else:
            assert got == value, (key, got, value)
    # the tokenizer: tokens and merges as tokenizer.json has them, <|endoftext|> a control token
    tj = json.loads(meta["tokenizer"])
    tokens, types = field(r, "tokenizer.ggml.tokens")
    assert types == [V.ARRAY, V.STRING] and len(tokens) == cfg["vocab_size"]
    assert {t: i for i, t in enumerate(tokens)} == tj["model"]["vocab"]
    tt, types = field(r, "tokenizer.ggml.token_type")
    assert types == [V.ARRAY, V.INT32]
    assert tt[0] == gguf.TokenType.CONTROL and set(tt[1:]) == {gguf.TokenType.NORMAL}
    merges, _ = field(r, "tokenizer.ggml.merges")
    assert merges == [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    # every tensor under llama.cpp's name, ne in GGUF order, our type
    names = gguf_names(cfg)
    expect, widened = {}, set()
    for o, (kind, shape, _) in mine.items():
        g, part = names[o]
        ne = list(reversed(shape))
        if part:
            ne[-1] = expect.get(g, (None, [0] * len(ne)))[1][-1] + ne[-1]
        if len(shape) == 1 and kind in ("F16", "BF16"):
            # llama.cpp's binary ops take norms and biases in F32 only: widened, and the key says from what
            widened.add(f"{g}:{kind}")
            kind = "F32"
        expect[g] = (GGUF_TYPE[kind], ne)
    got = {t.name: (t.tensor_type, [int(x) for x in t.shape]) for t in r.tensors}
    assert got == expect
    if widened:
        value, types = field(r, "llmux.widened")
        assert types == [V.ARRAY, V.STRING] and set(value) == widened and len(value) == len(widened)
    else:
        assert "llmux.widened" not in r.fields
    assert [t.name for t in r.tensors][:1] == ["token_embd.weight"]
    assert "output.weight" not in got if cfg["tied_embeddings"] else "output.weight" in got
    if variant.startswith("q"):
        assert any(t.tensor_type == GGUF_TYPE[variant] for t in r.tensors)


@pytest.mark.parametrize("name,variant", CASES)
def test_gguf_values_are_ours(data, tmp_path, name, variant):  # noqa: F811
    cfg, _, mine = ours(model(data, name, variant))
    r = gguf.GGUFReader(str(export(data, name, variant)))
    by_name = {t.name: t for t in r.tensors}
    for o, (g, part) in gguf_names(cfg).items():
        if o not in mine:
            continue
        kind, shape, raw = mine[o]
        t = by_name[g]
        theirs = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        blocks = np.asarray(t.data).view(np.uint8).reshape(theirs.shape[0], -1)   # rows (elements of a vector)
        if part:
            first, rows, heads = part
            theirs, blocks = theirs[first:first + rows], blocks[first:first + rows]
            if heads:
                theirs, blocks = unpermute(theirs, heads), unpermute(blocks, heads)
        want = floats(tmp_path, kind, shape, raw)
        assert theirs.shape == want.shape, (o, theirs.shape, want.shape)
        assert np.array_equal(theirs.view(np.uint32), want.astype(np.float32).view(np.uint32)), o
        if kind not in ("F16", "BF16") or len(shape) == 2:
            assert blocks.tobytes() == raw, o   # the very bytes: copied, not re-quantized


def greedy(path):
    out = run([f"{BIN}/llm-infer", path, "-p", PROMPT, "-n", 24, "--temp", "0", "-f", "jsonl"]).stdout
    return json.loads(out)["ids"]


@pytest.mark.parametrize("name,variant", CASES)
def test_import_of_export_is_bit_identical(data, name, variant):  # noqa: F811
    src = model(data, name, variant)
    back, ref = data / f"{name}.{variant}.back.safetensors", data / f"{name}.{variant}.ref.safetensors"
    run([CONVERT, export(data, name, variant), "--to", "llmux", "-o", back])
    run([CONVERT, src, "--to", "llmux", "-o", ref])
    assert back.read_bytes() == ref.read_bytes()
    ids = greedy(back)
    assert len(ids) > 0 and ids == greedy(src)


def rewrite_without_hf_json(src, dst):
    """src again through gguf's own GGUFWriter, less tokenizer.huggingface.json:
    a file that llama.cpp's tools, not ours, laid out."""
    r = gguf.GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(dst), arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "tokenizer.huggingface.json"):
            continue
        value = f.contents()
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, value, f.types[0], sub_type=f.types[-1])
        else:
            w.add_key_value(key, value, f.types[0])
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("name,variant", [("llama", "q8_0"), ("gpt2", "fp32"), ("qwen2", "f16")])
def test_foreign_gguf_and_rebuilt_tokenizer(data, tmp_path, name, variant):  # noqa: F811
    plain = tmp_path / "plain.gguf"
    rewrite_without_hf_json(export(data, name, variant), plain)
    assert "tokenizer.huggingface.json" not in gguf.GGUFReader(str(plain)).fields
    back, ref = tmp_path / "back.safetensors", tmp_path / "ref.safetensors"
    run([CONVERT, plain, "--to", "llmux", "-o", back])
    run([CONVERT, model(data, name, variant), "--to", "llmux", "-o", ref])
    c1, m1, t1 = ours(back)
    c2, m2, t2 = ours(ref)
    assert c1 == c2 and t1 == t2
    assert m1["tokenizer"] != m2["tokenizer"]   # rebuilt, not copied
    text = data / "text.txt"
    a = run([f"{BIN}/llm-tokenize", "-t", back, text, "-f", "ids"]).stdout
    b = run([f"{BIN}/llm-tokenize", "-t", data / "tok.json", text, "-f", "ids"]).stdout
    assert a == b and len(a) > 100
    assert greedy(back) == greedy(ref)


def test_dtype_converts_floats_and_keeps_blocks(data, tmp_path):  # noqa: F811
    r = gguf.GGUFReader(str(export(data, "llama", "q8_0", "--dtype", "bf16")))
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == QT.Q8_0 and types["token_embd.weight"] == QT.BF16
    assert types["blk.0.attn_norm.weight"] == QT.F32   # vectors stay F32 for llama.cpp, and say they were BF16
    assert "blk.0.attn_norm.weight:BF16" in r.fields["llmux.widened"].contents()
    # and come back as BF16: what --dtype bf16 makes of the model in llmux
    back, ref = tmp_path / "back.safetensors", tmp_path / "ref.safetensors"
    run([CONVERT, export(data, "llama", "q8_0", "--dtype", "bf16"), "--to", "llmux", "-o", back])
    run([CONVERT, model(data, "llama", "q8_0"), "--to", "llmux", "--dtype", "bf16", "-o", ref])
    assert back.read_bytes() == ref.read_bytes()


def test_nf4_is_dequantized(data, tmp_path):  # noqa: F811
    src = data / "llama.nf4.safetensors"
    run([f"{BIN}/llm-quantize", "-q", "nf4", trained(data, "llama"), "-o", src])
    out = tmp_path / "nf4.gguf"
    run([CONVERT, src, "--to", "gguf", "-o", out])
    cfg, _, mine = ours(src)
    r = gguf.GGUFReader(str(out))
    by_name = {t.name: t for t in r.tensors}
    assert mine["layers.0.attn.q.weight"][0] == "nf4"
    for o in ("layers.0.attn.q.weight", "layers.1.ffn.up.weight"):
        g, part = gguf_names(cfg)[o]
        t = by_name[g]
        assert t.tensor_type == QT.F32
        theirs = np.array(t.data)
        if part and part[2]:
            theirs = unpermute(theirs, part[2])
        want = floats(tmp_path, *mine[o])
        assert np.array_equal(theirs, want), o


LLAMA_CPP_SCRIPT = r"""
import json, sys
import numpy as np
from llama_cpp import Llama
path, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=96, logits_all=True, verbose=False, n_threads=2)
ids = llm.tokenize(prompt.encode(), add_bos=False, special=False)
seq = list(ids)
for _ in range(n):
    llm.reset()
    llm.eval(seq)
    seq.append(int(np.argmax(np.array(llm.scores[len(seq) - 1]))))
print(json.dumps({"prompt": ids, "greedy": seq[len(ids):]}))
"""


def llama_cpp_python():
    for exe in (os.environ.get("LLMUX_LLAMA_CPP_PYTHON"), sys.executable):
        if exe and subprocess.run([exe, "-c", "import llama_cpp"], capture_output=True).returncode == 0:
            return exe
    return None


@pytest.mark.parametrize("name,variant", [c for c in CASES if c[1] != "q4_k"])
def test_llama_cpp_runs_our_export(data, name, variant):  # noqa: F811
    exe = llama_cpp_python()
    if not exe:
        pytest.skip("llama-cpp-python is not installed (set LLMUX_LLAMA_CPP_PYTHON to an interpreter that has it)")
    src = model(data, name, variant)
    got = json.loads(run([exe, "-c", LLAMA_CPP_SCRIPT, export(data, name, variant), PROMPT, 24]).stdout)
    prompt_ids = json.loads(run([f"{BIN}/llm-tokenize", "-t", src, "-f", "ids"], stdin=PROMPT.encode()).stdout)
    assert got["prompt"] == prompt_ids
    ours_ids = greedy(src)
    assert got["greedy"][:len(ours_ids)] == ours_ids, (got["greedy"], ours_ids)
