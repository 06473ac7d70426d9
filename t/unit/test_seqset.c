/* Shard sets: what is written is read back, sequence by sequence, in any
 * order; damage is found and named. */
#include "seqset.h"
#include "unit.h"

#include <sys/stat.h>
#include <unistd.h>

static char base[] = "/tmp/llmux-seqset-XXXXXX";

static uint32_t tok_at(uint64_t i, size_t k, uint32_t width) { return (uint32_t)((i * 7919 + k * 104729) % (width == 2 ? 65536 : 3000000)); }

TEST(round_trip_widths_masks_and_shard_sizes)
{
    uint32_t widths[] = {2, 4};
    uint32_t seqs[] = {1, 5, 64};
    int run = 0;
    for (int wi = 0; wi < 2; wi++)
        for (int si = 0; si < 3; si++)
            for (int masks = 0; masks < 2; masks++) {
                char dir[128];
                snprintf(dir, sizeof dir, "%s/set%d", base, run++);
                uint32_t T = seqs[si], W = widths[wi];
                llm_seqset_info info = {"unit", 3000000, 0, T, W, masks, 64};   /* small shards: many files */
                llm_seqset_writer *w;
                llm_err e;
                CHECK(llm_seqset_writer_open(&w, dir, &info, &e) == 0);
                uint64_t N = 100 + unit_rand() % 200;
                uint32_t tok[65];
                uint8_t mask[65];
                for (uint64_t i = 0; i < N; i++) {
                    for (size_t k = 0; k <= T; k++) { tok[k] = tok_at(i, k, W); mask[k] = (uint8_t)((i + k) & 1); }
                    CHECK(llm_seqset_writer_add(w, tok, masks ? mask : NULL, T + 1, &e) == 0);
                }
                llm_seqset_counts c = {1, 2, 3, 4};
                CHECK(llm_seqset_writer_finish(w, &c, &e) == 0);
                llm_seqset *s;
                CHECK(llm_seqset_open(dir, &s, &e) == 0);
                if (!s) { printf("# %s\n", e.msg); continue; }
                CHECK(llm_seqset_count(s) == N && llm_seqset_seq_len(s) == T && llm_seqset_has_masks(s) == masks);
                CHECK(llm_seqset_shards(s) > 1);
                int bad = 0;
                for (int rep = 0; rep < 500; rep++) {
                    uint64_t i = unit_rand() % N;
                    memset(tok, 0xff, sizeof tok);
                    CHECK(llm_seqset_get(s, i, tok, mask, &e) == 0);
                    for (size_t k = 0; k <= T; k++) {
                        bad += tok[k] != tok_at(i, k, W);
                        if (masks) bad += mask[k] != ((i + k) & 1);
                    }
                }
                CHECK(bad == 0);
                CHECK(llm_seqset_get(s, N, tok, mask, &e) != 0);
                CHECK(llm_seqset_verify(s, &e) == 0);
                llm_seqset_close(s);
            }
}

TEST(damage_is_found_and_named)
{
    char dir[128], shard[160];
    snprintf(dir, sizeof dir, "%s/set0", base);
    snprintf(shard, sizeof shard, "%s/shard-00001.bin", dir);
    llm_err e;
    llm_seqset *s;
    /* a flipped byte: the checksum, when the shard is first read */
    FILE *f = fopen(shard, "r+b");
    CHECK(f != NULL);
    if (!f) return;
    fseek(f, 70, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 70, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
    CHECK(llm_seqset_open(dir, &s, &e) == 0);
    CHECK_ERR(llm_seqset_verify(s, &e), e, "shard-00001.bin: checksum mismatch");
    llm_seqset_close(s);
    /* a truncated shard: at open */
    CHECK(truncate(shard, 100) == 0);
    CHECK_ERR(llm_seqset_open(dir, &s, &e), e, "shard-00001.bin: 100 bytes");
    /* an existing directory is never written over */
    llm_seqset_info info = {"unit", 10, 0, 4, 2, 0, 0};
    llm_seqset_writer *w;
    CHECK_ERR(llm_seqset_writer_open(&w, dir, &info, &e), e, "already exists");
}

TEST(abort_leaves_nothing)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/aborted", base);
    llm_seqset_info info = {"unit", 10, 0, 2, 2, 0, 0};
    llm_seqset_writer *w;
    llm_err e;
    CHECK(llm_seqset_writer_open(&w, dir, &info, &e) == 0);
    uint32_t tok[3] = {1, 2, 3};
    CHECK(llm_seqset_writer_add(w, tok, NULL, 3, &e) == 0);
    CHECK(llm_seqset_writer_add(w, tok, NULL, 2, &e) != 0);   /* wrong length */
    llm_seqset_writer_abort(w);
    struct stat st;
    CHECK(stat(dir, &st) != 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls -a %s | grep -c tmp > /dev/null", base);
    CHECK(system(cmd) != 0);   /* no temporary directory left */
}

int main(void)
{
    unit_seed();
    if (!mkdtemp(base)) return 1;
    RUN(round_trip_widths_masks_and_shard_sizes);
    RUN(damage_is_found_and_named);
    RUN(abort_leaves_nothing);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    if (system(cmd) != 0) return 1;
    return unit_done();
}
