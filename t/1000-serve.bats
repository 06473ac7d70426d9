#!/usr/bin/env bats
# llm-serve from the command line: usage, binding, loading, the answers a
# plain HTTP client (curl) gets, the same text as llm-infer, the KV budget
# holding requests back, and SIGTERM. The OpenAI client, streaming details,
# bad requests and the chat page are in t/conformance/test_serve_*.py.

setup_file() {
    cd "$BATS_FILE_TMPDIR"
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    source "$BATS_TEST_DIRNAME/helpers/tiny.bash"
    tiny_corpus '<|im_start|>' '<|im_end|>'
    tiny_llama 128
}

setup() {
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    cd "$BATS_FILE_TMPDIR"
}

# start_server ARGS...: runs llm-serve on a free port; sets URL and PID
start_server() {
    rm -f serve.log
    llm-serve model.safetensors --port 0 "$@" 2> serve.log &
    PID=$!
    for _ in $(seq 1 100); do grep -q listening serve.log 2>/dev/null && break; sleep 0.05; done
    URL=$(sed -n 's/.*listening on //p' serve.log)
    [ -n "$URL" ]
    for _ in $(seq 1 100); do curl -sf "$URL/health" > /dev/null && break; sleep 0.05; done
}

stop_server() {
    kill -TERM "$PID"
    wait "$PID"
}

@test "--help, usage errors exit 2, an unreadable model or a bad address exit 1" {
    run llm-serve --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"--kv-blocks"* ]]
    run llm-serve
    [ "$status" -eq 2 ]
    run llm-serve model.safetensors --port 70000
    [ "$status" -eq 2 ]
    run llm-serve model.safetensors --chat-template jinja
    [ "$status" -eq 2 ]
    [[ "$output" == *"--chat-template"* ]]
    run llm-serve missing.safetensors --port 0
    [ "$status" -eq 1 ]
    [[ "$output" == *"missing.safetensors"* ]]
    run llm-serve model.safetensors --host not-an-address --port 0
    [ "$status" -eq 1 ]
    [[ "$output" == *"not-an-address"* ]]
    # a port already taken
    start_server
    port=${URL##*:}
    run llm-serve model.safetensors --port "$port"
    stop_server
    [ "$status" -eq 1 ]
    [[ "$output" == *"$port"* ]]
}

@test "a completion gives llm-infer's text for the same prompt, parameters and seed" {
    start_server
    for args in '0 0' '0.9 11'; do
        set -- $args
        want=$(llm-infer model.safetensors -p "In the beginning" -n 20 --temp "$1" --top-p 1 --seed "$2" -f jsonl | jq -r .text)
        got=$(curl -s "$URL/v1/completions" -H 'Content-Type: application/json' \
            -d "{\"prompt\":\"In the beginning\",\"max_tokens\":20,\"temperature\":$1,\"seed\":$2}" | jq -r '.choices[0].text')
        [ "$got" = "$want" ]
    done
    stop_server
}

@test "answers: models, health, tokenize round trip, metrics, chat, errors with their statuses" {
    start_server --model-name tiny --chat-template chatml
    [ "$(curl -s "$URL/v1/models" | jq -r '.data[0].id')" = tiny ]
    [ "$(curl -s "$URL/health" | jq -r .status)" = ok ]
    ids=$(curl -s "$URL/tokenize" -d '{"prompt":"In the beginning God"}' | jq -c .tokens)
    [ "$(curl -s "$URL/detokenize" -d "{\"tokens\":$ids}" | jq -r .prompt)" = "In the beginning God" ]
    chat=$(curl -s "$URL/v1/chat/completions" -d '{"model":"tiny","messages":[{"role":"user","content":"In the"}],"max_tokens":5}')
    [ "$(echo "$chat" | jq -r .object)" = chat.completion ]
    [ "$(echo "$chat" | jq -r '.choices[0].message.role')" = assistant ]
    [ "$(echo "$chat" | jq -r '.usage.completion_tokens')" -le 5 ]
    code() { curl -s -o body.json -w '%{http_code}' "$@"; }
    [ "$(code "$URL/v1/completions" -d '{"prompt":"x","model":"other"}')" = 404 ]
    [ "$(jq -r .error.code body.json)" = model_not_found ]
    [ "$(code "$URL/v1/completions" -d '{"prompt":')" = 400 ]
    [ "$(code "$URL/v1/completions" -d '{"prompt":"x","temperature":"hot"}')" = 400 ]
    [ "$(jq -r .error.param body.json)" = temperature ]
    [ "$(code "$URL/v1/completions" -d '{"prompt":"x","max_tokens":1000}')" = 400 ]
    [ "$(jq -r .error.code body.json)" = context_length_exceeded ]
    [ "$(code "$URL/v1/completions")" = 405 ]
    [ "$(code "$URL/nowhere")" = 404 ]
    metrics=$(curl -s "$URL/metrics")
    [[ "$metrics" == *'llmux_requests_total{status="404"} 2'* ]]
    [[ "$metrics" == *"llmux_generation_tokens_total"* ]]
    echo "$metrics" | grep -q '^llmux_kv_blocks_total [1-9]'
    [ "$(code "$URL/")" = 200 ]
    grep -q "<html" body.json
    stop_server
}

@test "--api-key and LLMUX_API_KEY: a missing or wrong key gets 401; health needs none" {
    start_server --api-key sekrit
    code() { curl -s -o body.json -w '%{http_code}' "$@"; }
    [ "$(code "$URL/v1/completions" -d '{"prompt":"x","max_tokens":2}')" = 401 ]
    [ "$(code "$URL/v1/completions" -H 'Authorization: Bearer wrong' -d '{"prompt":"x","max_tokens":2}')" = 401 ]
    [ "$(code "$URL/v1/completions" -H 'Authorization: Bearer sekrit' -d '{"prompt":"x","max_tokens":2}')" = 200 ]
    [ "$(code "$URL/health")" = 200 ]
    stop_server
    LLMUX_API_KEY=fromenv start_server
    [ "$(code "$URL/v1/models")" = 401 ]
    [ "$(code "$URL/v1/models" -H 'Authorization: Bearer fromenv')" = 200 ]
    stop_server
}

@test "a KV budget of one context: concurrent requests wait their turn and all finish, used blocks never above it" {
    start_server --kv-blocks 4 --max-seqs 8
    for i in 1 2 3 4 5 6; do
        curl -s "$URL/v1/completions" -d "{\"prompt\":\"Verse $i.\",\"max_tokens\":40,\"ignore_eos\":true,\"seed\":$i}" > "out$i.json" &
    done
    peak=0
    while [ "$(jobs -r | wc -l)" -gt 1 ]; do
        used=$(curl -s "$URL/metrics" | sed -n 's/^llmux_kv_blocks_used //p')
        [ "${used:-0}" -gt "$peak" ] && peak=$used
        sleep 0.02
    done
    wait $(jobs -p | grep -v "^$PID\$") 2>/dev/null || true
    for i in 1 2 3 4 5 6; do [ "$(jq -r '.usage.completion_tokens' "out$i.json")" = 40 ]; done
    [ "$peak" -le 4 ]
    # a request that could need more than the whole budget is refused
    [ "$(curl -s -o body.json -w '%{http_code}' "$URL/v1/completions" -d '{"prompt":"x","max_tokens":120,"n":2}')" = 400 ]
    grep -q "KV cache" body.json
    stop_server
}

@test "SIGTERM: a running stream finishes within --drain, then the server exits 0" {
    start_server --drain 20
    curl -sN "$URL/v1/completions" -d '{"prompt":"In","max_tokens":100,"ignore_eos":true,"stream":true}' > stream.txt &
    curl_pid=$!
    sleep 0.2
    kill -TERM "$PID"
    wait "$curl_pid"
    wait "$PID"
    [ "$(grep -v '^$' stream.txt | tail -1)" = "data: [DONE]" ]
    grep -q '"finish_reason":"length"' stream.txt
    grep -q "stopped" serve.log
}
