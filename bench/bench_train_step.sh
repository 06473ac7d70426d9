#!/usr/bin/env bash
# bench/bench_train_step.sh — a GPT-2 124M training step on the CPU, ours
# against PyTorch (transformers' GPT2LMHeadModel + torch.optim.AdamW),
# measured in the same run with the same threads.
#
# Both: B=4, T=256, fp32, 2 threads (BENCH_THREADS), AdamW, the shape of
# GPT-2 small (12 layers of 768, vocabulary 50257, context 1024). Ours is
# llm-train on the King James Bible (chapters as documents, a BPE trained on
# it; --vocab 50257 keeps GPT-2's shape); PyTorch's runs on random tokens
# (the time of a step does not depend on the tokens). Each side takes
# BENCH_STEPS steps (default 5) and reports the median of all but the first.
# Printed: tokens/s, MFU against the fp32 FMA peak measured in the same run
# (llm-train measures it when it starts), the ratio to PyTorch (target
# 1.2x), and our peak resident memory next to its computed floor
# (parameters, gradients, two moments, activations).
# Skipped with a message without bible-kjv or without torch in the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${LLMUX_VENV:-$HOME/.cache/llmux/venv}/bin/python
THREADS=${BENCH_THREADS:-2}
STEPS=${BENCH_STEPS:-5}
if ! command -v bible >/dev/null 2>&1; then echo "# train step: skipped: bible-kjv is not installed"; exit 0; fi
if [ ! -x "$PY" ] || ! "$PY" -c "import torch, transformers" 2>/dev/null; then
    echo "# train step: skipped: no torch/transformers in $PY ('make conformance' installs them)"; exit 0
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/llmux-bench-step.XXXXXX")
trap 'rm -rf "$dir"' EXIT
bible -f "gen1:1-rev22:21" > "$dir/kjv.txt"
jq -cR '{text: .}' "$dir/kjv.txt" > "$dir/kjv.jsonl"   # a verse per document
bin/llm-tokenize train --vocab-size 8000 --special '<|endoftext|>' -o "$dir/tok.json" "$dir/kjv.txt"
bin/llm-tokenize -t "$dir/tok.json" "$dir/kjv.jsonl" | bin/llm-shard --seq 256 -o "$dir/data"

peak_kb=$("$PY" - "$dir" "$THREADS" "$STEPS" <<'PY'
import resource, subprocess, sys
d, threads, steps = sys.argv[1:4]
subprocess.run(["bin/llm-train", "--init", "gpt2-small", "--vocab", "50257", "--tokenizer", f"{d}/tok.json",
                f"{d}/data", "--steps", steps, "--batch", "4", "--seq", "256", "-j", threads,
                "--log", f"{d}/log.jsonl", "-o", f"{d}/model.safetensors"], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
)
"$PY" - "$THREADS" "$STEPS" > "$dir/torch.json" <<'PY'
import json, statistics, sys, time
import torch, transformers
threads, steps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                              resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
model = transformers.GPT2LMHeadModel(cfg).train()
opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
B, T = 4, 256
times = []
for s in range(steps):
    x = torch.randint(0, 50257, (B, T + 1))
    t = time.perf_counter()
    loss = model(input_ids=x[:, :T], labels=x[:, :T]).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    times.append(time.perf_counter() - t)
print(json.dumps({"torch": torch.__version__, "tokens_per_s": B * T / statistics.median(times[1:])}))
PY
jq -rs --slurpfile torch "$dir/torch.json" --arg peak_kb "$peak_kb" --arg threads "$THREADS" '
    (map(select(.event == "start")) | .[0]) as $start
    | (map(select(.loss)) | .[1:] | map(.tokens_per_s) | sort | .[length / 2 | floor]) as $tps
    | (map(select(.loss)) | .[1:] | map(.mfu) | sort | .[length / 2 | floor]) as $mfu
    | "train step gpt2-124M B=4 T=256 fp32, \($threads) threads: \($tps | round) tokens/s, MFU \($mfu * 1000 | round / 10)% of the measured \($start.peak_gflops) GFLOP/s (target 50%)",
      "train step vs PyTorch \($torch[0].torch) (same step, same threads): \($torch[0].tokens_per_s * 10 | round / 10) tokens/s; ratio \($tps / $torch[0].tokens_per_s * 100 | round / 100)x (target 1.2x)",
      "train step memory: peak resident \(($peak_kb | tonumber) / 1048576 * 100 | round / 100) GB, floor \($start.memory_floor_bytes / 1073741824 * 100 | round / 100) GB (parameters, gradients, moments, activations): \(($peak_kb | tonumber) * 1024 / $start.memory_floor_bytes * 100 | round / 100)x"
' "$dir/log.jsonl"
