/* fuzz_seqset.c — libFuzzer target for the shard set reader (lib/seqset.c).
 *
 * The first byte of the input chooses what the rest is:
 *  - even: the text of manifest.json, in a directory that also holds a
 *    valid shard (shard-00000.bin: 3 sequences of T = 4, 2-byte tokens, with
 *    masks) made by our writer at start-up;
 *  - odd: a file that llm_seqset_open reads as the stream form.
 * Whatever opens is verified, and every sequence read (tokens within the
 * width, every byte of the maps in bounds: ASan checks). A broken promise is
 * __builtin_trap.
 *
 * Seeds: with FUZZ_SEQSET_SEEDS=DIR set, start-up writes the valid manifest
 * (DIR/manifest) there and exits. Build and run: t/fuzz/run SECONDS. */
#include "seqset.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[64], set_dir[128], manifest[160], stream_path[128], good[4096];
static size_t good_len;

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK(fwrite(p, 1, n, f) == n || n == 0);
    CHECK(fclose(f) == 0);
}

static void remove_files(void)
{
    char path[200];
    snprintf(path, sizeof path, "%s/shard-00000.bin", set_dir);
    unlink(path);
    unlink(manifest);
    rmdir(set_dir);
    unlink(stream_path);
    rmdir(root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(root, sizeof root, "/tmp/fuzz-seqset.XXXXXX");
    CHECK(mkdtemp(root));
    char made[128];
    snprintf(made, sizeof made, "%s/made", root);
    llm_seqset_info info = {"fuzz", 1000, 999, 4, 2, 1, 0};
    llm_seqset_writer *w;
    llm_err err;
    CHECK(llm_seqset_writer_open(&w, made, &info, &err) == 0);
    for (uint32_t s = 0; s < 3; s++) {
        uint32_t tok[5];
        uint8_t mask[5];
        for (int j = 0; j < 5; j++) { tok[j] = s * 100 + (uint32_t)j; mask[j] = (uint8_t)((s + (uint32_t)j) & 1); }
        CHECK(llm_seqset_writer_add(w, tok, mask, 5, &err) == 0);
    }
    llm_seqset_counts c = {1, 13, 0, 0};
    CHECK(llm_seqset_writer_finish(w, &c, &err) == 0);
    char path[200];
    snprintf(path, sizeof path, "%s/manifest.json", made);
    FILE *f = fopen(path, "rb");
    CHECK(f);
    good_len = fread(good, 1, sizeof good, f);
    fclose(f);
    snprintf(set_dir, sizeof set_dir, "%s/made", root);
    snprintf(manifest, sizeof manifest, "%s/manifest.json", set_dir);
    snprintf(stream_path, sizeof stream_path, "%s/seqs.stream", root);
    atexit(remove_files);
    const char *seeds = getenv("FUZZ_SEQSET_SEEDS");
    if (seeds) {
        char out[PATH_MAX];
        snprintf(out, sizeof out, "%s/manifest", seeds);
        char buf[sizeof good + 1] = {0};   /* the first byte: even, a manifest */
        memcpy(buf + 1, good, good_len);
        write_file(out, buf, good_len + 1);
        exit(0);
    }
    return 0;
}

static void read_all(const char *path)
{
    llm_seqset *s;
    llm_err err;
    if (llm_seqset_open(path, &s, &err) != 0) {
        CHECK(err.msg[0] != 0);
        return;
    }
    uint32_t T = llm_seqset_seq_len(s);
    CHECK(T >= 1 && T <= (1u << 24));
    if (llm_seqset_verify(s, &err) == 0) {
        uint32_t *tok = malloc(((size_t)T + 1) * sizeof *tok);
        uint8_t *mask = malloc((size_t)T + 1);
        CHECK(tok && mask);
        uint64_t n = llm_seqset_count(s);
        for (uint64_t i = 0; i < n && i < 64; i++) CHECK(llm_seqset_get(s, i, tok, mask, &err) == 0);
        CHECK(llm_seqset_get(s, n, tok, mask, &err) != 0);
        free(tok);
        free(mask);
    }
    llm_seqset_close(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    if (data[0] & 1) {
        write_file(stream_path, data + 1, size - 1);
        read_all(stream_path);
    } else {
        write_file(manifest, data + 1, size - 1);
        read_all(set_dir);
    }
    return 0;
}
