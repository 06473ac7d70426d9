"""Instruction data: `llm-tokenize --instruct --chat-template F --format stream`
on JSON lines of {"prompt", "response"} and {"messages": [...]} records.
The stream is read with the msgpack package: every doc record carries
"tokens" and a "mask" bin of one byte per token, and the header says
mask "loss".

  a) the mask marks exactly the assistant (response) tokens: each run of
     trained tokens, decoded by the reference (tokenizers, tiktoken), is one
     assistant text followed by the end token, in order (ChatML: content +
     <|im_end|>; Llama 3: stripped content + <|eot_id|>; Llama 2:
     " content </s>"; none: response + end of text);
  b) the tokens are those the reference gives for the text of the model's own
     Jinja chat template (t/conformance/test_chat_templates.py's copies),
     for content that is clean at its edges (no leading or trailing
     whitespace, no special-token strings);
  c) special-token strings inside content stay text;
  d) the chat format comes from a tokenizer_config.json beside the tokenizer.

Tokenizers are built with Hugging Face tokenizers and trained on the King James
Bible (Qwen-2-style for ChatML, Llama-3-style, Llama-2-style SentencePiece),
plus GPT-2's rank file for format none.
"""
import json
import os
import random
import re
import shutil
import struct
import subprocess

import pytest

from common import run
from test_tokenize_tiktoken import REFS, SEED, TOKENIZE, encoding, stress_text

msgpack = pytest.importorskip("msgpack")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")
from tokenizers import Tokenizer  # noqa: E402

from test_chat_templates import FORMATS, jinja  # noqa: E402
from test_tokenize_hf import byte_level_style, llama2_style_tokenizer  # noqa: E402

# format -> (tokenizer style, end token, how the trained text of an assistant message reads)
END = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "llama2": "</s>"}
STYLE = {"chatml": "qwen2", "llama3": "llama3", "llama2": "llama2"}



@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    if not shutil.which("bible"):
        pytest.skip("bible-kjv is not installed (apt-get install bible-kjv)")
    d = tmp_path_factory.mktemp("instruct")
    text = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], stdout=subprocess.PIPE, check=True,
                          timeout=120).stdout.decode()
    train = d / "train.txt"
    train.write_text(text[:300_000], encoding="utf-8")
    verses = [line.split(" ", 1)[1] for line in text.splitlines()[:20000:7] if " " in line]
    out = {"llama2": llama2_style_tokenizer(train, d / "llama2.json")}
    for style in ("qwen2", "llama3"):
        out[style] = byte_level_style(train, d / f"{style}.json", style)
    return out, verses


def read_stream(raw):
    u = msgpack.Unpacker(raw=False)
    u.feed(raw)
    recs = list(u)
    header, end = recs[0], recs[-1]
    assert header["type"] == "header" and header.get("mask") == "loss", header
    assert end == {"type": "end", "records": len(recs) - 2}
    w = header["token_width"]
    docs = []
    for r in recs[1:-1]:
        assert r["type"] == "doc" and set(r) >= {"id", "tokens", "mask"}, r
        n = len(r["tokens"]) // w
        ids = list(struct.unpack("<%d%s" % (n, "H" if w == 2 else "I"), r["tokens"]))
        mask = list(r["mask"])
        assert len(mask) == n and set(mask) <= {0, 1}, f"record {r['id']}: {len(mask)} mask bytes for {n} tokens"
        docs.append((ids, mask))
    return header, docs


def instruct(tok, records, fmt, tmp_path, extra=()):
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    args = [TOKENIZE, "-t", tok, "--instruct", "--format", "stream", "-j", "2", *extra]
    if fmt:
        args += ["--chat-template", fmt]
    header, docs = read_stream(run(args + [src]).stdout)
    assert len(docs) == len(records)
    return header, docs


def runs(ids, mask):
    """The maximal runs of trained tokens."""
    out, cur = [], None
    for i, m in zip(ids, mask):
        if m:
            cur = [] if cur is None else cur
            cur.append(i)
        elif cur is not None:
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return out


def conversations(rng, verses, n, clean):
    """Random conversations; clean: content without edge whitespace or
    special-token strings (for the whole-text comparison)."""
    specials = ["<|im_end|>", "<|im_start|>", "<s>", "</s>", "<|eot_id|>", "<|begin_of_text|>", "[INST]", "<<SYS>>"]

    def content():
        parts = [rng.choice(verses) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.3:
            parts.append(stress_text(rng, rng.randint(1, 6), wild=False))
        if not clean and rng.random() < 0.3:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(specials))
        text = " ".join(parts)
        if not clean and rng.random() < 0.3:
            text = rng.choice([" ", "\n", "  ", "\n\n", "\t"]) + text + rng.choice(["", " ", "\n", " \n"])
        text = text.strip() if clean else text
        return text if text.strip() else "Amen."

    out = []
    for _ in range(n):
        msgs = [{"role": "system", "content": content()}] if rng.random() < 0.4 else []
        for k in range(rng.randint(1, 3) * 2 - (rng.random() < 0.2)):
            msgs.append({"role": "user" if k % 2 == 0 else "assistant", "content": content()})
        out.append({"messages": msgs})
    return out


def nfc(hf):
    """The Qwen-style tokenizer's NFC normalizer (tokenizers' own), else nothing."""
    n = hf.normalizer
    return n.normalize_str if n is not None and json.loads(hf.to_str())["normalizer"]["type"] == "NFC" else str


def expected_trained(fmt, record, norm=str):
    if "messages" in record:
        assistants = [norm(m["content"]) for m in record["messages"] if m["role"] == "assistant"]
    else:
        assistants = [norm(record["response"])]
    if fmt == "chatml":
        return [a + END[fmt] for a in assistants]
    if fmt == "llama3":
        return [a.strip() + END[fmt] for a in assistants]
    # llama2: " {a} </s>", read back through the decoder's Strip of one leading space
    return [a.strip() + " " + END[fmt] for a in assistants]


def check_masks(fmt, hf, records, docs, end_id):
    bad = []
    for k, (rec, (ids, mask)) in enumerate(zip(records, docs)):
        got = [hf.decode(r, skip_special_tokens=False) for r in runs(ids, mask)]
        want = expected_trained(fmt, rec, nfc(hf))
        if got != want:
            bad.append(f"record {k}: trained {got!r}, expected {want!r}")
        # the end token of each assistant message is trained, and content never holds one
        n_end = sum(1 for i in ids if i == end_id)
        n_msgs = len(rec["messages"]) if "messages" in rec else 2
        if fmt != "llama2" and n_end != n_msgs:
            bad.append(f"record {k}: {n_end} end tokens for {n_msgs} messages")
    assert not bad, f"seed {SEED}: {len(bad)} records; " + "; ".join(bad[:3])


def fixed_records():
    return [
        {"messages": [{"role": "user", "content": "Who begat Enos?"}, {"role": "assistant", "content": "Seth."}]},
        {"messages": [{"role": "system", "content": "Answer from the book of Genesis."},
                      {"role": "user", "content": "Who made the heaven?"},
                      {"role": "assistant", "content": "God made the heaven and the earth."},
                      {"role": "user", "content": "And the light?"},
                      {"role": "assistant", "content": "He divided it from the darkness."}]},
        {"messages": [{"role": "user", "content": "Say <|im_end|> and </s> and <|eot_id|>"},
                      {"role": "assistant", "content": "<|im_end|> </s> <|eot_id|> <s>"}]},
        {"messages": [{"role": "user", "content": "  padded \n"}, {"role": "assistant", "content": "\n\n lead and trail \n"},
                      {"role": "user", "content": "last question, no answer"}]},
        {"prompt": "What is the first word?", "response": "In."},
        {"messages": [{"role": "user", "content": "日本語? 🙂"}, {"role": "assistant", "content": "café naïve 🙃"}],
         "prompt": "ignored", "response": "ignored"},
    ]


def _xfail_llama2(fmt):
    return fmt


# ---- a) and c) ----

@pytest.mark.parametrize("fmt", ["chatml", "llama3", _xfail_llama2("llama2")])
def test_mask_marks_assistant_tokens(fmt, toks, tmp_path):
    tokz, verses = toks
    tok = tokz[STYLE[fmt]]
    hf = Tokenizer.from_file(str(tok))
    rng = random.Random(SEED + 50)
    records = fixed_records() + conversations(rng, verses, 60, clean=False)
    header, docs = instruct(tok, records, fmt, tmp_path)
    end_id = hf.token_to_id(END[fmt])
    check_masks(fmt, hf, records, docs, end_id)
    # the whole token list reads back as the template's text (byte-level
    # tokenizers; SentencePiece's decoder adds a space after <s>)
    template, bos, eos, _ = FORMATS[fmt]
    for rec, (ids, _) in zip(records, docs if fmt != "llama2" else []):
        msgs = rec["messages"] if "messages" in rec else [{"role": "user", "content": rec["prompt"]},
                                                          {"role": "assistant", "content": rec["response"]}]
        text = nfc(hf)(jinja(template, msgs, bos, eos))
        back = hf.decode(ids, skip_special_tokens=False)
        assert back == text


# ---- b) ----

@pytest.mark.parametrize("fmt", ["chatml", "llama3", _xfail_llama2("llama2")])
def test_tokens_are_the_templates_text(fmt, toks, tmp_path):
    tokz, verses = toks
    tok = tokz[STYLE[fmt]]
    hf = Tokenizer.from_file(str(tok))
    rng = random.Random(SEED + 51)
    records = conversations(rng, verses, 80, clean=True)
    _, docs = instruct(tok, records, fmt, tmp_path)
    template, bos, eos, _ = FORMATS[fmt]
    bad = []
    for k, (rec, (ids, _)) in enumerate(zip(records, docs)):
        want = hf.encode(jinja(template, rec["messages"], bos, eos), add_special_tokens=False).ids
        if ids != want:
            j = next((i for i, (a, b) in enumerate(zip(ids, want)) if a != b), min(len(ids), len(want)))
            bad.append(f"record {k} at token {j}: ours {[hf.id_to_token(i) for i in ids[max(0, j - 2):j + 4]]}, "
                       f"reference {[hf.id_to_token(i) for i in want[max(0, j - 2):j + 4]]}")
    assert not bad, f"seed {SEED}: {len(bad)} of {len(records)} records differ; " + "; ".join(bad[:3])


# ---- format none: prompt, response, end of text ----

def test_none_with_tiktoken_gpt2(toks, tmp_path):
    path = os.path.join(REFS, "gpt2.tiktoken")
    if not os.path.exists(path):
        pytest.skip(f"{path} is absent (../shared/refs)")
    _, verses = toks
    enc = encoding("gpt2")
    rng = random.Random(SEED + 52)
    records = [{"prompt": rng.choice(verses) + rng.choice(["\n", "\n\nAnswer:\n", " =>\n"]),
                "response": rng.choice(verses) + rng.choice(["", " <|endoftext|>", "\n"])} for _ in range(100)]
    header, docs = instruct(path, records, "none", tmp_path)
    assert header["eos_id"] == enc.eot_token
    for rec, (ids, mask) in zip(records, docs):
        assert ids[-1] == enc.eot_token and mask[-1] == 1
        assert ids.count(enc.eot_token) == 1, "a '<|endoftext|>' in the text became the special token"
        trained = [i for i, m in zip(ids, mask) if m]
        untrained = [i for i, m in zip(ids, mask) if not m]
        assert mask == sorted(mask), "the trained tokens are not one run at the end"
        assert enc.decode(untrained) == rec["prompt"]
        assert enc.decode(trained[:-1]) == rec["response"]
        # prompts end in a newline and responses start with a letter: the
        # pieces, hence the tokens, are those of the whole text
        assert ids[:-1] == enc.encode_ordinary(rec["prompt"] + rec["response"])


@pytest.mark.parametrize("style", ["qwen2", "llama2"])
def test_none_with_tokenizer_json(style, toks, tmp_path):
    tokz, verses = toks
    tok = tokz[style]
    hf = Tokenizer.from_file(str(tok))
    eos = hf.token_to_id("<|endoftext|>" if style == "qwen2" else "</s>")
    rng = random.Random(SEED + 53)
    records = [{"prompt": rng.choice(verses) + "\n", "response": rng.choice(verses)} for _ in range(60)]
    _, docs = instruct(tok, records, "none", tmp_path)
    bad = []
    for k, (rec, (ids, mask)) in enumerate(zip(records, docs)):
        want = hf.encode(rec["prompt"] + rec["response"], add_special_tokens=False).ids + [eos]
        n_prompt = len(hf.encode(rec["prompt"], add_special_tokens=False).ids)
        if ids != want or mask != [0] * n_prompt + [1] * (len(want) - n_prompt):
            bad.append(f"record {k}: ours {[hf.id_to_token(i) for i in ids[n_prompt - 1:n_prompt + 2]]} "
                       f"mask {mask[n_prompt - 1:n_prompt + 2]}, reference {[hf.id_to_token(i) for i in want[n_prompt - 1:n_prompt + 2]]}")
    assert not bad, f"{len(bad)} records differ; " + "; ".join(bad[:3])


# ---- d) the chat format from tokenizer_config.json ----

@pytest.mark.parametrize("fmt", ["chatml", "llama3"])
def test_format_from_tokenizer_config(fmt, toks, tmp_path):
    tokz, _ = toks
    d = tmp_path / "model"
    d.mkdir()
    shutil.copy(tokz[STYLE[fmt]], d / "tokenizer.json")
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": FORMATS[fmt][0]}))
    records = fixed_records()
    _, implicit = instruct(d / "tokenizer.json", records, None, tmp_path)
    _, explicit = instruct(d / "tokenizer.json", records, fmt, tmp_path)
    assert implicit == explicit


def test_bad_record_names_the_line(toks, tmp_path):
    tokz, _ = toks
    tok = tokz["llama3"]
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n"
                   + json.dumps({"messages": [{"role": "assistant", "content": "first"}]}) + "\n"
                   + json.dumps({"prompt": "c", "response": "d"}) + "\n")
    p = run([TOKENIZE, "-t", tok, "--instruct", "--chat-template", "llama3", "--format", "stream", src], check=False)
    assert p.returncode == 1
    err = p.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and f"{src}:2" in err, err
    p = run([TOKENIZE, "-t", tok, "--instruct", "--chat-template", "llama3", "--format", "stream", "--skip-bad", src])
    _, docs = read_stream(p.stdout)
    assert len(docs) == 2
    assert re.search(r"skipped 1 bad document", p.stderr.decode())
