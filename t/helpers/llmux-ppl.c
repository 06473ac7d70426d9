/* llmux-ppl: the mean loss and perplexity of a model (any format llm-infer
 * runs: fp32 or quantized) over a shard set, through lib/infer.c, as one
 * JSON line: {"loss", "ppl", "tokens", "sequences"}. For the tests that
 * compare quantized models with their originals; llm-eval is the program
 * for users.
 *
 *   llmux-ppl MODEL SHARDSET [MAX_SEQUENCES]
 *
 * Each sequence of T + 1 tokens predicts its last T from the ones before
 * (targets whose mask is 0 do not count), the loss summed in double. */
#include "cli.h"
#include "infer.h"
#include "seqset.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    if (argc < 3) llm_usage_error("usage: llmux-ppl MODEL SHARDSET [MAX_SEQUENCES]");
    llm_err err;
    llm_infer *m;
    llm_seqset *set;
    if (llm_infer_open(&m, argv[1], &err) || llm_seqset_open(argv[2], &set, &err)) llm_die_err(&err);
    const llm_config *c = llm_infer_config(m);
    size_t T = llm_seqset_seq_len(set), V = c->vocab_size;
    if (T > c->ctx_len) llm_die("%s: sequences of %zu tokens do not fit the context of %zu", argv[2], T, c->ctx_len);
    uint64_t n = llm_seqset_count(set);
    if (argc > 3 && strtoull(argv[3], NULL, 10) < n) n = strtoull(argv[3], NULL, 10);
    uint32_t *tok = malloc((T + 1) * sizeof *tok);
    uint8_t *mask = malloc(T + 1);
    float *logits = malloc(T * V * sizeof *logits);
    if (!tok || !mask || !logits) llm_die("out of memory");
    double sum = 0;
    uint64_t count = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (llm_seqset_get(set, i, tok, mask, &err)) llm_die_err(&err);
        llm_infer_reset(m);
        if (llm_infer_step(m, tok, T, logits, 1, &err)) llm_die_err(&err);
        for (size_t t = 0; t < T; t++) {
            if (llm_seqset_has_masks(set) && !mask[t + 1]) continue;
            const float *l = logits + t * V;
            double mx = l[0], s = 0;
            for (size_t v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
            for (size_t v = 0; v < V; v++) s += exp(l[v] - mx);
            sum += mx + log(s) - l[tok[t + 1]];
            count++;
        }
    }
    double loss = count ? sum / count : 0;
    printf("{\"loss\":%.6f,\"ppl\":%.6f,\"tokens\":%llu,\"sequences\":%llu}\n", loss, exp(loss),
           (unsigned long long)count, (unsigned long long)n);
    free(tok), free(mask), free(logits);
    llm_seqset_close(set);
    llm_infer_close(m);
    return 0;
}
