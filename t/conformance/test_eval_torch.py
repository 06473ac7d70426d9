"""Evaluation conformance: llm-eval's scores against log-likelihoods computed
with transformers' models (float64) from the same weights.

For a GPT-2 and a Llama model trained a few steps by llm-train (the models
of test_infer_torch.py):
  a) multiple choice: each choice's summed log-likelihood (--details) within
     1e-4 of transformers' in float64, over the tokens llm-tasks(5) defines
     (the context's tokens, then those that context + choice adds after the
     longest prefix they share with the context's, white space at the end of
     the context moved to the choice); the choice picked by sum and by sum
     per character (acc_norm) the same for every example, and acc and
     acc_norm the same;
  b) the same with two few-shot examples (the shots llm-eval reports
     drawing, formatted as llm-tasks(5) says);
  c) cloze: the answer's log-likelihood within 1e-4, and "greedy" exactly
     when every answer token is transformers' argmax;
  d) language modelling on a shard set: loss within 1e-5 (relative) of
     transformers' mean token loss over the same sequences;
  e) --text with --window 24 --stride 8: the windows of llm-eval(1)
     (each scoring 8 new tokens after up to 16 before them), the loss within
     1e-5 relative of transformers' over the same windows, every token of
     the text scored once after the end-of-text token, and the bytes those
     tokens decode to equal to the text's.
"""
import json
import math
import os

import pytest

from common import ROOT, run
from test_infer_torch import trained
from test_train_torch import BIN, config_of, hf_model, load
from test_train_torch import data  # noqa: F401  the module-scoped fixture

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

EVAL = f"{BIN}/llm-eval"
READSEQ = os.path.join(ROOT, "build", "t", "llmux-readseq")

# (context, choices, gold): a context that ends in a space, a choice that
# starts with one, a choice that is one token and one that is many.
MC = [
    ("In the beginning God created the", ["heaven", "earth", "deep waters"], 0),
    ("And the earth was without form, and", ["void", "light", "darkness upon"], 0),
    ("And God said, Let there be ", ["light", "darkness", "waters"], 0),
    ("and darkness was upon the face of the", ["deep", "waters", "light"], 0),
    ("And the Spirit of God moved upon the face of the", ["waters", "deep", " earth"], 0),
    ("And God saw the light, that it was", ["good", "void", "without form"], 0),
    ("and God divided the light from the", ["darkness", "light", "heaven and the earth"], 0),
    ("In the", ["beginning", "end", "middle of it all"], 0),
]
SHOTS = [
    ("And God said, Let there be", ["light", "void"], 0),
    ("In the beginning God created the heaven and the", ["earth", "light"], 0),
    ("And the earth was without", ["form", "light"], 0),
]
CLOZE = [
    "In the beginning God created the heaven and the earth.",
    "And God saw the light, that it was good:",
    "And the Spirit of God moved upon the face of the waters.",
    "And God said, Let there be zebras",
]


def tokenizer(d):
    return transformers.PreTrainedTokenizerFast(tokenizer_file=str(d / "tok.json"))


def prefix_ids(tok):
    """What the tokenizer's template puts before a text (as lib/eval_prompt.c finds it)."""
    plain, with_ = tok.encode("x", add_special_tokens=False), tok.encode("x", add_special_tokens=True)
    for p in range(len(with_) - len(plain) + 1):
        if with_[p:p + len(plain)] == plain:
            return with_[:p]
    return []


def pair(tok, ctx, cont):
    """llm-tasks(5): the tokens of a context and of what is scored after it."""
    keep = len(ctx.rstrip(" \t\n\r\f\v"))
    own = tok.encode(ctx[:keep], add_special_tokens=False)
    whole = tok.encode(ctx + cont, add_special_tokens=False)
    shared = 0
    while shared < min(len(own), len(whole)) and own[shared] == whole[shared]:
        shared += 1
    ctx_ids = prefix_ids(tok) + whole[:shared]
    if not ctx_ids:
        ctx_ids = [tok.convert_tokens_to_ids("<|endoftext|>")]
    return ctx_ids, whole[shared:]


def loglik(model, ctx_ids, cont_ids):
    """Sum of log p(cont | ctx) in float64, and whether each token is the argmax."""
    ids = torch.tensor([ctx_ids + cont_ids[:-1]])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    rows = lp[len(ctx_ids) - 1:]
    total = sum(rows[i, t].item() for i, t in enumerate(cont_ids))
    greedy = all(rows[i].argmax().item() == t for i, t in enumerate(cont_ids))
    return total, greedy


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def details(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def check_mc(d, name, shots):
    path = trained(d, name)
    task = d / f"mc-{name}-{shots}.jsonl"
    rows = [{"context": c, "choices": ch, "gold": g} for c, ch, g in MC]
    rows += [{"context": c, "choices": ch, "gold": g, "split": "train"} for c, ch, g in SHOTS]
    write_jsonl(task, rows)
    det = d / f"mc-{name}-{shots}.details.jsonl"
    out = json.loads(run([EVAL, path, "--task", task, "--shots", shots, "--seed", 3, "--details", det, "-b", 5]).stdout)
    got = details(det)
    assert len(got) == len(MC)
    tok = tokenizer(d)
    m64 = hf_model(config_of(path), load(path), torch.float64)
    by_line = {i + 1: r for i, r in enumerate(rows)}
    right = right_norm = 0
    for ex, (ctx, choices, gold) in zip(got, MC):
        text = ""
        for line in ex.get("shots", []):
            s = by_line[line]
            assert s.get("split") == "train"
            text += s["context"] + " " + s["choices"][s["gold"]] + "\n\n"
        assert len(ex.get("shots", [])) == shots
        text += ctx
        ref = []
        for k, choice in enumerate(choices):
            ctx_ids, cont_ids = pair(tok, text, " " + choice)
            assert ex["tokens"][k] == len(cont_ids), (ex, cont_ids)
            ref.append(loglik(m64, ctx_ids, cont_ids)[0])
        worst = max(abs(a - b) for a, b in zip(ex["logprobs"], ref))
        assert worst < 1e-4, (worst, ex["logprobs"], ref)
        pred = max(range(len(ref)), key=lambda k: (ref[k], -k))
        pred_norm = max(range(len(ref)), key=lambda k: (ref[k] / len(choices[k]), -k))
        assert ex["pred"] == pred and ex["pred_norm"] == pred_norm, (ex, ref)
        right += pred == gold
        right_norm += pred_norm == gold
    assert out["metrics"]["acc"] == pytest.approx(right / len(MC), abs=1e-6)
    assert out["metrics"]["acc_norm"] == pytest.approx(right_norm / len(MC), abs=1e-6)
    assert out["counts"]["examples"] == len(MC) and out["shots"] == shots


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_mc_matches_transformers(data, name):  # noqa: F811
    check_mc(data, name, 0)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_mc_few_shot_matches_transformers(data, name):  # noqa: F811
    check_mc(data, name, 2)


def test_cloze_matches_transformers(data):  # noqa: F811
    path = trained(data, "llama")
    task = data / "cloze.jsonl"
    write_jsonl(task, [{"text": t} for t in CLOZE])
    det = data / "cloze.details.jsonl"
    out = json.loads(run([EVAL, path, "--task", task, "--details", det]).stdout)
    tok = tokenizer(data)
    m64 = hf_model(config_of(path), load(path), torch.float64)
    greedy_n, lp_sum = 0, 0.0
    for ex, text in zip(details(det), CLOZE):
        cut = text.rindex(" ")
        ctx_ids, cont_ids = pair(tok, text[:cut], text[cut:])
        lp, greedy = loglik(m64, ctx_ids, cont_ids)
        assert abs(ex["logprob"] - lp) < 1e-4, (ex, lp)
        assert ex["greedy"] == greedy and ex["answer"] == text[cut:]
        greedy_n += greedy
        lp_sum += lp
    assert out["metrics"]["acc"] == pytest.approx(greedy_n / len(CLOZE), abs=1e-6)
    assert out["metrics"]["ppl"] == pytest.approx(math.exp(-lp_sum / len(CLOZE)), rel=1e-4)


def test_lm_shard_set_matches_transformers(data):  # noqa: F811
    path = trained(data, "gpt2")
    out = json.loads(run([EVAL, path, data / "data"]).stdout)
    m64 = hf_model(config_of(path), load(path), torch.float64)
    lines = run([READSEQ, data / "data"]).stdout.decode().splitlines()   # every sequence, in order
    rows = [list(map(int, l.split())) for l in lines if l.strip()]
    assert rows
    total = n = 0
    with torch.no_grad():
        for r in rows:
            lp = torch.log_softmax(m64(input_ids=torch.tensor([r[:-1]])).logits[0].double(), dim=-1)
            total -= sum(lp[i, t].item() for i, t in enumerate(r[1:]))
            n += len(r) - 1
    assert out["counts"]["tokens"] == n and out["counts"]["sequences"] == len(rows)
    assert out["metrics"]["loss"] == pytest.approx(total / n, rel=1e-5)


def test_text_windows_match_transformers(data):  # noqa: F811
    path = trained(data, "llama")
    text = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; "
            "and darkness was upon the face of the deep.\n") * 2
    (data / "doc.txt").write_text(text)
    out = json.loads(run([EVAL, path, "--text", data / "doc.txt", "--window", 24, "--stride", 8]).stdout)
    tok = tokenizer(data)
    ids = [tok.convert_tokens_to_ids("<|endoftext|>")] + tok.encode(text, add_special_tokens=False)
    m64 = hf_model(config_of(path), load(path), torch.float64)
    total, scored, windows = 0.0, 0, 0
    with torch.no_grad():
        for a in range(1, len(ids), 8):          # targets [a, z), from the 24 tokens before z - 1
            z = min(a + 8, len(ids))
            b = max(0, z - 1 - 24)
            lp = torch.log_softmax(m64(input_ids=torch.tensor([ids[b:z - 1]])).logits[0].double(), dim=-1)
            for t in range(a, z):
                total -= lp[t - 1 - b, ids[t]].item()
                scored += 1
            windows += 1
    assert scored == len(ids) - 1
    assert out["counts"] == {"windows": windows, "tokens": scored, "bytes": len(text.encode())}
    assert out["metrics"]["loss"] == pytest.approx(total / scored, rel=1e-5)
    assert out["metrics"]["bpb"] == pytest.approx(total / math.log(2) / len(text.encode()), rel=1e-5)
