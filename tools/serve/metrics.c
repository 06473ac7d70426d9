/* /metrics: counters, gauges and histograms in Prometheus' text format. */
#include "server.h"

#include <stdlib.h>

static const double bucket_le[HIST_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

void hist_add(histogram *h, double seconds)
{
    size_t b = 0;
    while (b < HIST_BUCKETS && seconds > bucket_le[b]) b++;
    h->count[b]++;
    h->sum += seconds;
    h->n++;
}

void metrics_count_status(metrics *mt, unsigned status)
{
    size_t k = status < 300 ? 0 : status == 400 ? 1 : status == 401 ? 2 : status == 404 ? 3 : status == 413 ? 4 : 5;
    mt->requests[k]++;
}

static void histogram_text(llm_strbuf *b, const char *name, const char *help, const histogram *h)
{
    llm_sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        cum += h->count[i];
        llm_sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_le[i], (unsigned long long)cum);
    }
    cum += h->count[HIST_BUCKETS];
    llm_sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)cum, name,
                  h->sum, name, (unsigned long long)h->n);
}

static void one(llm_strbuf *b, const char *name, const char *type, const char *help, double v)
{
    llm_sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

char *metrics_text(server *S)
{
    llm_strbuf b = {0};
    const metrics *mt = &S->mt;
    static const char *const classes[] = {"2xx", "400", "401", "404", "413", "other"};
    llm_sb_puts(&b, "# HELP llmux_requests_total HTTP requests answered, by status\n"
                    "# TYPE llmux_requests_total counter\n");
    for (size_t i = 0; i < 6; i++)
        llm_sb_printf(&b, "llmux_requests_total{status=\"%s\"} %llu\n", classes[i], (unsigned long long)mt->requests[i]);
    one(&b, "llmux_prompt_tokens_total", "counter", "prompt tokens of requests started", (double)mt->prompt_tokens);
    one(&b, "llmux_prompt_cached_tokens_total", "counter", "prompt tokens whose KV blocks were shared, not run",
        (double)mt->cached_tokens);
    one(&b, "llmux_generation_tokens_total", "counter", "tokens generated", (double)mt->generation_tokens);
    one(&b, "llmux_requests_cancelled_total", "counter", "requests cancelled (client gone, deadline, stopping)",
        (double)mt->cancelled);
    one(&b, "llmux_requests_waiting", "gauge", "requests queued, not yet started", (double)S->waiting);
    one(&b, "llmux_requests_running", "gauge", "requests in the running batch", (double)S->running);
    one(&b, "llmux_sequences_running", "gauge", "sequences in the running batch", (double)S->running_seqs);
    one(&b, "llmux_kv_blocks_used", "gauge", "KV cache blocks held by sequences", (double)S->kv_used);
    one(&b, "llmux_kv_blocks_reserved", "gauge", "KV cache blocks the running requests could need",
        (double)S->kv_reserved);
    one(&b, "llmux_kv_blocks_total", "gauge", "the KV cache's budget in blocks", (double)S->kv_max);
    one(&b, "llmux_kv_bytes_used", "gauge", "bytes of KV cache blocks held", (double)S->kv_used * S->kv_block_bytes);
    one(&b, "llmux_kv_bytes_total", "gauge", "the KV cache's budget in bytes", (double)S->kv_max * S->kv_block_bytes);
    histogram_text(&b, "llmux_time_to_first_token_seconds", "from a request's arrival to its first token", &mt->ttft);
    histogram_text(&b, "llmux_request_duration_seconds", "from a request's arrival to its last token", &mt->latency);
    if (b.failed) {
        llm_sb_free(&b);
        return NULL;
    }
    return b.data;
}
