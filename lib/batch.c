/* Batches for training and evaluation: see batch.h. */
#include "batch.h"

#include <stdlib.h>
#include <string.h>

struct llm_batcher {
    llm_seqset *set;
    llm_cursor cursor;
};

int llm_batcher_open(llm_batcher **out, const char *path, uint64_t seed, int shuffle, uint32_t rank, uint32_t world,
                     llm_err *err)
{
    *out = NULL;
    llm_batcher *b = calloc(1, sizeof *b);
    if (!b) return llm_errf(err, "out of memory");
    if (llm_seqset_open(path, &b->set, err) || llm_seqset_verify(b->set, err)) {
        llm_batcher_close(b);
        return -1;
    }
    if (llm_seqset_count(b->set) == 0) {
        llm_batcher_close(b);
        return llm_errf(err, "%s: no sequences (documents shorter than one sequence are dropped: try a smaller --seq)", path);
    }
    if (llm_cursor_init(&b->cursor, llm_seqset_count(b->set), seed, shuffle, rank, world, err)) {
        llm_batcher_close(b);
        return llm_err_prefix(err, "%s", path);
    }
    *out = b;
    return 0;
}

void llm_batcher_close(llm_batcher *b)
{
    if (!b) return;
    llm_seqset_close(b->set);
    free(b);
}

llm_seqset *llm_batcher_set(llm_batcher *b) { return b->set; }
uint32_t llm_batcher_seq_len(const llm_batcher *b) { return llm_seqset_seq_len(b->set); }
const llm_cursor *llm_batcher_cursor(const llm_batcher *b) { return &b->cursor; }

int llm_batcher_restore(llm_batcher *b, const char *cursor_json, llm_err *err)
{
    return llm_cursor_load(&b->cursor, cursor_json, llm_seqset_count(b->set), err);
}

int llm_batcher_next(llm_batcher *b, size_t B, uint32_t *tokens, uint8_t *mask, llm_err *err)
{
    size_t n = (size_t)llm_seqset_seq_len(b->set) + 1;
    int masks = llm_seqset_has_masks(b->set);
    for (size_t r = 0; r < B; r++) {
        uint64_t i = llm_cursor_next(&b->cursor);
        if (llm_seqset_get(b->set, i, tokens + r * n, mask && masks ? mask + r * n : NULL, err)) return -1;
        if (mask && !masks) memset(mask + r * n, 1, n);
    }
    return 0;
}
