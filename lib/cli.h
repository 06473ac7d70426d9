/* cli.h — what every program in tools/ shares: option tables that also print
 * --help, --version, die/error/warning, exit codes, SIGPIPE, progress, and a
 * checked close of stdout.
 *
 * This is the one part of lib/ that may exit: its functions are called only by
 * the mains in tools/, never by other library code.
 *
 * Exit codes: 0 ok, 1 runtime error, 2 usage error.
 * SIGPIPE: reset to the default action at start, so `llm-inspect x | head`
 * ends quietly as coreutils programs do. */
#ifndef LLMUX_CLI_H
#define LLMUX_CLI_H

#include <stdint.h>
#include <stdnoreturn.h>

#include "err.h"

#define LLM_VERSION "0.1.0"

enum { LLM_EXIT_OK = 0, LLM_EXIT_RUNTIME = 1, LLM_EXIT_USAGE = 2 };

typedef enum {
    LLM_OPT_FLAG,   /* int *dest set to 1; takes no argument */
    LLM_OPT_STR,    /* const char **dest */
    LLM_OPT_LIST,   /* llm_strlist *dest; may be given many times */
    LLM_OPT_INT,    /* int64_t *dest, decimal, range-checked against min/max */
    LLM_OPT_SIZE,   /* uint64_t *dest, with optional K/M/G/T suffix (powers of 1024) */
    LLM_OPT_DOUBLE, /* double *dest, finite */
} llm_opt_kind;

typedef struct {
    const char **items;
    int count;
} llm_strlist;

typedef struct {
    const char *name;  /* long name without "--" */
    char short_name;   /* 0 when there is none */
    llm_opt_kind kind;
    void *dest;
    const char *arg;   /* metavariable in --help, e.g. "N" */
    const char *help;  /* one line */
    int64_t min, max;  /* LLM_OPT_INT only; both 0 means any int64 */
} llm_opt;

typedef struct {
    const char *name;      /* "llm-inspect" */
    const char *summary;   /* one line: what the program does */
    const char *synopsis;  /* usage lines after the program name, '\n'-separated */
    const llm_opt *opts;   /* terminated by an entry with name == NULL */
    const char *footer;    /* optional text after the options */
} llm_cmd;

/* Call first in main(): records the program name, resets SIGPIPE, installs
 * handlers that remove unfinished temp files on SIGINT/SIGTERM/SIGHUP, and
 * registers the checked close of stdout at exit. */
void llm_cli_init(const char *progname);

/* Parses argv against cmd->opts; options and operands may be mixed, "--" ends
 * options. Handles -h/--help and --version (print, exit 0) and --progress.
 * On a usage error prints a one-line message and "Try '... --help'." and exits 2.
 * Returns the operand count and sets *operands (a NULL-terminated array). */
int llm_cli_parse(const llm_cmd *cmd, int argc, char **argv, char ***operands);

/* Prints the --help text of cmd to stdout. */
void llm_cli_help(const llm_cmd *cmd);

const char *llm_progname(void);

noreturn void llm_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void llm_die_err(const llm_err *err);
noreturn void llm_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void llm_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void llm_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Flushes stdout and exits 1 with "write error" if that or any earlier write
 * to it failed. Registered by llm_cli_init at exit; callable earlier. */
void llm_close_stdout(void);

/* Progress on stderr: shown when stderr is a terminal or --progress was given,
 * redrawn at most ten times a second, erased by llm_progress_end. */
typedef struct {
    const char *label;
    uint64_t total;   /* 0 when unknown */
    double last_draw;
    double start;
    int shown;
} llm_progress;

void llm_progress_start(llm_progress *p, const char *label, uint64_t total);
void llm_progress_update(llm_progress *p, uint64_t done);
void llm_progress_end(llm_progress *p);
int llm_progress_enabled(void);

#endif
