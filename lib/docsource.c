/* docsource.c — documents from text files, JSON lines, directories, archives
 * and stdin (see docsource.h for what is read how, and the error messages).
 *
 * The source is a small state machine. Paths come from the command-line list
 * and from a stack of directory listings (one sorted listing per level). Each
 * file is opened once and classified:
 *   JSONL   by name (".jsonl"), or stdin with jsonl_stdin: lines from the fd;
 *   ARCHIVE libarchive recognised a format (our list, no raw/empty/mtree);
 *   WHOLE   a compressed single file (libarchive's raw format behind a real
 *           filter), or a non-seekable plain text input: read to the end;
 *   EMPTY   a compressed empty file: one empty document;
 *   MAPPED  a regular plain text file: mmap.
 * Bidding consumes bytes; a regular file is rewound with lseek, a pipe's
 * consumed bytes are recorded (hist) and served again to the next reader. */
#include "docsource.h"
#include "unicode.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK ((size_t)64 * 1024)
#define DEFAULT_MAX_DOC ((size_t)1 << 30)
#define BAD (-2)   /* a bad document: skippable with skip_bad */

typedef struct {
    char *path;
    char **names;
    size_t n, i;
    dev_t dev;
    ino_t ino;
} dirframe;

enum { ST_NEXT_INPUT, ST_MAPPED, ST_WHOLE, ST_EMPTY, ST_JSONL, ST_ARCHIVE, ST_DONE };

struct llm_docsrc {
    llm_docsrc_opts o;
    size_t maxb;
    char *field;

    char **paths;
    size_t npaths, pi;
    dirframe *dirs;
    size_t ndirs, capdirs;

    int state;
    char *name;            /* the current input's display name; kept until the next one */
    int fd, close_fd, regular;
    unsigned char *hist;   /* bytes read from a pipe while bidding, to serve again */
    size_t hlen, hcap, hpos;
    int recording;
    int read_errno;
    unsigned char *chunk;  /* libarchive's read block */

    struct archive *a;
    int from_archive;      /* the byte source is archive data, not the fd */
    char *member;          /* current member (NULL outside archives) */
    int pending, pending_r;  /* detect() read the first header already */
    struct archive_entry *pending_e;
    int member_broken;     /* libarchive could not extract the current member */

    unsigned char *lbuf;   /* line reader */
    size_t lcap, lstart, lend;
    int leof;
    uint64_t lineno;

    unsigned char *dbuf;   /* whole documents read from streams and members */
    size_t dcap;
    void *map;             /* the mapped plain text file handed out last */
    size_t maplen;
    json_t *json;          /* the JSON line handed out last */
    char *origin;
    size_t origincap;

    uint64_t index, skipped;
    int dead;
    llm_err dead_err;
};

/* ---- messages ---- */

/* Formats a message about the current document: "NAME: ...", "NAME:LINE: ...",
 * "NAME: member 'M': ..." or "NAME: member 'M': line N: ...". Returns code. */
__attribute__((format(printf, 5, 6)))
static int fail(llm_docsrc *s, llm_err *err, int code, int with_line, const char *fmt, ...)
{
    char what[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    unsigned long long line = (unsigned long long)s->lineno;
    if (s->member && with_line) llm_errf(err, "%s: member '%s': line %llu: %s", s->name, s->member, line, what);
    else if (s->member) llm_errf(err, "%s: member '%s': %s", s->name, s->member, what);
    else if (with_line) llm_errf(err, "%s:%llu: %s", s->name, line, what);
    else llm_errf(err, "%s: %s", s->name, what);
    return code;
}

static const char *set_origin(llm_docsrc *s, int with_line)
{
    for (;;) {
        int n;
        unsigned long long line = (unsigned long long)s->lineno;
        char *o = s->origin ? s->origin : (char *)"";
        size_t cap = s->origin ? s->origincap : 0;
        if (s->member && with_line) n = snprintf(o, cap, "%s:%s:%llu", s->name, s->member, line);
        else if (s->member) n = snprintf(o, cap, "%s:%s", s->name, s->member);
        else if (with_line) n = snprintf(o, cap, "%s:%llu", s->name, line);
        else n = snprintf(o, cap, "%s", s->name);
        if (n >= 0 && (size_t)n < cap) return s->origin;
        size_t want = (size_t)(n < 0 ? 64 : n) + 64;
        char *p = realloc(s->origin, want);
        if (!p) return s->name;
        s->origin = p;
        s->origincap = want;
    }
}

/* ---- text checks ---- */

/* 0: valid UTF-8 without NUL; 1: invalid UTF-8 at *bad; 2: NUL at *bad
 * (whichever comes first). */
static int utf8_check(const unsigned char *p, size_t n, size_t *bad)
{
    size_t valid = llm_utf8_valid_prefix((const char *)p, n);
    const unsigned char *nul = memchr(p, 0, valid);
    if (nul) { *bad = (size_t)(nul - p); return 2; }
    if (valid < n) { *bad = valid; return 1; }
    return 0;
}

static int ends_with_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

static int is_jsonl_name(const char *s) { return ends_with_ci(s, ".jsonl"); }

static int json_has_nul(json_t *j)
{
    if (json_is_string(j)) return memchr(json_string_value(j), 0, json_string_length(j)) != NULL;
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) if (json_has_nul(v)) return 1;
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) if (json_has_nul(v)) return 1;
    }
    return 0;
}

/* ---- inputs ---- */

/* Ends the current input; the name stays for messages until the next one. */
static void input_close(llm_docsrc *s)
{
    if (s->a) archive_read_free(s->a);
    s->a = NULL;
    if (s->fd >= 0 && s->close_fd) close(s->fd);
    s->fd = -1;
    s->close_fd = 0;
    free(s->hist);
    s->hist = NULL;
    s->hlen = s->hcap = s->hpos = 0;
    s->recording = 0;
    s->read_errno = 0;
    free(s->member);
    s->member = NULL;
    s->from_archive = 0;
    s->member_broken = 0;
    s->pending = 0;
    s->lstart = s->lend = 0;
    s->leof = 0;
    s->lineno = 0;
    s->state = ST_NEXT_INPUT;
}

static void line_reset(llm_docsrc *s)
{
    s->lstart = s->lend = 0;
    s->leof = 0;
    s->lineno = 0;
}

/* libarchive's read callback: recorded bytes first, then the fd. */
static la_ssize_t feed_read(struct archive *a, void *data, const void **buf)
{
    llm_docsrc *s = data;
    if (s->hpos < s->hlen) {
        *buf = s->hist + s->hpos;
        la_ssize_t n = (la_ssize_t)(s->hlen - s->hpos);
        s->hpos = s->hlen;
        return n;
    }
    if (!s->recording && s->hist) {
        free(s->hist);
        s->hist = NULL;
        s->hlen = s->hcap = s->hpos = 0;
    }
    ssize_t n;
    do n = read(s->fd, s->chunk, CHUNK); while (n < 0 && errno == EINTR);
    if (n < 0) {
        s->read_errno = errno;
        archive_set_error(a, errno, "read error: %s", strerror(errno));
        return -1;
    }
    if (s->recording && n > 0) {
        if (s->hcap - s->hlen < (size_t)n) {
            size_t cap = s->hcap ? s->hcap * 2 : CHUNK * 2;
            while (cap - s->hlen < (size_t)n) cap *= 2;
            unsigned char *p = realloc(s->hist, cap);
            if (!p) {
                s->read_errno = ENOMEM;
                archive_set_error(a, ENOMEM, "out of memory");
                return -1;
            }
            s->hist = p;
            s->hcap = cap;
        }
        memcpy(s->hist + s->hlen, s->chunk, (size_t)n);
        s->hlen += (size_t)n;
        s->hpos = s->hlen;
    }
    *buf = s->chunk;
    return n;
}

static la_int64_t feed_seek(struct archive *a, void *data, la_int64_t off, int whence)
{
    llm_docsrc *s = data;
    off_t r = lseek(s->fd, (off_t)off, whence);
    if (r < 0) {
        archive_set_error(a, errno, "seek error: %s", strerror(errno));
        return ARCHIVE_FATAL;
    }
    return (la_int64_t)r;
}

/* Back to the first byte: lseek for regular files, the recording for pipes. */
static int input_rewind(llm_docsrc *s, llm_err *err)
{
    s->read_errno = 0;
    if (s->regular) {
        if (lseek(s->fd, 0, SEEK_SET) < 0) return llm_errf(err, "%s: seek error: %s", s->name, strerror(errno));
    } else {
        s->hpos = 0;
    }
    return 0;
}

static struct archive *new_reader(llm_docsrc *s, int raw)
{
    struct archive *a = archive_read_new();
    if (!a) return NULL;
    /* No uu (it would decode uuencoded blocks quoted in a text), no rpm, and
     * none of the filters that only run external programs. */
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_bzip2(a);
    archive_read_support_filter_xz(a);
    archive_read_support_filter_lzma(a);
    archive_read_support_filter_lzip(a);
    archive_read_support_filter_zstd(a);
    archive_read_support_filter_lz4(a);
    archive_read_support_filter_compress(a);
    if (raw) {
        archive_read_support_format_raw(a);
        archive_read_support_format_empty(a);   /* raw needs a byte: "gzip </dev/null" */
    } else {
        /* archive_read_support_format_all() less mtree and empty (see docsource.h);
         * raw is not part of "all" either. */
        archive_read_support_format_tar(a);
        archive_read_support_format_zip(a);
        archive_read_support_format_7zip(a);
        archive_read_support_format_cpio(a);
        archive_read_support_format_ar(a);
        archive_read_support_format_iso9660(a);
        archive_read_support_format_rar(a);
        archive_read_support_format_rar5(a);
        archive_read_support_format_xar(a);
        archive_read_support_format_cab(a);
        archive_read_support_format_lha(a);
        archive_read_support_format_warc(a);
    }
    archive_read_set_read_callback(a, feed_read);
    if (s->regular) archive_read_set_seek_callback(a, feed_seek);
    archive_read_set_callback_data(a, s);
    return a;
}

/* A compressed file whose name promises a tar archive. */
static int tar_name(const char *name)
{
    static const char *const sfx[] = {".tgz", ".taz", ".tbz", ".tbz2", ".tb2", ".txz", ".tlz", ".tzst", ".tz2"};
    for (size_t i = 0; i < sizeof sfx / sizeof *sfx; i++)
        if (ends_with_ci(name, sfx[i])) return 1;
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    size_t n = (size_t)(dot - name);
    return n >= 4 && !strncasecmp(dot - 4, ".tar", 4);
}

/* 1 when the input starts with the magic of a compression format libarchive
 * reads: gzip, bzip2, xz, lzma-alone is too loose to tell, zstd, lz4, lzip,
 * compress. Reads the first bytes again (recorded for pipes). */
static int compressed_magic(llm_docsrc *s)
{
    unsigned char b[6] = {0};
    size_t n = 0;
    if (s->regular) {
        ssize_t r = pread(s->fd, b, sizeof b, 0);
        n = r > 0 ? (size_t)r : 0;
    } else {
        n = s->hlen < sizeof b ? s->hlen : sizeof b;
        if (n) memcpy(b, s->hist, n);
    }
    static const struct {
        const char *magic;
        size_t len;
    } magics[] = {
        {"\x1f\x8b", 2}, {"BZh", 3}, {"\xfd" "7zXZ\x00", 6}, {"\x28\xb5\x2f\xfd", 4},
        {"\x04\x22\x4d\x18", 4}, {"LZIP", 4}, {"\x1f\x9d", 2},
    };
    for (size_t i = 0; i < sizeof magics / sizeof magics[0]; i++)
        if (n >= magics[i].len && !memcmp(b, magics[i].magic, magics[i].len)) return 1;
    return 0;
}

/* Classifies an opened input by content (see the top of this file). */
static int detect(llm_docsrc *s, llm_err *err)
{
    if (!s->chunk && !(s->chunk = malloc(CHUNK))) return llm_errf(err, "%s: out of memory", s->name);
    s->recording = !s->regular;
    struct archive *a = new_reader(s, 0);
    if (!a) return llm_errf(err, "%s: out of memory", s->name);
    int r = archive_read_open1(a);
    if (r == ARCHIVE_OK || r == ARCHIVE_WARN) {
        /* Formats whose magic is printable text (cpio's "070707", ar, WARC,
         * LHA) can bid on a plain text file; when their first header does not
         * even parse, the input is text after all. */
        struct archive_entry *e;
        int h = archive_read_next_header(a, &e);
        int base = archive_format(a) & ARCHIVE_FORMAT_BASE_MASK;
        int textual = base == ARCHIVE_FORMAT_CPIO || base == ARCHIVE_FORMAT_AR ||
                      base == ARCHIVE_FORMAT_WARC || base == ARCHIVE_FORMAT_LHA;
        if (h != ARCHIVE_FATAL || !textual || s->read_errno) {
            s->a = a;
            s->recording = 0;
            s->state = ST_ARCHIVE;
            s->pending = 1;   /* next_member starts with this header */
            s->pending_r = h;
            s->pending_e = e;
            return 0;
        }
    }
    char first[256];
    snprintf(first, sizeof first, "%s", archive_error_string(a) ? archive_error_string(a) : "unrecognized archive format");
    archive_read_free(a);
    if (s->read_errno) return llm_errf(err, "%s: read error: %s", s->name, strerror(s->read_errno));

    if (input_rewind(s, err)) return -1;
    a = new_reader(s, 1);
    if (!a) return llm_errf(err, "%s: out of memory", s->name);
    r = archive_read_open1(a);
    if ((r == ARCHIVE_OK || r == ARCHIVE_WARN) && archive_filter_count(a) > 1 &&
        archive_filter_code(a, 0) != ARCHIVE_FILTER_NONE) {
        /* compressed, and not an archive inside */
        if (tar_name(s->name)) {
            archive_read_free(a);
            return llm_errf(err, "%s: not a readable archive: %s", s->name, first);
        }
        /* "x.jsonl.zst" is JSON lines */
        const char *dot = strrchr(s->name, '.');
        size_t n = dot ? (size_t)(dot - s->name) : strlen(s->name);
        int jsonl = n >= 6 && !strncasecmp(s->name + n - 6, ".jsonl", 6);
        struct archive_entry *e;
        r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) {   /* compressed nothing: no lines, or one empty text */
            archive_read_free(a);
            s->state = jsonl ? ST_NEXT_INPUT : ST_EMPTY;
            if (jsonl) input_close(s);
            return 0;
        }
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            llm_errf(err, "%s: %s", s->name, archive_error_string(a) ? archive_error_string(a) : "cannot decompress");
            archive_read_free(a);
            return -1;
        }
        s->a = a;
        s->recording = 0;
        s->from_archive = 1;
        s->state = jsonl ? ST_JSONL : ST_WHOLE;
        line_reset(s);
        return 0;
    }
    const char *why = archive_error_string(a);
    char second[256];
    snprintf(second, sizeof second, "%s", why ? why : "damaged or truncated compressed data");
    archive_read_free(a);
    if (s->read_errno) return llm_errf(err, "%s: read error: %s", s->name, strerror(s->read_errno));
    if (input_rewind(s, err)) return -1;
    /* compressed data that neither reader could open (cut short, damaged) is
     * an error, not a text document of compressed bytes */
    if (compressed_magic(s)) return llm_errf(err, "%s: %s", s->name, second);
    s->recording = 0;
    s->state = s->regular ? ST_MAPPED : ST_WHOLE;
    return 0;
}

static int open_input(llm_docsrc *s, char *path, int is_stdin, llm_err *err)
{
    free(s->name);
    s->name = path;
    if (is_stdin) {
        s->fd = 0;
        s->close_fd = 0;
        s->regular = 0;   /* a pipe or not, read as a stream */
    } else {
        s->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (s->fd < 0) return llm_errf(err, "%s: %s", path, strerror(errno));
        s->close_fd = 1;
        struct stat st;
        if (fstat(s->fd, &st) != 0) return llm_errf(err, "%s: %s", path, strerror(errno));
        if (S_ISDIR(st.st_mode)) return llm_errf(err, "%s: is a directory", path);
        s->regular = S_ISREG(st.st_mode);
    }
    line_reset(s);
    if (is_stdin ? s->o.jsonl_stdin : is_jsonl_name(path)) {
        s->state = ST_JSONL;
        return 0;
    }
    return detect(s, err);
}

/* ---- directories ---- */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir), m = strlen(name);
    int slash = n > 0 && dir[n - 1] != '/';
    char *p = malloc(n + slash + m + 1);
    if (!p) return NULL;
    memcpy(p, dir, n);
    if (slash) p[n] = '/';
    memcpy(p + n + slash, name, m + 1);
    return p;
}

static void frame_free(dirframe *f)
{
    for (size_t i = 0; i < f->n; i++) free(f->names[i]);
    free(f->names);
    free(f->path);
}

static int push_dir(llm_docsrc *s, const char *path, const struct stat *st, llm_err *err)
{
    for (size_t i = 0; i < s->ndirs; i++)
        if (s->dirs[i].dev == st->st_dev && s->dirs[i].ino == st->st_ino)
            return llm_errf(err, "%s: directory loop (same directory as '%s')", path, s->dirs[i].path);
    if (s->ndirs == s->capdirs) {
        size_t cap = s->capdirs ? s->capdirs * 2 : 8;
        dirframe *p = realloc(s->dirs, cap * sizeof *p);
        if (!p) return llm_errf(err, "%s: out of memory", path);
        s->dirs = p;
        s->capdirs = cap;
    }
    DIR *d = opendir(path);
    if (!d) return llm_errf(err, "%s: %s", path, strerror(errno));
    dirframe f = {.dev = st->st_dev, .ino = st->st_ino};
    size_t cap = 0;
    struct dirent *e;
    int oom = 0;
    for (;;) {
        errno = 0;
        if (!(e = readdir(d))) break;
        const char *nm = e->d_name;
        if (!strcmp(nm, ".") || !strcmp(nm, "..") || !strcmp(nm, ".git")) continue;
        if (f.n == cap) {
            size_t c = cap ? cap * 2 : 16;
            char **p = realloc(f.names, c * sizeof *p);
            if (!p) { oom = 1; break; }
            f.names = p;
            cap = c;
        }
        if (!(f.names[f.n] = strdup(nm))) { oom = 1; break; }
        f.n++;
    }
    int saved = errno;
    closedir(d);
    if (oom || (!e && saved)) {
        frame_free(&f);
        return oom ? llm_errf(err, "%s: out of memory", path) : llm_errf(err, "%s: %s", path, strerror(saved));
    }
    if (f.n) qsort(f.names, f.n, sizeof *f.names, cmp_names);
    if (!(f.path = strdup(path))) { frame_free(&f); return llm_errf(err, "%s: out of memory", path); }
    s->dirs[s->ndirs++] = f;
    return 0;
}

/* The next file to read: 1 with *path (malloc'd), 0 at the end, -1. */
static int next_path(llm_docsrc *s, char **path, int *is_stdin, llm_err *err)
{
    *is_stdin = 0;
    for (;;) {
        if (s->ndirs) {
            dirframe *f = &s->dirs[s->ndirs - 1];
            if (f->i == f->n) {
                frame_free(f);
                s->ndirs--;
                continue;
            }
            char *full = path_join(f->path, f->names[f->i++]);
            if (!full) return llm_errf(err, "%s: out of memory", f->path);
            struct stat st;
            if (lstat(full, &st) != 0) {
                llm_errf(err, "%s: %s", full, strerror(errno));
                free(full);
                return -1;
            }
            if (S_ISLNK(st.st_mode)) {
                if (stat(full, &st) != 0) {
                    if (errno == ENOENT) llm_errf(err, "%s: dangling symbolic link", full);
                    else llm_errf(err, "%s: %s", full, strerror(errno));
                    free(full);
                    return -1;
                }
                if (S_ISDIR(st.st_mode)) { free(full); continue; }   /* not followed */
            }
            if (S_ISDIR(st.st_mode)) {
                int r = push_dir(s, full, &st, err);
                free(full);
                if (r) return -1;
                continue;
            }
            if (S_ISREG(st.st_mode)) { *path = full; return 1; }
            free(full);   /* FIFOs, sockets, devices inside trees */
            continue;
        }
        if (s->pi < s->npaths) {
            const char *p = s->paths[s->pi++];
            if (!strcmp(p, "-")) {
                *is_stdin = 1;
                if (!(*path = strdup("<stdin>"))) return llm_errf(err, "<stdin>: out of memory");
                return 1;
            }
            struct stat st;
            if (stat(p, &st) != 0) return llm_errf(err, "%s: %s", p, strerror(errno));
            if (S_ISDIR(st.st_mode)) {
                if (push_dir(s, p, &st, err)) return -1;
                continue;
            }
            if (!(*path = strdup(p))) return llm_errf(err, "%s: out of memory", p);
            return 1;
        }
        return 0;
    }
}

/* ---- reading ---- */

/* Up to n bytes of the current byte source: the count (0 at its end), -1, or
 * BAD for a member libarchive cannot extract (then member_broken is set). */
static long long src_read(llm_docsrc *s, void *dst, size_t n, llm_err *err)
{
    if (s->from_archive) {
        for (;;) {
            la_ssize_t r = archive_read_data(s->a, dst, n);
            if (r >= 0) return r;
            if (r == ARCHIVE_RETRY) continue;
            const char *m = archive_error_string(s->a);
            if (!m) m = "cannot read data";
            if (s->read_errno) return fail(s, err, -1, 0, "read error: %s", strerror(s->read_errno));
            if (r == ARCHIVE_FATAL || !s->member) return fail(s, err, -1, 0, "%s", m);
            s->member_broken = 1;   /* encrypted, unsupported method, bad CRC */
            return fail(s, err, BAD, 0, "%s", m);
        }
    }
    if (s->hpos < s->hlen) {
        size_t k = s->hlen - s->hpos < n ? s->hlen - s->hpos : n;
        memcpy(dst, s->hist + s->hpos, k);
        s->hpos += k;
        return (long long)k;
    }
    ssize_t r;
    do r = read(s->fd, dst, n); while (r < 0 && errno == EINTR);
    if (r < 0) return llm_errf(err, "%s: read error: %s", s->name, strerror(errno));
    return r;
}

/* The next line (without '\n'): 1, 0 at the end, -1, or BAD for a line over
 * the limit (consumed). */
static int read_line(llm_docsrc *s, const unsigned char **line, size_t *len, llm_err *err)
{
    size_t scanned = s->lstart;
    int discarding = 0;
    for (;;) {
        unsigned char *nl = s->lend > scanned ? memchr(s->lbuf + scanned, '\n', s->lend - scanned) : NULL;
        if (nl || (s->leof && (s->lend > s->lstart || discarding))) {
            size_t end = nl ? (size_t)(nl - s->lbuf) : s->lend;
            *line = s->lbuf + s->lstart;
            *len = end - s->lstart;
            s->lstart = nl ? end + 1 : end;
            s->lineno++;
            if (discarding || *len > s->maxb) return fail(s, err, BAD, 1, "line longer than %zu bytes", s->maxb);
            return 1;
        }
        if (s->leof) return 0;
        scanned = s->lend;
        if (!discarding && s->lend - s->lstart > s->maxb) discarding = 1;
        if (discarding) s->lstart = s->lend = scanned = 0;
        if (s->lstart > 0 && (s->lend == s->lcap || s->lstart >= s->lcap / 2)) {
            memmove(s->lbuf, s->lbuf + s->lstart, s->lend - s->lstart);
            s->lend -= s->lstart;
            scanned -= s->lstart;
            s->lstart = 0;
        }
        if (s->lend == s->lcap) {
            size_t cap = s->lcap ? s->lcap * 2 : CHUNK;
            if (cap > s->maxb + CHUNK) cap = s->maxb + CHUNK;
            if (cap <= s->lcap) cap = s->lcap + CHUNK;
            unsigned char *p = realloc(s->lbuf, cap);
            if (!p) return fail(s, err, -1, 0, "out of memory");
            s->lbuf = p;
            s->lcap = cap;
        }
        long long r = src_read(s, s->lbuf + s->lend, s->lcap - s->lend, err);
        if (r < 0) return (int)r;
        if (r == 0) s->leof = 1;
        else s->lend += (size_t)r;
    }
}

/* Reads the rest of the byte source into dbuf: 0 with *len, -1, or BAD. */
static int read_whole(llm_docsrc *s, size_t hint, size_t *len, llm_err *err)
{
    size_t n = 0;
    for (;;) {
        if (n > s->maxb) return fail(s, err, BAD, 0, "document larger than the limit of %zu bytes", s->maxb);
        if (s->dcap - n < 2) {
            size_t cap = s->dcap ? s->dcap * 2 : (hint + 2 > CHUNK ? hint + 2 : CHUNK);
            if (cap > s->maxb + 2) cap = s->maxb + 2;
            if (cap < n + 2) cap = n + 2;
            unsigned char *p = realloc(s->dbuf, cap);
            if (!p) return fail(s, err, -1, 0, "out of memory");
            s->dbuf = p;
            s->dcap = cap;
        }
        long long r = src_read(s, s->dbuf + n, s->dcap - n - 1, err);
        if (r < 0) return (int)r;
        if (r == 0) break;
        n += (size_t)r;
    }
    s->dbuf[n] = 0;
    *len = n;
    return 0;
}

static int emit_text(llm_docsrc *s, llm_doc *doc, const void *p, size_t n, llm_err *err)
{
    size_t off;
    int v = s->o.binary ? 0 : utf8_check(p, n, &off);
    if (v == 1) return fail(s, err, BAD, 0, "invalid UTF-8 at byte %zu", off);
    if (v == 2) return fail(s, err, BAD, 0, "NUL byte at byte %zu", off);
    doc->text = p;
    doc->len = n;
    doc->origin = set_origin(s, 0);
    doc->json = NULL;
    doc->index = s->index++;
    return 1;
}

/* One JSONL line: 1 doc, 0 blank, BAD. */
static int parse_line(llm_docsrc *s, llm_doc *doc, const unsigned char *p, size_t n, llm_err *err)
{
    if (s->lineno == 1 && n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3, n -= 3;
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r')) i++;
    if (i == n) return 0;
    json_error_t je;
    json_t *j = json_loadb((const char *)p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j) return fail(s, err, BAD, 1, "invalid JSON: %s", je.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return fail(s, err, BAD, 1, "not a JSON object");
    }
    json_t *f = json_object_get(j, s->field);
    const char *text = NULL;
    size_t len = 0;
    if (json_is_string(f)) {
        text = json_string_value(f);
        len = json_string_length(f);
        if (memchr(text, 0, len)) {
            json_decref(j);
            return fail(s, err, BAD, 1, "field '%s' contains U+0000", s->field);
        }
    } else if (!s->o.keep_json) {
        json_decref(j);
        return fail(s, err, BAD, 1, "no string field '%s'", s->field);
    }
    if (s->o.keep_json && json_has_nul(j)) {
        json_decref(j);
        return fail(s, err, BAD, 1, "a string contains U+0000");
    }
    s->json = j;   /* text points into it; released by the next call */
    doc->text = text;
    doc->len = len;
    doc->origin = set_origin(s, 1);
    doc->json = s->o.keep_json ? j : NULL;
    doc->index = s->index++;
    return 1;
}

/* Member names that are never documents. */
static int skipped_member(const char *name)
{
    const char *p = name;
    while (*p == '/') p++;
    if (!strncmp(p, "__MACOSX/", 9) || !strncmp(p, "./__MACOSX/", 11)) return 1;
    for (const char *c = p; c; c = strchr(c, '/')) {
        if (*c == '/') c++;
        if (!strncmp(c, ".git", 4) && (c[4] == '/' || c[4] == 0)) return 1;
    }
    return 0;
}

static int next_member(llm_docsrc *s, llm_doc *doc, llm_err *err)
{
    for (;;) {
        struct archive_entry *e;
        int r;
        if (s->pending) {
            s->pending = 0;
            r = s->pending_r;
            e = s->pending_e;
        } else {
            r = archive_read_next_header(s->a, &e);
        }
        if (r == ARCHIVE_EOF) {
            input_close(s);
            return 0;
        }
        /* RETRY: libarchive skipped a damaged header (a bad tar checksum) and
         * would carry on without that member: for us the archive is damaged */
        if (r == ARCHIVE_FATAL || r == ARCHIVE_RETRY) {
            const char *m = archive_error_string(s->a) ? archive_error_string(s->a) : "damaged archive";
            if (s->read_errno) return llm_errf(err, "%s: read error: %s", s->name, strerror(s->read_errno));
            if (s->member) return llm_errf(err, "%s: after member '%s': %s", s->name, s->member, m);
            return llm_errf(err, "%s: %s", s->name, m);
        }
        const char *mname = archive_entry_pathname(e);
        if (!mname) mname = archive_entry_pathname_utf8(e);
        if (!mname) mname = "?";
        free(s->member);
        if (!(s->member = strdup(mname))) return llm_errf(err, "%s: out of memory", s->name);
        s->from_archive = 1;
        s->member_broken = 0;
        line_reset(s);
        if (r == ARCHIVE_FAILED)
            return fail(s, err, BAD, 0, "%s", archive_error_string(s->a) ? archive_error_string(s->a) : "unreadable member");
        if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e) || skipped_member(mname)) continue;
        size_t hint = 0;
        if (archive_entry_size_is_set(e)) {
            la_int64_t size = archive_entry_size(e);
            if (size > 0 && (uint64_t)size > s->maxb)
                return fail(s, err, BAD, 0, "document of %lld bytes is larger than the limit of %zu bytes",
                            (long long)size, s->maxb);
            if (size > 0) hint = (size_t)size;
        }
        if (is_jsonl_name(mname)) {
            s->state = ST_JSONL;
            return 2;   /* go on in the JSONL state */
        }
        size_t len;
        r = read_whole(s, hint, &len, err);
        if (r < 0) return r;
        return emit_text(s, doc, s->dbuf, len, err);
    }
}

/* 1 doc, 0 end, -1 error, BAD bad document. */
static int step(llm_docsrc *s, llm_doc *doc, llm_err *err)
{
    for (;;) {
        switch (s->state) {
        case ST_DONE:
            return 0;
        case ST_NEXT_INPUT: {
            char *path = NULL;
            int is_stdin = 0;
            int r = next_path(s, &path, &is_stdin, err);
            if (r < 0) return -1;
            if (r == 0) {
                s->state = ST_DONE;
                return 0;
            }
            if (open_input(s, path, is_stdin, err)) return -1;
            continue;
        }
        case ST_MAPPED: {
            struct stat st;
            if (fstat(s->fd, &st) != 0) return llm_errf(err, "%s: %s", s->name, strerror(errno));
            uint64_t size = (uint64_t)st.st_size;
            if (size > s->maxb) {
                input_close(s);
                return fail(s, err, BAD, 0, "document of %llu bytes is larger than the limit of %zu bytes",
                            (unsigned long long)size, s->maxb);
            }
            const void *p = "";
            if (size) {
                void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, s->fd, 0);
                if (m == MAP_FAILED) return llm_errf(err, "%s: cannot map: %s", s->name, strerror(errno));
                s->map = m;
                s->maplen = (size_t)size;
                p = m;
            }
            input_close(s);
            return emit_text(s, doc, p, (size_t)size, err);
        }
        case ST_WHOLE: {
            size_t len;
            int r = read_whole(s, 0, &len, err);
            input_close(s);
            if (r < 0) return r;
            return emit_text(s, doc, s->dbuf, len, err);
        }
        case ST_EMPTY:
            input_close(s);
            return emit_text(s, doc, "", 0, err);
        case ST_JSONL: {
            const unsigned char *line = NULL;
            size_t len = 0;
            int r = read_line(s, &line, &len, err);
            if (r == 0) {
                if (s->member) s->state = ST_ARCHIVE;
                else input_close(s);
                continue;
            }
            if (r < 0) {
                if (r == BAD && s->member_broken) s->state = ST_ARCHIVE;
                return r;
            }
            r = parse_line(s, doc, line, len, err);
            if (r == 0) continue;
            return r;
        }
        case ST_ARCHIVE: {
            int r = next_member(s, doc, err);
            if (r == 0 || r == 2) continue;
            return r;
        }
        }
    }
}

/* ---- API ---- */

int llm_docsrc_open(llm_docsrc **out, const char *const *paths, size_t npaths,
                    const llm_docsrc_opts *opts, llm_err *err)
{
    *out = NULL;
    static const char *const stdin_only[] = {"-"};
    if (npaths == 0) {
        paths = stdin_only;
        npaths = 1;
    }
    for (size_t i = 0; i < npaths; i++) {
        struct stat st;
        if (strcmp(paths[i], "-") && stat(paths[i], &st) != 0)
            return llm_errf(err, "%s: %s", paths[i], strerror(errno));
    }
    llm_docsrc *s = calloc(1, sizeof *s);
    if (!s) return llm_errf(err, "out of memory");
    if (opts) s->o = *opts;
    s->maxb = s->o.max_doc_bytes ? s->o.max_doc_bytes : DEFAULT_MAX_DOC;
    s->field = strdup(s->o.field ? s->o.field : "text");
    s->o.field = s->field;
    s->fd = -1;
    s->paths = calloc(npaths, sizeof *s->paths);
    if (!s->field || !s->paths) {
        llm_docsrc_close(s);
        return llm_errf(err, "out of memory");
    }
    s->npaths = npaths;
    for (size_t i = 0; i < npaths; i++) {
        if (!(s->paths[i] = strdup(paths[i]))) {
            llm_docsrc_close(s);
            return llm_errf(err, "out of memory");
        }
    }
    s->state = ST_NEXT_INPUT;
    *out = s;
    return 0;
}

int llm_docsrc_next(llm_docsrc *s, llm_doc *doc, llm_err *err)
{
    memset(doc, 0, sizeof *doc);
    if (s->dead) {
        if (err) *err = s->dead_err;
        return -1;
    }
    if (s->json) json_decref(s->json);
    s->json = NULL;
    if (s->map) munmap(s->map, s->maplen);
    s->map = NULL;
    for (;;) {
        llm_err e = {{0}};
        int r = step(s, doc, &e);
        if (r == BAD && s->o.skip_bad) {
            s->skipped++;
            if (s->o.on_skip) s->o.on_skip(s->o.on_skip_ctx, e.msg);
            continue;
        }
        if (r < 0) {
            memset(doc, 0, sizeof *doc);
            s->dead = 1;
            s->dead_err = e;
            input_close(s);
            if (err) *err = e;
            return -1;
        }
        return r;
    }
}

uint64_t llm_docsrc_skipped(const llm_docsrc *s) { return s->skipped; }

void llm_docsrc_close(llm_docsrc *s)
{
    if (!s) return;
    input_close(s);
    for (size_t i = 0; i < s->ndirs; i++) frame_free(&s->dirs[i]);
    free(s->dirs);
    for (size_t i = 0; s->paths && i < s->npaths; i++) free(s->paths[i]);
    free(s->paths);
    if (s->json) json_decref(s->json);
    if (s->map) munmap(s->map, s->maplen);
    free(s->name);
    free(s->field);
    free(s->chunk);
    free(s->lbuf);
    free(s->dbuf);
    free(s->origin);
    free(s);
}
