"""llm-tokenize against Hugging Face tokenizers: the same ids as
Tokenizer.from_file(tokenizer.json).encode(text).ids for

  a) tokenizers that `llm-tokenize train` writes (each pre-tokenization
     pattern, special tokens), with and without special-token strings in the
     text (ours with --allow-special: tokenizers always matches added tokens);
  b) a Llama-2-style SentencePiece BPE with byte fallback, built and trained
     with tokenizers (Prepend/Replace normalizer, no pre-tokenizer, "<s> $A"
     template, <0x00>..<0xFF> in the vocabulary), with add_special_tokens
     True (ours: --add-special) and False; characters outside its vocabulary
     become byte tokens;
  c) Llama-3- and Qwen-2-style byte-level BPEs (Split with their patterns +
     ByteLevel(use_regex=False); Llama 3: ignore_merges and a
     <|begin_of_text|> template; Qwen 2: NFC normalizer) trained with
     tokenizers on the King James Bible;

on lines of the King James Bible (Debian's bible-kjv) and generated Unicode
stress text. Training text is the KJV, so other scripts meet unknown
characters and fall back to bytes.
"""
import json
import random
import shutil
import subprocess

import pytest

from common import run
from test_tokenize_tiktoken import SEED, TOKENIZE, assert_same, ids_lines, stress_text

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,  # noqa: E402
                        processors, trainers)

# the patterns as meta-llama/Meta-Llama-3-8B and Qwen/Qwen2-7B ship them in tokenizer.json
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
TRAIN_BYTES = 600_000   # of the KJV, for training


@pytest.fixture(scope="module")
def kjv(tmp_path_factory):
    """(training file: the KJV's first TRAIN_BYTES, a sample of verses and
    chapters, every verse)."""
    if not shutil.which("bible"):
        pytest.skip("bible-kjv is not installed (apt-get install bible-kjv)")
    d = tmp_path_factory.mktemp("kjv")
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], stdout=subprocess.PIPE, check=True, timeout=120).stdout
    text = out.decode("utf-8")
    train = d / "train.txt"
    train.write_text(text[:TRAIN_BYTES], encoding="utf-8")
    lines = text.splitlines()
    rng = random.Random(SEED)
    sample = [lines[i] for i in sorted(rng.sample(range(len(lines)), 1500))]
    # a few whole chapters as documents too: newlines and verse numbers inside
    sample += ["\n".join(lines[i:i + 40]) + "\n" for i in range(0, len(lines), len(lines) // 6)]
    return train, sample, lines


def stress_docs(seed, n, specials=False):
    rng = random.Random(seed)
    # wild=False: tokenizers' regex engine (Oniguruma) has its own Unicode
    # tables; unassigned code points would test the table versions, not us
    return [stress_text(rng, rng.choice([1, 4, 30]), specials=specials, wild=False) for _ in range(n)]


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    return path


def compare(tok_path, texts, tmp_path, ours_flags=(), add_special_tokens=False):
    """Ours (JSON lines in, --format ids) against tokenizers' encode_batch."""
    hf = Tokenizer.from_file(str(tok_path))
    src = write_jsonl(tmp_path / "docs.jsonl", texts)
    ours = ids_lines(run([TOKENIZE, "-t", tok_path, "--format", "ids", "-j", "2", *ours_flags, src]).stdout)
    theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=add_special_tokens)]
    assert_same(ours, theirs, texts)
    return ours


# ---- a) our own training ----

OUR_SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def ours_trained(kjv, tmp_path_factory):
    train = kjv[0]
    d = tmp_path_factory.mktemp("ours")
    made = {}

    def get(pattern):
        if pattern not in made:
            out = d / f"{pattern}.json"
            args = [TOKENIZE, "train", "--vocab-size", 3000, "--pattern", pattern, "-o", out]
            for s in OUR_SPECIALS:
                args += ["--special", s]
            run(args + [train])
            made[pattern] = out
        return made[pattern]
    return get


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k_base", "o200k_base", "llama3", "qwen2"])
def test_trained_by_us(pattern, ours_trained, kjv, tmp_path):
    tok = ours_trained(pattern)
    vocab = Tokenizer.from_file(str(tok)).get_vocab()
    assert len(vocab) == 3000 and vocab["<|endoftext|>"] == 0
    lines = kjv[1]
    texts = lines[:600] + stress_docs(SEED + 10, 150)
    compare(tok, texts, tmp_path)


@pytest.mark.parametrize("pattern", ["gpt2", "o200k_base"])
def test_trained_by_us_special_tokens(pattern, ours_trained, tmp_path):
    tok = ours_trained(pattern)
    texts = stress_docs(SEED + 11, 120, specials=True)
    texts += ["<|endoftext|>", "a<|im_start|>user\nhi<|im_end|>\n", "<|im_start|><|im_end|>", " <|pad|> ",
              "<|endoftext|", "<<|pad|>>"]
    ours = compare(tok, texts, tmp_path, ["--allow-special"])
    assert ours[-6] == [0]
    # without --allow-special the strings are text, which tokenizers does with
    # split_special_tokens
    hf = Tokenizer.from_file(str(tok))
    hf.encode_special_tokens = True
    src = write_jsonl(tmp_path / "plain.jsonl", texts)
    plain = ids_lines(run([TOKENIZE, "-t", tok, "--format", "ids", src]).stdout)
    assert_same(plain, [e.ids for e in hf.encode_batch(texts)], texts)
    assert not any(i < len(OUR_SPECIALS) for doc in plain for i in doc)


# ---- b) Llama-2-style SentencePiece BPE with byte fallback ----

BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]


def llama2_style_tokenizer(train, path):
    """Builds a Llama-2-style tokenizer.json at path, trained on the file train."""
    # train on "▁"-joined words (the pre-tokenizer is only for training; the
    # tokenizer itself has none, as Llama 2's tokenizer.json)
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    t.pre_tokenizer = pre_tokenizers.Split(Regex("▁[^▁]*|[^▁]+"), behavior="isolated")
    t.train([str(train)], trainers.BpeTrainer(vocab_size=2500, min_frequency=2, show_progress=False,
                                              special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=200))
    trained = json.loads(t.to_str())["model"]
    # Llama 2's layout: <unk> <s> </s>, then the 256 byte tokens, then the rest
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in BYTE_TOKENS:
        vocab[b] = len(vocab)
    for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.save(str(path))
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["model"]["byte_fallback"] and doc["pre_tokenizer"] is None
    return path


@pytest.fixture(scope="module")
def llama2_style(kjv, tmp_path_factory):
    train = kjv[0]
    return llama2_style_tokenizer(train, tmp_path_factory.mktemp("llama2") / "tokenizer.json")


@pytest.mark.parametrize("add_special", [False, True])
def test_llama2_style_kjv(add_special, llama2_style, kjv, tmp_path):
    lines = kjv[1]
    flags = ["--add-special"] if add_special else []
    ours = compare(llama2_style, lines[:800], tmp_path, flags, add_special_tokens=add_special)
    assert all((doc[:1] == [1]) == add_special for doc in ours)


@pytest.mark.parametrize("add_special", [False, True])
def test_llama2_style_unicode_byte_fallback(add_special, llama2_style, tmp_path):
    texts = stress_docs(SEED + 20, 200) + ["日本語", "🙂", "  leading", "trailing  ", " ", "a  b", "\t\n"]
    flags = ["--add-special"] if add_special else []
    ours = compare(llama2_style, texts, tmp_path, flags, add_special_tokens=add_special)
    # 日 is not in a KJV vocabulary: three byte tokens <0xE6><0x97><0xA5>
    assert ours[-7][int(add_special) + 1:int(add_special) + 4] == [3 + 0xE6, 3 + 0x97, 3 + 0xA5]


def test_llama2_style_special_tokens(llama2_style, tmp_path):
    texts = ["Hello</s>world", "<s>In the beginning", "a <unk> b", "</s>", "x</s> </s>y"]
    texts += stress_docs(SEED + 21, 60)
    texts = [t + "</s>" + u for t, u in zip(texts, texts[1:] + texts[:1])]
    compare(llama2_style, texts, tmp_path, ["--allow-special", "--add-special"], add_special_tokens=True)


# ---- c) Llama-3- and Qwen-2-style byte-level BPE ----

def byte_level_style(train, out, style):
    pattern = LLAMA3_PATTERN if style == "llama3" else QWEN2_PATTERN
    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    if style == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train([str(train)], trainers.BpeTrainer(vocab_size=3000, min_frequency=2, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    # specials after the trained tokens, as in Llama 3 and Qwen 2
    tok.add_special_tokens(specials)
    if style == "llama3":
        bot = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                          special_tokens=[("<|begin_of_text|>", bot)])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(out))
    return out


@pytest.fixture(scope="module")
def byte_level(kjv, tmp_path_factory):
    train = kjv[0]
    d = tmp_path_factory.mktemp("bytelevel")
    return {s: byte_level_style(train, d / f"{s}.json", s) for s in ("llama3", "qwen2")}


@pytest.mark.parametrize("style", ["llama3", "qwen2"])
@pytest.mark.parametrize("add_special", [False, True])
def test_byte_level_style(style, add_special, byte_level, kjv, tmp_path):
    lines = kjv[1]
    rng = random.Random(SEED + 30)
    # Qwen's NFC: decomposed and composed forms, and compositions across marks
    nfc = ["e\u0301", "A\u030a", "\u1100\u1161\u11a8", "Å", "ñ", "o\u0308\u0304", "\u0915\u093c", "ﬁ", "Ω", "K"]
    texts = lines[:300] + stress_docs(SEED + 31, 150, specials=True)
    texts += ["".join(rng.choice(nfc + [" ", "x"]) for _ in range(rng.randint(1, 30))) for _ in range(40)]
    flags = ["--allow-special"] + (["--add-special"] if add_special else [])
    ours = compare(byte_level[style], texts, tmp_path, flags, add_special_tokens=add_special)
    if style == "llama3":
        bot = Tokenizer.from_file(str(byte_level[style])).token_to_id("<|begin_of_text|>")
        assert all((doc[:1] == [bot]) == add_special for doc in ours)


@pytest.mark.parametrize("which", ["ours-cl100k_base", "llama2", "llama3"])
def test_every_kjv_line(which, ours_trained, llama2_style, byte_level, kjv, tmp_path):
    """All 31,102 verses, one document each, with the template where there is one."""
    tok = {"ours-cl100k_base": lambda: ours_trained("cl100k_base"), "llama2": lambda: llama2_style,
           "llama3": lambda: byte_level["llama3"]}[which]()
    add = which != "ours-cl100k_base"
    compare(tok, kjv[2], tmp_path, ["--add-special"] if add else [], add_special_tokens=add)




def test_nfc_keeps_hangul_jamo_11a7(byte_level, tmp_path):
    texts = ["\uac00\u11a7", "x\ud6fc\u11a7y", "\u1100\u1161\u11a7", "\uac00\u11a8"]
    compare(byte_level["qwen2"], texts, tmp_path)


# ---- tokenizers' own files keep loading ----

def test_model_file_with_embedded_tokenizer(llama2_style, tmp_path):
    """An llmux model file whose metadata holds the tokenizer.json encodes as the file does."""
    st = pytest.importorskip("safetensors.numpy")
    np = pytest.importorskip("numpy")
    model = tmp_path / "model.safetensors"
    st.save_file({"x": np.zeros(1, np.float32)}, str(model),
                 metadata={"tokenizer": llama2_style.read_text(encoding="utf-8")})
    texts = stress_docs(SEED + 40, 30)
    src = write_jsonl(tmp_path / "d.jsonl", texts)
    a = run([TOKENIZE, "-t", model, "--format", "ids", "--add-special", src]).stdout
    b = run([TOKENIZE, "-t", llama2_style, "--format", "ids", "--add-special", src]).stdout
    assert a == b
    hf = Tokenizer.from_file(str(llama2_style))
    assert_same(ids_lines(a), [e.ids for e in hf.encode_batch(texts, add_special_tokens=True)], texts)
