"""llm-convert and Hugging Face directories (lib/cv_hf.c), against transformers.

Export (--to hf), for a GPT-2 and a Llama (grouped-query attention, untied
embeddings) model trained by llm-train (test_infer_torch's trained models),
and for a), b) and e) also test_train_torch's Qwen2-style model (q, k and v
biases, tied embeddings: exported as Qwen2ForCausalLM):
  a) AutoModelForCausalLM.from_pretrained loads the directory with no
     missing, unexpected or mismatched keys, as the right class and dtype;
  b) its logits are ours, against two references.
     (1) test_train_torch's hf_model: transformers' model built from our
     file's tensors by the mapping those tests check, in float64. The
     export's model in float64 must give the same logits to 1e-9 relative
     per row: the same float32 weights and the same float64 arithmetic; the
     one difference is the norms' epsilon, config.json's 1e-05 against our
     float32 9.99999975e-06, worth ~1e-11. A wrong tensor is off by far more.
     (2) llm-infer itself: its log-probabilities (--logprobs 5: the chosen
     token and the 5 most likely, at every step of a 64-token greedy
     continuation) within 1e-4 of log_softmax of the export's float64
     logits, the bound of test_infer_torch. llm-infer shows
     log-probabilities, not logits; its float32 forward pass differs from
     float64 by rounding (~1e-6) and summation order;
  c) greedy generation of 64 tokens in float32 (generate, do_sample=False)
     gives the ids of `llm-infer --temp 0 -n 64`;
  d) AutoTokenizer.from_pretrained(export) encodes a few texts to the ids
     llm-tokenize gives with our model's tokenizer, and decodes them back;
  e) importing the export (`llm-convert EXPORT --to llmux`) gives the very
     bytes of `llm-convert ORIGINAL --to llmux`, in f32 and, through
     --dtype bf16, in bf16; and a chat_template ("chatml") goes out as
     Jinja that AutoTokenizer renders and comes back as the name.

Import (--to llmux) of models transformers saved itself: save_pretrained of
a freshly initialised LlamaForCausalLM with GQA, MistralForCausalLM with
sliding_window None saved in bf16, Qwen2ForCausalLM with tied embeddings,
GPT2LMHeadModel sharded by max_shard_size; weights drawn wider than
transformers' init so that the distributions are far from uniform; our test
tokenizer beside them. llm-infer's log-probabilities on the imported file
are within 1e-4 of transformers' float64 ones (as b2). That GPT-2 rewritten
as the oldest checkpoints store it (no "transformer." prefix, attn.bias
buffers) imports to the same bytes. A sharded directory with a tensor in
the wrong shard, a shard cut short or missing, or a tensor no shard holds is
refused, naming the file and the tensor, and nothing is written.
"""
import json
import os
import shutil

import pytest

from common import run
from test_infer_torch import PROMPT, trained
from test_train_torch import BIN, config_of, hf_model, load
from test_train_torch import data  # noqa: F401  the module-scoped fixture

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONVERT = f"{BIN}/llm-convert"
N = 64
TEXTS = ["In the beginning God created", "And God said, Let there be light: and there was light.",
         "  spaces\tand\nnewlines  \n\n", "Ünïcödé — 日本語 🙂 numbers 12345 67", "x<|endoftext|>y the end"]


def export(d, name, dtype=None):
    out = d / (f"{name}.hf" if not dtype else f"{name}.{dtype}.hf")
    if not out.exists():
        run([CONVERT, trained(d, name), "--to", "hf", "-o", out] + (["--dtype", dtype] if dtype else []))
    return out


def infer(path, n=N, extra=()):
    out = run([f"{BIN}/llm-infer", path, "-p", PROMPT, "-n", n, "--temp", "0", "--logprobs", 5, "-f", "jsonl", *extra])
    # a random model's text may cut a character in two: llm-infer writes its bytes as they are
    return json.loads(out.stdout.decode("utf-8", "replace"))


def rel_rows(a, b):
    return max(((x - y).norm() / y.norm()).item() for x, y in zip(a.double(), b.double()))


def check_logprobs(model64, prompt_ids, got):
    """got: llm-infer's jsonl; model64: transformers' model in float64."""
    with torch.no_grad():
        lp = torch.log_softmax(model64(input_ids=torch.tensor([prompt_ids + got["ids"]])).logits[0], dim=-1)
    assert got["ids"], got
    for i, (tok, chosen, alts) in enumerate(zip(got["ids"], got["logprobs"], got["top_logprobs"])):
        ref = lp[len(prompt_ids) - 1 + i]
        assert abs(chosen - ref[tok].item()) < 1e-4, (i, chosen, ref[tok].item())
        assert ref[tok].item() >= ref.max().item() - 1e-4, (i, tok, ref.argmax().item())  # greedy: the most likely
        for a in alts:
            assert abs(a["logprob"] - ref[a["id"]].item()) < 1e-4, (i, a, ref[a["id"]].item())
        vals = torch.topk(ref, 5).values.tolist()
        assert max(abs(a["logprob"] - v) for a, v in zip(alts, vals)) < 1e-4, (i, alts, vals)


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2"])
def test_export_loads_with_no_missing_keys(data, name):  # noqa: F811
    out = export(data, name)
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                                       "tokenizer_config.json"]
    m, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not info["error_msgs"], info
    assert type(m).__name__ == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[name]
    assert m.dtype == torch.float32
    cfg = json.load(open(out / "config.json"))
    assert cfg["torch_dtype"] == "float32"
    assert cfg["eos_token_id"] == 0  # <|endoftext|>, the test tokenizer's only special token
    assert json.load(open(out / "generation_config.json")) == {"eos_token_id": 0}


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2"])
def test_export_computes_our_logits(data, name):  # noqa: F811
    path = trained(data, name)
    out = export(data, name)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    prompt_ids = tok(PROMPT)["input_ids"]
    m64 = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager",
                                                            dtype=torch.float64).eval()
    ref = hf_model(config_of(path), load(path), torch.float64)
    got = infer(path)
    ids = torch.tensor([prompt_ids + got["ids"]])
    with torch.no_grad():
        a, b = m64(input_ids=ids).logits[0], ref(input_ids=ids).logits[0]
    assert rel_rows(a, b) < 1e-9, rel_rows(a, b)
    check_logprobs(m64, prompt_ids, got)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_export_greedy_matches_llm_infer(data, name):  # noqa: F811
    path = trained(data, name)
    out = export(data, name)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    prompt_ids = tok(PROMPT)["input_ids"]
    m32 = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    gen = m32.generate(torch.tensor([prompt_ids]), max_new_tokens=N, do_sample=False,
                       pad_token_id=m32.generation_config.eos_token_id)[0][len(prompt_ids):].tolist()
    eos = m32.generation_config.eos_token_id
    if gen and gen[-1] == eos:
        gen = gen[:-1]
    got = json.loads(run([f"{BIN}/llm-infer", path, "-p", PROMPT, "-n", N, "--temp", "0", "-f", "jsonl"]).stdout)
    assert got["ids"] == gen, (got["ids"], gen)
    assert len(gen) == N or got["finish_reason"] == "stop"


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_export_tokenizer_encodes_as_ours(data, name):  # noqa: F811
    path = trained(data, name)
    tok = transformers.AutoTokenizer.from_pretrained(export(data, name))
    for i, text in enumerate(TEXTS):
        f = data / f"tokenize.{i}.txt"
        f.write_bytes(text.encode())
        ours = json.loads(run([f"{BIN}/llm-tokenize", "-t", path, "-f", "ids", "--allow-special", f]).stdout)
        assert tok(text)["input_ids"] == ours, (text, tok(text)["input_ids"], ours)
        assert tok.decode(ours) == text


@pytest.mark.parametrize("name,dtype", [("gpt2", None), ("llama", None), ("qwen2", None), ("gpt2", "bf16"),
                                        ("llama", "bf16")])
def test_import_of_export_is_bit_identical(data, name, dtype):  # noqa: F811
    path = trained(data, name)
    out = export(data, name, dtype)
    a, b = data / f"{name}.{dtype}.direct.safetensors", data / f"{name}.{dtype}.via-hf.safetensors"
    for p in (a, b):
        if p.exists():
            p.unlink()
    run([CONVERT, path, "--to", "llmux", "-o", a] + (["--dtype", dtype] if dtype else []))
    run([CONVERT, out, "--to", "llmux", "-o", b])
    assert a.read_bytes() == b.read_bytes()
    if dtype:
        assert transformers.AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def test_chat_template_goes_with_the_export(data):  # noqa: F811
    """A model whose chat_template is one of our names ("chatml") exports the
    template's Jinja text, which AutoTokenizer renders, and comes back by name."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from safetensors import safe_open
    path = trained(data, "llama")
    chat, out = data / "chat.safetensors", data / "chat.hf"
    a, b = data / "chat.direct.safetensors", data / "chat.via-hf.safetensors"
    for p in (chat, a, b):
        if p.exists():
            p.unlink()
    if out.exists():
        shutil.rmtree(out)
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    safetensors_torch.save_file(tensors, str(chat), metadata=dict(meta, chat_template="chatml"))
    run([CONVERT, chat, "--to", "hf", "-o", out])
    tok = transformers.AutoTokenizer.from_pretrained(out)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", text
    run([CONVERT, chat, "--to", "llmux", "-o", a])
    run([CONVERT, out, "--to", "llmux", "-o", b])
    assert a.read_bytes() == b.read_bytes()


# ---- models transformers saved ----

def hf_saved_config(name):
    common = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=128, rms_norm_eps=1e-6)
    if name == "llama":
        return transformers.LlamaConfig(**common, num_key_value_heads=2, tie_word_embeddings=False,
                                        rope_theta=500000.0)
    if name == "mistral":
        return transformers.MistralConfig(**common, num_key_value_heads=1, sliding_window=None,
                                          tie_word_embeddings=False)
    if name == "qwen2":
        return transformers.Qwen2Config(**common, num_key_value_heads=2, tie_word_embeddings=True,
                                        use_sliding_window=False)
    return transformers.GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                   activation_function="gelu_new")


HF_SAVED = {"llama": {}, "mistral": {"bf16": True}, "qwen2": {}, "gpt2": {"max_shard_size": "100KB"}}


def hf_saved(d, name):
    """A freshly initialised transformers model, saved by save_pretrained, with
    our test tokenizer beside it."""
    out = d / f"saved-{name}"
    if out.exists():
        return out
    torch.manual_seed(11)
    cls = {"llama": transformers.LlamaForCausalLM, "mistral": transformers.MistralForCausalLM,
           "qwen2": transformers.Qwen2ForCausalLM, "gpt2": transformers.GPT2LMHeadModel}[name]
    m = cls(hf_saved_config(name))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for pname, p in m.named_parameters():
            if p.dim() == 1:
                base = 1.0 if ("norm" in pname or ".ln_" in pname) and pname.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    opts = HF_SAVED[name]
    if opts.get("bf16"):
        m = m.to(torch.bfloat16)
    kw = {"max_shard_size": opts["max_shard_size"]} if "max_shard_size" in opts else {}
    m.save_pretrained(out, **kw)
    shutil.copy(d / "tok.json", out / "tokenizer.json")
    return out


@pytest.mark.parametrize("name", list(HF_SAVED))
def test_import_of_transformers_model(data, name):  # noqa: F811
    src = hf_saved(data, name)
    files = sorted(os.listdir(src))
    if "max_shard_size" in HF_SAVED[name]:
        assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 2, files
    ours = data / f"saved-{name}.safetensors"
    if ours.exists():
        ours.unlink()
    run([CONVERT, src, "--to", "llmux", "-o", ours])
    cfg = config_of(ours)
    assert cfg["arch"] == ("gpt2" if name == "gpt2" else "llama")
    assert cfg["qkv_bias"] == (name in ("gpt2", "qwen2"))
    assert cfg["tied_embeddings"] == (name in ("gpt2", "qwen2"))
    m64 = transformers.AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager",
                                                            dtype=torch.float64).eval()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"))
    got = infer(ours, n=24, extra=["--ignore-eos"])
    assert len(got["ids"]) == 24
    check_logprobs(m64, tok(PROMPT)["input_ids"], got)


def test_import_of_old_gpt2_checkpoint(data):  # noqa: F811
    """The oldest GPT-2 checkpoints (openai-community/gpt2's model.safetensors)
    name their tensors without "transformer." and keep the attention's causal
    mask buffers (attn.bias, attn.masked_bias): read as the same model."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    src = hf_saved(data, "gpt2")
    old = data / "saved-gpt2-old"
    if old.exists():
        shutil.rmtree(old)
    os.mkdir(old)
    tensors = {}
    for f in sorted(os.listdir(src)):
        if f.endswith(".safetensors"):
            tensors.update(safetensors_torch.load_file(str(src / f)))
        elif f != "model.safetensors.index.json":
            shutil.copy(src / f, old / f)
    old_tensors = {k[len("transformer."):]: v for k, v in tensors.items()}
    for i in range(2):
        old_tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(128, 128)).view(1, 1, 128, 128)
        old_tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    safetensors_torch.save_file(old_tensors, str(old / "model.safetensors"), metadata={"format": "pt"})
    a, b = data / "gpt2-new.safetensors", data / "gpt2-old.safetensors"
    for p in (a, b):
        if p.exists():
            p.unlink()
    run([CONVERT, src, "--to", "llmux", "-o", a])
    run([CONVERT, old, "--to", "llmux", "-o", b])
    assert a.read_bytes() == b.read_bytes()


def bad_copy(d, src, name):
    dst = d / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def refused(d, src, *words):
    out = d / "refused.safetensors"
    p = run([CONVERT, src, "--to", "llmux", "-o", out], check=False)
    err = p.stderr.decode()
    assert p.returncode == 1, (p.returncode, err)
    assert err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()
    assert not [f for f in os.listdir(d) if f.startswith(".refused")], os.listdir(d)


def test_bad_shards_are_refused(data):  # noqa: F811
    src = hf_saved(data, "gpt2")
    index = json.load(open(src / "model.safetensors.index.json"))
    wm = index["weight_map"]
    shards = sorted(set(wm.values()))
    # a tensor the index puts in another shard than the one that holds it
    moved = bad_copy(data, src, "bad-moved")
    full = [s for s in shards if sum(v == s for v in wm.values()) > 1]
    t = next(k for k, v in wm.items() if v == full[0])
    other = next(s for s in shards if s != full[0])
    bad = dict(index, weight_map=dict(wm, **{t: other}))
    json.dump(bad, open(moved / "model.safetensors.index.json", "w"))
    refused(data, moved, t, full[0], other)
    # a shard cut short
    cut = bad_copy(data, src, "bad-cut")
    data_bytes = (cut / shards[1]).read_bytes()
    (cut / shards[1]).write_bytes(data_bytes[:len(data_bytes) - 100])
    refused(data, cut, shards[1])
    # a shard missing
    gone = bad_copy(data, src, "bad-gone")
    (gone / shards[2]).unlink()
    refused(data, gone, shards[2])
    # a tensor the index names that no shard holds
    extra = bad_copy(data, src, "bad-extra")
    json.dump(dict(index, weight_map=dict(wm, **{"transformer.h.9.ln_1.weight": shards[0]})),
              open(extra / "model.safetensors.index.json", "w"))
    refused(data, extra, "transformer.h.9.ln_1.weight", shards[0])
