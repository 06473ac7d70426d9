#!/usr/bin/env bats
# llm-eval on task files: multiple choice, cloze and generation with known
# answers, few-shot draws, --shots-file, suites, batch independence, details.

setup_file() {
    cd "$BATS_FILE_TMPDIR"
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    source "$BATS_TEST_DIRNAME/helpers/tiny.bash"
    tiny_corpus
    tiny_llama
    llm-quantize -q q8_0 model.safetensors -o q8.safetensors > /dev/null
    # the model's own greedy continuations of a few prompts: known answers
    for i in 2 5 11 17 23; do
        llm-infer model.safetensors -p "Verse $i. In the" -n 12 --temp 0 -f jsonl |
            jq -c --arg p "Verse $i. In the" '{prompt: $p, said: .text}'
    done > said.jsonl
}

setup() {
    PATH="$BATS_TEST_DIRNAME/../bin:$PATH"
    cd "$BATS_FILE_TMPDIR"
}

@test "multiple choice with known answers: the model's own continuation against nonsense scores 1" {
    jq -c '{context: .prompt, choices: ["zq xv kj", (.said | ltrimstr(" ")), "wj qz vx yy"], gold: 1}' said.jsonl > mc.jsonl
    llm-eval model.safetensors --task mc.jsonl --details det.jsonl > out.jsonl
    jq -e '.type == "mc" and .task == "mc" and .metrics.acc == 1 and .metrics.acc_norm == 1' out.jsonl
    jq -e '.counts == {"examples": 5, "tokens": .counts.tokens, "skipped": 0, "truncated": 0} and .counts.tokens > 0' out.jsonl
    jq -e '.shots == 0 and .seed == 0' out.jsonl
    [ "$(wc -l < det.jsonl)" -eq 5 ]
    jq -e -s 'all(.[]; .pred == 1 and .gold == 1 and (.logprobs | length) == 3 and (.logprobs[1] > .logprobs[0]))' det.jsonl
    jq -e -s 'map(.line) == [1, 2, 3, 4, 5] and all(.[]; .task == "mc")' det.jsonl
    # the gold choice moved: the same logprobs, moved with it
    jq -c '{context: .prompt, choices: [(.said | ltrimstr(" ")), "zq xv kj"], gold: 0}' said.jsonl > mc0.jsonl
    llm-eval model.safetensors --task mc0.jsonl --details det0.jsonl | jq -e '.metrics.acc == 1'
    [ "$(jq -c '.logprobs[1]' det.jsonl)" = "$(jq -c '.logprobs[0]' det0.jsonl)" ]
}

@test "scores do not depend on the batch; a quantized model scores close to the original" {
    jq -c '{context: .prompt, choices: ["zq xv kj", (.said | ltrimstr(" ")), " God", "heaven and"], gold: 1}' said.jsonl > mc.jsonl
    for b in 1 3 16; do llm-eval model.safetensors --task mc.jsonl -b $b --details d$b.jsonl > /dev/null; done
    cmp d1.jsonl d3.jsonl
    cmp d1.jsonl d16.jsonl
    llm-eval q8.safetensors --task mc.jsonl --details q.jsonl > /dev/null
    [ "$(jq -c .pred q.jsonl)" = "$(jq -c .pred d1.jsonl)" ]
    paste -d' ' <(jq -c .logprobs d1.jsonl) <(jq -c .logprobs q.jsonl) |
        jq -e -s '[range(0; length; 2) as $i | .[$i] as $a | .[$i + 1] as $b | range(0; $a | length) | ($a[.] - $b[.]) | fabs] | max < 0.5'
}

@test "cloze with known answers: the greedy last word is right, nonsense is not" {
    jq -c '{text: (.prompt + (.said | split(" ")[0:2] | join(" ")))}' said.jsonl > cloze.jsonl
    echo '{"text": "Verse 9. In the xyzzy"}' >> cloze.jsonl
    echo '{"context": "Verse 4. In the", "answer": "beginning"}' >> cloze.jsonl
    llm-eval model.safetensors --task cloze.jsonl --details det.jsonl > out.jsonl
    jq -e '.type == "cloze" and .counts.examples == 7' out.jsonl
    jq -e -s '.[0:5] | all(.[]; .greedy)' det.jsonl
    jq -e -s '.[5].greedy == false and .[5].answer == " xyzzy"' det.jsonl
    jq -e -s '.[6].answer == "beginning" and (.[6].logprob < 0)' det.jsonl
    # acc and the perplexity of the last words, from the details
    jq -s -e --slurpfile o out.jsonl '(map(select(.greedy)) | length) / length - $o[0].metrics.acc | fabs < 1e-6' det.jsonl
    jq -s -e --slurpfile o out.jsonl '((map(.logprob) | add / length) * -1 | exp) as $p | ($p - $o[0].metrics.ppl | fabs) / $p < 1e-5' det.jsonl
}

@test "generation with known answers: what llm-infer --temp 0 writes is right by exact, contains and regex" {
    jq -c '{prompt, answer: .said, max_tokens: 12}' said.jsonl > gen.jsonl
    jq -c '{prompt, answer: (.said | split(" ")[1:3] | join(" ")), match: "contains", max_tokens: 12}' said.jsonl >> gen.jsonl
    jq -c '{prompt, answer: ("^" + (.said | split(" ")[0:2] | join(" ")) + "( |$)"), match: "regex", max_tokens: 12}' said.jsonl >> gen.jsonl
    jq -c '{prompt, answer: ["nothing like it", "zebra"], max_tokens: 12}' said.jsonl >> gen.jsonl
    llm-eval model.safetensors --task gen.jsonl --details det.jsonl > out.jsonl
    jq -e '.type == "gen" and .counts.examples == 20 and (.metrics.acc - 0.75 | fabs) < 1e-6' out.jsonl
    jq -e -s '.[0:15] | all(.[]; .correct)' det.jsonl
    jq -e -s '.[15:] | all(.[]; .correct | not)' det.jsonl
    # the text is llm-infer's
    jq -e -s --slurpfile s said.jsonl '[.[0:5][] | .text] == [$s[] | .said]' det.jsonl
    # --max-tokens and --stop apply where a line says nothing
    jq -c '{prompt, answer: "x"}' said.jsonl > plain.jsonl
    llm-eval model.safetensors --task plain.jsonl -n 2 --details d2.jsonl > /dev/null
    jq -e -s 'all(.[]; .tokens <= 2)' d2.jsonl
    word=$(jq -r -s '.[0].said | split(" ")[2]' said.jsonl)
    llm-eval model.safetensors --task plain.jsonl --stop "$word" --details d3.jsonl > /dev/null
    jq -e -s --arg w "$word" '.[0].text | contains($w) | not' d3.jsonl
}

@test "few-shot: K shots from the train split, the same for a seed, others for another seed" {
    {
        echo '{"task": "fs", "fewshot_delimiter": "\n"}'
        jq -c '{context: .prompt, choices: [(.said | ltrimstr(" ")), "zq xv kj"], gold: 0}' said.jsonl
        for i in 1 3 6 8 9 12; do
            echo "{\"context\": \"Verse $i. In the\", \"choices\": [\"beginning\", \"end\"], \"gold\": 0, \"split\": \"train\"}"
        done
    } > fs.jsonl
    llm-eval model.safetensors --task fs.jsonl --shots 3 --seed 7 --details a.jsonl > out.jsonl
    jq -e '.shots == 3 and .seed == 7 and .counts.examples == 5' out.jsonl
    # three distinct train lines per question (lines 7 to 12)
    jq -e -s 'all(.[]; (.shots | length) == 3 and (.shots | unique | length) == 3 and all(.shots[]; . >= 7 and . <= 12))' a.jsonl
    llm-eval model.safetensors --task fs.jsonl --shots 3 --seed 7 --details b.jsonl > /dev/null
    cmp a.jsonl b.jsonl
    llm-eval model.safetensors --task fs.jsonl --shots 3 --seed 8 --details c.jsonl > /dev/null
    ! cmp -s <(jq -c .shots a.jsonl) <(jq -c .shots c.jsonl)
    # the shots make the context longer: more tokens run
    llm-eval model.safetensors --task fs.jsonl | jq -e --slurpfile o out.jsonl '.counts.tokens < $o[0].counts.tokens and .shots == 0'
    # the header's shots, overridden by --shots; too many shots is an error
    sed '1s/.*/{"task": "fs", "shots": 2}/' fs.jsonl > fs2.jsonl
    llm-eval model.safetensors --task fs2.jsonl | jq -e '.shots == 2'
    llm-eval model.safetensors --task fs2.jsonl -k 1 | jq -e '.shots == 1'
    run llm-eval model.safetensors --task fs.jsonl --shots 7
    [ "$status" -eq 1 ]
    [ "$output" = 'llm-eval: fs.jsonl: 7 shots, but the task (lines with "split":"train") has 6 few-shot examples' ]
}

@test "--shots-file draws from another file, of the same type; its path and hash are reported" {
    jq -c '{context: .prompt, choices: [(.said | ltrimstr(" ")), "zq xv kj"], gold: 0}' said.jsonl > q.jsonl
    for i in 1 3 6; do echo "{\"context\": \"Verse $i. In the\", \"choices\": [\"beginning\", \"end\"], \"gold\": 0}"; done > pool.jsonl
    llm-eval model.safetensors --task q.jsonl --shots-file pool.jsonl -k 2 --details d.jsonl > out.jsonl
    jq -e '.shots == 2 and .shots_file == "pool.jsonl" and (.shots_hash | test("^[0-9a-f]{16}$"))' out.jsonl
    jq -e -s 'all(.[]; all(.shots[]; . >= 1 and . <= 3))' d.jsonl
    echo '{"prompt": "Verse 1.", "answer": "x"}' > genpool.jsonl
    run llm-eval model.safetensors --task q.jsonl --shots-file genpool.jsonl -k 1
    [ "$status" -eq 1 ]
    [ "$output" = "llm-eval: genpool.jsonl: few-shot examples of type gen for a task of type mc" ]
}

@test "a suite runs its lines in turn, then its own line with the mean accuracy" {
    jq -c '{context: .prompt, choices: ["zq xv kj", (.said | ltrimstr(" "))], gold: 1}' said.jsonl > sm.jsonl
    jq -c '{prompt, answer: ["zebra"], max_tokens: 4}' said.jsonl > sg.jsonl
    mkdir -p s
    printf '%s\n' '{"task": "../sm.jsonl"}' '{"task": "../sg.jsonl", "name": "never"}' \
        '{"data": "../data", "limit": 2}' '{"task": "../sm.jsonl", "name": "mc-limited", "limit": 2}' > s/suite.jsonl
    llm-eval model.safetensors --suite s/suite.jsonl > out.jsonl
    jq -e -s 'map(.task) == ["sm", "never", "data", "mc-limited", "suite"]' out.jsonl
    jq -e -s 'map(.type) == ["mc", "gen", "lm", "mc", "suite"]' out.jsonl
    jq -e -s '.[0].data == "sm.jsonl" and .[2].data == "data" and .[2].counts.sequences == 2 and .[3].counts.examples == 2' out.jsonl
    # the mean of the tasks' accuracies (1, 0, 1): the lm line has none
    jq -e -s '.[4].counts.tasks == 3 and (.[4].metrics.acc - 2 / 3 | fabs) < 1e-6 and .[4].data == "s/suite.jsonl"' out.jsonl
}

@test "details lines and the output stay apart; progress only on a terminal or with --progress" {
    jq -c '{context: .prompt, choices: ["zq", (.said | ltrimstr(" "))], gold: 1}' said.jsonl > p.jsonl
    llm-eval model.safetensors --task p.jsonl > out.jsonl 2> err.txt
    [ "$(wc -l < out.jsonl)" -eq 1 ]
    [ ! -s err.txt ]
    llm-eval model.safetensors --task p.jsonl --progress > out.jsonl 2> err.txt
    [ "$(wc -l < out.jsonl)" -eq 1 ]
    [ -s err.txt ]
}
