/* llmux-readseq: prints what training would read from a shard set or a
 * sequence stream through lib/batch.c, one sequence per line (its tokens,
 * space-separated; then " |" and its mask when it has one), for tests.
 *
 *   llmux-readseq PATH [RANK WORLD [SEED SHUFFLE [COUNT]]]
 *
 * COUNT sequences (default: this rank's share of one epoch). */
#include "batch.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    if (argc < 2) llm_usage_error("usage: llmux-readseq PATH [RANK WORLD [SEED SHUFFLE [COUNT]]]");
    uint32_t rank = argc > 3 ? (uint32_t)atoi(argv[2]) : 0, world = argc > 3 ? (uint32_t)atoi(argv[3]) : 1;
    uint64_t seed = argc > 5 ? strtoull(argv[4], NULL, 10) : 0;
    int shuffle = argc > 5 ? atoi(argv[5]) : 0;
    llm_err err;
    llm_batcher *b;
    if (llm_batcher_open(&b, argv[1], seed, shuffle, rank, world, &err)) llm_die_err(&err);
    uint64_t n_seq = llm_seqset_count(llm_batcher_set(b));
    uint64_t count = argc > 6 ? strtoull(argv[6], NULL, 10) : (n_seq > rank ? (n_seq - rank + world - 1) / world : 0);
    size_t n = (size_t)llm_batcher_seq_len(b) + 1;
    uint32_t *tok = malloc(n * sizeof *tok);
    uint8_t *mask = malloc(n);
    int masks = llm_seqset_has_masks(llm_batcher_set(b));
    for (uint64_t k = 0; k < count; k++) {
        if (llm_batcher_next(b, 1, tok, mask, &err)) llm_die_err(&err);
        for (size_t j = 0; j < n; j++) printf(j ? " %u" : "%u", tok[j]);
        if (masks) {
            printf(" |");
            for (size_t j = 0; j < n; j++) printf(" %u", mask[j]);
        }
        putchar('\n');
    }
    free(tok);
    free(mask);
    llm_batcher_close(b);
    return 0;
}
