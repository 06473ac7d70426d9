#!/usr/bin/env bash
# make demo: what llmux can do today. For now that is the foundation: write a
# tensor file and a token stream with the library's writers, then show them
# with llm-inspect. Later stages (tokenize, shard, train, eval, quantize,
# generate) join here as they land.
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
