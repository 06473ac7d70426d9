#include "cli.h"
#include "fileio.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *progname = "llmux";
static int progress_forced;

const char *llm_progname(void) { return progname; }

/* Messages are one line: control bytes that came from input (a tensor name
 * with a newline, an escape sequence) are shown escaped, never acted on. */
static void vmessage(const char *kind, const char *fmt, va_list ap)
{
    char text[2048];
    vsnprintf(text, sizeof text, fmt, ap);
    fflush(stdout);
    fprintf(stderr, "%s: %s", progname, kind);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '\n') fputs("\\n", stderr);
        else if (*p == '\t') fputs("\\t", stderr);
        else if (*p < 0x20 || *p == 0x7f) fprintf(stderr, "\\x%02x", *p);
        else fputc(*p, stderr);
    }
    fputc('\n', stderr);
}

void llm_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("", fmt, ap);
    va_end(ap);
}

void llm_warning(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("warning: ", fmt, ap);
    va_end(ap);
}

noreturn void llm_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("", fmt, ap);
    va_end(ap);
    exit(LLM_EXIT_RUNTIME);
}

noreturn void llm_die_err(const llm_err *err)
{
    llm_die("%s", err->msg);
}

noreturn void llm_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("", fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try '%s --help' for more information.\n", progname);
    exit(LLM_EXIT_USAGE);
}

void llm_close_stdout(void)
{
    /* As gnulib's close_stdout: a full disk or closed pipe seen only at the
     * final flush must still turn into an error and exit status 1. */
    int failed = ferror(stdout) != 0;
    errno = 0;
    if (fflush(stdout) != 0) failed = 1;
    int saved = errno;
    if (fclose(stdout) != 0 && !failed) { failed = 1; saved = errno; }
    if (failed) {
        fprintf(stderr, "%s: write error%s%s\n", progname,
                saved ? ": " : "", saved ? strerror(saved) : "");
        _exit(LLM_EXIT_RUNTIME);
    }
}

static void on_fatal_signal(int sig)
{
    llm_atomic_cleanup_all();  /* async-signal-safe: unlink only */
    signal(sig, SIG_DFL);
    raise(sig);
}

void llm_cli_init(const char *name)
{
    const char *slash = strrchr(name, '/');
    progname = slash ? slash + 1 : name;
    signal(SIGPIPE, SIG_DFL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
    atexit(llm_close_stdout);
}

/* ---- --help ---- */

static void opt_label(const llm_opt *o, char *buf, size_t n)
{
    char argpart[64] = "";
    if (o->kind != LLM_OPT_FLAG) snprintf(argpart, sizeof argpart, " %s", o->arg ? o->arg : "ARG");
    if (o->short_name)
        snprintf(buf, n, "-%c, --%s%s", o->short_name, o->name, argpart);
    else
        snprintf(buf, n, "    --%s%s", o->name, argpart);
}

void llm_cli_help(const llm_cmd *cmd)
{
    printf("%s — %s\n\nUsage:\n", cmd->name, cmd->summary);
    const char *s = cmd->synopsis;
    while (s && *s) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        printf("  %s %.*s\n", cmd->name, (int)len, s);
        s = nl ? nl + 1 : s + len;
    }
    printf("\nOptions:\n");
    static const llm_opt standard[] = {
        {"progress", 0, LLM_OPT_FLAG, NULL, NULL, "show progress on stderr even when it is not a terminal", 0, 0},
        {"help", 'h', LLM_OPT_FLAG, NULL, NULL, "print this help and exit", 0, 0},
        {"version", 0, LLM_OPT_FLAG, NULL, NULL, "print the version and exit", 0, 0},
        {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
    };
    const llm_opt *tables[] = {cmd->opts, standard};
    for (int t = 0; t < 2; t++)
        for (const llm_opt *o = tables[t]; o && o->name; o++) {
            char label[96];
            opt_label(o, label, sizeof label);
            printf("  %-26s %s\n", label, o->help);
        }
    if (cmd->footer) printf("\n%s\n", cmd->footer);
    /* a subcommand ("llm-tokenize decode") is documented in its program's page */
    printf("\nExit status: 0 ok, 1 runtime error, 2 usage error.  See %.*s(1).\n", (int)strcspn(cmd->name, " "), cmd->name);
}

/* ---- parsing ---- */

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

static int parse_size(const char *s, uint64_t *out)
{
    if (*s == '-' || *s == '+') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -1;
    int shift = 0;
    switch (*end) {
    case 0: break;
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    case 't': case 'T': shift = 40; break;
    default: return -1;
    }
    if (*end && end[1] && strcmp(end + 1, "B") && strcmp(end + 1, "iB")) return -1;
    if (shift && v > (UINT64_MAX >> shift)) return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static void set_option(const llm_opt *o, const char *val, const char *spelled)
{
    switch (o->kind) {
    case LLM_OPT_FLAG:
        *(int *)o->dest = 1;
        break;
    case LLM_OPT_STR:
        *(const char **)o->dest = val;
        break;
    case LLM_OPT_LIST: {
        llm_strlist *l = o->dest;
        const char **items = realloc(l->items, (size_t)(l->count + 1) * sizeof *items);
        if (!items) llm_die("out of memory");
        items[l->count++] = val;
        l->items = items;
        break;
    }
    case LLM_OPT_INT: {
        int64_t v;
        if (parse_int(val, &v)) llm_usage_error("option %s: '%s' is not an integer", spelled, val);
        if ((o->min || o->max) && (v < o->min || v > o->max))
            llm_usage_error("option %s: %s is out of range [%lld, %lld]", spelled, val,
                            (long long)o->min, (long long)o->max);
        *(int64_t *)o->dest = v;
        break;
    }
    case LLM_OPT_SIZE:
        if (parse_size(val, (uint64_t *)o->dest))
            llm_usage_error("option %s: '%s' is not a size (a number with an optional K, M, G or T)", spelled, val);
        break;
    case LLM_OPT_DOUBLE: {
        char *end;
        errno = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(v))
            llm_usage_error("option %s: '%s' is not a finite number", spelled, val);
        *(double *)o->dest = v;
        break;
    }
    }
}

static const llm_opt *find_long(const llm_opt *opts, const char *name, size_t len)
{
    for (const llm_opt *o = opts; o && o->name; o++)
        if (strlen(o->name) == len && !strncmp(o->name, name, len)) return o;
    return NULL;
}

static const llm_opt *find_short(const llm_opt *opts, char c)
{
    for (const llm_opt *o = opts; o && o->name; o++)
        if (o->short_name == c) return o;
    return NULL;
}

int llm_cli_parse(const llm_cmd *cmd, int argc, char **argv, char ***operands)
{
    char **ops = calloc((size_t)argc + 1, sizeof *ops);
    if (!ops) llm_die("out of memory");
    int nops = 0, only_operands = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_operands || a[0] != '-' || a[1] == 0) { ops[nops++] = a; continue; }
        if (!strcmp(a, "--")) { only_operands = 1; continue; }
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            if (len == 4 && !strncmp(name, "help", 4) && !eq) { llm_cli_help(cmd); exit(0); }
            if (len == 7 && !strncmp(name, "version", 7) && !eq) { printf("%s (llmux) %s\n", cmd->name, LLM_VERSION); exit(0); }
            if (len == 8 && !strncmp(name, "progress", 8) && !eq) { progress_forced = 1; continue; }
            const llm_opt *o = find_long(cmd->opts, name, len);
            if (!o) llm_usage_error("unknown option '--%.*s'", (int)len, name);
            char spelled[80];
            snprintf(spelled, sizeof spelled, "--%s", o->name);
            if (o->kind == LLM_OPT_FLAG) {
                if (eq) llm_usage_error("option %s takes no argument", spelled);
                set_option(o, NULL, spelled);
            } else if (eq) {
                set_option(o, eq + 1, spelled);
            } else {
                if (i + 1 >= argc) llm_usage_error("option %s needs an argument (%s)", spelled, o->arg ? o->arg : "ARG");
                set_option(o, argv[++i], spelled);
            }
            continue;
        }
        /* one or more short options: -ab, -n5, -n 5 */
        for (char *p = a + 1; *p; p++) {
            if (*p == 'h') { llm_cli_help(cmd); exit(0); }
            const llm_opt *o = find_short(cmd->opts, *p);
            if (!o) llm_usage_error("unknown option '-%c'", *p);
            char spelled[8];
            snprintf(spelled, sizeof spelled, "-%c", *p);
            if (o->kind == LLM_OPT_FLAG) { set_option(o, NULL, spelled); continue; }
            if (p[1]) set_option(o, p + 1, spelled);
            else if (i + 1 < argc) set_option(o, argv[++i], spelled);
            else llm_usage_error("option %s needs an argument (%s)", spelled, o->arg ? o->arg : "ARG");
            break;
        }
    }
    ops[nops] = NULL;
    *operands = ops;
    return nops;
}

/* ---- progress ---- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int llm_progress_enabled(void) { return progress_forced || isatty(STDERR_FILENO); }

void llm_progress_start(llm_progress *p, const char *label, uint64_t total)
{
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total;
    p->start = now_seconds();
}

void llm_progress_update(llm_progress *p, uint64_t done)
{
    if (!llm_progress_enabled()) return;
    double t = now_seconds();
    if (p->shown && t - p->last_draw < 0.1) return;
    p->last_draw = t;
    p->shown = 1;
    if (p->total)
        fprintf(stderr, "\r%s: %llu/%llu (%.0f%%) %.1fs", p->label, (unsigned long long)done,
                (unsigned long long)p->total, 100.0 * (double)done / (double)p->total, t - p->start);
    else
        fprintf(stderr, "\r%s: %llu %.1fs", p->label, (unsigned long long)done, t - p->start);
    fflush(stderr);
}

void llm_progress_end(llm_progress *p)
{
    /* erase the line on a terminal; elsewhere (--progress into a log) end it */
    if (p->shown) fputs(isatty(STDERR_FILENO) ? "\r\033[K" : "\n", stderr);
    p->shown = 0;
}
