/* Document sources: directory order and origins, JSON lines (blank lines,
 * unicode, CRLF, bad lines), UTF-8 checks, archives of every compression,
 * zip, truncated archives, compressed single files, stdin (plain, JSONL,
 * archive), limits, skip_bad counts and messages. */
#include "docsource.h"
#include "unit.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp[256];
static int have_tools;   /* tar gzip xz zstd bzip2 on PATH */
#define NEED_TOOLS()                                                              \
    do {                                                                          \
        if (!have_tools) {                                                        \
            printf("# skipped: needs the tar gzip xz zstd bzip2 commands\n");     \
            return;                                                               \
        }                                                                         \
    } while (0)

static void put(const char *rel, const void *data, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    for (char *s = p + strlen(tmp) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    FILE *f = fopen(p, "wb");
    if (!f) { printf("# cannot write %s\n", p); return; }
    fwrite(data, 1, n, f);
    fclose(f);
}
static void puts_file(const char *rel, const char *s) { put(rel, s, strlen(s)); }

static const char *P(const char *rel)   /* a path under tmp; 8 rotating slots */
{
    static char slots[8][512];
    static int k;
    char *p = slots[k++ & 7];
    snprintf(p, 512, "%s/%s", tmp, rel);
    return p;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int r = system(cmd);
    if (r != 0) printf("# command failed (%d): %s\n", r, cmd);
    return r;
}

/* All documents as "ORIGIN=TEXT\n" lines (origins relative to tmp); returns
 * next()'s last status (0 at a clean end, -1 with err). */
typedef struct { char buf[65536]; size_t len; int n; uint64_t last_index; int index_ok; } collected;

static int collect(const char *const *paths, size_t np, const llm_docsrc_opts *o, collected *c, llm_err *err)
{
    memset(c, 0, sizeof *c);
    c->index_ok = 1;
    llm_docsrc *s;
    if (llm_docsrc_open(&s, paths, np, o, err)) return -2;
    llm_doc d;
    int r;
    size_t tl = strlen(tmp);
    while ((r = llm_docsrc_next(s, &d, err)) == 1) {
        const char *org = d.origin;
        if (!strncmp(org, tmp, tl) && org[tl] == '/') org += tl + 1;
        if (d.index != (uint64_t)c->n) c->index_ok = 0;
        c->n++;
        int w = snprintf(c->buf + c->len, sizeof c->buf - c->len, "%s=%.*s\n", org,
                         d.len > 200 ? 200 : (int)d.len, d.text ? d.text : "(null)");
        if (w > 0 && (size_t)w < sizeof c->buf - c->len) c->len += (size_t)w;
    }
    llm_docsrc_close(s);
    return r;
}

static int check_str(const char *got, const char *want, int line)
{
    if (strcmp(got, want)) {
        printf("# line %d: got:\n", line);
        for (const char *p = got; *p;) {
            const char *e = strchr(p, '\n');
            int n = e ? (int)(e - p) : (int)strlen(p);
            printf("#   |%.*s\n", n, p);
            p += n + (e != NULL);
        }
        printf("# want:\n");
        for (const char *p = want; *p;) {
            const char *e = strchr(p, '\n');
            int n = e ? (int)(e - p) : (int)strlen(p);
            printf("#   |%.*s\n", n, p);
            p += n + (e != NULL);
        }
        return 0;
    }
    return 1;
}
#define CHECK_STR(got, want) CHECK(check_str((got), (want), __LINE__))

/* messages passed to on_skip */
typedef struct { char msgs[8192]; int n; } skiplog;
static void on_skip(void *ctx, const char *msg)
{
    skiplog *l = ctx;
    size_t len = strlen(l->msgs);
    snprintf(l->msgs + len, sizeof l->msgs - len, "%s\n", msg);
    l->n++;
}

/* Writes a zip with libarchive: names[i] gets datas[i]. */
static int write_zip(const char *path, const char *const *names, const char *const *datas, int n, int store)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_zip(a);
    if (store) archive_write_set_options(a, "zip:compression=store");
    if (archive_write_open_filename(a, path) != ARCHIVE_OK) return -1;
    for (int i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, names[i]);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)strlen(datas[i]));
        archive_write_header(a, e);
        archive_write_data(a, datas[i], strlen(datas[i]));
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    return 0;
}

/* Runs with stdin fed by a child process writing data (any size). */
static int saved_stdin = -1;
static pid_t feeder;
static void stdin_from(const void *data, size_t n)
{
    int fds[2];
    if (pipe(fds)) return;
    fflush(stdout);
    feeder = fork();
    if (feeder == 0) {
        close(fds[0]);
        const char *p = data;
        while (n) {
            ssize_t w = write(fds[1], p, n);
            if (w <= 0) _exit(1);
            p += w;
            n -= (size_t)w;
        }
        _exit(0);
    }
    close(fds[1]);
    if (saved_stdin < 0) saved_stdin = dup(0);
    dup2(fds[0], 0);
    close(fds[0]);
}
static void stdin_restore(void)
{
    dup2(saved_stdin, 0);
    int st;
    if (feeder > 0) waitpid(feeder, &st, 0);
    feeder = 0;
}

static void *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)sz + 1);
    *n = fread(p, 1, (size_t)sz, f);
    fclose(f);
    return p;
}

/* ---- tests ---- */

TEST(directory_order_and_origins)
{
    puts_file("d/b.txt", "bee");
    puts_file("d/a.txt", "ay");
    puts_file("d/.hidden", "hid");
    puts_file("d/.git/config", "[core]");
    puts_file("d/sub/c.txt", "see");
    puts_file("d/sub/deep/e.txt", "ee");
    puts_file("d/sub/.git", "gitdir: x");     /* a .git file is skipped too */
    puts_file("d/sub.txt", "subtxt");
    puts_file("d/empty.txt", "");
    puts_file("d/Z.txt", "upper");
    symlink("sub", P("d/loop"));              /* symlinked directory: not followed */
    symlink("..", P("d/sub/up"));             /* would be a loop */
    symlink("a.txt", P("d/link.txt"));        /* symlinked file: followed */
    mkfifo(P("d/fifo"), 0644);                /* skipped inside trees */
    const char *paths[] = {P("d")};
    collected c;
    llm_err e;
    CHECK_EQ_U64(collect(paths, 1, NULL, &c, &e), 0);
    CHECK_STR(c.buf,
              "d/.hidden=hid\n"
              "d/Z.txt=upper\n"
              "d/a.txt=ay\n"
              "d/b.txt=bee\n"
              "d/empty.txt=\n"
              "d/link.txt=ay\n"
              "d/sub/c.txt=see\n"
              "d/sub/deep/e.txt=ee\n"
              "d/sub.txt=subtxt\n");
    CHECK(c.index_ok);

    /* a trailing slash does not double; a symlink named on the command line is followed */
    symlink("d/sub", P("sublink"));
    const char *p2[] = {P("d/sub/"), P("sublink"), P("d/b.txt")};
    CHECK_EQ_U64(collect(p2, 3, NULL, &c, &e), 0);
    CHECK_STR(c.buf,
              "d/sub/c.txt=see\n"
              "d/sub/deep/e.txt=ee\n"
              "sublink/c.txt=see\n"
              "sublink/deep/e.txt=ee\n"
              "d/b.txt=bee\n");
    CHECK(c.index_ok);
    CHECK_EQ_U64(c.n, 5);
}

TEST(missing_unreadable_dangling)
{
    llm_err e;
    llm_docsrc *s;
    const char *p1[] = {P("d/a.txt"), P("nope.txt")};
    int r = llm_docsrc_open(&s, p1, 2, NULL, &e);
    CHECK_ERR(r, e, "nope.txt: No such file or directory");

    puts_file("dang/a.txt", "a");
    symlink("missing-target", P("dang/b.txt"));
    const char *p2[] = {P("dang")};
    collected c;
    CHECK_ERR(collect(p2, 1, NULL, &c, &e), e, "dang/b.txt: dangling symbolic link");
    CHECK_EQ_U64(c.n, 1);

    if (geteuid() != 0) {
        puts_file("unread/x.txt", "x");
        chmod(P("unread/x.txt"), 0);
        const char *p3[] = {P("unread")};
        llm_docsrc_opts o = {.skip_bad = 1};
        CHECK_ERR(collect(p3, 1, &o, &c, &e), e, "unread/x.txt: Permission denied");
        chmod(P("unread/x.txt"), 0644);
    } else {
        printf("# running as root: permission checks skipped\n");
    }
}

/* A directory that is its own ancestor needs a bind mount: tried in a private
 * mount namespace (root only), skipped elsewhere. */
TEST(directory_loop)
{
    puts_file("bl/a/x.txt", "x");
    mkdir(P("bl/a/b"), 0755);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
            mount(P("bl/a"), P("bl/a/b"), NULL, MS_BIND, NULL))
            _exit(77);
        const char *p[] = {P("bl")};
        collected c;
        llm_err e;
        int r = collect(p, 1, NULL, &c, &e);
        if (r != -1) printf("# loop not detected\n");
        else printf("# %s\n", e.msg);
        fflush(stdout);
        _exit(r == -1 && strstr(e.msg, "bl/a/b: directory loop (same directory as '") && c.n == 0 ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) printf("# no bind mounts here: loop check skipped\n");
    else CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(jsonl_lines)
{
    const char *j =
        "{\"text\":\"hello\",\"id\":1}\n"
        "\n"
        "{\"text\":\"h\\u00e9llo w\xc3\xb6rld \xe2\x9c\x93 \\ud83d\\ude00\"}\n"
        "   \r\n"
        "{\"body\":\"x\",\"text\":\"crlf\"}\r\n"
        "{\"text\":\"last\"}";
    put("j/f.jsonl", "\xEF\xBB\xBF", 3);   /* a BOM before line 1 is ignored */
    FILE *f = fopen(P("j/f.jsonl"), "ab");
    fputs(j, f);
    fclose(f);
    const char *paths[] = {P("j/f.jsonl")};
    collected c;
    llm_err e;
    CHECK_EQ_U64(collect(paths, 1, NULL, &c, &e), 0);
    CHECK_STR(c.buf,
              "j/f.jsonl:1=hello\n"
              "j/f.jsonl:3=h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80\n"
              "j/f.jsonl:5=crlf\n"
              "j/f.jsonl:6=last\n");

    /* another field: line 1 lacks it */
    llm_docsrc_opts o = {.field = "body"};
    CHECK_ERR(collect(paths, 1, &o, &c, &e), e, "j/f.jsonl:1: no string field 'body'");

    /* keep_json: the object, and text NULL where the field is absent */
    llm_docsrc *s;
    llm_docsrc_opts k = {.field = "body", .keep_json = 1};
    CHECK(llm_docsrc_open(&s, paths, 1, &k, &e) == 0);
    llm_doc d;
    CHECK(llm_docsrc_next(s, &d, &e) == 1);
    CHECK(d.text == NULL && d.len == 0 && d.json != NULL);
    CHECK_EQ_U64(json_integer_value(json_object_get(d.json, "id")), 1);
    CHECK(llm_docsrc_next(s, &d, &e) == 1);
    CHECK(d.text == NULL && d.json && strcmp(d.origin + strlen(d.origin) - 2, ":3") == 0);
    CHECK(llm_docsrc_next(s, &d, &e) == 1);
    CHECK(d.text && d.len == 1 && d.text[0] == 'x' && d.json);
    CHECK_EQ_U64(d.index, 2);
    CHECK(llm_docsrc_next(s, &d, &e) == 1);
    CHECK(llm_docsrc_next(s, &d, &e) == 0);
    CHECK(llm_docsrc_next(s, &d, &e) == 0);   /* the end stays the end */
    llm_docsrc_close(s);
    /* without keep_json no object is handed out */
    CHECK(llm_docsrc_open(&s, paths, 1, NULL, &e) == 0);
    CHECK(llm_docsrc_next(s, &d, &e) == 1 && d.json == NULL);
    llm_docsrc_close(s);

    /* many lines, a long one: the line buffer grows, compacts, and counts */
    FILE *g = fopen(P("j/many.jsonl"), "wb");
    for (int i = 0; i < 20000; i++) {
        if (i == 777) {
            fputs("{\"text\":\"", g);
            for (int k2 = 0; k2 < 300000; k2++) fputc('a' + k2 % 26, g);
            fputs("\"}\n", g);
        } else {
            fprintf(g, "{\"text\":\"doc %d\"}\n", i);
        }
    }
    fclose(g);
    const char *pm[] = {P("j/many.jsonl")};
    CHECK(llm_docsrc_open(&s, pm, 1, NULL, &e) == 0);
    int n = 0, bad = 0;
    int r;
    while ((r = llm_docsrc_next(s, &d, &e)) == 1) {
        char want[64], org[600];
        if (n == 777) {
            if (d.len != 300000 || d.text[299999] != 'a' + 299999 % 26) bad++;
        } else {
            snprintf(want, sizeof want, "doc %d", n);
            if (d.len != strlen(want) || memcmp(d.text, want, d.len)) bad++;
        }
        snprintf(org, sizeof org, "%s:%d", pm[0], n + 1);
        if (strcmp(d.origin, org)) bad++;
        n++;
    }
    CHECK_EQ_U64(r, 0);
    CHECK_EQ_U64(n, 20000);
    CHECK_EQ_U64(bad, 0);
    llm_docsrc_close(s);
}

TEST(jsonl_bad_lines)
{
    puts_file("bad.jsonl",
              "{\"text\":\"a\"}\n"
              "{bad\n"
              "{\"text\":5}\n"
              "[1]\n"
              "{\"text\":\"a\\u0000b\"}\n"
              "{\"text\":\"ok\"}\n"
              "{\"text\":\"x\"} trailing\n");
    const char *paths[] = {P("bad.jsonl")};
    collected c;
    llm_err e;
    CHECK_ERR(collect(paths, 1, NULL, &c, &e), e, "bad.jsonl:2: invalid JSON: ");
    CHECK_EQ_U64(c.n, 1);

    /* after a failure the source stays failed, with the same message */
    llm_docsrc *s;
    llm_doc d;
    CHECK(llm_docsrc_open(&s, paths, 1, NULL, &e) == 0);
    CHECK(llm_docsrc_next(s, &d, &e) == 1);
    CHECK(llm_docsrc_next(s, &d, &e) == -1);
    llm_err e2 = {{0}};
    CHECK(llm_docsrc_next(s, &d, &e2) == -1);
    CHECK(strcmp(e.msg, e2.msg) == 0);
    CHECK(strchr(e.msg, '\n') == NULL);
    llm_docsrc_close(s);

    skiplog log = {{0}, 0};
    llm_docsrc_opts o = {.skip_bad = 1, .on_skip = on_skip, .on_skip_ctx = &log};
    CHECK(llm_docsrc_open(&s, paths, 1, &o, &e) == 0);
    int n = 0;
    while (llm_docsrc_next(s, &d, &e) == 1) {
        CHECK(d.index == (uint64_t)n);
        n++;
    }
    CHECK_EQ_U64(n, 2);
    CHECK_EQ_U64(llm_docsrc_skipped(s), 5);
    CHECK_EQ_U64(log.n, 5);
    llm_docsrc_close(s);
    CHECK(strstr(log.msgs, "bad.jsonl:2: invalid JSON: ") != NULL);
    CHECK(strstr(log.msgs, "bad.jsonl:3: no string field 'text'\n") != NULL);
    CHECK(strstr(log.msgs, "bad.jsonl:4: not a JSON object\n") != NULL);
    CHECK(strstr(log.msgs, "bad.jsonl:5: field 'text' contains U+0000\n") != NULL);
    CHECK(strstr(log.msgs, "bad.jsonl:7: invalid JSON: ") != NULL);

    /* keep_json: a \u0000 anywhere in the object is bad */
    puts_file("nul.jsonl", "{\"text\":\"ok\",\"meta\":[\"a\\u0000\"]}\n");
    const char *pn[] = {P("nul.jsonl")};
    llm_docsrc_opts k = {.keep_json = 1};
    CHECK_ERR(collect(pn, 1, &k, &c, &e), e, "nul.jsonl:1: a string contains U+0000");
    CHECK_EQ_U64(collect(pn, 1, NULL, &c, &e), 0);   /* only the text field matters */
    CHECK_STR(c.buf, "nul.jsonl:1=ok\n");
}

TEST(utf8_checks)
{
    static const struct { const char *data; size_t len; const char *msg; } cases[] = {
        {"ab\xff" "cd", 5, "invalid UTF-8 at byte 2"},
        {"\xc0\x80", 2, "invalid UTF-8 at byte 0"},              /* overlong NUL */
        {"x\xe0\x80\xaf", 4, "invalid UTF-8 at byte 1"},         /* overlong '/' */
        {"xy\xed\xa0\x80", 5, "invalid UTF-8 at byte 2"},        /* surrogate */
        {"\xf4\x90\x80\x80", 4, "invalid UTF-8 at byte 0"},      /* above U+10FFFF */
        {"0123456789abc\xc3", 14, "invalid UTF-8 at byte 13"},   /* cut short */
        {"\xc3(", 2, "invalid UTF-8 at byte 0"},
        {"0123456789\x80", 11, "invalid UTF-8 at byte 10"},
        {"ab\0cd", 5, "NUL byte at byte 2"},
        {"h\0e\0l\0l\0o\0", 10, "NUL byte at byte 1"},          /* UTF-16LE */
    };
    llm_err e;
    collected c;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char rel[64], want[128];
        snprintf(rel, sizeof rel, "u8/bad%02zu.txt", i);
        put(rel, cases[i].data, cases[i].len);
        const char *p[] = {P(rel)};
        snprintf(want, sizeof want, "%s: %s", rel, cases[i].msg);
        CHECK_ERR(collect(p, 1, NULL, &c, &e), e, want);
    }
    static const char good[] = "plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf end";
    put("u8good/good.txt", good, sizeof good - 1);
    const char *pg[] = {P("u8good/good.txt")};
    CHECK_EQ_U64(collect(pg, 1, NULL, &c, &e), 0);
    CHECK_EQ_U64(c.n, 1);

    /* skip_bad over the directory: every bad file counted, the good one read */
    put("u8/good.txt", good, sizeof good - 1);
    const char *pd[] = {P("u8")};
    llm_docsrc_opts o = {.skip_bad = 1};
    llm_docsrc *s;
    CHECK(llm_docsrc_open(&s, pd, 1, &o, &e) == 0);
    llm_doc d;
    int n = 0;
    while (llm_docsrc_next(s, &d, &e) == 1) {
        CHECK(d.len == sizeof good - 1 && !memcmp(d.text, good, d.len));
        n++;
    }
    CHECK_EQ_U64(n, 1);
    CHECK_EQ_U64(llm_docsrc_skipped(s), sizeof cases / sizeof *cases);
    llm_docsrc_close(s);
}

/* src/: members for the archive tests */
static void make_src(void)
{
    puts_file("src/m1.txt", "member one");
    puts_file("src/m2.jsonl", "{\"text\":\"j1\"}\n\n{\"text\":\"j2\"}\n");
    puts_file("src/sub/m3.txt", "member three \xc3\xbc");
    puts_file("src/.git/HEAD", "ref: refs/heads/main");
    puts_file("src/\xc3\xbc.txt", "umlaut name");
}

TEST(tar_compressions)
{
    NEED_TOOLS();
    make_src();
    static const struct { const char *name, *flag; } kinds[] = {
        {"a.tar", ""}, {"a.tar.gz", "-z"}, {"a.tar.xz", "-J"}, {"a.tar.zst", "--zstd"}, {"a.tar.bz2", "-j"},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        if (sh("tar -C %s/src %s -cf %s/%s m2.jsonl m1.txt sub .git \xc3\xbc.txt", tmp, kinds[i].flag, tmp, kinds[i].name))
            continue;
        const char *p[] = {P(kinds[i].name)};
        collected c;
        llm_err e;
        int r = collect(p, 1, NULL, &c, &e);
        if (r) printf("# %s: %s\n", kinds[i].name, e.msg);
        CHECK_EQ_U64(r, 0);
        char want[1024];
        const char *a = kinds[i].name;
        snprintf(want, sizeof want,
                 "%s:m2.jsonl:1=j1\n"
                 "%s:m2.jsonl:3=j2\n"
                 "%s:m1.txt=member one\n"
                 "%s:sub/m3.txt=member three \xc3\xbc\n"
                 "%s:\xc3\xbc.txt=umlaut name\n",
                 a, a, a, a, a);
        CHECK_STR(c.buf, want);
        CHECK(c.index_ok);
    }
    /* by content, not by name */
    sh("cp %s/a.tar.zst %s/corpus.bin", tmp, tmp);
    const char *p[] = {P("corpus.bin")};
    collected c;
    llm_err e;
    CHECK_EQ_U64(collect(p, 1, NULL, &c, &e), 0);
    CHECK_EQ_U64(c.n, 5);
    CHECK(strstr(c.buf, "corpus.bin:sub/m3.txt=member three") != NULL);

    /* archives inside a directory walk, between text files */
    sh("mkdir -p %s/mix && cp %s/a.tar.gz %s/mix/b.tar.gz && echo -n first > %s/mix/a.txt && echo -n last > %s/mix/c.txt",
       tmp, tmp, tmp, tmp, tmp);
    const char *pm[] = {P("mix")};
    CHECK_EQ_U64(collect(pm, 1, NULL, &c, &e), 0);
    CHECK_EQ_U64(c.n, 7);
    CHECK(!strncmp(c.buf, "mix/a.txt=first\nmix/b.tar.gz:m2.jsonl:1=j1\n", 43));
    CHECK(strstr(c.buf, "umlaut name\nmix/c.txt=last\n") != NULL);
    CHECK(c.index_ok);
}

TEST(zip_via_libarchive)
{
    const char *names[] = {"z1.txt", "dir/z2.jsonl", "__MACOSX/._z1.txt", "dir/.git/config", "z3.txt"};
    const char *datas[] = {"zip one", "{\"text\":\"zj\"}\n", "\x00\x05\x16\x07 binary", "[core]", "zip three"};
    datas[2] = "\xff\xfe binary";
    CHECK(write_zip(P("a.zip"), names, datas, 5, 0) == 0);
    const char *p[] = {P("a.zip")};
    collected c;
    llm_err e;
    CHECK_EQ_U64(collect(p, 1, NULL, &c, &e), 0);
    CHECK_STR(c.buf,
              "a.zip:z1.txt=zip one\n"
              "a.zip:dir/z2.jsonl:1=zj\n"
              "a.zip:z3.txt=zip three\n");

    /* a damaged member (bad CRC) is a bad member: skippable */
    const char *n2[] = {"good.txt", "hurt.txt", "after.txt"};
    const char *d2[] = {"good", "HURTHURTHURT", "after"};
    CHECK(write_zip(P("crc.zip"), n2, d2, 3, 1) == 0);
    size_t len;
    unsigned char *z = slurp(P("crc.zip"), &len);
    unsigned char *hit = z ? memmem(z, len, "HURT", 4) : NULL;
    CHECK(hit != NULL);
    if (hit) {
        hit[1] = 'X';
        put("crc.zip", z, len);
    }
    free(z);
    const char *pc[] = {P("crc.zip")};
    int r = collect(pc, 1, NULL, &c, &e);
    CHECK_ERR(r, e, "crc.zip: member 'hurt.txt': ");
    printf("# bad CRC: %s\n", e.msg);
    llm_docsrc_opts o = {.skip_bad = 1};
    CHECK_EQ_U64(collect(pc, 1, &o, &c, &e), 0);
    CHECK_STR(c.buf, "crc.zip:good.txt=good\ncrc.zip:after.txt=after\n");
}

TEST(truncated_and_corrupt_archives)
{
    NEED_TOOLS();
    /* 200 kB of text that does not compress to nothing */
    size_t n = 200000;
    char *big = malloc(n);
    uint64_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        big[i] = (char)('a' + (x >> 59) % 26);
        if (i % 61 == 60) big[i] = '\n';
    }
    put("tr/big.txt", big, n);
    puts_file("tr/small.txt", "small");
    free(big);
    sh("tar -C %s/tr -czf %s/full.tar.gz small.txt big.txt", tmp, tmp);
    size_t len;
    void *z = slurp(P("full.tar.gz"), &len);
    put("cut.tar.gz", z, len / 2);
    free(z);
    const char *p[] = {P("cut.tar.gz")};
    collected c;
    llm_err e;
    CHECK_ERR(collect(p, 1, NULL, &c, &e), e, "cut.tar.gz: member 'big.txt': ");
    CHECK(strstr(e.msg, "runcated") != NULL);
    printf("# truncated: %s\n", e.msg);
    CHECK_EQ_U64(c.n, 1);
    /* skip_bad does not skip a broken archive */
    llm_docsrc_opts o = {.skip_bad = 1};
    CHECK_ERR(collect(p, 1, &o, &c, &e), e, "runcated");

    /* a truncated plain tar: cut inside the second member's data */
    sh("tar -C %s/tr -cf %s/full.tar small.txt big.txt", tmp, tmp);
    z = slurp(P("full.tar"), &len);
    put("cut.tar", z, 4096);
    free(z);
    const char *pt[] = {P("cut.tar")};
    CHECK_ERR(collect(pt, 1, NULL, &c, &e), e, "cut.tar: member 'big.txt': ");
    printf("# truncated tar: %s\n", e.msg);

    /* a compressed file whose name promises tar but holds no archive */
    puts_file("nottar", "just text, not a tar\n");
    sh("gzip -c %s/nottar > %s/fake.tar.gz && gzip -c %s/nottar > %s/fake.tgz", tmp, tmp, tmp, tmp);
    const char *pf[] = {P("fake.tar.gz")};
    CHECK_ERR(collect(pf, 1, NULL, &c, &e), e, "fake.tar.gz: not a readable archive");
    const char *pf2[] = {P("fake.tgz")};
    CHECK_ERR(collect(pf2, 1, NULL, &c, &e), e, "fake.tgz: not a readable archive");

    /* a bad member in a good tar: skippable */
    puts_file("bm/a.txt", "aaa");
    put("bm/b.txt", "b\xff", 2);
    puts_file("bm/c.txt", "ccc");
    sh("tar -C %s/bm -cf %s/bm.tar a.txt b.txt c.txt", tmp, tmp);
    const char *pb[] = {P("bm.tar")};
    CHECK_ERR(collect(pb, 1, NULL, &c, &e), e, "bm.tar: member 'b.txt': invalid UTF-8 at byte 1");
    CHECK_EQ_U64(collect(pb, 1, &o, &c, &e), 0);
    CHECK_STR(c.buf, "bm.tar:a.txt=aaa\nbm.tar:c.txt=ccc\n");
}

TEST(compressed_single_files)
{
    NEED_TOOLS();
    puts_file("cs/x.jsonl", "{\"text\":\"zst one\"}\n{\"text\":\"zst two\"}\n");
    puts_file("cs/y.txt", "gzipped text\n");
    puts_file("cs/w.txt", "xz text");
    puts_file("cs/v.txt", "");
    puts_file("cs/u.jsonl", "");
    sh("cd %s/cs && zstd -q --rm x.jsonl && gzip y.txt && xz w.txt && gzip v.txt && zstd -q --rm u.jsonl", tmp);
    const char *p[] = {P("cs")};
    collected c;
    llm_err e;
    CHECK_EQ_U64(collect(p, 1, NULL, &c, &e), 0);
    CHECK_STR(c.buf,
              "cs/v.txt.gz=\n"
              "cs/w.txt.xz=xz text\n"
              "cs/x.jsonl.zst:1=zst one\n"
              "cs/x.jsonl.zst:2=zst two\n"
              "cs/y.txt.gz=gzipped text\n\n");
    /* a truncated compressed file fails, skip_bad or not (libarchive 3.6
     * does not notice a truncated zstd frame; gzip and xz it does) */
    puts_file("cs2/long.jsonl", "");
    FILE *f = fopen(P("cs2/long.jsonl"), "wb");
    for (int i = 0; i < 5000; i++) fprintf(f, "{\"text\":\"line %d of a longer file\"}\n", i * 7919 % 10007);
    fclose(f);
    sh("cd %s/cs2 && gzip -k long.jsonl && xz -k long.jsonl", tmp);
    static const char *const gz_xz[] = {"long.jsonl.gz", "long.jsonl.xz"};
    for (int i = 0; i < 2; i++) {
        char rel[64], cut[64];
        snprintf(rel, sizeof rel, "cs2/%s", gz_xz[i]);
        snprintf(cut, sizeof cut, "cut-%s", gz_xz[i]);
        size_t len;
        void *z = slurp(P(rel), &len);
        put(cut, z, len * 2 / 3);
        free(z);
        const char *pc[] = {P(cut)};
        llm_docsrc_opts o = {.skip_bad = 1};
        char want[80];
        snprintf(want, sizeof want, "%s: ", cut);
        CHECK_ERR(collect(pc, 1, &o, &c, &e), e, want);
        CHECK(c.n > 0 && c.n < 5000);
        printf("# %s after %d lines: %s\n", cut, c.n, e.msg);
    }
}

TEST(text_that_looks_like_something_else)
{
    static const char *const texts[] = {
        "begin 644 notes.txt\nM9&%T80H`\n`\nend\n",                   /* uuencode */
        "README type=file\n",                                           /* mtree */
        "#mtree\n./etc/passwd type=file\n",
        "070707 is how this line starts, not a cpio header at all\n",
        "!<arch> is not quite an ar header\n",
        "PK is a common start\n",
        "WARC is a word\n",
    };
    collected c;
    llm_err e;
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        char rel[32], want[256];
        snprintf(rel, sizeof rel, "look/%zu", i);
        puts_file(rel, texts[i]);
        const char *p[] = {P(rel)};
        CHECK_EQ_U64(collect(p, 1, NULL, &c, &e), 0);
        snprintf(want, sizeof want, "%s=%s\n", rel, texts[i]);
        CHECK_STR(c.buf, want);
    }
    /* a large text file (mapped) arrives byte for byte */
    size_t n = 3 * 1024 * 1024 + 17;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (char)(i % 97 == 96 ? '\n' : 'A' + i % 23);
    put("bigtext.txt", big, n);
    const char *pb[] = {P("bigtext.txt")};
    llm_docsrc *s;
    llm_doc d;
    CHECK(llm_docsrc_open(&s, pb, 1, NULL, &e) == 0);
    CHECK(llm_docsrc_next(s, &d, &e) == 1);
    CHECK(d.len == n && !memcmp(d.text, big, n));
    CHECK(llm_docsrc_next(s, &d, &e) == 0);
    llm_docsrc_close(s);
    free(big);
}

TEST(stdin_inputs)
{
    collected c;
    llm_err e;
    /* no paths: stdin, plain text */
    stdin_from("hello stdin\n", 12);
    CHECK_EQ_U64(collect(NULL, 0, NULL, &c, &e), 0);
    stdin_restore();
    CHECK_STR(c.buf, "<stdin>=hello stdin\n\n");

    /* "-" among files, JSONL by option */
    puts_file("si/a.txt", "file a");
    const char *p[] = {P("si/a.txt"), "-"};
    llm_docsrc_opts o = {.jsonl_stdin = 1};
    stdin_from("{\"text\":\"s1\"}\n\n{\"text\":\"s2\"}\n", 29);
    int r = collect(p, 2, &o, &c, &e);
    if (r) printf("# %s\n", e.msg);
    CHECK_EQ_U64(r, 0);
    stdin_restore();
    CHECK_STR(c.buf, "si/a.txt=file a\n<stdin>:1=s1\n<stdin>:3=s2\n");
    stdin_from("{\"text\":\"s1\"}\n{oops\n", 20);
    CHECK_ERR(collect(p, 2, &o, &c, &e), e, "<stdin>:2: invalid JSON: ");
    stdin_restore();

    /* an archive through a pipe: detected, and the bidding bytes replayed */
    size_t len;
    void *tgz = slurp(P("a.tar.gz"), &len);
    CHECK(tgz != NULL || !have_tools);
    if (tgz) {
        stdin_from(tgz, len);
        CHECK_EQ_U64(collect(NULL, 0, NULL, &c, &e), 0);
        stdin_restore();
        CHECK_STR(c.buf,
                  "<stdin>:m2.jsonl:1=j1\n"
                  "<stdin>:m2.jsonl:3=j2\n"
                  "<stdin>:m1.txt=member one\n"
                  "<stdin>:sub/m3.txt=member three \xc3\xbc\n"
                  "<stdin>:\xc3\xbc.txt=umlaut name\n");
        free(tgz);
    }
    void *zip = slurp(P("a.zip"), &len);
    if (zip) {
        stdin_from(zip, len);
        CHECK_EQ_U64(collect(NULL, 0, NULL, &c, &e), 0);
        stdin_restore();
        CHECK_STR(c.buf, "<stdin>:z1.txt=zip one\n<stdin>:dir/z2.jsonl:1=zj\n<stdin>:z3.txt=zip three\n");
        free(zip);
    }
    /* a compressed text through a pipe */
    void *gz = slurp(P("cs/y.txt.gz"), &len);
    if (gz) {
        stdin_from(gz, len);
        CHECK_EQ_U64(collect(NULL, 0, NULL, &c, &e), 0);
        stdin_restore();
        CHECK_STR(c.buf, "<stdin>=gzipped text\n\n");
        free(gz);
    }
    /* empty stdin, compressed or not: one empty document */
    stdin_from("", 0);
    CHECK_EQ_U64(collect(NULL, 0, NULL, &c, &e), 0);
    stdin_restore();
    CHECK_STR(c.buf, "<stdin>=\n");
    void *egz = slurp(P("cs/v.txt.gz"), &len);
    if (egz) {
        stdin_from(egz, len);
        CHECK_EQ_U64(collect(NULL, 0, NULL, &c, &e), 0);
        stdin_restore();
        CHECK_STR(c.buf, "<stdin>=\n");
        free(egz);
    }
    /* a large plain text through a pipe: many reads, bidding bytes replayed */
    size_t n = 1000003;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (char)(i % 80 == 79 ? '\n' : 'a' + i % 26);
    stdin_from(big, n);
    llm_docsrc *s;
    llm_doc d;
    CHECK(llm_docsrc_open(&s, NULL, 0, NULL, &e) == 0);
    CHECK(llm_docsrc_next(s, &d, &e) == 1);
    CHECK(d.len == n && !memcmp(d.text, big, n));
    CHECK(strcmp(d.origin, "<stdin>") == 0);
    CHECK(llm_docsrc_next(s, &d, &e) == 0);
    llm_docsrc_close(s);
    stdin_restore();
    /* invalid UTF-8 on stdin */
    stdin_from("ok\xff", 3);
    CHECK_ERR(collect(NULL, 0, NULL, &c, &e), e, "<stdin>: invalid UTF-8 at byte 2");
    stdin_restore();
    free(big);
    /* fd 0 is not closed by the source */
    CHECK(fcntl(0, F_GETFD) != -1 || errno != EBADF);
}

TEST(size_limits)
{
    collected c;
    llm_err e;
    char buf[100];
    memset(buf, 'x', sizeof buf);
    put("lim/big.txt", buf, 100);
    puts_file("lim/ok.txt", "fits");
    const char *p[] = {P("lim/big.txt")};
    llm_docsrc_opts o = {.max_doc_bytes = 50};
    CHECK_ERR(collect(p, 1, &o, &c, &e), e, "lim/big.txt: document of 100 bytes is larger than the limit of 50 bytes");
    /* exactly at the limit is fine */
    llm_docsrc_opts o100 = {.max_doc_bytes = 100};
    CHECK_EQ_U64(collect(p, 1, &o100, &c, &e), 0);

    FILE *f = fopen(P("lim/l.jsonl"), "wb");
    fprintf(f, "{\"text\":\"short\"}\n{\"text\":\"");
    for (int i = 0; i < 200000; i++) fputc('y', f);
    fprintf(f, "\"}\n{\"text\":\"after\"}\n{\"text\":\"");
    for (int i = 0; i < 200000; i++) fputc('z', f);   /* over the limit, at EOF without newline */
    fclose(f);
    const char *pl[] = {P("lim")};
    skiplog log = {{0}, 0};
    llm_docsrc_opts s1 = {.max_doc_bytes = 1000, .skip_bad = 1, .on_skip = on_skip, .on_skip_ctx = &log};
    CHECK_EQ_U64(collect(pl, 1, &s1, &c, &e), 0);
    char want[256];
    snprintf(want, sizeof want, "lim/big.txt=%.100s\nlim/l.jsonl:1=short\nlim/l.jsonl:3=after\nlim/ok.txt=fits\n", buf);
    CHECK_STR(c.buf, want);
    CHECK_EQ_U64(log.n, 2);
    CHECK(strstr(log.msgs, "lim/l.jsonl:2: line longer than 1000 bytes\n") != NULL);
    CHECK(strstr(log.msgs, "lim/l.jsonl:4: line longer than 1000 bytes\n") != NULL);
    llm_docsrc_opts s3 = {.max_doc_bytes = 99, .skip_bad = 1};
    llm_docsrc *src;
    CHECK(llm_docsrc_open(&src, pl, 1, &s3, &e) == 0);
    llm_doc d;
    while (llm_docsrc_next(src, &d, &e) == 1) {}
    CHECK_EQ_U64(llm_docsrc_skipped(src), 3);
    llm_docsrc_close(src);
    llm_docsrc_opts s2 = {.max_doc_bytes = 1000};
    const char *pj[] = {P("lim/l.jsonl")};
    CHECK_ERR(collect(pj, 1, &s2, &c, &e), e, "lim/l.jsonl:2: line longer than 1000 bytes");

    /* members and stdin over the limit */
    stdin_from(buf, 100);
    CHECK_ERR(collect(NULL, 0, &o, &c, &e), e, "<stdin>: document larger than the limit of 50 bytes");
    stdin_restore();
    NEED_TOOLS();
    sh("tar -C %s/lim -cf %s/lim.tar big.txt ok.txt", tmp, tmp);
    const char *pt[] = {P("lim.tar")};
    CHECK_ERR(collect(pt, 1, &o, &c, &e), e, "lim.tar: member 'big.txt': document of 100 bytes is larger than the limit");
    llm_docsrc_opts ot = {.max_doc_bytes = 50, .skip_bad = 1};
    CHECK_EQ_U64(collect(pt, 1, &ot, &c, &e), 0);
    CHECK_STR(c.buf, "lim.tar:ok.txt=fits\n");
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "%s/llmux-docsrc-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    printf("# temp dir %s\n", tmp);
    have_tools = system("for c in tar gzip xz zstd bzip2; do command -v $c >/dev/null || exit 1; done") == 0;
    RUN(directory_order_and_origins);
    RUN(missing_unreadable_dangling);
    RUN(directory_loop);
    RUN(jsonl_lines);
    RUN(jsonl_bad_lines);
    RUN(utf8_checks);
    RUN(tar_compressions);
    RUN(zip_via_libarchive);
    RUN(truncated_and_corrupt_archives);
    RUN(compressed_single_files);
    RUN(text_that_looks_like_something_else);
    RUN(stdin_inputs);
    RUN(size_limits);
    printf("1..%d\n", unit_count);
    if (!unit_failed_total) sh("rm -rf %s", tmp);
    return unit_done();
}
