"""BPE training conformance: tokenizer.json files that lib/bpe_train.c writes
(through the helper build/t/llmux-train-test) against Hugging Face tokenizers.

  a) the file loads with tokenizers.Tokenizer.from_file: vocabulary size,
     special tokens (ids first, as BpeTrainer puts them), byte tokens in
     GPT-2's order, and encode/decode round trips on text it was not trained on;
  b) trained on the same text with the same settings (Split(pattern) +
     ByteLevel, all 256 bytes, min_frequency 0), BpeTrainer learns exactly
     the same vocabulary and merges (train_from_iterator on the whole text:
     tokenizers' train(files) reads line by line, which splits pieces at
     line ends that a whole-text pass keeps, e.g. " \\n");
  c) the issue's benchmark: a 32k tokenizer on the King James Bible (Debian's
     bible-kjv) compresses within 1% of BpeTrainer's (its train(files)), and
     training takes less time than BpeTrainer's. Skipped without `bible`.
"""
import json
import os
import random
import shutil
import subprocess
import time

import pytest

from common import ROOT, run

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

TRAIN = os.path.join(ROOT, "build", "t", "llmux-train-test")
REFS = os.path.join(os.path.dirname(ROOT), "shared", "refs")
SHAKESPEARE = os.path.join(REFS, "data", "tinyshakespeare.txt")
SPECIALS = ["<|endoftext|>", "<|pad|>"]

SAMPLE = ("First Citizen: Before we proceed any further, hear me speak.\n\n"
          "It's 2024 — naïve café, 日本語のテキスト, emoji 🙂🙃, tabs\tand  spaces   \r\n"
          "<|endoftext|>Second document; numbers 1234567 and 3.14159!\n")


@pytest.fixture(scope="module", autouse=True)
def helper_built():
    if not os.access(TRAIN, os.X_OK):
        pytest.fail(f"{TRAIN} is not built (make build/t/llmux-train-test)")


def corpus():
    if not os.path.exists(SHAKESPEARE):
        pytest.skip(f"{SHAKESPEARE} is absent (../shared/refs)")
    return SHAKESPEARE


def train_ours(files, out, vocab, pattern="gpt2", specials=SPECIALS, extra=()):
    args = [TRAIN, "--vocab-size", vocab, "--pattern", pattern, "-o", out, *extra]
    for s in specials:
        args += ["--special", s]
    p = run(args + list(files))
    return p.stderr.decode()


def hf_trainer(vocab, specials):
    return trainers.BpeTrainer(vocab_size=vocab, min_frequency=0, show_progress=False,
                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=list(specials))


def hf_tokenizer(pattern_text):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern_text), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def split_pattern(doc):
    pre = doc["pre_tokenizer"]
    assert pre["type"] == "Sequence"
    return pre["pretokenizers"][0]["pattern"]["Regex"]


# ---- a) loading ----

def test_loads_and_round_trips(tmp_path):
    out = tmp_path / "tok.json"
    train_ours([corpus()], out, 2000)
    tok = Tokenizer.from_file(str(out))
    assert tok.get_vocab_size() == 2000
    vocab = tok.get_vocab()
    assert vocab["<|endoftext|>"] == 0 and vocab["<|pad|>"] == 1
    assert vocab["!"] == 2 and vocab["Ā"] == 2 + 188 and vocab["Ġ"] == 2 + 188 + 32
    added = tok.get_added_tokens_decoder()
    assert {i: t.content for i, t in added.items()} == {0: "<|endoftext|>", 1: "<|pad|>"}
    assert all(t.special for t in added.values())

    enc = tok.encode(SAMPLE)
    assert all(0 <= i < 2000 for i in enc.ids)
    assert 0 in enc.ids, "the special token in the text is not its id"
    assert tok.decode(enc.ids, skip_special_tokens=False) == SAMPLE
    # the corpus's own words become few tokens; unseen scripts fall back to bytes
    assert len(tok.encode("First Citizen:").ids) <= 4
    assert len(tok.encode("日本").ids) == 6


def test_json_shape_matches_tokenizers(tmp_path):
    """Top-level keys, their order and the model's fields as tokenizers 0.23
    writes them after the same training."""
    out = tmp_path / "ours.json"
    train_ours([corpus()], out, 300)
    ours = json.loads(out.read_text(encoding="utf-8"))
    hf = hf_tokenizer(split_pattern(ours))
    hf.train_from_iterator(["abc"], hf_trainer(300, SPECIALS))
    theirs = json.loads(hf.to_str())
    assert list(ours) == list(theirs)
    assert list(ours["model"]) == list(theirs["model"])
    for key in ("added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding"):
        assert ours[key] == theirs[key], key
    for key in ours["model"]:
        if key not in ("vocab", "merges"):
            assert ours["model"][key] == theirs["model"][key], key
    assert all(isinstance(m, list) and len(m) == 2 for m in ours["model"]["merges"])


def test_vocab_too_small_is_refused(tmp_path):
    out = tmp_path / "tok.json"
    p = run([TRAIN, "--vocab-size", 257, "--special", "<a>", "--special", "<b>", "-o", out, corpus()], check=False)
    assert p.returncode == 1
    assert b"smaller than the 256 byte tokens" in p.stderr
    assert not out.exists()


# ---- b) the same merges as BpeTrainer ----

@pytest.mark.parametrize("pattern", ["gpt2", "cl100k_base", "o200k_base"])
@pytest.mark.parametrize("vocab", [1000, 8000])
def test_same_merges_as_bpetrainer(pattern, vocab, tmp_path):
    out = tmp_path / "ours.json"
    train_ours([corpus()], out, vocab, pattern=pattern)
    ours = json.loads(out.read_text(encoding="utf-8"))
    hf = hf_tokenizer(split_pattern(ours))
    with open(corpus(), encoding="utf-8") as f:
        text = f.read()
    hf.train_from_iterator([text], hf_trainer(vocab, SPECIALS))
    theirs = json.loads(hf.to_str())
    om, tm = ours["model"]["merges"], theirs["model"]["merges"]
    first = next((i for i, (a, b) in enumerate(zip(om, tm)) if a != b), None)
    assert first is None and len(om) == len(tm), \
        f"merges differ from merge {first}: ours {om[first:first + 3] if first is not None else len(om)}, " \
        f"theirs {tm[first:first + 3] if first is not None else len(tm)}"
    assert ours["model"]["vocab"] == theirs["model"]["vocab"]


def test_random_corpora_same_as_bpetrainer(tmp_path):
    """Small alphabets: long runs (overlapping pairs like a a a) and many ties."""
    rng = random.Random(int(os.environ.get("UNIT_SEED", "0")) or None)
    seed = rng.randrange(1 << 30)
    rng = random.Random(seed)
    path, out = tmp_path / "c.txt", tmp_path / "ours.json"
    for case in range(30):
        alpha = rng.choice(["ab", "abc", "aab ", "ab c\n", "abcdé1 ", "xy'z s"])
        text = "".join(rng.choice(alpha) for _ in range(rng.randint(1, 3000)))
        path.write_text(text, encoding="utf-8")
        vocab = rng.randint(256, 420)
        train_ours([path], out, vocab, specials=())
        ours = json.loads(out.read_text(encoding="utf-8"))
        hf = hf_tokenizer(split_pattern(ours))
        hf.train_from_iterator([text], hf_trainer(vocab, ()))
        theirs = json.loads(hf.to_str())["model"]
        assert ours["model"]["merges"] == theirs["merges"], f"seed {seed} case {case}: alphabet {alpha!r}, vocab {vocab}"
        assert ours["model"]["vocab"] == theirs["vocab"], f"seed {seed} case {case}"


def test_threads_do_not_change_the_result(tmp_path):
    one, many = tmp_path / "one.json", tmp_path / "many.json"
    train_ours([corpus()], one, 3000, extra=["--threads", "1"])
    train_ours([corpus()], many, 3000, extra=["--threads", "7", "--min-chunk", "4096"])
    assert one.read_bytes() == many.read_bytes()


# ---- c) the King James Bible at 32k ----

@pytest.fixture(scope="module")
def kjv(tmp_path_factory):
    if not shutil.which("bible"):
        pytest.skip("bible-kjv is not installed (apt-get install bible-kjv)")
    path = tmp_path_factory.mktemp("kjv") / "kjv.txt"
    with open(path, "wb") as f:
        subprocess.run(["bible", "-f", "gen1:1-rev22:21"], stdout=f, check=True, timeout=120)
    assert path.stat().st_size > 4_000_000
    return path


def bytes_per_token(tok, text):
    return len(text.encode("utf-8")) / len(tok.encode(text).ids)


def test_kjv_32k_compression_and_speed(kjv, tmp_path):
    ours_path = tmp_path / "ours.json"
    ours_s = []
    for _ in range(2):
        t0 = time.perf_counter()
        train_ours([kjv], ours_path, 32000, specials=["<|endoftext|>"])
        ours_s.append(time.perf_counter() - t0)
    ours = Tokenizer.from_file(str(ours_path))

    hf = hf_tokenizer(split_pattern(json.loads(ours_path.read_text(encoding="utf-8"))))
    t0 = time.perf_counter()
    hf.train([str(kjv)], hf_trainer(32000, ["<|endoftext|>"]))
    hf_s = time.perf_counter() - t0

    text = kjv.read_text(encoding="utf-8")
    ours_bpt, hf_bpt = bytes_per_token(ours, text), bytes_per_token(hf, text)
    print(f"kjv 32k: ours {min(ours_s):.3f} s (whole program), BpeTrainer {hf_s:.3f} s; "
          f"bytes/token ours {ours_bpt:.4f}, BpeTrainer {hf_bpt:.4f}; "
          f"vocab ours {ours.get_vocab_size()}, BpeTrainer {hf.get_vocab_size()}")
    assert abs(ours_bpt - hf_bpt) <= 0.01 * hf_bpt
    assert min(ours_s) < hf_s, f"training took {min(ours_s):.3f} s, BpeTrainer {hf_s:.3f} s"
