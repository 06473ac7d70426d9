#!/usr/bin/env bats
# llm-eval and bad input: usage errors (exit 2), bad models and data, task
# lines that break llm-tasks(5) (FILE:LINE: problem, exit 1, nothing on
# stdout), --skip-bad, suites.

setup_file() {
    cd "$BATS_FILE_TMPDIR"
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    source "$BATS_TEST_DIRNAME/helpers/tiny.bash"
    tiny_corpus
    llm-tokenize -t tok.json text.jsonl | llm-shard --seq 128 -o long
    llm-train --arch gpt2 --layers 2 --heads 2 --dim 32 --ffn 64 --ctx 64 --tokenizer tok.json \
        data --steps 5 --lr 1e-2 -o model.safetensors
    printf '%s\n' '{"context": "Verse 1. In the", "choices": ["beginning", "end"], "gold": 0}' > good.jsonl
}

setup() {
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    cd "$BATS_FILE_TMPDIR"
}

# fails_with STATUS MESSAGE CMD...: exit STATUS, stdout empty, one line on stderr equal to MESSAGE
fails_with() {
    local want=$1 msg=$2
    shift 2
    local out err st=0
    out=$("$@" 2> err.txt) || st=$?
    err=$(cat err.txt)
    if [ "$st" -ne "$want" ] || [ -n "$out" ] || [ "$err" != "$msg" ]; then
        printf 'command: %s\nstatus %d (want %d)\nstdout: %s\nstderr: %s\nwant:   %s\n' "$*" "$st" "$want" "$out" "$err" "$msg"
        return 1
    fi
}

# bad_line LINE MESSAGE: a task of good.jsonl then LINE fails naming line 2
bad_line() {
    { cat good.jsonl; printf '%s\n' "$1"; } > bad.jsonl
    fails_with 1 "llm-eval: bad.jsonl:2: $2" llm-eval model.safetensors --task bad.jsonl
}

@test "usage errors: exit 2 with a one-line message" {
    for args in "" "model.safetensors" "model.safetensors data --task good.jsonl" "model.safetensors --task good.jsonl --suite x" \
        "model.safetensors data --window 8" "model.safetensors --text text.txt --window 8 --stride 9" \
        "model.safetensors data --shots 2" "--history x --task good.jsonl" "model.safetensors data --bogus" \
        "model.safetensors data --limit 0" "model.safetensors data --batch 0" "model.safetensors --suite s.jsonl --name x"; do
        run llm-eval $args
        [ "$status" -eq 2 ] || { echo "llm-eval $args: status $status: $output"; return 1; }
        [[ "$output" == "llm-eval: "* ]]
    done
    run llm-eval model.safetensors --text text.txt --window 65
    [ "$status" -eq 2 ]
    [[ "$output" == *"--window 65 is longer than the model's context of 64"* ]]
}

@test "bad models and data: exit 1, naming the file" {
    fails_with 1 "llm-eval: nothing.safetensors: No such file or directory" llm-eval nothing.safetensors data
    head -c 3000 model.safetensors > cut.safetensors
    run llm-eval cut.safetensors data
    [ "$status" -eq 1 ]
    [[ "$output" == "llm-eval: cut.safetensors"* ]]
    run llm-eval model.safetensors nodata
    [ "$status" -eq 1 ]
    [[ "$output" == *"nodata"* ]]
    fails_with 1 "llm-eval: long: sequences of 128 tokens do not fit the model's context of 64" llm-eval model.safetensors long
    # a damaged shard: its checksum
    cp -r data damaged
    printf 'x' | dd of=damaged/train/shard-00000.bin bs=1 seek=100 conv=notrunc 2> /dev/null
    run llm-eval model.safetensors damaged
    [ "$status" -eq 1 ]
    [[ "$output" == *"damaged"*"shard-00000.bin"* ]]
    [ "$(echo "$output" | wc -l)" -eq 1 ]
    # text that is not UTF-8
    printf 'In the \xff beginning\n' > latin.txt
    fails_with 1 "llm-eval: latin.txt: not UTF-8 text (byte 7)" llm-eval model.safetensors --text latin.txt
    fails_with 1 "llm-eval: missing.jsonl: No such file or directory" llm-eval model.safetensors --task missing.jsonl
}

@test "a malformed task line: FILE:LINE: problem, exit 1, nothing on stdout" {
    bad_line '{"context": "x", "choices": ["a", "b"]' "not JSON: '}' expected near end of file"
    bad_line '["context", "x"]' 'not a JSON object'
    bad_line '{"context": "x", "choices": ["a", "b"], "gold": 2}' '"gold" must be an integer from 0 to 1 (the index of the right choice)'
    bad_line '{"context": "x", "choices": ["a", "b"], "gold": 0.5}' '"gold" must be an integer from 0 to 1 (the index of the right choice)'
    bad_line '{"context": "x", "choices": ["a", "b"]}' 'no "gold" (the index of the right choice, from 0)'
    bad_line '{"context": "x", "choices": ["a"], "gold": 0}' '"choices" must be a list of two or more strings'
    bad_line '{"context": "x", "choices": ["a", 7], "gold": 0}' '"choices" must be a string or a list of strings'
    bad_line '{"context": "x", "choices": ["a", ""], "gold": 0}' '"choices" item 1 is an empty string'
    bad_line '{"choices": ["a", "b"], "gold": 0}' 'no "context"'
    bad_line '{"context": 5, "choices": ["a", "b"], "gold": 0}' '"context" must be a string'
    bad_line '{"prompt": "x", "answer": "y"}' 'a gen example in a task of type mc'
    bad_line '{"type": "quiz", "context": "x"}' '"type" must be mc, cloze or gen'
    bad_line '{"id": 7}' 'no "context"'
    echo '{"id": 7}' > bad.jsonl
    fails_with 1 'llm-eval: bad.jsonl:1: not an example: no "choices" (mc), "text" or "answer" (cloze), "prompt" (gen), and no "type"' \
        llm-eval model.safetensors --task bad.jsonl
    bad_line '{"task": "late"}' 'a header line (with "task") must be the file'"'"'s first line'
    bad_line '{"context": "x", "context": "y", "choices": ["a", "b"], "gold": 0}' "not JSON: duplicate object key near '\"context\"'"
    # cloze and gen
    printf '%s\n' '{"text": "Verse 1. In the beginning"}' > c.jsonl
    for l in '{"text": "nospace"}|"text" must end with a word after a space (the word to predict)' \
             '{"text": "ends with a space "}|"text" must end with a word after a space (the word to predict)' \
             '{"context": "x"}|no "answer" (or "text")' \
             '{"context": "x", "answer": ""}|"answer" is an empty string' \
             '{"text": "a b", "answer": "c"}|a cloze example has "text", or "context" and "answer", not both'; do
        { cat c.jsonl; printf '%s\n' "${l%%|*}"; } > bad.jsonl
        fails_with 1 "llm-eval: bad.jsonl:2: ${l#*|}" llm-eval model.safetensors --task bad.jsonl
    done
    printf '%s\n' '{"prompt": "Verse 1. In the", "answer": "beginning"}' > g.jsonl
    for l in '{"prompt": "x"}|no "answer"' \
             '{"prompt": "", "answer": "y"}|"prompt" is an empty string: nothing to continue' \
             '{"prompt": "x", "answer": []}|"answer" is an empty list' \
             '{"prompt": "x", "answer": "y", "match": "fuzzy"}|"match" must be exact, contains or regex' \
             '{"prompt": "x", "answer": "(", "match": "regex"}|"answer": not a valid regular expression: missing closing parenthesis at offset 1' \
             '{"prompt": "x", "answer": "y", "max_tokens": 0}|"max_tokens" must be an integer from 1 to 16777216' \
             '{"prompt": "x", "answer": "y", "stop": [1]}|"stop" must be a string or a list of strings'; do
        { cat g.jsonl; printf '%s\n' "${l%%|*}"; } > bad.jsonl
        fails_with 1 "llm-eval: bad.jsonl:2: ${l#*|}" llm-eval model.safetensors --task bad.jsonl
    done
}

@test "a bad header always stops the run, even with --skip-bad" {
    { echo '{"task": "t", "shotz": 1}'; cat good.jsonl; } > h.jsonl
    fails_with 1 'llm-eval: h.jsonl:1: the header has an unknown field "shotz" (task, type, description, target_delimiter, fewshot_delimiter, shots, max_tokens, stop, match)' \
        llm-eval model.safetensors --task h.jsonl --skip-bad
    { echo '{"task": "t", "type": "essay"}'; cat good.jsonl; } > h.jsonl
    fails_with 1 'llm-eval: h.jsonl:1: "type" must be mc, cloze or gen' llm-eval model.safetensors --task h.jsonl --skip-bad
    { echo '{"task": ""}'; cat good.jsonl; } > h.jsonl
    fails_with 1 'llm-eval: h.jsonl:1: "task" is an empty name' llm-eval model.safetensors --task h.jsonl
}

@test "--skip-bad: bad lines are reported on stderr, left out and counted" {
    {
        cat good.jsonl
        echo 'not json'
        echo '{"context": "Verse 2. In the", "choices": ["beginning", "end"], "gold": 5}'
        echo
        cat good.jsonl
    } > mixed.jsonl
    llm-eval model.safetensors --task mixed.jsonl --skip-bad > out.jsonl 2> err.txt
    [ "$(wc -l < out.jsonl)" -eq 1 ]
    jq -e '.counts.examples == 2 and .counts.skipped == 2' out.jsonl
    [ "$(wc -l < err.txt)" -eq 2 ]
    grep -q '^llm-eval: warning: mixed.jsonl:2: not JSON' err.txt
    grep -q '^llm-eval: warning: mixed.jsonl:3: "gold" must be' err.txt
    # every line bad: nothing to score
    printf 'x\ny\n' > allbad.jsonl
    run llm-eval model.safetensors --task allbad.jsonl --skip-bad
    [ "$status" -eq 1 ]
    [ "${#lines[@]}" -eq 3 ]
    [ "${lines[2]}" = "llm-eval: allbad.jsonl: no examples to score (2 bad lines skipped)" ]
}

@test "empty task files, and files with nothing to score" {
    : > empty.jsonl
    fails_with 1 "llm-eval: empty.jsonl: no examples" llm-eval model.safetensors --task empty.jsonl
    echo '{"task": "only a header"}' > header.jsonl
    fails_with 1 "llm-eval: header.jsonl: no examples" llm-eval model.safetensors --task header.jsonl
    jq -c '. + {split: "train"}' good.jsonl > train.jsonl
    fails_with 1 'llm-eval: train.jsonl: no examples to score: every line is a few-shot example ("split":"train")' \
        llm-eval model.safetensors --task train.jsonl
}

@test "an answer longer than the context is a bad example; a long context is cut at its start" {
    long=$(for i in $(seq 1 40); do printf 'xq '; done)
    printf '{"context": "Verse 1. In the", "choices": ["beginning", "%s"], "gold": 0}\n' "$long" > la.jsonl
    cat good.jsonl >> la.jsonl
    run llm-eval model.safetensors --task la.jsonl
    [ "$status" -eq 1 ]
    [[ "$output" =~ ^llm-eval:\ la.jsonl:1:\ the\ answer\ is\ [0-9]+\ tokens\;\ the\ model\'s\ context\ holds\ 64$ ]]
    llm-eval model.safetensors --task la.jsonl --skip-bad 2> /dev/null | jq -e '.counts.examples == 1 and .counts.skipped == 1'
    printf '{"context": "%s In the", "choices": ["beginning", "end"], "gold": 0}\n' "$long" > lc.jsonl
    llm-eval model.safetensors --task lc.jsonl --details d.jsonl | jq -e '.counts.truncated == 1 and .counts.examples == 1'
    jq -e '.truncated' d.jsonl
    printf '{"prompt": "%s In the", "answer": "x", "max_tokens": 8}\n' "$long" > lg.jsonl
    llm-eval model.safetensors --task lg.jsonl --details d.jsonl | jq -e '.counts.truncated == 1'
    jq -e '.prompt_tokens == 56 and .truncated' d.jsonl
}

@test "bad suites: FILE:LINE: problem" {
    printf '%s\n' '{"task": "good.jsonl"}' '{"task": "good.jsonl", "data": "data"}' > s.jsonl
    fails_with 1 'llm-eval: s.jsonl:2: a line names one of "task", "data" and "text"' llm-eval model.safetensors --suite s.jsonl
    printf '%s\n' '{"tsak": "good.jsonl"}' > s.jsonl
    fails_with 1 'llm-eval: s.jsonl:1: unknown field "tsak" (task, data, text, name, shots, seed, shots_file, limit, max_tokens, window, stride)' \
        llm-eval model.safetensors --suite s.jsonl
    printf '%s\n' '{"data": "data", "shots": 2}' > s.jsonl
    fails_with 1 'llm-eval: s.jsonl:1: "shots", "shots_file" and "max_tokens" are for tasks' llm-eval model.safetensors --suite s.jsonl
    printf '%s\n' '{"text": "text.txt", "window": 100}' > s.jsonl
    fails_with 1 "llm-eval: s.jsonl:1: a window of 100 tokens is longer than the model's context of 64" llm-eval model.safetensors --suite s.jsonl
    : > s.jsonl
    fails_with 1 'llm-eval: s.jsonl: an empty suite' llm-eval model.safetensors --suite s.jsonl
    # a task that fails midway: the lines of the tasks before it stay, the failing one prints nothing
    printf '%s\n' '{"task": "good.jsonl"}' '{"task": "missing.jsonl"}' > s.jsonl
    run llm-eval model.safetensors --suite s.jsonl
    [ "$status" -eq 1 ]
    [ "${lines[1]}" = "llm-eval: missing.jsonl: No such file or directory" ]
    llm-eval model.safetensors --suite s.jsonl 2> /dev/null | jq -e -s 'length == 1 and .[0].task == "good"' || true
    [ "$(llm-eval model.safetensors --suite s.jsonl 2> /dev/null | wc -l)" -eq 1 ]
}
