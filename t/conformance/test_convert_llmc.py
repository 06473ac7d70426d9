"""llm.c's GPT-2 checkpoints (llm-convert --to llmc, lib/cv_llmc.c) against a
reader and a writer of the format written here, from llm.c's facts alone
(train_gpt2.py's write_model, train_gpt2.c's gpt2_build_from_checkpoint):
a header of 256 little-endian int32 (magic 20240326, version 3 for float32
or 5 for bfloat16, max_seq_len, vocab_size, num_layers, num_heads, channels,
padded_vocab_size, then zeros), then wte (Vp, C), wpe (T, C), ln1w, ln1b,
qkvw (L, 3C, C), qkvb, attprojw, attprojb, ln2w, ln2b, fcw (L, 4C, C), fcb,
fcprojw (L, C, 4C), fcprojb, lnfw, lnfb, matrices (out, in).

For the GPT-2 model of test_infer_torch (trained 30 steps), in float32 and
bfloat16:
  a) our export, read by numpy and put into transformers' GPT2LMHeadModel
     (Conv1D takes (in, out): every matrix transposed), gives the logits of
     our own file (hf_model) within 1e-4 relative per row (they are the
     same weights: in practice equal), and the log-probabilities llm-infer
     computes for its greedy continuation within 1e-4;
     the header says what the config says, the vocabulary padded to a
     multiple of 128 with zero rows, and the file is exactly that long;
  b) a file written here (padded rows of junk, as llm.c's random
     initialisation leaves them) imports to our tensors exactly: float32
     bit for bit, bfloat16 as torch rounds float32 to it; the padded rows
     are dropped (our vocab_size is llm.c's vocab_size, not the padded one);
  c) our import of our export is bit-identical to the model converted
     directly (llm-convert ORIG --to llmux [--dtype bf16]): the tensors and
     the config; the tokenizer is not there (llm.c keeps it in another file),
     and exporting the import again gives the same .bin byte for byte;
  d) with the tokenizer carried over (here, with the safetensors package),
     llm-infer's greedy tokens and log-probabilities are the original's.
"""
import json

import pytest

from common import read_header, run
from test_train_torch import BIN, config_of, hf_model, load
from test_train_torch import data  # noqa: F401  the module-scoped fixture
from test_infer_torch import PROMPT, trained

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

MAGIC = 20240326
N = 24
DTYPES = {"f32": [], "bf16": ["--dtype", "bf16"]}


def llmc_shapes(T, V, L, C, Vp):
    return [("wte", (Vp, C)), ("wpe", (T, C)), ("ln1w", (L, C)), ("ln1b", (L, C)), ("qkvw", (L, 3 * C, C)),
            ("qkvb", (L, 3 * C)), ("attprojw", (L, C, C)), ("attprojb", (L, C)), ("ln2w", (L, C)), ("ln2b", (L, C)),
            ("fcw", (L, 4 * C, C)), ("fcb", (L, 4 * C)), ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)),
            ("lnfw", (C,)), ("lnfb", (C,))]


def read_llmc(path):
    """(header dict, {name: float32 array}) of an llm.c model file, checking its framing."""
    raw = open(path, "rb").read()
    assert len(raw) >= 1024
    h = np.frombuffer(raw[:1024], dtype="<i4")
    assert h[0] == MAGIC, h[0]
    assert h[1] in (3, 5), h[1]
    assert not h[8:].any(), "the rest of the header is not zero"
    hdr = dict(zip(["version", "T", "V", "L", "NH", "C", "Vp"], (int(x) for x in h[1:8])))
    shapes = llmc_shapes(hdr["T"], hdr["V"], hdr["L"], hdr["C"], hdr["Vp"])
    total = sum(int(np.prod(s)) for _, s in shapes)
    esize = 4 if hdr["version"] == 3 else 2
    assert len(raw) == 1024 + total * esize, (len(raw), 1024 + total * esize)
    if hdr["version"] == 3:
        flat = np.frombuffer(raw, dtype="<f4", offset=1024)
    else:
        flat = (np.frombuffer(raw, dtype="<u2", offset=1024).astype(np.uint32) << 16).view(np.float32)
    params, at = {}, 0
    for name, s in shapes:
        k = int(np.prod(s))
        params[name] = flat[at:at + k].reshape(s)
        at += k
    return hdr, params


def write_llmc(path, hdr, params):
    """An llm.c model file from float32 arrays (bfloat16 rounded by torch for version 5)."""
    h = np.zeros(256, dtype="<i4")
    h[:8] = [MAGIC, hdr["version"], hdr["T"], hdr["V"], hdr["L"], hdr["NH"], hdr["C"], hdr["Vp"]]
    with open(path, "wb") as f:
        f.write(h.tobytes())
        for name, s in llmc_shapes(hdr["T"], hdr["V"], hdr["L"], hdr["C"], hdr["Vp"]):
            a = np.ascontiguousarray(params[name], dtype=np.float32)
            assert a.shape == s, (name, a.shape, s)
            if hdr["version"] == 3:
                f.write(a.astype("<f4").tobytes())
            else:
                f.write(torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes())


def llmc_from_ours(cfg, ours, Vp, rng=None):
    """llm.c's arrays from our tensors (as write_model makes them from transformers')."""
    L, C, V = cfg["n_layers"], cfg["dim"], cfg["vocab_size"]
    t = {k: v.float().numpy() for k, v in ours.items()}
    pad = np.zeros((Vp - V, C), np.float32) if rng is None else rng.standard_normal((Vp - V, C)).astype(np.float32)
    p = {"wte": np.concatenate([t["tok_embeddings.weight"], pad]), "wpe": t["pos_embeddings.weight"],
         "lnfw": t["norm.weight"], "lnfb": t["norm.bias"]}
    per = {"ln1w": ["attn_norm.weight"], "ln1b": ["attn_norm.bias"],
           "qkvw": ["attn.q.weight", "attn.k.weight", "attn.v.weight"],
           "qkvb": ["attn.q.bias", "attn.k.bias", "attn.v.bias"],
           "attprojw": ["attn.o.weight"], "attprojb": ["attn.o.bias"], "ln2w": ["ffn_norm.weight"],
           "ln2b": ["ffn_norm.bias"], "fcw": ["ffn.up.weight"], "fcb": ["ffn.up.bias"],
           "fcprojw": ["ffn.down.weight"], "fcprojb": ["ffn.down.bias"]}
    for name, parts in per.items():
        p[name] = np.stack([np.concatenate([t[f"layers.{i}.{x}"] for x in parts]) for i in range(L)])
    return p


def hf_from_llmc(hdr, p, dtype):
    """transformers' GPT2LMHeadModel from llm.c's arrays: the first V rows of wte, Conv1D's (in, out)."""
    L, C, V = hdr["L"], hdr["C"], hdr["V"]
    hc = transformers.GPT2Config(vocab_size=V, n_positions=hdr["T"], n_embd=C, n_layer=L, n_head=hdr["NH"],
                                 n_inner=4 * C, activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0,
                                 attn_pdrop=0, layer_norm_epsilon=1e-5, tie_word_embeddings=True)
    m = transformers.GPT2LMHeadModel(hc)
    T = lambda a: torch.from_numpy(np.array(a))  # noqa: E731
    sd = {"transformer.wte.weight": T(p["wte"][:V]), "transformer.wpe.weight": T(p["wpe"]),
          "transformer.ln_f.weight": T(p["lnfw"]), "transformer.ln_f.bias": T(p["lnfb"])}
    for i in range(L):
        h = f"transformer.h.{i}."
        sd[h + "ln_1.weight"], sd[h + "ln_1.bias"] = T(p["ln1w"][i]), T(p["ln1b"][i])
        sd[h + "attn.c_attn.weight"], sd[h + "attn.c_attn.bias"] = T(p["qkvw"][i].T), T(p["qkvb"][i])
        sd[h + "attn.c_proj.weight"], sd[h + "attn.c_proj.bias"] = T(p["attprojw"][i].T), T(p["attprojb"][i])
        sd[h + "ln_2.weight"], sd[h + "ln_2.bias"] = T(p["ln2w"][i]), T(p["ln2b"][i])
        sd[h + "mlp.c_fc.weight"], sd[h + "mlp.c_fc.bias"] = T(p["fcw"][i].T), T(p["fcb"][i])
        sd[h + "mlp.c_proj.weight"], sd[h + "mlp.c_proj.bias"] = T(p["fcprojw"][i].T), T(p["fcprojb"][i])
    m.config._attn_implementation = "eager"
    missing, unexpected = m.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight") and "attn.bias" not in k
               and "masked_bias" not in k]
    assert not missing and not unexpected, (missing, unexpected)
    return m.to(dtype).eval()


def source(d, dt):
    """The trained GPT-2 model as the given dtype (the bf16 one converted by llm-convert)."""
    orig = trained(d, "gpt2")
    if dt == "f32":
        return orig
    path = d / "gpt2.trained.bf16.safetensors"
    if not path.exists():
        run([f"{BIN}/llm-convert", orig, "--to", "llmux", "--dtype", "bf16", "-o", path])
    return path


def export(d, dt):
    out = d / f"gpt2.{dt}.bin"
    if not out.exists():
        run([f"{BIN}/llm-convert", trained(d, "gpt2"), "--to", "llmc", *DTYPES[dt], "-o", out])
    return out


def greedy(path):
    out = run([f"{BIN}/llm-infer", path, "-p", PROMPT, "-n", N, "--temp", "0", "-f", "jsonl"]).stdout
    return json.loads(out)


def rel(a, b):
    return (a.double() - b.double()).norm().item() / max(b.double().norm().item(), 1e-30)


@pytest.mark.parametrize("dt", list(DTYPES))
def test_export_read_independently(data, dt):  # noqa: F811
    src = source(data, dt)
    cfg = config_of(src)
    hdr, p = read_llmc(export(data, dt))
    V = cfg["vocab_size"]
    assert hdr == {"version": 3 if dt == "f32" else 5, "T": cfg["ctx_len"], "V": V, "L": cfg["n_layers"],
                   "NH": cfg["n_heads"], "C": cfg["dim"], "Vp": (V + 127) // 128 * 128}, (hdr, cfg)
    assert hdr["Vp"] > V  # the padding is exercised
    assert not p["wte"][V:].any(), "the padded rows are not zero"
    theirs = hf_from_llmc(hdr, p, torch.float64)
    mine = hf_model(cfg, load(src), torch.float64)
    got = greedy(src)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(data / "tok.json"))
    prompt_ids = tok(PROMPT)["input_ids"]
    seq = torch.tensor([prompt_ids + got["ids"]])
    with torch.no_grad():
        a, b = theirs(input_ids=seq).logits[0], mine(input_ids=seq).logits[0]
    worst = max(rel(a[r], b[r]) for r in range(a.shape[0]))
    assert worst < 1e-4, worst
    # and our own forward pass (llm-infer, float32) on the original
    lp = torch.log_softmax(a, dim=-1)
    ref = [lp[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(got["ids"])]
    assert max(abs(x - y) for x, y in zip(got["logprobs"], ref)) < 1e-4
    # greedy: each chosen token is the reading's argmax
    assert [int(lp[len(prompt_ids) - 1 + i].argmax()) for i in range(len(got["ids"]))] == got["ids"]


@pytest.mark.parametrize("dt", list(DTYPES))
def test_import_independent_file(data, dt):  # noqa: F811
    orig = trained(data, "gpt2")
    cfg = config_of(orig)
    ours = load(orig)
    V, C = cfg["vocab_size"], cfg["dim"]
    Vp = (V + 127) // 128 * 128
    p = llmc_from_ours(cfg, ours, Vp, rng=np.random.default_rng(1))   # junk in the padded rows
    hdr = {"version": 3 if dt == "f32" else 5, "T": cfg["ctx_len"], "V": V, "L": cfg["n_layers"],
           "NH": cfg["n_heads"], "C": C, "Vp": Vp}
    path = data / f"theirs.{dt}.bin"
    write_llmc(path, hdr, p)
    out = data / f"theirs.{dt}.safetensors"
    run([f"{BIN}/llm-convert", path, "--to", "llmux", "-o", out])
    assert config_of(out) == cfg
    got = load(out)
    assert sorted(got) == sorted(ours)
    for k, v in ours.items():
        want = v if dt == "f32" else v.to(torch.bfloat16)
        assert got[k].dtype == want.dtype and got[k].shape == want.shape, (k, got[k].dtype, got[k].shape)
        assert torch.equal(got[k].view(torch.int16 if dt == "bf16" else torch.int32),
                           want.view(torch.int16 if dt == "bf16" else torch.int32)), k
    _, header, _ = read_header(out)
    assert "tokenizer" not in header.get("__metadata__", {})


def tensors_bytes(path):
    """{name: (dtype, shape, bytes)} and the metadata of a safetensors file, read with read_header."""
    _, header, body = read_header(path)
    t = {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]])
         for k, v in header.items() if k != "__metadata__"}
    return t, header.get("__metadata__", {})


@pytest.mark.parametrize("dt", list(DTYPES))
def test_roundtrip_is_bit_identical(data, dt):  # noqa: F811
    orig = trained(data, "gpt2")
    x = export(data, dt)
    back = data / f"back.{dt}.safetensors"
    direct = data / f"direct.{dt}.safetensors"
    run([f"{BIN}/llm-convert", x, "--to", "llmux", "-o", back])
    run([f"{BIN}/llm-convert", orig, "--to", "llmux", *DTYPES[dt], "-o", direct])
    (tb, mb), (td, md) = tensors_bytes(back), tensors_bytes(direct)
    assert sorted(tb) == sorted(td)
    for k in td:
        assert tb[k] == td[k], k
    assert json.loads(mb["config"]) == json.loads(md["config"])
    assert "tokenizer" not in mb and "tokenizer" in md
    # exporting the import again, with --dtype or without (as read), gives the same file
    for args in (DTYPES[dt], []):
        again = data / f"again.{dt}.bin"
        run([f"{BIN}/llm-convert", back, "--to", "llmc", *args, "-o", again])
        assert open(again, "rb").read() == open(x, "rb").read(), args


@pytest.mark.parametrize("dt", list(DTYPES))
def test_greedy_tokens_equal(data, dt):  # noqa: F811
    src = source(data, dt)
    back = data / f"back.tok.{dt}.safetensors"
    run([f"{BIN}/llm-convert", export(data, dt), "--to", "llmux", "-o", back])
    # carry the tokenizer over: llm.c's file has none
    _, meta = tensors_bytes(back)
    _, src_meta = tensors_bytes(src)
    meta = dict(meta, tokenizer=src_meta["tokenizer"])
    with_tok = data / f"back.withtok.{dt}.safetensors"
    safetensors_torch.save_file(safetensors_torch.load_file(str(back)), str(with_tok), metadata=meta)
    a, b = greedy(src), greedy(with_tok)
    assert len(a["ids"]) == N
    assert a["ids"] == b["ids"] and a["logprobs"] == b["logprobs"], (a, b)
