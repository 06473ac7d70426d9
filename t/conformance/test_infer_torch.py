"""Generation conformance: llm-infer (lib/infer.c: the KV-cache forward pass,
fp32) against transformers' models with the same weights.

For a GPT-2 and a Llama (grouped-query attention, untied embeddings) model
trained a few steps by llm-train:
  a) greedy continuation (--temp 0) of a prompt: the same 64 token ids as
     transformers' generate(do_sample=False) in float32;
  b) the log-probability of every chosen token within 1e-4 of transformers'
     log_softmax, computed in float64 over the prompt and continuation
     (float32 logits of size ~10 carry ~1e-6 of rounding; 1e-4 leaves room
     for the different summation orders of the two);
  c) the same continuation from a q8_0 copy of the model differs from fp32 in
     a bounded way: its logprobs within 0.05 of the fp32 ones for the
     tokens both chose (a sanity check of the quantized path, not of
     llama.cpp; the block layouts are checked against gguf elsewhere).
"""
import json
import os

import pytest

from common import ROOT, run
from test_train_torch import BIN, CONFIGS, config_of, hf_model, load
from test_train_torch import data  # noqa: F401  the module-scoped fixture

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPT = "In the beginning God created"
N = 64


def trained(d, name):
    """The config of test_train_torch with a context of 96 (the prompt and 64
    tokens must fit), trained 30 steps."""
    path = d / f"{name}.trained.safetensors"
    if not path.exists():
        args = list(CONFIGS[name])
        args[args.index("--ctx") + 1] = "96"
        run([f"{BIN}/llm-train", "--tokenizer", d / "tok.json", *args, "--seed", "7", d / "data", "--steps", "30",
             "--lr", "3e-3", "--schedule", "constant", "-o", path])
    return path


def ours(path, model_args=()):
    out = run([f"{BIN}/llm-infer", path, "-p", PROMPT, "-n", N, "--temp", "0", "-f", "jsonl", *model_args]).stdout
    return json.loads(out)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_greedy_matches_transformers(data, name):  # noqa: F811
    path = trained(data, name)
    got = ours(path)
    cfg = config_of(path)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(data / "tok.json"))
    prompt_ids = tok(PROMPT)["input_ids"]
    assert got["prompt_tokens"] == len(prompt_ids)
    m32 = hf_model(cfg, load(path), torch.float32)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    gen = m32.generate(torch.tensor([prompt_ids]), max_new_tokens=N, do_sample=False, eos_token_id=eos,
                       pad_token_id=eos)[0][len(prompt_ids):].tolist()
    if gen and gen[-1] == eos:
        gen = gen[:-1]
    assert got["ids"] == gen[:len(got["ids"])] and len(got["ids"]) == len(gen), (got["ids"], gen)
    # the logprobs of the chosen tokens, against float64
    m64 = hf_model(cfg, load(path), torch.float64)
    seq = torch.tensor([prompt_ids + got["ids"]])
    with torch.no_grad():
        lp = torch.log_softmax(m64(input_ids=seq).logits[0], dim=-1)
    ref = [lp[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(got["ids"])]
    worst = max(abs(a - b) for a, b in zip(got["logprobs"], ref))
    assert worst < 1e-4, worst


def test_q8_0_stays_close(data):  # noqa: F811
    path = trained(data, "llama")
    q8 = data / "llama.q8_0.safetensors"
    run([f"{BIN}/llm-quantize", "-q", "q8_0", path, "-o", q8])
    a, b = ours(path), ours(q8)
    same = 0
    for x, y, lx, ly in zip(a["ids"], b["ids"], a["logprobs"], b["logprobs"]):
        if x != y:
            break
        same += 1
        assert abs(lx - ly) < 0.05, (lx, ly)
    assert same >= 8, (a["ids"], b["ids"])


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_beam_search_matches_transformers(data, name):  # noqa: F811
    """--beams 4 --samples 2: the two best hypotheses, and their order, as
    transformers' generate(num_beams=4, num_return_sequences=2) finds them
    (no sampling, length_penalty 1, early_stopping False)."""
    path = trained(data, name)
    n_new = 24
    out = run([f"{BIN}/llm-infer", path, "-p", PROMPT, "-n", n_new, "--beams", 4, "--samples", 2,
               "-f", "jsonl"]).stdout
    got = [c["ids"] for c in json.loads(out)["choices"]]
    cfg = config_of(path)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(data / "tok.json"))
    prompt_ids = tok(PROMPT)["input_ids"]
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    m32 = hf_model(cfg, load(path), torch.float32)
    gen = m32.generate(torch.tensor([prompt_ids]), max_new_tokens=n_new, do_sample=False, num_beams=4,
                       num_return_sequences=2, early_stopping=False, length_penalty=1.0, eos_token_id=eos,
                       pad_token_id=eos)
    want = []
    for row in gen.tolist():
        ids = row[len(prompt_ids):]
        if eos in ids:
            ids = ids[:ids.index(eos)]
        want.append(ids)
    assert got == want, (got, want)


def test_top_logprobs_are_the_models(data):  # noqa: F811
    """--logprobs 5: at every step the 5 most likely tokens of the model's own
    distribution, in order, with log-probabilities within 1e-4 of float64
    transformers (as b) above)."""
    path = trained(data, "llama")
    out = json.loads(run([f"{BIN}/llm-infer", path, "-p", PROMPT, "-n", 16, "--temp", "0", "--logprobs", 5,
                          "-f", "jsonl"]).stdout)
    cfg = config_of(path)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(data / "tok.json"))
    prompt_ids = tok(PROMPT)["input_ids"]
    m64 = hf_model(cfg, load(path), torch.float64)
    with torch.no_grad():
        lp = torch.log_softmax(m64(input_ids=torch.tensor([prompt_ids + out["ids"]])).logits[0], dim=-1)
    for i, alts in enumerate(out["top_logprobs"]):
        ref = lp[len(prompt_ids) - 1 + i]
        vals, idx = torch.topk(ref, 5)
        assert [a["id"] for a in alts] == idx.tolist(), (i, alts, idx.tolist())
        assert max(abs(a["logprob"] - v) for a, v in zip(alts, vals.tolist())) < 1e-4
        assert alts[0]["id"] == out["ids"][i]
