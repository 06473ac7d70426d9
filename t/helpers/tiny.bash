# tiny.bash — the small corpus and models most Bats files start from.
# Source it in setup_file after cd-ing to $BATS_FILE_TMPDIR with bin/ on PATH.

# tiny_corpus [SPECIAL...]: text.txt (30 verses) and text.jsonl; tok.json, a
# byte-level BPE of 300 tokens with <|endoftext|> and the SPECIALs; data/,
# sequences of 16.
tiny_corpus() {
    local s specials=(--special '<|endoftext|>')
    for s; do specials+=(--special "$s"); done
    for i in $(seq 1 30); do echo "Verse $i. In the beginning God created the heaven and the earth."; done > text.txt
    jq -cR '{text: .}' text.txt > text.jsonl
    llm-tokenize train --vocab-size 300 "${specials[@]}" -o tok.json text.txt
    llm-tokenize -t tok.json text.jsonl | llm-shard --seq 16 -o data
}

# tiny_llama [CTX] [LLM-TRAIN ARGS...]: model.safetensors, a Llama of 2 layers
# of 64 (4 heads, 2 for keys and values), context CTX (64), trained 30 steps
# on data/.
tiny_llama() {
    local ctx=${1:-64}
    shift || true
    llm-train --arch llama --layers 2 --heads 4 --kv-heads 2 --dim 64 --ffn 128 --ctx "$ctx" --tokenizer tok.json \
        data --steps 30 --lr 1e-2 "$@" -o model.safetensors
}
