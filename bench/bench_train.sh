#!/usr/bin/env bash
# bench/bench_train.sh — byte-level BPE training against Hugging Face
# tokenizers' BpeTrainer, measured in the same run, on the King James Bible
# (Debian's bible-kjv; skipped with a message where it is not installed).
#
# Same settings on both sides: Split(pattern, Isolated) + ByteLevel(use_regex
# false), all 256 bytes as the initial alphabet, min_frequency 0, one special
# token. Ours is the whole program (start, read, count, train, write);
# BpeTrainer's is tokenizer.train(files) inside Python. Compression is bytes
# per token of the whole text, both encoded by tokenizers.
#
# Usage: bench/bench_train.sh [VOCAB...]   (default: 8000 32000)
# Environment: LLMUX_VENV (the venv with tokenizers), BENCH_PATTERN (gpt2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${LLMUX_VENV:-$HOME/.cache/llmux/venv}/bin/python
TRAIN=build/t/llmux-train-test
PATTERN=${BENCH_PATTERN:-gpt2}
[ $# -gt 0 ] || set -- 8000 32000

if ! command -v bible >/dev/null 2>&1; then
    echo "# bpe train: skipped: bible-kjv is not installed (apt-get install bible-kjv)"; exit 0
fi
if [ ! -x "$PY" ] || ! "$PY" -c "import tokenizers" 2>/dev/null; then
    echo "# bpe train: skipped: no tokenizers in $PY ('make conformance' creates the venv)"; exit 0
fi
[ -x "$TRAIN" ] || make -s "$TRAIN"

dir=$(mktemp -d "${TMPDIR:-/tmp}/llmux-bench-train.XXXXXX")
trap 'rm -rf "$dir"' EXIT
bible -f "gen1:1-rev22:21" > "$dir/kjv.txt"

echo "# machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "# bpe train on the KJV ($(wc -c < "$dir/kjv.txt") bytes), pattern $PATTERN; best of 3 each"
for V in "$@"; do
    "$PY" - "$V" "$dir/kjv.txt" "$dir/ours.json" "$TRAIN" "$PATTERN" <<'PY'
import json, subprocess, sys, time
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
vocab, path, ours_path, train, pat = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ours_s = None
for _ in range(3):
    t0 = time.perf_counter()
    subprocess.run([train, "--vocab-size", str(vocab), "--pattern", pat, "--special", "<|endoftext|>",
                    "-o", ours_path, path], check=True, stderr=subprocess.DEVNULL)
    t = time.perf_counter() - t0
    ours_s = t if ours_s is None or t < ours_s else ours_s
ours = Tokenizer.from_file(ours_path)
pattern = json.load(open(ours_path, encoding="utf-8"))["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
best = None
for _ in range(3):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, min_frequency=0, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"])
    t0 = time.perf_counter()
    tok.train([path], tr)
    t = time.perf_counter() - t0
    best = t if best is None or t < best else best
text = open(path, encoding="utf-8").read()
nb = len(text.encode("utf-8"))
ob, hb = nb / len(ours.encode(text).ids), nb / len(tok.encode(text).ids)
import tokenizers
print(f"bpe train vocab={vocab}: ours {ours_s:.3f} s, tokenizers {tokenizers.__version__} BpeTrainer {best:.3f} s: "
      f"{best / ours_s:.1f}x; bytes/token ours {ob:.4f}, BpeTrainer {hb:.4f} ({(ob / hb - 1) * 100:+.2f}%); "
      f"vocab ours {ours.get_vocab_size()}, BpeTrainer {tok.get_vocab_size()}")
PY
done
