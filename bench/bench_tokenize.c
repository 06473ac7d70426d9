/* Encode throughput of one tokenizer on one file, in process (tokenizer
 * loading not counted, as tiktoken's encode_ordinary timing does not count
 * it): best of R runs. Prints one JSON line.
 *   bench_tokenize TOKENIZER FILE [RUNS [THREADS]]
 * THREADS 0 (default) times llm_tok_encode on the caller's thread; THREADS
 * N >= 1 times the encoding pool (lib/encode_pool.h) with N threads, as
 * llm-tokenize -j N runs it, the file being one document. */
#include "clock.h"
#include "encode_pool.h"
#include "fileio.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int count_tokens(void *ctx, const llm_encoded *d, llm_err *err)
{
    (void)err;
    *(size_t *)ctx += d->n;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: bench_tokenize TOKENIZER FILE [RUNS]\n"); return 2; }
    int runs = argc > 3 ? atoi(argv[3]) : 3, threads = argc > 4 ? atoi(argv[4]) : 0;
    llm_err err;
    llm_tokenizer *t;
    double t0 = llm_seconds();
    if (llm_tok_load(argv[1], NULL, &t, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    double load = llm_seconds() - t0;
    llm_mapped m;
    if (llm_map_file(&m, argv[2], &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    llm_tok_scratch *s = llm_tok_scratch_new(t);
    llm_ids ids = {0};
    double best = 1e9;
    for (int r = 0; r < runs && threads > 0; r++) {
        size_t tokens = 0;
        llm_encpool *pool;
        double t1 = llm_seconds();
        if (llm_encpool_new(&pool, t, threads, 0, -1, count_tokens, &tokens, &err) ||
            llm_encpool_submit(pool, (const char *)m.data, m.size, NULL, argv[2], &err) ||
            llm_encpool_finish(pool, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double dt = llm_seconds() - t1;
        llm_encpool_free(pool);
        if (dt < best) best = dt;
        ids.n = tokens;
    }
    for (int r = 0; r < runs && threads == 0; r++) {
        /* a fresh scratch each run unless WARM is set: the piece cache and the
         * working memory start cold, as in one real run */
        if (!getenv("WARM")) {
            llm_tok_scratch_free(s);
            s = llm_tok_scratch_new(t);
        }
        ids.n = 0;
        double t1 = llm_seconds();
        if (llm_tok_encode(t, s, (const char *)m.data, m.size, 0, &ids, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        double dt = llm_seconds() - t1;
        if (dt < best) best = dt;
    }
    printf("{\"tokenizer\":\"%s\",\"threads\":%d,\"file\":\"%s\",\"bytes\":%zu,\"tokens\":%zu,\"seconds\":%.6f,\"mb_per_s\":%.2f,"
           "\"load_seconds\":%.4f}\n",
           llm_tok_name(t), threads, argv[2], m.size, ids.n, best, (double)m.size / best / 1e6, load);
    llm_ids_free(&ids);
    llm_tok_scratch_free(s);
    llm_unmap_file(&m);
    llm_tok_free(t);
    return 0;
}
