"""llm-tokenize against tiktoken: the same ids for gpt2, cl100k_base and
o200k_base, on

  a) the King James Bible (Debian's bible-kjv), as one document;
  b) generated Unicode stress text (every script, combining marks, emoji,
     digit runs, whitespace runs, contractions, CRLF, special-token strings)
     as JSON lines and as plain files, with and without --allow-special
     (tiktoken's encode(allowed_special="all") and encode_ordinary);
  c) source code: the project's own lib/*.c, one document per file;
  d) any bytes with --bytes (invalid UTF-8, NULs): tiktoken's _encode_bytes.

The Encodings are built offline from ../shared/refs/tokenizers/*.tiktoken and
the pattern and special tokens of tiktoken_ext.openai_public's own encoding
constructors (their downloads replaced by the local rank file), so the
pattern under test is tiktoken's, not a copy. Skipped without ../shared/refs.

The generators here (stress_text, random_bytes) are shared with the other
test_tokenize_*.py files.
"""
import json
import os
import random
import shutil
import subprocess
import unicodedata

import pytest

from common import ROOT, run

tiktoken = pytest.importorskip("tiktoken")
import tiktoken.load  # noqa: E402

TOKENIZE = os.path.join(ROOT, "bin", "llm-tokenize")
REFS = os.path.join(os.path.dirname(ROOT), "shared", "refs", "tokenizers")
ENCODINGS = ["gpt2", "cl100k_base", "o200k_base"]
SEED = int(os.environ.get("UNIT_SEED", "0")) or random.randrange(1 << 30)


def rank_file(name):
    path = os.path.join(REFS, f"{name}.tiktoken")
    if not os.path.exists(path):
        pytest.skip(f"{path} is absent (../shared/refs)")
    return path


_encodings = {}


def encoding(name):
    """tiktoken.Encoding for name, from tiktoken_ext.openai_public's own
    constructor with its loaders pointed at the local rank file."""
    if name not in _encodings:
        import tiktoken_ext.openai_public as op
        ranks = tiktoken.load.load_tiktoken_bpe(rank_file(name))
        saved = op.load_tiktoken_bpe, op.data_gym_to_mergeable_bpe_ranks
        op.load_tiktoken_bpe = lambda *a, **k: ranks
        op.data_gym_to_mergeable_bpe_ranks = lambda *a, **k: ranks
        try:
            spec = op.ENCODING_CONSTRUCTORS[name]()
        finally:
            op.load_tiktoken_bpe, op.data_gym_to_mergeable_bpe_ranks = saved
        _encodings[name] = tiktoken.Encoding(**spec)
    return _encodings[name]


def ids_lines(stdout):
    """--format ids output: one JSON array per line."""
    text = stdout.decode()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def ours_ids(tok, paths, extra=()):
    return ids_lines(run([TOKENIZE, "-t", tok, "--format", "ids", *extra, *paths]).stdout)


def first_difference(ours, theirs, label):
    """An assertion message that shows where two id lists part."""
    if ours == theirs:
        return None
    k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    return f"{label}: ids differ at {k} of {len(theirs)}: ours {ours[max(0, k - 3):k + 5]}, reference {theirs[max(0, k - 3):k + 5]}"


def assert_same(ours_docs, theirs_docs, texts=None):
    assert len(ours_docs) == len(theirs_docs), f"{len(ours_docs)} documents, reference {len(theirs_docs)}"
    bad = []
    for i, (o, t) in enumerate(zip(ours_docs, theirs_docs)):
        msg = first_difference(o, t, f"document {i}")
        if msg:
            bad.append(msg + (f" text {texts[i][:120]!r}" if texts else ""))
    assert not bad, f"seed {SEED}: {len(bad)} documents differ; " + "; ".join(bad[:3])


# ---- generated text ----

# (first, last) code point ranges, a few of each script or class
SCRIPTS = [
    (0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x250, 0x2AF), (0x370, 0x3FF), (0x400, 0x52F), (0x531, 0x587),
    (0x5D0, 0x5EA), (0x620, 0x64A), (0x671, 0x6D3), (0x700, 0x74A), (0x780, 0x7B1), (0x7C0, 0x7FA), (0x900, 0x97F),
    (0x980, 0x9FE), (0xA00, 0xA76), (0xA80, 0xAFF), (0xB00, 0xB77), (0xB80, 0xBFA), (0xC00, 0xC7F), (0xC80, 0xCF3),
    (0xD00, 0xD7F), (0xD80, 0xDF4), (0xE01, 0xE5B), (0xE81, 0xEDF), (0xF00, 0xFDA), (0x1000, 0x109F), (0x10A0, 0x10FF),
    (0x1100, 0x11FF), (0x1200, 0x137C), (0x13A0, 0x13FD), (0x1400, 0x167F), (0x1680, 0x169C), (0x16A0, 0x16F8),
    (0x1780, 0x17F9), (0x1800, 0x18AA), (0x1C90, 0x1CBF), (0x1E00, 0x1FFE), (0x2C00, 0x2C5F), (0x2D30, 0x2D7F),
    (0x3041, 0x309F), (0x30A0, 0x30FF), (0x3105, 0x312F), (0x4E00, 0x9FFF), (0xA000, 0xA48C), (0xA4D0, 0xA4FF),
    (0xA500, 0xA62B), (0xAC00, 0xD7A3), (0xFB1D, 0xFB4F), (0xFE70, 0xFEFC), (0xFF21, 0xFF5A), (0xFF66, 0xFFDC),
    (0x10330, 0x1034A), (0x10400, 0x1044F), (0x104B0, 0x104FB), (0x12000, 0x12399), (0x13000, 0x1342F),
    (0x16A40, 0x16A69), (0x1D400, 0x1D7CB), (0x1E900, 0x1E943), (0x20000, 0x2A6DF), (0x30000, 0x3134A),
]
# scripts new in Unicode 15 and 16 (Kawi, Garay, Todhri, Kirat Rai, Ol Onal): wild text only
SCRIPTS_NEW = [(0x11F00, 0x11F59), (0x10D40, 0x10D8F), (0x105C0, 0x105F3), (0x16D40, 0x16D79), (0x1E5D0, 0x1E5FA)]
TITLECASE = "ǅǈǋǲᾈᾉᾊᾋᾌᾍᾎᾏᾘᾼῌῼ"
MODIFIERS = "ʰʱʲˆˇˈˑ˜ーゝゞ々ꜗꜘ"
MARKS = [(0x300, 0x36F), (0x483, 0x489), (0x591, 0x5BD), (0x64B, 0x65F), (0x93A, 0x94F), (0x1AB0, 0x1ACE),
         (0x1DC0, 0x1DFF), (0x20D0, 0x20F0), (0xFE20, 0xFE2F), (0x1D165, 0x1D169)]
DIGITS = ["0123456789", "٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "０１２３４５６７８９", "𝟘𝟙𝟚𝟛𝟜𝟝𝟞𝟟𝟠𝟡", "ⅠⅡⅢⅣⅻ", "½²³¹①②⑳"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x85", "\u00a0", "\u1680", "\u2000",
          "\u2003", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u200b", "\ufeff"]
CONTRACTIONS = ["'s", "'ſ", "'ſt", "'S", "'t", "'T", "'re", "'RE", "'rE", "'ve", "'Ve", "'m", "'M", "'ll", "'LL", "'lL", "'d", "'D",
                "’s", "'x", "''", "'", "s'"]
PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~…—–«»¿¡€£¥©®°±×÷§¶•‰′″←→↔∀∂∑√∞≈≠≤≥─│┌┐└┘█░"
EMOJI = ["🙂", "😀", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🇩🇪", "🇯🇵", "1️⃣", "❤️", "☃", "🏳️‍🌈", "🫠", "🪿", "🧑🏿‍🦱"]
WORDS = ["In", "the", "beginning", "God", "created", "naïve", "café", "Straße", "ΑΘΗΝΑ", "москва", "東京", "日本語",
         "한국어", "हिन्दी", "العربية", "עברית", "ภาษาไทย", "HTTPServer", "camelCase", "snake_case", "x86_64", "e.g.",
         "don't", "I'M", "WE'LL", "you've", "ǅemal", "Ǆ", "ﬁne", "Ⓐ", "ℌ", "İstanbul", "ΐ"]
SPECIAL_STRINGS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>",
                   "<|endoftext", "<|im_start|>", "<|"]


def _cp(rng, lo, hi):
    c = rng.randint(lo, hi)
    return chr(c) if not 0xD800 <= c <= 0xDFFF else "x"


def stress_piece(rng, specials=False, wild=True):
    """One piece of stress text. wild: also any code point at all (unassigned,
    private use, noncharacters) and the newest scripts, which only references
    with the same Unicode tables (16.0, as tiktoken's) agree on."""
    k = rng.randrange(100)
    if k < 18:
        lo, hi = rng.choice(SCRIPTS + SCRIPTS_NEW if wild else SCRIPTS)
        return "".join(_cp(rng, lo, hi) for _ in range(rng.randint(1, 8)))
    if k < 24:
        base = rng.choice(WORDS)
        lo, hi = rng.choice(MARKS)
        return base + "".join(_cp(rng, lo, hi) for _ in range(rng.randint(1, 3)))
    if k < 27:
        return "".join(rng.choice(TITLECASE + MODIFIERS) for _ in range(rng.randint(1, 4))) + rng.choice(WORDS)
    if k < 36:
        ds = rng.choice(DIGITS)
        return "".join(rng.choice(ds) for _ in range(rng.choice([1, 2, 3, 4, 5, 6, 7, 9, 12, 25])))
    if k < 50:
        return "".join(rng.choice(SPACES) for _ in range(rng.choice([1, 1, 2, 3, 5, 8])))
    if k < 58:
        return rng.choice(WORDS) + rng.choice(CONTRACTIONS)
    if k < 66:
        return "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 5)))
    if k < 72:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
    if k < 76 and specials:
        return rng.choice(SPECIAL_STRINGS)
    if k < 80 and wild:
        out = []
        for _ in range(rng.randint(1, 4)):
            c = rng.choice([rng.randint(1, 0x7F), rng.randint(0x80, 0x7FF), rng.randint(0x800, 0xFFFF),
                            rng.randint(0x10000, 0x10FFFF)])
            out.append(chr(c) if not 0xD800 <= c <= 0xDFFF else "\ufffd")
        return "".join(out)
    if k < 84:
        return "\r\n" * rng.randint(1, 3)
    return rng.choice(WORDS)


def _old_enough(c):
    """Assigned in Python's Unicode tables (14.0 in Python 3.11), and for marks
    (which NFC reorders by combining class) already in Unicode 3.2."""
    cat = unicodedata.category(c)
    return cat != "Cn" and (cat[0] != "M" or unicodedata.ucd_3_2_0.category(c) != "Cn")


def stress_text(rng, pieces, specials=False, wild=True):
    """A document: pieces glued directly or by a space. wild=False keeps to
    characters that references with older Unicode tables read alike
    (Hugging Face tokenizers' NFC, for one, predates Unicode 14's marks)."""
    out = []
    for _ in range(pieces):
        out.append(stress_piece(rng, specials, wild))
        if rng.random() < 0.5:
            out.append(" ")
    text = "".join(out)
    if not wild:
        # U+11A7 after a Hangul syllable: see test_tokenize_hf.py's
        # test_nfc_keeps_hangul_jamo_11a7 (a bug of ours, marked xfail there)
        text = "".join(c for c in text if _old_enough(c) and c != "\u11a7")
    # endings that matter to the patterns: whitespace after a newline at the end
    return text + rng.choice(["", "", "\n", " ", "\n  ", " \n", "\t", "\r\n", "\n\n"])


def random_bytes(rng, n):
    """Bytes of every kind: text with invalid UTF-8 spliced in, pure noise, NULs."""
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(n))
    text = stress_text(rng, max(1, n // 8)).encode("utf-8")
    bad = [b"\xff", b"\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xbf\xbf", b"\xe2\x82",
           b"\xf0\x9f\x99", b"\xc3", b"\x00", b"\x00\x00", b"\xf8\x88\x80\x80\x80", b" \xff ", b"\n\xff\n"]
    out = bytearray(text)
    for _ in range(rng.randint(0 if kind == 3 else 1, 4)):
        pos = rng.randint(0, len(out))
        out[pos:pos] = rng.choice(bad)
    if kind == 3:   # valid text up to a cut inside a character
        out += rng.choice(bad[5:10])
    return bytes(out)


# ---- fixtures ----

@pytest.fixture(scope="module")
def kjv(tmp_path_factory):
    if not shutil.which("bible"):
        pytest.skip("bible-kjv is not installed (apt-get install bible-kjv)")
    path = tmp_path_factory.mktemp("kjv") / "kjv.txt"
    with open(path, "wb") as f:
        subprocess.run(["bible", "-f", "gen1:1-rev22:21"], stdout=f, check=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def stress(tmp_path_factory):
    """(jsonl path, texts, directory of the same texts as files, file paths in order)."""
    rng = random.Random(SEED)
    d = tmp_path_factory.mktemp("stress")
    texts = [stress_text(rng, rng.choice([1, 3, 20, 200])) for _ in range(150)]
    texts += ["", " ", "\n", "\r\n", "  \n  ", "a\n \n", "x  ", "'s", "'LL", "1234567890", "   \t\n\n\r\n  x"]
    jsonl = d / "stress.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    files = d / "files"
    files.mkdir()
    for i, t in enumerate(texts):
        with open(files / f"{i:04d}.txt", "w", encoding="utf-8", newline="") as f:
            f.write(t)
    return jsonl, texts, files


# ---- tests ----

@pytest.mark.parametrize("name", ENCODINGS)
def test_kjv(name, kjv):
    enc = encoding(name)
    ours = ours_ids(rank_file(name), [kjv])
    assert len(ours) == 1
    theirs = enc.encode_ordinary(kjv.read_text(encoding="utf-8"))
    assert_same(ours, [theirs])


@pytest.mark.parametrize("name", ENCODINGS)
def test_stress_jsonl(name, stress):
    jsonl, texts, _ = stress
    enc = encoding(name)
    assert_same(ours_ids(rank_file(name), [jsonl], ["-j", "2"]), [enc.encode_ordinary(t) for t in texts], texts)


@pytest.mark.parametrize("name", ENCODINGS)
def test_stress_files(name, stress):
    """The same texts as plain files: raw CR, CRLF and U+2028 in the bytes."""
    _, texts, files = stress
    enc = encoding(name)
    assert_same(ours_ids(rank_file(name), [files]), [enc.encode_ordinary(t) for t in texts], texts)


@pytest.mark.parametrize("name", ENCODINGS)
def test_special_tokens(name, tmp_path):
    rng = random.Random(SEED + 1)
    enc = encoding(name)
    texts = [stress_text(rng, rng.choice([2, 10, 40]), specials=True) for _ in range(80)]
    texts += ["<|endoftext|>", "<|endoftext|><|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|",
              "<<|endoftext|>>", "<|endofprompt|><|fim_prefix|>x<|fim_suffix|>"]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    tok = rank_file(name)
    assert_same(ours_ids(tok, [path], ["--allow-special"]), [enc.encode(t, allowed_special="all") for t in texts], texts)
    # without --allow-special the strings are text, as encode_ordinary reads them
    assert_same(ours_ids(tok, [path]), [enc.encode_ordinary(t) for t in texts], texts)
    assert ours_ids(tok, [path], ["--allow-special"])[-7][0] == enc.eot_token


@pytest.mark.parametrize("name", ENCODINGS)
def test_source_code(name):
    enc = encoding(name)
    files = sorted(os.path.join(ROOT, "lib", f) for f in os.listdir(os.path.join(ROOT, "lib")) if f.endswith(".c"))
    assert files
    texts = []
    for f in files:
        with open(f, encoding="utf-8", newline="") as fh:
            texts.append(fh.read())
    assert_same(ours_ids(rank_file(name), files, ["-j", "2"]), [enc.encode_ordinary(t) for t in texts], files)


@pytest.mark.parametrize("name", ENCODINGS)
def test_bytes_mode(name, tmp_path):
    rng = random.Random(SEED + 2)
    enc = encoding(name)
    docs = [random_bytes(rng, rng.choice([1, 2, 5, 40, 300])) for _ in range(120)]
    docs += [b"", b"\xff", b"\x00", b"a\xff", b"  \xff", b"hello  \xff", b"\n\n\xe2\x82", b"abc \xf0\x9f\x99",
             "日本語".encode()[:-1], b"\xff" * 50, b" " * 20 + b"\x80", b"text\r\n\r\n  \x80x"]
    d = tmp_path / "bytes"
    d.mkdir()
    for i, b in enumerate(docs):
        (d / f"{i:04d}.bin").write_bytes(b)
    ours = ours_ids(rank_file(name), [d], ["--bytes", "-j", "2"])
    assert_same(ours, [enc._encode_bytes(b) for b in docs], [repr(b) for b in docs])


def test_tiktoken_encoding_is_the_reference():
    """The offline Encodings are tiktoken's: known ids of a known text."""
    assert encoding("gpt2").encode("hello world") == [31373, 995]
    assert encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert encoding("o200k_base").encode("hello world") == [24912, 2375]
