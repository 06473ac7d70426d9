/* bench_membw: memory read bandwidth of all threads together (GB/s), the
 * bound that decoding at batch 1 runs against: each thread sums its share
 * of a buffer much larger than the caches. Prints one JSON line.
 *
 *   bench_membw [MiB]   (default 1024) */
#include "clock.h"
#include "llmk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const float *x;
    double sums[1024];
} ctx;

static void part(void *arg, size_t begin, size_t end)
{
    ctx *c = arg;
    /* llmk_sumsq reads every float once (vectorised); only the reading matters */
    c->sums[begin % 1024] += llmk_sumsq(c->x + begin, end - begin);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 1024, n = mib << 18;   /* floats */
    float *x = aligned_alloc(64, n * sizeof *x);
    if (!x) { fprintf(stderr, "bench_membw: out of memory\n"); return 1; }
    memset(x, 1, n * sizeof *x);
    ctx c = {x, {0}};
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t = llm_seconds();
        llmk_parallel_for(n, n / (size_t)llmk_threads() + 1, part, &c);
        t = llm_seconds() - t;
        if (t < best) best = t;
    }
    printf("{\"threads\":%d,\"mib\":%zu,\"read_gb_per_s\":%.2f}\n", llmk_threads(), mib, (double)n * 4 / best / 1e9);
    free(x);
    return 0;
}
