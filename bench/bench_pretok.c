/* Pre-tokenization throughput: each hand-written scanner against the PCRE2
 * engine (JIT) on the same pattern, over the file given as argv[1] (e.g. the
 * King James Bible: bible -f "gen1:1-rev22:21"), one thread, best of 5.
 * Prints one JSON line per pattern; the two engines' pieces are also compared
 * (count and a checksum of the boundaries). */
#include "clock.h"
#include "pretok.h"
#include "unicode.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    double seconds;
    size_t pieces;
    uint64_t sum;
} run_result;

static run_result run(const llm_pretok *p, const char *text, size_t n, int reps)
{
    llm_pretok_scratch *s = llm_pretok_scratch_new(p);
    run_result best = {1e30, 0, 0};
    for (int r = 0; r < reps; r++) {
        double t = llm_seconds();
        size_t pos = 0, st, en, count = 0;
        uint64_t sum = 0;
        while (llm_pretok_find(p, s, text, n, pos, &st, &en)) {
            count++;
            sum = sum * 31 + en;
            pos = en;
        }
        t = llm_seconds() - t;
        if (t < best.seconds) best = (run_result){t, count, sum};
    }
    llm_pretok_scratch_free(s);
    return best;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_pretok FILE [REPS]\n");
        return 2;
    }
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    size_t cap = 1 << 20, n = 0, got;
    char *text = malloc(cap);
    while (text && (got = fread(text + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) text = realloc(text, cap *= 2);
    }
    fclose(f);
    if (!text) return 1;
    size_t valid = llm_utf8_valid_prefix(text, n);
    if (valid != n) fprintf(stderr, "bench_pretok: %s: invalid UTF-8 at byte %zu; using the text before it\n", argv[1], valid);
    n = valid;

    static const char *const names[] = {"gpt2", "cl100k_base", "o200k_base", "llama3", "qwen2"};
    int status = 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const char *pat = llm_pretok_named_pattern(names[k]);
        llm_pretok *scan, *re;
        llm_err err;
        if (llm_pretok_new(&scan, pat, &err) || llm_pretok_new_regex(&re, pat, &err)) {
            fprintf(stderr, "bench_pretok: %s\n", err.msg);
            return 1;
        }
        run_result a = run(scan, text, n, reps), b = run(re, text, n, reps);
        int same = a.pieces == b.pieces && a.sum == b.sum;
        if (!same) status = 1;
        printf("{\"pattern\": \"%s\", \"engine\": \"%s\", \"bytes\": %zu, \"pieces\": %zu, \"mb_per_s\": %.1f, "
               "\"pcre2_mb_per_s\": %.1f, \"speedup_vs_pcre2\": %.2f, \"same_pieces\": %s}\n",
               names[k], llm_pretok_engine(scan), n, a.pieces, n / a.seconds / 1e6, n / b.seconds / 1e6,
               b.seconds / a.seconds, same ? "true" : "false");
        llm_pretok_free(scan);
        llm_pretok_free(re);
    }
    free(text);
    return status;
}
