/* Unit tests of lib/eval_*: content hashes, windows over documents, the
 * few-shot draw, answer matching, task files, the context/answer tokens,
 * suites and the history table. */
#include "unit.h"

#include "eval_hash.h"
#include "eval_history.h"
#include "eval_lm.h"
#include "eval_match.h"
#include "eval_prompt.h"
#include "eval_suite.h"
#include "eval_task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/llmux-test-eval.XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return path;
    fputs(text, f);
    fclose(f);
    return path;
}

TEST(hash_is_xxh3_64)
{
    char hex[LLM_EVAL_HASH_LEN + 1];
    llm_err err;
    /* XXH3-64 (seed 0) of no bytes: the test vector of xxHash's own tests */
    CHECK(llm_eval_hash_path(write_file("empty", ""), hex, &err) == 0);
    CHECK(!strcmp(hex, "2d06800538d394c2"));
    CHECK(llm_eval_hash_path(write_file("a", "a"), hex, &err) == 0);
    CHECK(strlen(hex) == 16 && strcmp(hex, "2d06800538d394c2"));
    /* a directory: its manifest.json, else train/manifest.json */
    char sub[300], exp[LLM_EVAL_HASH_LEN + 1];
    snprintf(sub, sizeof sub, "%s/set", dir);
    mkdir(sub, 0755);
    snprintf(sub, sizeof sub, "%s/set/train", dir);
    mkdir(sub, 0755);
    CHECK(llm_eval_hash_path(write_file("set/train/manifest.json", "{\"x\":1}"), exp, &err) == 0);
    snprintf(sub, sizeof sub, "%s/set", dir);
    CHECK(llm_eval_hash_path(sub, hex, &err) == 0 && !strcmp(hex, exp));
    CHECK(llm_eval_hash_path(write_file("set/manifest.json", "{\"x\":2}"), exp, &err) == 0);
    CHECK(llm_eval_hash_path(sub, hex, &err) == 0 && !strcmp(hex, exp));
    CHECK_ERR(llm_eval_hash_path("/nonexistent/file", hex, &err), err, "/nonexistent/file");
}

TEST(windows_score_every_target_once)
{
    size_t ns[] = {1, 2, 5, 17, 64, 65, 200};
    size_t wins[] = {1, 4, 16, 64};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof wins / sizeof wins[0]; b++)
            for (size_t stride = 1; stride <= wins[b]; stride = stride * 2 + 1)
                for (size_t first = 1; first <= 3; first++) {
                    size_t n = ns[a], w = wins[b];
                    size_t count = llm_eval_windows(n, first, w, stride, NULL);
                    llm_eval_window *win = malloc((count + 1) * sizeof *win);
                    CHECK_EQ_U64(llm_eval_windows(n, first, w, stride, win), count);
                    unsigned char *seen = calloc(n + 1, 1);
                    for (size_t i = 0; i < count; i++) {
                        CHECK(win[i].end - 1 - win[i].begin <= w);   /* inputs fit the window */
                        CHECK(win[i].begin < win[i].first && win[i].first < win[i].end && win[i].end <= n);
                        CHECK(win[i].end - win[i].first <= stride);
                        /* the first scored target sees window - stride + 1 tokens, or all before it */
                        size_t ctx = win[i].first - win[i].begin;
                        CHECK(ctx >= w - stride + 1 || win[i].begin == 0);
                        for (size_t t = win[i].first; t < win[i].end; t++) seen[t]++;
                    }
                    for (size_t t = 0; t < n; t++) CHECK(seen[t] == (t >= first ? 1 : 0));
                    free(seen);
                    free(win);
                }
    /* stride = window: windows do not overlap */
    llm_eval_window w[4];
    CHECK_EQ_U64(llm_eval_windows(9, 1, 4, 4, w), 2);
    CHECK(w[0].begin == 0 && w[0].end == 5 && w[0].first == 1);
    CHECK(w[1].begin == 4 && w[1].end == 9 && w[1].first == 5);
}

TEST(draw_is_distinct_deterministic_and_per_example)
{
    size_t a[5], b[5], c[5];
    llm_eval_draw(10, 5, 7, 3, a);
    llm_eval_draw(10, 5, 7, 3, b);
    CHECK(!memcmp(a, b, sizeof a));
    for (size_t i = 0; i < 5; i++) {
        CHECK(a[i] < 10);
        for (size_t j = 0; j < i; j++) CHECK(a[i] != a[j]);
    }
    int differs_index = 0, differs_seed = 0;
    for (uint64_t idx = 0; idx < 20; idx++) {
        llm_eval_draw(10, 5, 7, idx, c);
        differs_index |= memcmp(a, c, sizeof a) != 0;
        llm_eval_draw(10, 5, 8 + idx, 3, c);
        differs_seed |= memcmp(a, c, sizeof a) != 0;
    }
    CHECK(differs_index && differs_seed);
    size_t all[6];
    llm_eval_draw(6, 6, 1, 0, all);   /* k = n: a permutation */
    int mark[6] = {0};
    for (size_t i = 0; i < 6; i++) mark[all[i]]++;
    for (size_t i = 0; i < 6; i++) CHECK(mark[i] == 1);
}

TEST(matching)
{
    CHECK(llm_eval_matches(LLM_MATCH_EXACT, " Paris\n", 7, "Paris", NULL));
    CHECK(llm_eval_matches(LLM_MATCH_EXACT, "Paris", 5, "  Paris ", NULL));
    CHECK(!llm_eval_matches(LLM_MATCH_EXACT, "Paris, France", 13, "Paris", NULL));
    CHECK(llm_eval_matches(LLM_MATCH_EXACT, "", 0, " ", NULL));
    CHECK(llm_eval_matches(LLM_MATCH_CONTAINS, "it is Paris, France", 19, "Paris", NULL));
    CHECK(!llm_eval_matches(LLM_MATCH_CONTAINS, "it is paris", 11, "Paris", NULL));
    llm_err err;
    void *re = llm_eval_regex_compile("^\\s*(\\d+)\\b", &err);
    CHECK(re != NULL);
    CHECK(llm_eval_matches(LLM_MATCH_REGEX, " 42 apples", 10, "", re));
    CHECK(!llm_eval_matches(LLM_MATCH_REGEX, "about 42", 8, "", re));
    /* text cut inside a UTF-8 character: the part before it is matched */
    CHECK(llm_eval_matches(LLM_MATCH_REGEX, "7 caf\xc3", 6, "", re));
    llm_eval_regex_free(re);
    void *u = llm_eval_regex_compile("café$", &err);
    CHECK(u && llm_eval_matches(LLM_MATCH_REGEX, "un café", 8, "", u));
    llm_eval_regex_free(u);
    CHECK_ERR(llm_eval_regex_compile("(", &err) != NULL ? 0 : -1, err, "missing closing parenthesis");
}

static void count_warn(void *ctx, const char *msg)
{
    (*(int *)ctx)++;
    CHECK(strstr(msg, ":3: ") != NULL);
}

TEST(task_files)
{
    llm_eval_task t;
    llm_err err;
    const char *p = write_file("t.jsonl",
                               "{\"task\":\"named\",\"target_delimiter\":\"\",\"shots\":2,\"stop\":[\"\\n\"],\"max_tokens\":5}\n"
                               "\n"
                               "{\"text\":\"the last word\"}\n"
                               "{\"context\":\"a\",\"answer\":\"b\",\"split\":\"train\"}\n"
                               "{\"context\":\"c\",\"answer\":\"d\",\"split\":\"test\",\"extra\":[1,2]}\n");
    CHECK(llm_eval_task_load(&t, p, 0, 0, NULL, NULL, &err) == 0);
    CHECK(!strcmp(t.name, "named") && t.type == LLM_EVAL_CLOZE);
    CHECK(t.n == 3 && t.n_fewshot == 1 && t.has_shots && t.shots == 2 && t.max_tokens == 5 && t.n_stop == 1);
    CHECK(!strcmp(t.ex[0].context, "the last") && !strcmp(t.ex[0].choices[0], " word") && t.ex[0].joined);
    CHECK(t.ex[0].line == 3 && t.ex[1].fewshot && !t.ex[2].fewshot && t.ex[2].line == 5);
    /* the prompt: shots, then the context; a {"text"} shot as written */
    llm_strbuf b = {0};
    const llm_eval_example *shots[2] = {&t.ex[1], &t.ex[0]};
    llm_eval_context_text(&t, &t.ex[2], shots, 2, &b);
    CHECK(b.len == strlen("ab\n\nthe last word\n\nc") && !memcmp(b.data, "ab\n\nthe last word\n\nc", b.len));
    b.len = 0;
    llm_eval_choice_text(&t, &t.ex[2], 0, &b);
    CHECK(b.len == 1 && b.data[0] == 'd');
    llm_sb_free(&b);
    llm_eval_task_free(&t);
    /* types from the fields; a bad line skipped and counted */
    int warned = 0;
    p = write_file("mc.jsonl", "{\"context\":\"x\",\"choices\":[\"a\",\"b\"],\"gold\":1}\n"
                               "{\"context\":\"y\",\"choices\":[\"a\",\"b\",\"c\"],\"gold\":2,\"type\":\"mc\"}\n"
                               "{\"prompt\":\"z\",\"answer\":\"w\"}\n");
    CHECK(llm_eval_task_load(&t, p, 1, 0, count_warn, &warned, &err) == 0);
    CHECK(t.type == LLM_EVAL_MC && t.n == 2 && t.bad == 1 && warned == 1 && !strcmp(t.name, "mc"));
    CHECK(t.ex[1].n_choices == 3 && t.ex[1].gold == 2);
    llm_eval_task_free(&t);
    CHECK_ERR(llm_eval_task_load(&t, p, 0, 0, NULL, NULL, &err), err, "mc.jsonl:3: a gen example in a task of type mc");
    /* gen: a line's settings over the header's */
    p = write_file("gen.jsonl", "{\"task\":\"g\",\"match\":\"contains\"}\n"
                                "{\"prompt\":\"p\",\"answer\":[\"a\",\"b\"],\"stop\":\".\",\"max_tokens\":3,\"match\":\"regex\"}\n"
                                "{\"prompt\":\"q\",\"answer\":\"c\"}\n");
    CHECK(llm_eval_task_load(&t, p, 0, 0, NULL, NULL, &err) == 0);
    CHECK(t.type == LLM_EVAL_GEN && t.n == 2);
    CHECK(llm_eval_example_match(&t, &t.ex[0]) == LLM_MATCH_REGEX && t.ex[0].regex && t.ex[0].regex[1]);
    CHECK(llm_eval_example_match(&t, &t.ex[1]) == LLM_MATCH_CONTAINS);
    CHECK(llm_eval_example_max_tokens(&t, &t.ex[0]) == 3 && llm_eval_example_max_tokens(&t, &t.ex[1]) == 32);
    char *const *stop;
    size_t n_stop;
    llm_eval_example_stop(&t, &t.ex[1], &stop, &n_stop);
    CHECK(n_stop == 1 && !strcmp(stop[0], "\n\n"));   /* the few-shot delimiter */
    llm_eval_example_stop(&t, &t.ex[0], &stop, &n_stop);
    CHECK(n_stop == 1 && !strcmp(stop[0], "."));
    llm_eval_task_free(&t);
}

TEST(context_and_answer_tokens)
{
    const char *path = "../shared/refs/tokenizers/gpt2.tiktoken";
    if (access(path, R_OK)) {
        printf("# %s is absent: skipped\n", path);
        return;
    }
    llm_tokenizer *tok;
    llm_err err;
    CHECK(llm_tok_load(path, "gpt2", &tok, &err) == 0);
    llm_eval_tok et;
    CHECK(llm_eval_tok_init(&et, tok, &err) == 0);
    CHECK(et.prefix.n == 0 && et.has_eos && et.eos == 50256);
    llm_ids c = {0}, a = {0};
    /* "Hello" + " world": [15496] + [995] */
    CHECK(llm_eval_encode_pair(&et, "Hello", 5, " world", 6, &c, &a, &err) == 0);
    CHECK(c.n == 1 && c.v[0] == 15496 && a.n == 1 && a.v[0] == 995);
    /* white space at the end of the context moves to the answer */
    CHECK(llm_eval_encode_pair(&et, "Hello ", 6, "world", 5, &c, &a, &err) == 0);
    CHECK(c.n == 1 && c.v[0] == 15496 && a.n == 1 && a.v[0] == 995);
    /* a merge across the seam: "hel" + "lo" is "hello", one token; the
     * answer takes the tokens after the shared prefix (none), and the
     * empty context becomes the end-of-text token */
    CHECK(llm_eval_encode_pair(&et, "hel", 3, "lo", 2, &c, &a, &err) == 0);
    CHECK(c.n == 1 && c.v[0] == 50256 && a.n == 1 && a.v[0] == 31373);
    /* an empty context */
    CHECK(llm_eval_encode_pair(&et, "", 0, "Hello", 5, &c, &a, &err) == 0);
    CHECK(c.n == 1 && c.v[0] == 50256 && a.n == 1 && a.v[0] == 15496);
    /* bytes per token: byte-level tokens their bytes, <|endoftext|> none */
    uint32_t *bytes;
    CHECK(llm_eval_token_bytes(tok, 50257, &bytes, &err) == 0);
    CHECK(bytes[15496] == 5 && bytes[995] == 6 && bytes[50256] == 0 && bytes[198] == 1);
    free(bytes);
    llm_ids_free(&c);
    llm_ids_free(&a);
    llm_eval_tok_free(&et);
    llm_tok_free(tok);
}

TEST(suites)
{
    char sub[300];
    snprintf(sub, sizeof sub, "%s/s", dir);
    mkdir(sub, 0755);
    const char *p = write_file("s/suite.jsonl", "{\"task\":\"a.jsonl\",\"shots\":3,\"name\":\"x\"}\n"
                                                "{\"data\":\"../data/./val\",\"limit\":9}\n"
                                                "{\"text\":\"/abs/t.txt\",\"window\":8,\"stride\":4}\n");
    llm_eval_suite s;
    llm_err err;
    CHECK(llm_eval_suite_load(&s, p, &err) == 0);
    CHECK(s.n == 3 && !strcmp(s.name, "suite"));
    char want[400];
    snprintf(want, sizeof want, "%s/s/a.jsonl", dir);
    CHECK(!strcmp(s.e[0].path, want) && s.e[0].has_shots && s.e[0].shots == 3 && !strcmp(s.e[0].name, "x"));
    snprintf(want, sizeof want, "%s/data/val", dir);
    CHECK(!strcmp(s.e[1].path, want) && s.e[1].kind == LLM_SUITE_DATA && s.e[1].limit == 9);
    CHECK(!strcmp(s.e[2].path, "/abs/t.txt") && s.e[2].window == 8 && s.e[2].stride == 4);
    llm_eval_suite_free(&s);
    p = write_file("s/bad.jsonl", "{\"task\":\"a\"}\n{\"text\":\"t\",\"shots\":1}\n");
    CHECK_ERR(llm_eval_suite_load(&s, p, &err), err, "bad.jsonl:2: \"shots\", \"shots_file\" and \"max_tokens\" are for tasks");
}

TEST(history_table)
{
    const char *p = write_file("h.jsonl",
        "{\"time\":\"2026-01-01T00:00:00Z\",\"model\":\"m\",\"model_hash\":\"0123456789abcdef\",\"task\":\"t\",\"type\":\"mc\","
        "\"metrics\":{\"acc\":0.5,\"acc_norm\":0.25},\"counts\":{\"examples\":8},\"seconds\":1.25}\n"
        "{\"time\":\"2026-01-02T00:00:00Z\",\"model\":\"m\",\"task\":\"t\",\"type\":\"mc\",\"metrics\":{\"acc\":0.75,\"extra\":null},"
        "\"counts\":{\"examples\":12},\"seconds\":10}\n"
        "{\"time\":\"2026-01-02T00:00:00Z\",\"model\":\"n\",\"task\":\"t\",\"metrics\":{\"loss\":12.3456789}}\n");
    llm_eval_history *h = llm_eval_history_new();
    llm_err err;
    CHECK(llm_eval_history_read(h, p, 0, NULL, NULL, &err) == 0);
    CHECK(llm_eval_history_rows(h) == 3);
    llm_strbuf b = {0};
    llm_eval_history_table(h, &b);
    const char *want =
        "== m  t (mc)\n"
        "time                  hash         acc  acc_norm  extra   n  seconds\n"
        "2026-01-01T00:00:00Z  01234567  0.5000    0.2500      -   8      1.2\n"
        "2026-01-02T00:00:00Z  -         0.7500         -      -  12     10.0\n"
        "\n"
        "== n  t\n"
        "time                  hash     loss  n  seconds\n"
        "2026-01-02T00:00:00Z  -     12.3457  -        -\n";
    CHECK(b.len == strlen(want) && !memcmp(b.data, want, b.len));
    if (b.len != strlen(want) || memcmp(b.data, want, b.len)) printf("# got:\n%.*s", (int)b.len, b.data);
    llm_sb_free(&b);
    llm_eval_history_free(h);
}

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    RUN(hash_is_xxh3_64);
    RUN(windows_score_every_target_once);
    RUN(draw_is_distinct_deterministic_and_per_example);
    RUN(matching);
    RUN(task_files);
    RUN(context_and_answer_tokens);
    RUN(suites);
    RUN(history_table);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) return 1;
    return unit_done();
}
