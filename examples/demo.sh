#!/usr/bin/env bash
# make demo: what llmux can do today: train a tokenizer on a real corpus (the
# King James Bible, from Debian's bible-kjv), tokenize the corpus into a
# stream, show files and streams with llm-inspect, pack it into shuffled
# training sequences, and train a small GPT-2 on it for about two minutes,
# with its validation loss; then quantize it to q8_0 and generate 100 tokens.
# Later stages (eval, serve, convert) join here as they land.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-out
mkdir -p "$out"
PATH="$PWD/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "write a safetensors file (every dtype, metadata, a q8_0 block tensor)"
build/t/llmux-testgen safetensors "$out/model.safetensors"
ls -l "$out/model.safetensors"

step "llm-inspect $out/model.safetensors   (one JSON document)"
llm-inspect "$out/model.safetensors"

step "llm-inspect --stats: a summary of the float tensors, through jq"
llm-inspect --stats "$out/model.safetensors" | jq -c '.tensors[] | select(.stats) | {name, dtype, stats}'

step "write a token stream and read it back as JSON lines"
build/t/llmux-testgen stream "$out/docs.stream" 4 5
llm-inspect "$out/docs.stream"

step "a truncated stream is an error, not a shorter stream"
head -c 60 "$out/docs.stream" > "$out/cut.stream"
if llm-inspect "$out/cut.stream" > /dev/null; then
    echo "demo: the truncated stream was accepted" >&2
    exit 1
fi
echo "(exit status 1, as it should be)"

step "a real corpus: the King James Bible (bible-kjv)"
bible -f "gen1:1-rev22:21" > "$out/kjv.txt"
ls -l "$out/kjv.txt"
head -n 2 "$out/kjv.txt"

step "llm-tokenize train: a byte-level BPE with 4096 tokens, which Hugging Face tokenizers loads"
time llm-tokenize train --vocab-size 4096 --special '<|endoftext|>' -o "$out/tokenizer.json" "$out/kjv.txt"
jq -c '{model: .model.type, vocab: (.model.vocab | length), merges: (.model.merges | length), added: [.added_tokens[].content]}' "$out/tokenizer.json"

step "llm-tokenize: the corpus as a token stream, on every core"
time llm-tokenize -t "$out/tokenizer.json" "$out/kjv.txt" -o "$out/kjv.stream"
llm-tokenize -t "$out/tokenizer.json" --format count "$out/kjv.txt"
llm-inspect --head 0 "$out/kjv.stream"

step "round trip: decode gives the corpus back, byte for byte"
llm-tokenize decode -t "$out/tokenizer.json" "$out/kjv.stream" | cmp - "$out/kjv.txt" && echo "identical"

step "a sentence, as ids and back"
printf 'In the beginning God created the heaven and the earth.' > "$out/sentence.txt"
llm-tokenize -t "$out/tokenizer.json" --format ids "$out/sentence.txt" | tee "$out/sentence.ids"
llm-tokenize decode -t "$out/tokenizer.json" "$out/sentence.ids"; echo

step "llm-shard: the Bible as training sequences of 1024 tokens"
llm-shard --seq 1024 --progress "$out/kjv.stream" > "$out/kjv-seqs.stream"
llm-inspect --head 0 "$out/kjv-seqs.stream"

step "llm-shard: every verse a document; 5% of them for validation; shuffled, in shard sets"
jq -cR '{text: .}' "$out/kjv.txt" > "$out/kjv.jsonl"
rm -rf "$out/data"
llm-tokenize -t "$out/tokenizer.json" "$out/kjv.jsonl" | llm-shard --seq 128 --val 0.05 --seed 1 --shuffle -o "$out/data"
llm-inspect --compact "$out/data" | jq -c '{sequences, documents, tokens, shards: (.shards | length), verified}'

step "llm-train: a small GPT-2 (4 layers of 128) for about two minutes on both cores"
rm -f "$out/train.jsonl"
time llm-train --init gpt2-tiny --ctx 128 --tokenizer "$out/tokenizer.json" "$out/data" \
    --steps 450 --batch 16 --lr 3e-3 --warmup 20 --val "$out/data/val" --val-every 150 \
    --log "$out/train.jsonl" -o "$out/gpt2-tiny.safetensors"
jq -c 'select(.loss) | select(.step == 1 or .step % 50 == 0) | {step, loss, lr, tokens_per_s, mfu}' "$out/train.jsonl"

step "the validation loss, every 150 steps (a uniform guess over 4096 tokens would be 8.32)"
jq -c 'select(.val_loss) | {step, val_loss, val_ppl}' "$out/train.jsonl"

step "llm-quantize: the model's matrices to q8_0 blocks (embeddings and norms stay fp32)"
llm-quantize -q q8_0 "$out/gpt2-tiny.safetensors" -o "$out/gpt2-tiny-q8_0.safetensors" | tail -n 1 | jq -c .

step "llm-infer: 100 tokens from \"In the beginning\", from the q8_0 model"
llm-infer "$out/gpt2-tiny-q8_0.safetensors" -p "In the beginning" -n 100 --temp 0.8 --seed 1 --ignore-eos -f jsonl |
    jq -r '.text, "(\(.completion_tokens) tokens, \(.tokens_per_s | floor) tokens/s; every verse ends with <|endoftext|>)"'

step "llm-eval: the validation loss again, from the model file alone (llm-train's number, to the digit), as a JSON line"
rm -f "$out/evals.jsonl" "$out/evals.jsonl.lock"
llm-eval "$out/gpt2-tiny.safetensors" "$out/data/val" | tee -a "$out/evals.jsonl" | jq -c '{task, metrics, counts}'

step "llm-eval: a suite as cron runs it (examples/cron): the validation set, multiple choice with and without shots, last words"
examples/cron/eval.sh "$out/gpt2-tiny.safetensors" examples/cron/kjv-suite.jsonl "$out/evals.jsonl"
llm-eval --history "$out/evals.jsonl"

step "llm-infer: three prompts as one batch, two samples each, and a beam search"
printf '%s\n' '{"prompt":"And God said","n":2,"seed":3,"max_tokens":24}' \
    '{"prompt":"Blessed are","n":2,"seed":4,"max_tokens":24}' \
    '{"prompt":"The LORD is my shepherd","beams":4,"max_tokens":16,"ignore_eos":true}' > "$out/requests.jsonl"
llm-infer "$out/gpt2-tiny-q8_0.safetensors" --requests "$out/requests.jsonl" -f jsonl --stats |
    jq -r '.prompt as $p | (.choices // [.])[] | "\($p) |\(.text)"'

step "llm-quantize to nf4 (4-bit NormalFloat, double quantization): perplexity on the validation split"
llm-quantize -q nf4 "$out/gpt2-tiny.safetensors" -o "$out/gpt2-tiny-nf4.safetensors" | tail -n 1 | jq -c '{type, ratio}'
for m in gpt2-tiny gpt2-tiny-q8_0 gpt2-tiny-nf4; do
    printf '%-16s ' "$m"; build/t/llmux-ppl "$out/$m.safetensors" "$out/data/val" | jq -c '{ppl}'
done

step "llm-serve: the q8_0 model behind the OpenAI API on a free port; a completion, a stream, the metrics"
llm-serve "$out/gpt2-tiny-q8_0.safetensors" --port 0 --model-name gpt2-tiny 2> "$out/serve.log" &
serve_pid=$!
until grep -q listening "$out/serve.log"; do sleep 0.1; done
url=$(sed -n 's/.*listening on //p' "$out/serve.log")
until curl -sf "$url/health" > /dev/null; do sleep 0.1; done
echo "$url"
curl -s "$url/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"gpt2-tiny","prompt":"In the beginning","max_tokens":24,"seed":1}' | jq -c '{text: .choices[0].text, usage}'
curl -sN "$url/v1/completions" -d '{"prompt":"And God said","max_tokens":12,"seed":2,"stream":true}' | sed -n 1,3p
curl -s "$url/metrics" | grep -E '^llmux_(generation_tokens_total|kv_blocks_total|requests_total\{status="2xx"\})'
kill "$serve_pid"
wait "$serve_pid"
tail -n 1 "$out/serve.log"

step "llm-convert: to a Hugging Face directory and to GGUF (the q8_0 blocks copied as they are), and back"
rm -rf "$out/hf"
llm-convert "$out/gpt2-tiny.safetensors" --to hf -o "$out/hf"
ls "$out/hf"
llm-convert "$out/hf" --to llmux -o "$out/from-hf.safetensors"
llm-convert "$out/gpt2-tiny-q8_0.safetensors" --to gguf -o "$out/gpt2-tiny-q8_0.gguf"
llm-convert "$out/gpt2-tiny-q8_0.gguf" --to llmux -o "$out/from-gguf.safetensors"
for m in gpt2-tiny from-hf gpt2-tiny-q8_0 from-gguf; do
    printf '%-16s ' "$m"; llm-infer "$out/$m.safetensors" -p "In the beginning" -n 12 --temp 0
done
