/* External shuffle by key: see shuffle.h. */
#include "shuffle.h"
#include "fileio.h"
#include "hash.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FANOUT_BITS 6
#define FANOUT (1 << FANOUT_BITS)

/* One level of the partition: FANOUT unnamed files, each with a write buffer. */
typedef struct {
    int fd[FANOUT];
    uint64_t count[FANOUT];
    unsigned char *buf;          /* FANOUT buffers of bufsize bytes, one allocation */
    size_t fill[FANOUT], bufsize;
    int shift;                   /* bucket = key >> shift & (FANOUT - 1) */
} level;

struct llm_shuffler {
    size_t rec_bytes, slot;      /* slot: the key (8 bytes) and the record */
    uint64_t seed, count;
    size_t mem;
    char *tmpdir;
    level top;
    unsigned char *scratch;      /* one slot */
    int finished;
};

uint64_t llm_shuffle_key(uint64_t i, uint64_t seed)
{
    /* xor with a constant and fmix64 are both bijections; so is the whole */
    return llm_hash_mix(i ^ llm_hash_mix(seed ^ 0x9e3779b97f4a7c15ull));
}

static int temp_file(const char *dir, llm_err *err)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    char path[PATH_MAX];   /* file systems without O_TMPFILE: a name, removed at once */
    snprintf(path, sizeof path, "%s/.llmux-shuffle.XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) return llm_errf(err, "%s: cannot create a temporary file for the shuffle: %s", dir, strerror(errno));
    unlink(path);
    return fd;
}

static void level_close(level *l)
{
    for (int b = 0; b < FANOUT; b++) {
        if (l->fd[b] >= 0) close(l->fd[b]);
        l->fd[b] = -1;
    }
    free(l->buf);
    l->buf = NULL;
}

/* Write buffers share `budget` bytes; a record larger than its buffer is
 * written straight through. */
static int level_open(level *l, int shift, size_t slot, size_t budget, const char *dir, llm_err *err)
{
    memset(l, 0, sizeof *l);
    for (int b = 0; b < FANOUT; b++) l->fd[b] = -1;
    l->shift = shift;
    /* past a MiB a bigger buffer saves no time, only memory */
    size_t per = budget / FANOUT < (1u << 20) ? budget / FANOUT : (1u << 20);
    l->bufsize = per / slot * slot;
    if (l->bufsize && !(l->buf = malloc(l->bufsize * FANOUT))) return llm_errf(err, "out of memory");
    for (int b = 0; b < FANOUT; b++)
        if ((l->fd[b] = temp_file(dir, err)) < 0) { level_close(l); return -1; }
    return 0;
}

static int level_flush(level *l, int b, const char *dir, llm_err *err)
{
    if (!l->fill[b]) return 0;
    if (llm_write_all(l->fd[b], l->buf + (size_t)b * l->bufsize, l->fill[b], dir, err))
        return llm_err_prefix(err, "shuffle: temporary file in");
    l->fill[b] = 0;
    return 0;
}

/* slot = key, then the record */
static int level_put(level *l, const unsigned char *slot, size_t slot_bytes, const char *dir, llm_err *err)
{
    uint64_t key;
    memcpy(&key, slot, 8);
    int b = (int)(key >> l->shift) & (FANOUT - 1);
    l->count[b]++;
    if (slot_bytes > l->bufsize) {
        if (level_flush(l, b, dir, err)) return -1;
        if (llm_write_all(l->fd[b], slot, slot_bytes, dir, err)) return llm_err_prefix(err, "shuffle: temporary file in");
        return 0;
    }
    if (l->fill[b] + slot_bytes > l->bufsize && level_flush(l, b, dir, err)) return -1;
    memcpy(l->buf + (size_t)b * l->bufsize + l->fill[b], slot, slot_bytes);
    l->fill[b] += slot_bytes;
    return 0;
}

static int level_flush_all(level *l, const char *dir, llm_err *err)
{
    for (int b = 0; b < FANOUT; b++)
        if (level_flush(l, b, dir, err)) return -1;
    free(l->buf);
    l->buf = NULL;
    return 0;
}

int llm_shuffler_new(llm_shuffler **out, size_t rec_bytes, uint64_t seed, size_t mem, const char *tmpdir, llm_err *err)
{
    *out = NULL;
    size_t slot = 8 + rec_bytes;
    if (mem < LLM_SHUFFLE_MIN_MEM || slot > mem / 4)
        return llm_errf(err, "shuffle: a memory budget of %zu bytes is too small for records of %zu bytes (at least %u KiB and 4 records)",
                        mem, rec_bytes, LLM_SHUFFLE_MIN_MEM >> 10);
    llm_shuffler *s = calloc(1, sizeof *s);
    if (!s || !(s->tmpdir = strdup(tmpdir)) || !(s->scratch = malloc(slot))) {
        if (s) free(s->tmpdir);
        free(s);
        return llm_errf(err, "out of memory");
    }
    s->rec_bytes = rec_bytes;
    s->slot = slot;
    s->seed = seed;
    s->mem = mem;
    if (level_open(&s->top, 64 - FANOUT_BITS, slot, mem / 4, tmpdir, err)) {
        free(s->scratch);
        free(s->tmpdir);
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int llm_shuffler_add(llm_shuffler *s, const void *rec, llm_err *err)
{
    if (s->finished) return llm_errf(err, "shuffle: a record added after the end");
    uint64_t key = llm_shuffle_key(s->count, s->seed);
    level *l = &s->top;
    int b = (int)(key >> l->shift) & (FANOUT - 1);
    if (s->slot <= l->bufsize) {   /* straight into the bucket's buffer */
        if (l->fill[b] + s->slot > l->bufsize && level_flush(l, b, s->tmpdir, err)) return -1;
        unsigned char *p = l->buf + (size_t)b * l->bufsize + l->fill[b];
        memcpy(p, &key, 8);
        memcpy(p + 8, rec, s->rec_bytes);
        l->fill[b] += s->slot;
        l->count[b]++;
    } else {
        memcpy(s->scratch, &key, 8);
        memcpy(s->scratch + 8, rec, s->rec_bytes);
        if (level_put(l, s->scratch, s->slot, s->tmpdir, err)) return -1;
    }
    s->count++;
    return 0;
}

uint64_t llm_shuffler_count(const llm_shuffler *s) { return s->count; }

typedef struct {
    uint64_t key;
    size_t at;
} sort_entry;

static int by_key(const void *a, const void *b)
{
    uint64_t x = ((const sort_entry *)a)->key, y = ((const sort_entry *)b)->key;
    return x < y ? -1 : x > y;
}

static int emit_bucket(llm_shuffler *s, int fd, uint64_t count, int shift, llm_record_fn fn, void *ctx, llm_err *err);

/* A bucket too large for memory: split it by the next bits of the key. */
static int split_bucket(llm_shuffler *s, int fd, uint64_t count, int shift, llm_record_fn fn, void *ctx, llm_err *err)
{
    if (shift < FANOUT_BITS) return llm_errf(err, "shuffle: keys not distinct (cannot happen)");
    level sub;
    if (level_open(&sub, shift - FANOUT_BITS, s->slot, s->mem / 4, s->tmpdir, err)) return -1;
    size_t per_read = s->mem / 8 / s->slot;
    if (per_read == 0) per_read = 1;
    unsigned char *chunk = malloc(per_read * s->slot);
    int rc = chunk ? 0 : llm_errf(err, "out of memory");
    for (uint64_t done = 0; !rc && done < count;) {
        size_t n = count - done < per_read ? (size_t)(count - done) : per_read;
        long long got = llm_read_full(fd, chunk, n * s->slot, s->tmpdir, err);
        if (got < 0) rc = -1;
        else if ((size_t)got != n * s->slot) rc = llm_errf(err, "shuffle: a temporary file in %s came back short", s->tmpdir);
        for (size_t i = 0; !rc && i < n; i++) rc = level_put(&sub, chunk + i * s->slot, s->slot, s->tmpdir, err);
        done += n;
    }
    free(chunk);
    if (!rc) rc = level_flush_all(&sub, s->tmpdir, err);
    for (int b = 0; !rc && b < FANOUT; b++) rc = emit_bucket(s, sub.fd[b], sub.count[b], sub.shift, fn, ctx, err);
    level_close(&sub);
    return rc;
}

/* Emits one bucket's records in key order: sorted in memory when the bucket
 * fits half the budget (with its index), else split again. */
static int emit_bucket(llm_shuffler *s, int fd, uint64_t count, int shift, llm_record_fn fn, void *ctx, llm_err *err)
{
    if (count == 0) return 0;
    if (lseek(fd, 0, SEEK_SET) != 0) return llm_errf(err, "shuffle: %s: seek failed: %s", s->tmpdir, strerror(errno));
    if (count > 1 && count * (s->slot + sizeof(sort_entry)) > s->mem / 2)
        return split_bucket(s, fd, count, shift, fn, ctx, err);
    size_t bytes = (size_t)count * s->slot;
    unsigned char *data = malloc(bytes);
    sort_entry *order = malloc((size_t)count * sizeof *order);
    int rc = data && order ? 0 : llm_errf(err, "out of memory");
    long long got = rc ? 0 : llm_read_full(fd, data, bytes, s->tmpdir, err);
    if (!rc && got < 0) rc = -1;
    else if (!rc && (size_t)got != bytes) rc = llm_errf(err, "shuffle: a temporary file in %s came back short", s->tmpdir);
    for (size_t i = 0; !rc && i < count; i++) {
        memcpy(&order[i].key, data + i * s->slot, 8);
        order[i].at = i * s->slot + 8;
    }
    if (!rc) qsort(order, (size_t)count, sizeof *order, by_key);
    for (size_t i = 0; !rc && i < count; i++) rc = fn(ctx, data + order[i].at, err);
    free(data);
    free(order);
    return rc;
}

int llm_shuffler_finish(llm_shuffler *s, llm_record_fn fn, void *ctx, llm_err *err)
{
    if (s->finished) return llm_errf(err, "shuffle: finished twice");
    s->finished = 1;
    if (level_flush_all(&s->top, s->tmpdir, err)) return -1;
    for (int b = 0; b < FANOUT; b++) {
        if (emit_bucket(s, s->top.fd[b], s->top.count[b], s->top.shift, fn, ctx, err)) return -1;
        close(s->top.fd[b]);   /* its space is given back as soon as it is out */
        s->top.fd[b] = -1;
    }
    return 0;
}

void llm_shuffler_free(llm_shuffler *s)
{
    if (!s) return;
    level_close(&s->top);
    free(s->scratch);
    free(s->tmpdir);
    free(s);
}
