/* The fp32 peak: llmk_fma_burn on every thread at once, timed. */
#include "clock.h"
#include "peak.h"
#include "llmk.h"

#include <time.h>

#define ITERS 2000000u   /* about 50 ms per thread at 2.5 GHz with AVX-512 */

typedef struct {
    double flops[1024];
    float sink;
} burn_ctx;

static void burn_task(void *p, size_t begin, size_t end)
{
    burn_ctx *c = p;
    for (size_t t = begin; t < end; t++) c->flops[t] = llmk_fma_burn(ITERS, &c->sink);
}

double llm_fp32_peak_gflops(int threads)
{
    if (threads < 1) threads = 1;
    if (threads > 1024) threads = 1024;
    static burn_ctx c;
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t = llm_seconds();
        llmk_parallel_for((size_t)threads, 1, burn_task, &c);
        t = llm_seconds() - t;
        double flops = 0;
        for (int i = 0; i < threads; i++) flops += c.flops[i];
        if (t > 0 && flops / t > best) best = flops / t;
    }
    return best * 1e-9;
}
