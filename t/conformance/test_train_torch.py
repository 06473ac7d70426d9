"""Training conformance: our forward and backward passes and our AdamW step
against PyTorch autograd on transformers' own models, with the same weights.

For a GPT-2 config (GPT2LMHeadModel), a Llama config with grouped-query
attention and untied embeddings (LlamaForCausalLM), and a Qwen2 config (q, k
and v biases; Qwen2ForCausalLM), each small and freshly initialised by
llm-train --init --steps 0:

  a) the loss of one batch (build/t/llmux-grad) within 1e-5 relative of
     transformers' loss, computed in float64 (the reference: our float32
     should be within float32 rounding of the exact value);
  b) every parameter's gradient within 1e-4 relative error by norm
     (|ours - ref| / |ref|) of autograd's in float64;
  c) the logits within 1e-4 relative (by norm, per row);
  d) one llm-train step (AdamW, constant learning rate, weight decay on
     matrices and embeddings, with and without clipping) equal to
     torch.optim.AdamW's step from the same parameters and our gradients:
     the moments within 1e-6 relative (they are bit-identical in practice),
     the parameters within 2 float32 ulps of the parameter plus 2 ulps of
     the update (|diff| <= 2.4e-7 (|param| + |update|)): the two compute the
     same float32 operations in the same order, but torch's vectorised sqrt
     on the CPU is not correctly rounded, so a few elements in a thousand get
     an update that differs in its last bit or two.

Why these tolerances: float32 has a 6e-8 unit roundoff; a loss that sums a
few hundred float32 terms of logsumexp is good to ~1e-6 relative, gradients
through a few layers of float32 GEMMs (sums of 64..256 terms) to ~1e-5.
"""
import json
import math
import os
import struct

import pytest

from common import ROOT, run

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

BIN = os.path.join(ROOT, "bin")
GRAD = os.path.join(ROOT, "build", "t", "llmux-grad")
TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; "
        "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. "
        "And God said, Let there be light: and there was light. And God saw the light, that it was good: "
        "and God divided the light from the darkness. ") * 6

B, T = 2, 24

CONFIGS = {
    "gpt2": ["--arch", "gpt2", "--layers", "2", "--heads", "4", "--dim", "64", "--ffn", "256", "--ctx", "32"],
    "llama": ["--arch", "llama", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--dim", "64", "--ffn", "176",
              "--ctx", "32", "--untied", "--rope-theta", "500000"],
    "qwen2": ["--arch", "llama", "--layers", "2", "--heads", "4", "--kv-heads", "1", "--dim", "64", "--ffn", "128",
              "--ctx", "32", "--qkv-bias"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    (d / "text.txt").write_text(TEXT)
    run([f"{BIN}/llm-tokenize", "train", "--vocab-size", "300", "--special", "<|endoftext|>", "-o", d / "tok.json",
         d / "text.txt"])
    run([f"{BIN}/llm-tokenize", "-t", d / "tok.json", d / "text.txt", "-o", d / "docs.stream"])
    run([f"{BIN}/llm-shard", "--seq", str(T), "-o", d / "data", d / "docs.stream"])
    return d


def make_model(d, name):
    path = d / f"{name}.safetensors"
    if not path.exists():
        run([f"{BIN}/llm-train", "--tokenizer", d / "tok.json", *CONFIGS[name], "--seed", "7", d / "data",
             "--steps", "0", "-o", path])
    return path


def load(path, moments=False):
    """The tensors of a file; without moments, the parameters only."""
    return {k: v for k, v in safetensors_torch.load_file(str(path)).items() if moments or not k.startswith("optim.")}


def config_of(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["config"])


def hf_model(cfg, ours, dtype):
    """transformers' model for our config, with our weights (names mapped; GPT-2's Conv1D stores (in, out))."""
    L = cfg["n_layers"]
    if cfg["arch"] == "gpt2":
        hc = transformers.GPT2Config(vocab_size=cfg["vocab_size"], n_positions=cfg["ctx_len"], n_embd=cfg["dim"],
                                     n_layer=L, n_head=cfg["n_heads"], n_inner=cfg["ffn_dim"],
                                     activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
                                     layer_norm_epsilon=cfg["norm_eps"], tie_word_embeddings=True)
        m = transformers.GPT2LMHeadModel(hc)
        sd = {"transformer.wte.weight": ours["tok_embeddings.weight"], "transformer.wpe.weight": ours["pos_embeddings.weight"],
              "transformer.ln_f.weight": ours["norm.weight"], "transformer.ln_f.bias": ours["norm.bias"]}
        for i in range(L):
            p, h = f"layers.{i}.", f"transformer.h.{i}."
            sd[h + "ln_1.weight"] = ours[p + "attn_norm.weight"]
            sd[h + "ln_1.bias"] = ours[p + "attn_norm.bias"]
            sd[h + "attn.c_attn.weight"] = torch.cat([ours[p + f"attn.{x}.weight"] for x in "qkv"]).T
            sd[h + "attn.c_attn.bias"] = torch.cat([ours[p + f"attn.{x}.bias"] for x in "qkv"])
            sd[h + "attn.c_proj.weight"] = ours[p + "attn.o.weight"].T
            sd[h + "attn.c_proj.bias"] = ours[p + "attn.o.bias"]
            sd[h + "ln_2.weight"] = ours[p + "ffn_norm.weight"]
            sd[h + "ln_2.bias"] = ours[p + "ffn_norm.bias"]
            sd[h + "mlp.c_fc.weight"] = ours[p + "ffn.up.weight"].T
            sd[h + "mlp.c_fc.bias"] = ours[p + "ffn.up.bias"]
            sd[h + "mlp.c_proj.weight"] = ours[p + "ffn.down.weight"].T
            sd[h + "mlp.c_proj.bias"] = ours[p + "ffn.down.bias"]
    else:
        common = dict(vocab_size=cfg["vocab_size"], hidden_size=cfg["dim"], intermediate_size=cfg["ffn_dim"],
                      num_hidden_layers=L, num_attention_heads=cfg["n_heads"],
                      num_key_value_heads=cfg["n_kv_heads"], max_position_embeddings=cfg["ctx_len"],
                      rms_norm_eps=cfg["norm_eps"], rope_theta=cfg["rope_theta"],
                      tie_word_embeddings=cfg["tied_embeddings"])
        if cfg["qkv_bias"]:
            hc = transformers.Qwen2Config(**common, use_sliding_window=False)
            m = transformers.Qwen2ForCausalLM(hc)
        else:
            hc = transformers.LlamaConfig(**common, attention_bias=False, mlp_bias=False)
            m = transformers.LlamaForCausalLM(hc)
        sd = {"model.embed_tokens.weight": ours["tok_embeddings.weight"], "model.norm.weight": ours["norm.weight"]}
        if not cfg["tied_embeddings"]:
            sd["lm_head.weight"] = ours["output.weight"]
        for i in range(L):
            p, h = f"layers.{i}.", f"model.layers.{i}."
            sd[h + "input_layernorm.weight"] = ours[p + "attn_norm.weight"]
            for x in "qkv":
                sd[h + f"self_attn.{x}_proj.weight"] = ours[p + f"attn.{x}.weight"]
                if cfg["qkv_bias"]:
                    sd[h + f"self_attn.{x}_proj.bias"] = ours[p + f"attn.{x}.bias"]
            sd[h + "self_attn.o_proj.weight"] = ours[p + "attn.o.weight"]
            sd[h + "post_attention_layernorm.weight"] = ours[p + "ffn_norm.weight"]
            for x in ("gate", "up", "down"):
                sd[h + f"mlp.{x}_proj.weight"] = ours[p + f"ffn.{x}.weight"]
    m.config._attn_implementation = "eager"
    missing, unexpected = m.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight") and "rotary" not in k and "attn.bias" not in k
               and "masked_bias" not in k]
    assert not missing and not unexpected, (missing, unexpected)
    return m.to(dtype).eval()


def our_grad_of(cfg, name, hf_grads, L):
    """autograd's gradient for our parameter `name`, from transformers' names."""
    g = hf_grads
    if cfg["arch"] == "gpt2":
        if name == "tok_embeddings.weight": return g["transformer.wte.weight"]
        if name == "pos_embeddings.weight": return g["transformer.wpe.weight"]
        if name.startswith("norm."): return g["transformer.ln_f." + name.split(".")[1]]
        _, i, *rest = name.split(".")
        rest = ".".join(rest)
        h = f"transformer.h.{i}."
        D = cfg["dim"]
        qkv_w, qkv_b = g[h + "attn.c_attn.weight"].T, g[h + "attn.c_attn.bias"]
        table = {"attn_norm.weight": g[h + "ln_1.weight"], "attn_norm.bias": g[h + "ln_1.bias"],
                 "attn.q.weight": qkv_w[:D], "attn.k.weight": qkv_w[D:2 * D], "attn.v.weight": qkv_w[2 * D:],
                 "attn.q.bias": qkv_b[:D], "attn.k.bias": qkv_b[D:2 * D], "attn.v.bias": qkv_b[2 * D:],
                 "attn.o.weight": g[h + "attn.c_proj.weight"].T, "attn.o.bias": g[h + "attn.c_proj.bias"],
                 "ffn_norm.weight": g[h + "ln_2.weight"], "ffn_norm.bias": g[h + "ln_2.bias"],
                 "ffn.up.weight": g[h + "mlp.c_fc.weight"].T, "ffn.up.bias": g[h + "mlp.c_fc.bias"],
                 "ffn.down.weight": g[h + "mlp.c_proj.weight"].T, "ffn.down.bias": g[h + "mlp.c_proj.bias"]}
        return table[rest]
    if name == "tok_embeddings.weight": return g["model.embed_tokens.weight"]
    if name == "output.weight": return g["lm_head.weight"]
    if name == "norm.weight": return g["model.norm.weight"]
    _, i, *rest = name.split(".")
    rest = ".".join(rest)
    h = f"model.layers.{i}."
    table = {"attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
             "attn.o.weight": "self_attn.o_proj.weight"}
    for x in "qkv":
        table[f"attn.{x}.weight"] = f"self_attn.{x}_proj.weight"
        table[f"attn.{x}.bias"] = f"self_attn.{x}_proj.bias"
    for x in ("gate", "up", "down"):
        table[f"ffn.{x}.weight"] = f"mlp.{x}_proj.weight"
    return g[h + table[rest]]


def batch_tokens(d):
    """The first B sequences of the set, cut to T + 1 tokens, as llmux-grad reads them."""
    m = json.load(open(d / "data" / "train" / "manifest.json"))
    n, w = m["seq_len"] + 1, m["token_width"]
    raw = open(d / "data" / "train" / m["shards"][0]["file"], "rb").read()[64:]
    rows = []
    for b in range(B):
        rec = raw[b * n * w:(b + 1) * n * w]
        rows.append(list(struct.unpack(f"<{n}{'H' if w == 2 else 'I'}", rec))[:T + 1])
    return torch.tensor(rows)


def rel(a, b):
    return (a.double() - b.double()).norm().item() / max(b.double().norm().item(), 1e-30)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_loss_logits_and_gradients(data, name):
    path = make_model(data, name)
    out = data / f"{name}.grad.safetensors"
    run([GRAD, path, data / "data", B, T, out])
    ours = load(path)
    got = load(out)
    with open(out, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        loss = float(json.loads(f.read(n))["__metadata__"]["loss"])
    cfg = config_of(path)
    m = hf_model(cfg, ours, torch.float64)
    tok = batch_tokens(data)
    logits = m(input_ids=tok[:, :T]).logits
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg["vocab_size"]), tok[:, 1:].reshape(-1))
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-5 * abs(ref.item()), (loss, ref.item())
    ref_logits = logits.detach().reshape(B * T, -1)
    worst_row = max(rel(got["logits"][r], ref_logits[r]) for r in range(B * T))
    assert worst_row < 1e-4, worst_row
    hf_grads = {k: p.grad for k, p in m.named_parameters() if p.grad is not None}
    refs = {pname: our_grad_of(cfg, pname, hf_grads, cfg["n_layers"]) for pname in ours}
    # A gradient that is exactly 0 in exact arithmetic (the key bias: adding
    # the same q.b to every score of a row leaves the softmax as it is) has
    # no relative error; there the floor, 1e-3 of the whole gradient's norm,
    # makes the check absolute: ours must be float32 noise next to the rest.
    floor = 1e-3 * math.sqrt(sum(r.double().norm().item() ** 2 for r in refs.values()))
    worst = (0.0, "")
    for pname in ours:
        diff = (got[pname].double() - refs[pname].double()).norm().item()
        e = diff / max(refs[pname].double().norm().item(), floor)
        worst = max(worst, (e, pname))
    assert worst[0] < 1e-4, worst


@pytest.mark.parametrize("name,clip", [("gpt2", 0), ("llama", 0), ("gpt2", 0.05)])
def test_one_adamw_step_equals_torch(data, name, clip):
    path = make_model(data, name)
    grads_path = data / f"{name}.grad.safetensors"
    run([GRAD, path, data / "data", B, T, grads_path])
    stepped = data / f"{name}.step.{clip}.safetensors"
    lr, wd = 1e-3, 0.1
    run([f"{BIN}/llm-train", path, data / "data", "--steps", "1", "--batch", B, "--seq", T, "--lr", lr,
         "--schedule", "constant", "--warmup", "0", "--clip", clip, "--weight-decay", wd, "--no-shuffle",
         "-j", "1", "-o", stepped])
    ours, grads, after = load(path), load(grads_path), load(stepped, moments=True)
    params = {k: torch.nn.Parameter(v.clone()) for k, v in ours.items()}
    for k, p in params.items():
        p.grad = grads[k].clone()
    decay = [p for k, p in params.items() if p.dim() == 2]
    no_decay = [p for k, p in params.items() if p.dim() != 2]
    if clip:
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), clip)
        assert norm.item() > clip  # the clipping is exercised
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    opt.step()
    for k, p in params.items():
        diff = (after[k] - p.detach()).abs()
        update = (p.detach() - ours[k]).abs()
        bound = 2.4e-7 * p.detach().abs() + 2.4e-7 * update + 1e-30
        assert bool((diff <= bound).all()), (k, diff.max().item())
        st = opt.state[p]
        assert torch.allclose(after[f"optim.m.{k}"], st["exp_avg"], rtol=1e-6, atol=0), k
        assert torch.allclose(after[f"optim.v.{k}"], st["exp_avg_sq"], rtol=1e-6, atol=0), k
