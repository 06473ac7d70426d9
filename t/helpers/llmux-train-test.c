/* llmux-train-test: trains a byte-level BPE with lib/bpe_train.h, for the
 * conformance tests and the benchmark, until llm-tokenize train exists.
 *
 *   llmux-train-test --vocab-size N [--pattern NAME | --regex RE] [--special TOK]...
 *                    [--threads N] [--min-chunk BYTES] [--pcre] -o OUT FILE...
 *
 * Each FILE is one text (add_text per file). Prints one line on stderr:
 *   words W distinct D vocab V merges M count_s X train_s Y
 * (count_s: reading and counting; train_s: training and writing the JSON). */
#include "clock.h"
#include "bpe_train.h"
#include "cli.h"
#include "fileio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t vocab_size = -1, threads, min_chunk;
static int force_pcre;
static const char *pattern_name = "gpt2", *regex, *out;
static llm_strlist specials;

static const llm_opt opts[] = {
    {"vocab-size", 0, LLM_OPT_INT, &vocab_size, "N", "vocabulary size (specials + 256 bytes + merges)", 0, 0},
    {"pattern", 0, LLM_OPT_STR, &pattern_name, "NAME", "named pre-tokenization pattern (default gpt2)", 0, 0},
    {"regex", 0, LLM_OPT_STR, &regex, "RE", "pre-tokenization regex (instead of --pattern)", 0, 0},
    {"special", 0, LLM_OPT_LIST, &specials, "TOK", "a special token (repeatable)", 0, 0},
    {"threads", 0, LLM_OPT_INT, &threads, "N", "counting threads (0: the CPUs)", 0, 1024},
    {"min-chunk", 0, LLM_OPT_INT, &min_chunk, "BYTES", "smallest chunk per thread (0: 1 MiB)", 0, 0},
    {"pcre", 0, LLM_OPT_FLAG, &force_pcre, NULL, "use the PCRE2 engine even for a named pattern", 0, 0},
    {"output", 'o', LLM_OPT_STR, &out, "FILE", "the tokenizer.json to write", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};
static const llm_cmd cmd = {"llmux-train-test", "trains a byte-level BPE tokenizer (test helper)",
                            "--vocab-size N [OPTIONS] -o OUT FILE...", opts, NULL};

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    char **files;
    int nfiles = llm_cli_parse(&cmd, argc, argv, &files);
    if (vocab_size < 0) llm_usage_error("--vocab-size is required");
    if (!out) llm_usage_error("-o is required");
    if (nfiles < 1) llm_usage_error("no input files");
    const char *pattern = regex ? regex : llm_pretok_portable_pattern(pattern_name);
    if (!pattern) llm_usage_error("unknown pattern '%s'", pattern_name);

    llm_err err;
    llm_pretok *p;
    if ((force_pcre ? llm_pretok_new_regex : llm_pretok_new)(&p, pattern, &err)) llm_die_err(&err);
    llm_bpe_trainer *t = llm_bpe_trainer_new(p);
    if (!t) llm_die("out of memory");
    llm_bpe_trainer_set_threads(t, (int)threads, (size_t)min_chunk);

    double t0 = llm_seconds();
    for (int i = 0; i < nfiles; i++) {
        llm_mapped m;
        if (llm_map_file(&m, files[i], &err)) llm_die_err(&err);
        if (llm_bpe_trainer_add_text(t, (const char *)m.data, m.size, &err)) {
            llm_err_prefix(&err, "%s", files[i]);
            llm_die_err(&err);
        }
        llm_unmap_file(&m);
    }
    double t1 = llm_seconds();
    llm_strbuf json = {0};
    if (llm_bpe_trainer_finish(t, (size_t)vocab_size, specials.items, (size_t)specials.count, pattern, &json, &err))
        llm_die_err(&err);
    double t2 = llm_seconds();

    llm_atomic a;
    if (llm_atomic_open(&a, out, &err) || llm_write_all(a.fd, json.data, json.len, out, &err) ||
        llm_atomic_commit(&a, &err))
        llm_die_err(&err);
    uint64_t total;
    size_t distinct = llm_bpe_trainer_words(t, &total);
    fprintf(stderr, "words %llu distinct %zu vocab %zu merges %zu count_s %.3f train_s %.3f\n",
            (unsigned long long)total, distinct, llm_bpe_trainer_vocab_size(t), llm_bpe_trainer_merges(t), t1 - t0,
            t2 - t1);
    llm_sb_free(&json);
    llm_bpe_trainer_free(t);
    llm_pretok_free(p);
    free(files);
    return 0;
}
