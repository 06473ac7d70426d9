/* llm-inspect: print a safetensors file's header as one JSON document, or a
 * stream's records as JSON lines. See llm-inspect(1). */
#include "cli.h"
#include "describe.h"
#include "fileio.h"
#include "seqset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int64_t head = -1;
static int with_stats, compact;
static uint64_t max_record;
static const char *format = "auto";

static const llm_opt options[] = {
    {"head", 'n', LLM_OPT_INT, &head, "N", "streams: the header and the first N records only; shard sets: N sequences", 0, INT64_MAX},
    {"stats", 's', LLM_OPT_FLAG, &with_stats, NULL, "safetensors: add min, max, mean, rms, nan, inf of float tensors", 0, 0},
    {"compact", 'c', LLM_OPT_FLAG, &compact, NULL, "safetensors: print the document on one line", 0, 0},
    {"format", 'f', LLM_OPT_STR, &format, "FMT", "auto (default), safetensors or stream", 0, 0},
    {"max-record", 0, LLM_OPT_SIZE, &max_record, "SIZE", "streams: largest record accepted (default 64M)", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};

static const llm_cmd cmd = {
    .name = "llm-inspect",
    .summary = "show what is in an llmux file or stream, as JSON",
    .synopsis = "[--stats] [--compact] FILE.safetensors...\n[--head N] FILE.stream... | -\n[--head N] SHARD-DIR...",
    .opts = options,
    .footer = "A safetensors file prints as one JSON document; a stream prints one JSON line per\n"
              "record (header, records, end). '-' or no FILE reads a stream from stdin. A shard set\n"
              "(a directory from llm-shard -o) prints its manifest once every shard's checksum matched.",
};

static void print_json(json_t *j, size_t flags)
{
    if (json_dumpf(j, stdout, flags | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) != 0 || fputc('\n', stdout) == EOF)
        llm_die("write error: %s", strerror(errno));
    json_decref(j);
}

/* One key per line and one tensor per line: readable, and still one JSON document. */
static void print_document(json_t *doc)
{
    if (compact) { print_json(doc, JSON_COMPACT); return; }
    const char *key;
    json_t *v;
    int first = 1;
    fputs("{", stdout);
    json_object_foreach(doc, key, v) {
        printf("%s\n  ", first ? "" : ",");
        first = 0;
        json_t *k = json_string(key);
        json_dumpf(k, stdout, JSON_ENCODE_ANY);
        json_decref(k);
        fputs(": ", stdout);
        if (json_is_array(v) && json_array_size(v)) {
            size_t i;
            json_t *e;
            fputs("[", stdout);
            json_array_foreach(v, i, e) {
                fputs(i ? ",\n    " : "\n    ", stdout);
                json_dumpf(e, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
            }
            fputs("\n  ]", stdout);
        } else {
            json_dumpf(v, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
        }
    }
    if (fputs("\n}\n", stdout) == EOF) llm_die("write error: %s", strerror(errno));
    json_decref(doc);
}

static void inspect_safetensors_mem(const void *buf, size_t len, const char *name)
{
    llm_err err;
    llm_st_file *f;
    if (llm_st_open_mem(buf, len, name, &f, &err)) llm_die_err(&err);
    print_document(llm_describe_safetensors(f, name, with_stats));
    llm_st_close(f);
}

static void inspect_safetensors(const char *path)
{
    llm_err err;
    llm_st_file *f;
    if (llm_st_open(path, &f, &err)) llm_die_err(&err);
    print_document(llm_describe_safetensors(f, path, with_stats));
    llm_st_close(f);
}

static void inspect_stream(int fd, const char *name)
{
    llm_err err;
    llm_stream_reader *r;
    if (llm_sr_open(&r, fd, name, (size_t)max_record, &err)) llm_die_err(&err);
    print_json(llm_describe_record(r, llm_sr_header(r)), JSON_COMPACT);
    const msgpack_object *rec;
    int got = 0;
    int64_t n = 0;
    llm_progress progress;
    llm_progress_start(&progress, name, 0);
    while ((head < 0 || n < head) && (got = llm_sr_next(r, &rec, &err)) == 1) {
        print_json(llm_describe_record(r, rec), JSON_COMPACT);
        llm_progress_update(&progress, (uint64_t)++n);
    }
    llm_progress_end(&progress);
    if (head < 0 || n < head) {
        if (got < 0) llm_die_err(&err);
        print_json(llm_describe_record(r, llm_sr_end(r)), JSON_COMPACT);   /* the end record as read */
    }
    llm_sr_close(r);
}

/* Reads all of a non-seekable input (a pipe given --format safetensors). */
static void *slurp(int fd, const char *name, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) llm_die("%s: out of memory", name);
        llm_err err;
        long long got = llm_read_full(fd, buf + n, cap - n, name, &err);
        if (got < 0) llm_die_err(&err);
        n += (size_t)got;
        if (n < cap) break;
        if (cap > LLM_ST_MAX_HEADER * 64) llm_die("%s: input too large to read from a pipe; give a file", name);
        cap *= 2;
        buf = realloc(buf, cap);
    }
    *len = n;
    return buf;
}

static int looks_like_stream(const unsigned char *b, size_t n)
{
    int map = n > 0 && ((b[0] >= 0x80 && b[0] <= 0x8f) || b[0] == 0xde || b[0] == 0xdf);
    return map && !(n >= 9 && b[8] == '{');
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* A shard set: its manifest, "verified": true once every checksum matched,
 * then with --head N the first N sequences as JSON lines. */
static void inspect_seqset(const char *dir)
{
    llm_err err;
    llm_seqset *s;
    if (llm_seqset_open(dir, &s, &err) || llm_seqset_verify(s, &err)) llm_die_err(&err);
    json_t *m = json_loads(llm_seqset_manifest(s), 0, NULL);
    if (!m) llm_die("%s: out of memory", dir);
    json_object_set_new(m, "verified", json_true());
    print_document(m);
    size_t n = (size_t)llm_seqset_seq_len(s) + 1;
    uint32_t *tok = malloc(n * sizeof *tok);
    uint8_t *mask = malloc(n);
    if (!tok || !mask) llm_die("out of memory");
    for (uint64_t i = 0; head > 0 && i < (uint64_t)head && i < llm_seqset_count(s); i++) {
        if (llm_seqset_get(s, i, tok, mask, &err)) llm_die_err(&err);
        json_t *r = json_object(), *a = json_array(), *ma = json_array();
        json_object_set_new(r, "type", json_string("seq"));
        json_object_set_new(r, "index", json_integer((json_int_t)i));
        for (size_t k = 0; k < n; k++) json_array_append_new(a, json_integer(tok[k]));
        json_object_set_new(r, "tokens", a);
        if (llm_seqset_has_masks(s)) {
            for (size_t k = 0; k < n; k++) json_array_append_new(ma, json_integer(mask[k]));
            json_object_set_new(r, "mask", ma);
        } else {
            json_decref(ma);
        }
        print_json(r, JSON_COMPACT);
    }
    free(tok);
    free(mask);
    llm_seqset_close(s);
}

static void inspect(const char *path)
{
    struct stat dst;
    char manifest[8192];
    snprintf(manifest, sizeof manifest, "%s/manifest.json", path);
    if (stat(path, &dst) == 0 && S_ISDIR(dst.st_mode) && access(manifest, F_OK) == 0) {
        inspect_seqset(path);
        return;
    }
    /* llm-shard -o DIR: DIR/train and DIR/val */
    static const char *const parts[] = {"train", "val"};
    int found = 0;
    for (int i = 0; i < 2 && S_ISDIR(dst.st_mode); i++) {
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, parts[i]);
        snprintf(manifest, sizeof manifest, "%s/manifest.json", sub);
        if (access(manifest, F_OK) == 0) { inspect_seqset(sub); found = 1; }
    }
    if (found) return;
    int is_stdin = !strcmp(path, "-");
    const char *name = is_stdin ? "<stdin>" : path;
    int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) llm_die("%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) llm_die("%s: %s", name, strerror(errno));
    if (S_ISDIR(st.st_mode)) llm_die("%s: is a directory", name);
    int stream;
    if (!strcmp(format, "stream")) stream = 1;
    else if (!strcmp(format, "safetensors")) stream = 0;
    else if (ends_with(path, ".safetensors")) stream = 0;
    else if (ends_with(path, ".stream") || !S_ISREG(st.st_mode)) stream = 1;
    else {
        unsigned char b[9];
        ssize_t n = pread(fd, b, sizeof b, 0);
        stream = n > 0 && looks_like_stream(b, (size_t)n);
    }
    if (stream) {
        inspect_stream(fd, name);
    } else if (S_ISREG(st.st_mode) && !is_stdin) {
        inspect_safetensors(path);
    } else {
        size_t len;
        void *buf = slurp(fd, name, &len);
        inspect_safetensors_mem(buf, len, name);
        free(buf);
    }
    if (!is_stdin) close(fd);
}

int main(int argc, char **argv)
{
    llm_cli_init(argv[0]);
    char **files;
    int n = llm_cli_parse(&cmd, argc, argv, &files);
    if (strcmp(format, "auto") && strcmp(format, "safetensors") && strcmp(format, "stream"))
        llm_usage_error("--format must be auto, safetensors or stream, not '%s'", format);
    if (n == 0) {
        if (isatty(STDIN_FILENO)) llm_usage_error("no FILE given and stdin is a terminal");
        inspect("-");
    }
    for (int i = 0; i < n; i++) inspect(files[i]);
    free(files);
    return 0;
}
