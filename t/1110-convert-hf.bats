#!/usr/bin/env bats
# llm-convert and Hugging Face directories: the round trip, a sharded
# directory, and bad input — each refused with one line that names the file
# and the tensor or field, exit status 1, and nothing written.
# (t/conformance/test_convert_hf.py checks the directories against transformers.)

setup_file() {
    cd "$BATS_FILE_TMPDIR"
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    for i in $(seq 1 30); do echo "Verse $i. In the beginning God created the heaven and the earth."; done > text.txt
    llm-tokenize train --vocab-size 300 --special '<|endoftext|>' -o tok.json text.txt
    llm-tokenize -t tok.json text.txt | llm-shard --seq 16 -o data
    llm-train --arch llama --layers 2 --heads 4 --kv-heads 2 --dim 64 --ffn 176 --ctx 64 --untied --tokenizer tok.json \
        data --steps 0 -o llama.safetensors
    llm-train --arch gpt2 --layers 2 --heads 4 --dim 64 --ffn 256 --ctx 64 --tokenizer tok.json \
        data --steps 0 -o gpt2.safetensors
    llm-convert llama.safetensors --to hf -o llama.hf 2> /dev/null
    llm-convert gpt2.safetensors --to hf -o gpt2.hf 2> /dev/null
    # llama.hf in two shards with model.safetensors.index.json, as transformers shards
    cp -r llama.hf sharded
    python3 - llama.hf sharded <<'EOF'
import json, os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
b = open(os.path.join(src, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h, body = json.loads(b[8:8 + n]), b[8 + n:]
names = [k for k in h if k != "__metadata__"]
wm = {}
for i, part in enumerate([names[:len(names) // 2], names[len(names) // 2:]]):
    fname = f"model-0000{i + 1}-of-00002.safetensors"
    hdr, off, chunks = {"__metadata__": {"format": "pt"}}, 0, []
    for k in part:
        s, e = h[k]["data_offsets"]
        chunks.append(body[s:e])
        hdr[k] = {"dtype": h[k]["dtype"], "shape": h[k]["shape"], "data_offsets": [off, off + e - s]}
        off += e - s
        wm[k] = fname
    t = json.dumps(hdr, separators=(",", ":")).encode()
    t += b" " * (-len(t) % 8)
    open(os.path.join(dst, fname), "wb").write(struct.pack("<Q", len(t)) + t + b"".join(chunks))
json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(dst, "model.safetensors.index.json"), "w"))
os.remove(os.path.join(dst, "model.safetensors"))
EOF
}

setup() {
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    cd "$BATS_FILE_TMPDIR"
}

# refused WORD... -- IN [ARGS]: `llm-convert IN --to llmux -o out.safetensors
# [ARGS]` fails with status 1 and one line that holds every WORD, and leaves
# neither out.safetensors nor a temp file behind.
refused() {
    local words=()
    while [ "$1" != "--" ]; do words+=("$1"); shift; done
    shift
    rm -f out.safetensors
    run llm-convert "$@" --to llmux -o out.safetensors
    echo "status $status: $output"
    [ "$status" -eq 1 ]
    [ "$(printf '%s\n' "$output" | wc -l)" -eq 1 ]
    for w in "${words[@]}"; do [[ "$output" == *"$w"* ]] || { echo "no '$w'"; return 1; }; done
    [ ! -e out.safetensors ]
    [ -z "$(find . -maxdepth 1 -name '.*tmp*')" ]
}

# bad NAME FROM JQ: a copy of directory FROM with config.json passed through jq
bad() {
    rm -rf "$1"
    cp -r "$2" "$1"
    jq "$3" "$2/config.json" > "$1/config.json"
}

@test "llmux -> hf -> llmux gives back the same file; a sharded directory reads the same" {
    for m in llama gpt2; do
        llm-convert $m.safetensors --to llmux -o $m.direct.safetensors
        llm-convert $m.hf --to llmux -o $m.back.safetensors
        cmp $m.direct.safetensors $m.back.safetensors
    done
    [ "$(jq -r '.architectures[0]' llama.hf/config.json)" = LlamaForCausalLM ]
    [ "$(jq -r '.architectures[0]' gpt2.hf/config.json)" = GPT2LMHeadModel ]
    [ "$(jq -r .tokenizer_class llama.hf/tokenizer_config.json)" = PreTrainedTokenizerFast ]
    cmp tok.json llama.hf/tokenizer.json
    llm-convert sharded --to llmux -o sharded.safetensors
    cmp llama.direct.safetensors sharded.safetensors
    # --dtype: the export's tensors and torch_dtype
    llm-convert llama.safetensors --to hf --dtype bf16 -o llama.bf16.hf
    [ "$(jq -r .torch_dtype llama.bf16.hf/config.json)" = bfloat16 ]
    [ "$(llm-inspect llama.bf16.hf/model.safetensors | jq -r '[.tensors[].dtype] | unique | join(" ")')" = BF16 ]
    # quantized tensors: dequantized, and said so
    llm-quantize -q q8_0 llama.safetensors -o q8.safetensors > /dev/null
    rm -rf q8.hf
    run llm-convert q8.safetensors --to hf -o q8.hf
    [ "$status" -eq 0 ]
    [[ "$output" == *"dequantized to f32"* ]]
    [ "$(jq -r .torch_dtype q8.hf/config.json)" = float32 ]
    [ "$(llm-inspect q8.hf/model.safetensors | jq -r '[.tensors[].dtype] | unique | join(" ")')" = F32 ]
}

@test "a directory without config.json or without weights" {
    rm -rf nocfg noweights
    cp -r llama.hf nocfg && rm nocfg/config.json
    refused nocfg config.json -- nocfg
    refused nocfg/config.json -- nocfg --from hf
    cp -r llama.hf noweights && rm noweights/model.safetensors
    refused noweights model.safetensors -- noweights
}

@test "config and weights that disagree: a shape, a layer too many or too few, the vocabulary" {
    bad ffn llama.hf '.intermediate_size = 160'
    refused ffn/model.safetensors model.layers.0.mlp.gate_proj.weight '[176, 64]' '[160, 64]' -- ffn
    bad more llama.hf '.num_hidden_layers = 3'
    refused more/model.safetensors model.layers.2.input_layernorm.weight missing -- more
    bad fewer llama.hf '.num_hidden_layers = 1'
    refused fewer/model.safetensors model.layers.1. 'not part of the model' -- fewer
    bad vocab gpt2.hf '.vocab_size = 299'
    refused vocab/model.safetensors transformer.wte.weight '[300, 64]' -- vocab
    bad tied llama.hf '.tie_word_embeddings = true'
    llm-convert tied --to llmux -o tied.safetensors   # lm_head.weight is passed over, as transformers ties it
    [ "$(llm-inspect tied.safetensors | jq '[.tensors[].name] | index("output.weight")')" = null ]
    rm -rf untied
    cp -r gpt2.hf untied
    jq '.tie_word_embeddings = false' gpt2.hf/config.json > untied/config.json
    refused untied/config.json tie_word_embeddings -- untied
}

@test "a tensor of an unknown or unsupported dtype" {
    rm -rf dtype1 dtype2
    cp -r llama.hf dtype1
    perl -0777 -pi -e 's/"dtype":"F32"/"dtype":"F33"/' dtype1/model.safetensors
    refused dtype1/model.safetensors F33 -- dtype1
    cp -r llama.hf dtype2
    perl -0777 -pi -e 's/"([a-z_.0-9]+)":\{"dtype":"F32"/"$1":{"dtype":"I32"/' dtype2/model.safetensors
    name=$(llm-inspect dtype2/model.safetensors | jq -r '.tensors[] | select(.dtype == "I32") | .name')
    [ -n "$name" ]
    refused dtype2/model.safetensors "$name" I32 -- dtype2
}

@test "shards: one cut short, one missing, a tensor in the wrong one or in none" {
    rm -rf cut gone moved unnamed
    cp -r sharded cut
    size=$(stat -c %s cut/model-00002-of-00002.safetensors)
    head -c $((size - 64)) sharded/model-00002-of-00002.safetensors > cut/model-00002-of-00002.safetensors
    refused cut/model-00002-of-00002.safetensors -- cut
    cp -r sharded gone && rm gone/model-00001-of-00002.safetensors
    refused gone/model-00001-of-00002.safetensors -- gone
    cp -r sharded moved
    t=$(jq -r '.weight_map | to_entries | map(select(.value == "model-00001-of-00002.safetensors")) | .[0].key' sharded/model.safetensors.index.json)
    jq --arg t "$t" '.weight_map[$t] = "model-00002-of-00002.safetensors"' sharded/model.safetensors.index.json \
        > moved/model.safetensors.index.json
    refused "$t" model-00001-of-00002.safetensors model-00002-of-00002.safetensors -- moved
    cp -r sharded unnamed
    jq --arg t "$t" 'del(.weight_map[$t])' sharded/model.safetensors.index.json > unnamed/model.safetensors.index.json
    refused "$t" weight_map -- unnamed
}

@test "what llmux does not implement is refused by name" {
    bad yarn llama.hf '.rope_scaling = {"rope_type": "yarn", "factor": 4.0}'
    refused yarn/config.json rope_scaling yarn -- yarn
    bad l3 llama.hf '.rope_parameters = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}'
    refused l3/config.json rope_parameters llama3 -- l3
    bad sliding llama.hf '.architectures = ["MistralForCausalLM"] | .model_type = "mistral" | .sliding_window = 32'
    refused sliding/config.json sliding_window -- sliding
    bad wide llama.hf '.architectures = ["MistralForCausalLM"] | .model_type = "mistral" | .sliding_window = 4096'
    llm-convert wide --to llmux -o wide.safetensors   # a window no smaller than the context is no window
    bad qsw llama.hf '.architectures = ["Qwen2ForCausalLM"] | .model_type = "qwen2" | .use_sliding_window = true'
    refused qsw/config.json use_sliding_window -- qsw
    bad act llama.hf '.hidden_act = "gelu"'
    refused act/config.json hidden_act gelu -- act
    bad mlp llama.hf '.mlp_bias = true'
    refused mlp/config.json mlp_bias -- mlp
    bad obias llama.hf '.attention_bias = true'
    refused obias/config.json attention_bias -- obias
    bad hd llama.hf '.head_dim = 32'
    refused hd/config.json head_dim -- hd
    bad gelu gpt2.hf '.activation_function = "relu"'
    refused gelu/config.json activation_function relu -- gelu
    bad phi llama.hf '.architectures = ["PhiForCausalLM"]'
    refused phi/config.json PhiForCausalLM -- phi
    bad notjson llama.hf '.'
    printf '{"architectures": ' > notjson/config.json
    refused notjson/config.json -- notjson
}

@test "an existing output is never written over" {
    rm -rf exists
    mkdir exists
    run llm-convert llama.safetensors --to hf -o exists
    [ "$status" -eq 1 ]
    [[ "$output" == *"exists"*"already exists"* ]]
    [ "$(printf '%s\n' "$output" | wc -l)" -eq 1 ]
    [ -z "$(ls -A exists)" ]
    run llm-convert llama.safetensors --to hf -o exists/
    [ "$status" -eq 1 ]
    : > afile
    run llm-convert llama.safetensors --to hf -o afile
    [ "$status" -eq 1 ]
    [[ "$output" == *"afile"* ]]
    [ ! -s afile ]
    [ -z "$(find . -maxdepth 1 -name '.*tmp*')" ]
    # a failure half way leaves no directory either
    rm -rf new.hf
    run llm-convert ffn --to hf -o new.hf
    [ "$status" -eq 1 ]
    [ ! -e new.hf ]
    [ -z "$(find . -maxdepth 1 -name '.*tmp*')" ]
}
