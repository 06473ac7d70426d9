/* Shard sets: see seqset.h. */
#include "seqset.h"
#include "fileio.h"
#include "le.h"
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static uint64_t record_bytes(uint32_t seq_len, uint32_t width, int masks)
{
    uint64_t n = (uint64_t)seq_len + 1;
    return n * width + (masks ? n : 0);
}

size_t llm_seq_record_bytes(uint32_t seq_len, uint32_t token_width, int masks)
{
    return (size_t)record_bytes(seq_len, token_width, masks);
}

int llm_seq_encode(void *rec, const uint32_t *tokens, const uint8_t *mask, size_t n, int token_width)
{
    if (llm_u32_to_le(rec, tokens, n, token_width)) return -1;
    if (mask) memcpy((unsigned char *)rec + n * (size_t)token_width, mask, n);
    return 0;
}

void llm_seq_decode(uint32_t *tokens, uint8_t *mask, const void *rec, size_t n, int token_width)
{
    llm_le_to_u32(tokens, rec, n, token_width);
    if (mask) memcpy(mask, (const unsigned char *)rec + n * (size_t)token_width, n);
}

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* ---- writing ---- */

typedef struct {
    char name[32];
    uint64_t count, bytes, hash;
} shard_meta;

struct llm_seqset_writer {
    llm_seqset_info info;
    char *dir, *tmpdir, *tokenizer;
    int fd;                       /* the open shard, -1 between shards */
    shard_meta *shards;
    size_t nshards;
    XXH3_state_t *hash;
    unsigned char *rec;           /* one record */
    uint64_t rec_bytes, total;
    unsigned char *out;           /* records not yet written to the open shard */
    size_t out_len, out_cap;
};

#define WRITE_BUFFER (1u << 20)

static int flush_records(llm_seqset_writer *w, llm_err *err)
{
    if (!w->out_len) return 0;
    shard_meta *m = &w->shards[w->nshards - 1];
    size_t n = w->out_len;
    w->out_len = 0;
    if (llm_write_all(w->fd, w->out, n, m->name, err)) return llm_err_prefix(err, "%s", w->dir);
    return 0;
}

static int close_shard(llm_seqset_writer *w, llm_err *err)
{
    if (w->fd < 0) return 0;
    if (flush_records(w, err)) return -1;
    shard_meta *m = &w->shards[w->nshards - 1];
    /* the count in the header is known now: write it, and hash the file as written */
    unsigned char hdr[LLM_SEQSET_HEADER] = {0};
    memcpy(hdr, LLM_SEQSET_MAGIC, 8);
    put_le(hdr + 8, w->info.token_width, 4);
    put_le(hdr + 12, w->info.seq_len, 4);
    put_le(hdr + 16, w->info.masks ? 1 : 0, 4);
    put_le(hdr + 24, m->count, 8);
    int rc = pwrite(w->fd, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr ? 0 : -1;
    XXH3_64bits_reset(w->hash);
    unsigned char buf[1 << 16];
    for (off_t off = 0; !rc;) {
        ssize_t r = pread(w->fd, buf, sizeof buf, off);
        if (r < 0) rc = -1;
        if (r <= 0) break;
        XXH3_64bits_update(w->hash, buf, (size_t)r);
        off += r;
    }
    m->hash = XXH3_64bits_digest(w->hash);
    if (!rc && fsync(w->fd) != 0) rc = -1;
    if (close(w->fd) != 0) rc = -1;
    w->fd = -1;
    return rc ? llm_errf(err, "%s/%s: write failed: %s", w->dir, m->name, strerror(errno)) : 0;
}

static int open_shard(llm_seqset_writer *w, llm_err *err)
{
    shard_meta *s = realloc(w->shards, (w->nshards + 1) * sizeof *s);
    if (!s) return llm_errf(err, "out of memory");
    w->shards = s;
    shard_meta *m = &s[w->nshards++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "shard-%05zu.bin", w->nshards - 1);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", w->tmpdir, m->name);
    w->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) return llm_errf(err, "%s: %s", path, strerror(errno));
    unsigned char hdr[LLM_SEQSET_HEADER] = {0};   /* rewritten with the count at close */
    m->bytes = LLM_SEQSET_HEADER;
    return llm_write_all(w->fd, hdr, sizeof hdr, path, err);
}

int llm_seqset_writer_open(llm_seqset_writer **out, const char *dir, const llm_seqset_info *info, llm_err *err)
{
    *out = NULL;
    struct stat st;
    if (lstat(dir, &st) == 0) return llm_errf(err, "%s: already exists (a shard set is written whole, never over another)", dir);
    if (info->token_width != 2 && info->token_width != 4) return llm_errf(err, "%s: token width must be 2 or 4", dir);
    llm_seqset_writer *w = calloc(1, sizeof *w);
    if (!w) return llm_errf(err, "out of memory");
    w->info = *info;
    w->fd = -1;
    w->dir = strdup(dir);
    w->tokenizer = strdup(info->tokenizer ? info->tokenizer : "");
    w->tmpdir = malloc(strlen(dir) + 16);
    w->hash = XXH3_createState();
    w->rec_bytes = record_bytes(info->seq_len, info->token_width, info->masks);
    w->rec = malloc(w->rec_bytes);
    w->out_cap = WRITE_BUFFER;
    w->out = malloc(w->out_cap);
    if (!w->dir || !w->tokenizer || !w->tmpdir || !w->hash || !w->rec || !w->out) {
        llm_seqset_writer_abort(w);
        return llm_errf(err, "out of memory");
    }
    w->info.tokenizer = w->tokenizer;
    if (!w->info.shard_bytes) w->info.shard_bytes = 64u << 20;
    sprintf(w->tmpdir, "%s.tmp.XXXXXX", dir);
    if (!mkdtemp(w->tmpdir)) {
        llm_errf(err, "%s: cannot create a temporary directory beside it: %s", dir, strerror(errno));
        free(w->tmpdir);
        w->tmpdir = NULL;
        llm_seqset_writer_abort(w);
        return -1;
    }
    mode_t mask = umask(0);   /* mkdtemp makes 0700; a shard set is an ordinary directory */
    umask(mask);
    chmod(w->tmpdir, 0777 & ~mask);
    *out = w;
    return 0;
}

int llm_seqset_writer_add(llm_seqset_writer *w, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err)
{
    if (n != (size_t)w->info.seq_len + 1 || (w->info.masks && !mask))
        return llm_errf(err, "%s: a sequence of %zu tokens%s does not fit the set", w->dir, n, mask ? "" : " without a mask");
    if (llm_seq_encode(w->rec, tokens, w->info.masks ? mask : NULL, n, (int)w->info.token_width))
        return llm_errf(err, "%s: a token id does not fit 2 bytes", w->dir);
    return llm_seqset_writer_add_record(w, w->rec, err);
}

int llm_seqset_writer_add_record(llm_seqset_writer *w, const void *rec, llm_err *err)
{
    if (w->fd < 0 || w->shards[w->nshards - 1].bytes + w->rec_bytes > w->info.shard_bytes + LLM_SEQSET_HEADER) {
        if (w->fd >= 0 && w->shards[w->nshards - 1].count && close_shard(w, err)) return -1;
        if (w->fd < 0 && open_shard(w, err)) return -1;
    }
    if (w->out_len + w->rec_bytes > w->out_cap && flush_records(w, err)) return -1;
    if (w->rec_bytes > w->out_cap) {   /* a record larger than the buffer goes straight out */
        shard_meta *m = &w->shards[w->nshards - 1];
        if (llm_write_all(w->fd, rec, w->rec_bytes, m->name, err)) return llm_err_prefix(err, "%s", w->dir);
    } else {
        memcpy(w->out + w->out_len, rec, w->rec_bytes);
        w->out_len += w->rec_bytes;
    }
    shard_meta *m = &w->shards[w->nshards - 1];
    m->count++;
    m->bytes += w->rec_bytes;
    w->total++;
    return 0;
}

int llm_seqset_writer_finish(llm_seqset_writer *w, const llm_seqset_counts *c, llm_err *err)
{
    if (close_shard(w, err)) { llm_seqset_writer_abort(w); return -1; }
    json_t *m = json_object(), *shards = json_array();
    json_object_set_new(m, "format", json_string("llmux-shards"));
    json_object_set_new(m, "version", json_integer(1));
    json_object_set_new(m, "tokenizer", json_string(w->tokenizer));
    json_object_set_new(m, "vocab_size", json_integer((json_int_t)w->info.vocab_size));
    json_object_set_new(m, "eos_id", json_integer((json_int_t)w->info.eos_id));
    json_object_set_new(m, "seq_len", json_integer(w->info.seq_len));
    json_object_set_new(m, "token_width", json_integer(w->info.token_width));
    json_object_set_new(m, "mask", json_boolean(w->info.masks));
    json_object_set_new(m, "sequences", json_integer((json_int_t)w->total));
    json_object_set_new(m, "documents", json_integer((json_int_t)c->documents));
    json_object_set_new(m, "tokens", json_integer((json_int_t)c->tokens));
    json_object_set_new(m, "dropped", json_integer((json_int_t)c->dropped));
    json_object_set_new(m, "padded", json_integer((json_int_t)c->padded));
    for (size_t i = 0; i < w->nshards; i++) {
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)w->shards[i].hash);
        json_t *s = json_object();
        json_object_set_new(s, "file", json_string(w->shards[i].name));
        json_object_set_new(s, "sequences", json_integer((json_int_t)w->shards[i].count));
        json_object_set_new(s, "bytes", json_integer((json_int_t)w->shards[i].bytes));
        json_object_set_new(s, "xxh3_64", json_string(hex));
        json_array_append_new(shards, s);
    }
    json_object_set_new(m, "shards", shards);
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(m);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.json", w->tmpdir);
    llm_atomic a;
    int rc = !text ? llm_errf(err, "out of memory") : llm_atomic_open(&a, path, err);
    if (!rc) rc = llm_write_all(a.fd, text, strlen(text), path, err);
    if (!rc) rc = llm_write_all(a.fd, "\n", 1, path, err);
    if (!rc) rc = llm_atomic_commit(&a, err);
    else if (text) llm_atomic_abort(&a);
    free(text);
    if (!rc && rename(w->tmpdir, w->dir) != 0) rc = llm_errf(err, "%s: rename from %s failed: %s", w->dir, w->tmpdir, strerror(errno));
    if (rc) { llm_seqset_writer_abort(w); return -1; }
    free(w->tmpdir);
    w->tmpdir = NULL;
    llm_seqset_writer_abort(w);   /* frees what is left */
    return 0;
}

void llm_seqset_writer_abort(llm_seqset_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->tmpdir) {
        char path[PATH_MAX];
        for (size_t i = 0; i < w->nshards; i++) {
            snprintf(path, sizeof path, "%s/%s", w->tmpdir, w->shards[i].name);
            unlink(path);
        }
        snprintf(path, sizeof path, "%s/manifest.json", w->tmpdir);
        unlink(path);
        rmdir(w->tmpdir);
    }
    if (w->hash) XXH3_freeState(w->hash);
    free(w->tmpdir);
    free(w->dir);
    free(w->tokenizer);
    free(w->shards);
    free(w->rec);
    free(w->out);
    free(w);
}

/* ---- reading ---- */

typedef struct {
    char *name;
    uint64_t first, count, bytes, hash;
    llm_mapped map;
    int checked;
} shard_in;

struct llm_seqset {
    char *dir, *manifest;
    uint32_t seq_len, width;
    int masks;
    uint64_t count, rec_bytes;
    shard_in *shards;
    size_t nshards;
    /* the single-file form: a stream of seq records, mapped, with where each
     * record's tokens and mask are in it */
    llm_mapped stream;
    uint64_t *tok_at, *mask_at;
};

static int json_u64(json_t *o, const char *key, uint64_t *v)
{
    json_t *j = json_object_get(o, key);
    if (!json_is_integer(j) || json_integer_value(j) < 0) return -1;
    *v = (uint64_t)json_integer_value(j);
    return 0;
}

static int check_shard(llm_seqset *s, shard_in *sh, llm_err *err)
{
    if (sh->checked) return 0;
    uint64_t h = XXH3_64bits(sh->map.data, sh->map.size);
    if (h != sh->hash)
        return llm_errf(err, "%s/%s: checksum mismatch (xxh3_64 %016llx, the manifest says %016llx): the shard is damaged",
                        s->dir, sh->name, (unsigned long long)h, (unsigned long long)sh->hash);
    sh->checked = 1;
    return 0;
}

static int grow_offsets(llm_seqset *s, uint64_t *cap)
{
    if (s->count < *cap) return 0;
    *cap = *cap ? 2 * *cap : 1024;
    uint64_t *t = realloc(s->tok_at, *cap * sizeof *t), *m = t ? realloc(s->mask_at, *cap * sizeof *m) : NULL;
    if (t) s->tok_at = t;
    if (m) s->mask_at = m;
    return t && m ? 0 : -1;
}

/* The stream form (llm-shard without -o): read through once to check every
 * record and note where its fields are, then map it for reading by index.
 * A stream has no checksums: its framing and end record are what is checked. */
static int open_stream(llm_seqset *s, const char *path, llm_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return llm_errf(err, "%s: %s", path, strerror(errno));
    llm_stream_reader *r = NULL;
    int rc = llm_sr_open(&r, fd, path, 0, err);
    const msgpack_object *h = rc ? NULL : llm_sr_header(r);
    uint64_t seq_len = 0, cap = 0;
    if (!rc && strcmp(llm_sr_kind(r), "seqs"))
        rc = llm_errf(err, "%s: a stream of kind '%s', not seqs (llm-shard's output)", path, llm_sr_kind(r));
    else if (!rc && (llm_mp_get_u64(h, "seq_len", &seq_len) || seq_len < 1 || seq_len > (1u << 24)))
        rc = llm_errf(err, "%s: the header's seq_len is missing or invalid", path);
    if (!rc) {
        s->seq_len = (uint32_t)seq_len;
        s->width = (uint32_t)llm_sr_token_width(r);
        s->masks = llm_mp_str_eq(llm_mp_get(h, "mask"), "loss");
        s->rec_bytes = record_bytes(s->seq_len, s->width, s->masks);
    }
    uint64_t n = seq_len + 1;
    const msgpack_object *rec;
    int got = 0;
    while (!rc && (got = llm_sr_next(r, &rec, err)) == 1) {
        if (!llm_mp_str_eq(llm_mp_get(rec, "type"), "seq")) continue;
        unsigned long long at = (unsigned long long)llm_sr_offset(r);
        const msgpack_object *t = llm_mp_get(rec, "tokens"), *m = llm_mp_get(rec, "mask");
        if (!t || t->type != MSGPACK_OBJECT_BIN || t->via.bin.size != n * s->width)
            rc = llm_errf(err, "%s: record at byte %llu: tokens missing or not %llu tokens", path, at, (unsigned long long)n);
        else if (s->masks && (!m || m->type != MSGPACK_OBJECT_BIN || m->via.bin.size != n))
            rc = llm_errf(err, "%s: record at byte %llu: mask missing or not one byte per token", path, at);
        else if (grow_offsets(s, &cap))
            rc = llm_errf(err, "out of memory");
        else {
            s->tok_at[s->count] = llm_sr_data_offset(r, t->via.bin.ptr);
            s->mask_at[s->count] = s->masks ? llm_sr_data_offset(r, m->via.bin.ptr) : 0;
            if (s->tok_at[s->count] == UINT64_MAX || s->mask_at[s->count] == UINT64_MAX)
                rc = llm_errf(err, "%s: record at byte %llu: cannot locate its fields", path, at);
            s->count++;
        }
    }
    if (!rc && got < 0) rc = -1;
    llm_sr_close(r);
    close(fd);
    if (!rc && llm_map_file(&s->stream, path, err)) rc = -1;
    return rc;
}

int llm_seqset_open(const char *dir, llm_seqset **out, llm_err *err)
{
    *out = NULL;
    char path[PATH_MAX];
    struct stat st;
    if (stat(dir, &st) != 0) return llm_errf(err, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        llm_seqset *s = calloc(1, sizeof *s);
        if (!s || !(s->dir = strdup(dir))) { free(s); return llm_errf(err, "out of memory"); }
        if (open_stream(s, dir, err)) { llm_seqset_close(s); return -1; }
        *out = s;
        return 0;
    }
    /* llm-shard -o DIR: DIR itself is no set, DIR/train is */
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    char train[PATH_MAX];
    snprintf(train, sizeof train, "%s/train/manifest.json", dir);
    if (access(path, F_OK) != 0 && access(train, F_OK) == 0) {
        snprintf(train, sizeof train, "%s/train", dir);
        return llm_seqset_open(train, out, err);
    }
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    json_error_t jerr;
    json_t *m = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!m) return llm_errf(err, "%s: %s", path, jerr.text);
    llm_seqset *s = calloc(1, sizeof *s);
    if (!s) { json_decref(m); return llm_errf(err, "out of memory"); }
    s->dir = strdup(dir);
    s->manifest = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    uint64_t seq_len = 0, width = 0, version = 0;
    json_t *shards = json_object_get(m, "shards");
    int rc = 0;
    if (!json_is_object(m) || strcmp(json_string_value(json_object_get(m, "format")) ? json_string_value(json_object_get(m, "format")) : "", "llmux-shards"))
        rc = llm_errf(err, "%s: not an llmux shard set manifest", path);
    else if (json_u64(m, "version", &version) || version != 1)
        rc = llm_errf(err, "%s: unsupported version (this reader reads version 1)", path);
    else if (json_u64(m, "seq_len", &seq_len) || seq_len < 1 || seq_len > (1u << 24) || json_u64(m, "token_width", &width) ||
             (width != 2 && width != 4) || !json_is_boolean(json_object_get(m, "mask")) || !json_is_array(shards))
        rc = llm_errf(err, "%s: seq_len, token_width, mask or shards missing or invalid", path);
    if (!rc) {
        s->seq_len = (uint32_t)seq_len;
        s->width = (uint32_t)width;
        s->masks = json_is_true(json_object_get(m, "mask"));
        s->rec_bytes = record_bytes(s->seq_len, s->width, s->masks);
        s->nshards = json_array_size(shards);
        s->shards = calloc(s->nshards + 1, sizeof *s->shards);
        if (!s->shards) rc = llm_errf(err, "out of memory");
    }
    for (size_t i = 0; !rc && i < s->nshards; i++) {
        json_t *j = json_array_get(shards, i);
        shard_in *sh = &s->shards[i];
        const char *file = json_string_value(json_object_get(j, "file")), *hex = json_string_value(json_object_get(j, "xxh3_64"));
        char *end;
        if (!file || strchr(file, '/') || !hex || strlen(hex) != 16 || json_u64(j, "sequences", &sh->count) ||
            json_u64(j, "bytes", &sh->bytes)) {
            rc = llm_errf(err, "%s: shard %zu: file, sequences, bytes or xxh3_64 missing or invalid", path, i);
            break;
        }
        sh->hash = strtoull(hex, &end, 16);
        sh->name = strdup(file);
        sh->first = s->count;
        s->count += sh->count;
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if (*end) rc = llm_errf(err, "%s: bad xxh3_64", path);
        else if (llm_map_file(&sh->map, path, err)) rc = -1;
        else if (sh->map.size != sh->bytes || sh->bytes != LLM_SEQSET_HEADER + sh->count * s->rec_bytes)
            rc = llm_errf(err, "%s: %zu bytes, but the manifest says %llu sequences in %llu bytes: truncated or damaged", path,
                          sh->map.size, (unsigned long long)sh->count, (unsigned long long)sh->bytes);
        else if (memcmp(sh->map.data, LLM_SEQSET_MAGIC, 8) || get_le(sh->map.data + 8, 4) != s->width ||
                 get_le(sh->map.data + 12, 4) != s->seq_len || get_le(sh->map.data + 16, 4) != (uint64_t)s->masks ||
                 get_le(sh->map.data + 24, 8) != sh->count)
            rc = llm_errf(err, "%s: the shard's header disagrees with the manifest", path);
    }
    uint64_t total;
    if (!rc && (json_u64(m, "sequences", &total) || total != s->count))
        rc = llm_errf(err, "%s/manifest.json: sequences does not equal the shards' sum", dir);
    json_decref(m);
    if (rc) { llm_seqset_close(s); return -1; }
    *out = s;
    return 0;
}

void llm_seqset_close(llm_seqset *s)
{
    if (!s) return;
    llm_unmap_file(&s->stream);
    free(s->tok_at);
    free(s->mask_at);
    for (size_t i = 0; i < s->nshards; i++) {
        llm_unmap_file(&s->shards[i].map);
        free(s->shards[i].name);
    }
    free(s->shards);
    free(s->manifest);
    free(s->dir);
    free(s);
}

uint64_t llm_seqset_count(const llm_seqset *s) { return s->count; }
uint32_t llm_seqset_seq_len(const llm_seqset *s) { return s->seq_len; }
int llm_seqset_has_masks(const llm_seqset *s) { return s->masks; }
size_t llm_seqset_shards(const llm_seqset *s) { return s->nshards; }
const char *llm_seqset_manifest(const llm_seqset *s) { return s->manifest; }

int llm_seqset_verify(llm_seqset *s, llm_err *err)
{
    for (size_t i = 0; i < s->nshards; i++)
        if (check_shard(s, &s->shards[i], err)) return -1;
    return 0;
}

int llm_seqset_get(llm_seqset *s, uint64_t i, uint32_t *tokens, uint8_t *mask, llm_err *err)
{
    if (i >= s->count) return llm_errf(err, "%s: sequence %llu of %llu", s->dir, (unsigned long long)i, (unsigned long long)s->count);
    size_t n = (size_t)s->seq_len + 1;
    if (s->tok_at) {
        llm_le_to_u32(tokens, s->stream.data + s->tok_at[i], n, (int)s->width);
        if (mask && s->masks) memcpy(mask, s->stream.data + s->mask_at[i], n);
        return 0;
    }
    size_t lo = 0, hi = s->nshards;   /* the shard holding i: the last with first <= i */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (s->shards[mid].first <= i) lo = mid; else hi = mid;
    }
    shard_in *sh = &s->shards[lo];
    if (check_shard(s, sh, err)) return -1;
    const unsigned char *p = sh->map.data + LLM_SEQSET_HEADER + (i - sh->first) * s->rec_bytes;
    llm_seq_decode(tokens, mask && s->masks ? mask : NULL, p, n, (int)s->width);
    return 0;
}
