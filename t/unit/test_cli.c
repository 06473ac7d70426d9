/* Option parsing, usage errors and exit codes of the CLI support. */
#include "cli.h"
#include "fileio.h"
#include "unit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int64_t n_opt;
static uint64_t size_opt;
static double dbl_opt;
static int flag_a, flag_b;
static const char *str_opt;
static llm_strlist list_opt;

static const llm_opt opts[] = {
    {"count", 'n', LLM_OPT_INT, &n_opt, "N", "a count", 1, 100},
    {"mem", 0, LLM_OPT_SIZE, &size_opt, "SIZE", "a size", 0, 0},
    {"lr", 0, LLM_OPT_DOUBLE, &dbl_opt, "LR", "a rate", 0, 0},
    {"all", 'a', LLM_OPT_FLAG, &flag_a, NULL, "flag a", 0, 0},
    {"bold", 'b', LLM_OPT_FLAG, &flag_b, NULL, "flag b", 0, 0},
    {"out", 'o', LLM_OPT_STR, &str_opt, "FILE", "output", 0, 0},
    {"stop", 0, LLM_OPT_LIST, &list_opt, "STR", "repeatable", 0, 0},
    {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
};
static const llm_cmd cmd = {"llm-unit", "tests the option parser", "[OPTIONS] FILE...", opts, NULL};

TEST(parses_mixed_options_and_operands)
{
    char *argv[] = {"llm-unit", "in1", "-ab", "--count=5", "in2", "--mem", "2G", "-ofile", "--lr", "3e-4",
                    "--stop", "x", "--stop=y", "--", "--not-an-option", NULL};
    char **ops;
    int n = llm_cli_parse(&cmd, 15, argv, &ops);
    CHECK(n == 3);
    CHECK(!strcmp(ops[0], "in1") && !strcmp(ops[1], "in2") && !strcmp(ops[2], "--not-an-option") && !ops[3]);
    CHECK(flag_a && flag_b);
    CHECK(n_opt == 5);
    CHECK(size_opt == 2ull << 30);
    CHECK(dbl_opt == 3e-4);
    CHECK(!strcmp(str_opt, "file"));
    CHECK(list_opt.count == 2 && !strcmp(list_opt.items[1], "y"));
    free(ops);
}

/* Runs the parser in a child; returns its exit status and its stderr/stdout. */
static int run_child(char **argv, int argc, char *out, size_t outlen)
{
    int p[2];
    if (pipe(p)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        llm_cli_init("llm-unit");
        char **ops;
        llm_cli_parse(&cmd, argc, argv, &ops);
        exit(0);
    }
    close(p[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < outlen && (r = read(p[0], out + got, outlen - 1 - got)) > 0) got += (size_t)r;
    out[got] = 0;
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(usage_errors_exit_2_with_a_hint)
{
    char out[4096];
    struct { char *args[4]; const char *needle; } cases[] = {
        {{"x", "--nope", NULL}, "unknown option '--nope'"},
        {{"x", "-z", NULL}, "unknown option '-z'"},
        {{"x", "--count", NULL}, "needs an argument"},
        {{"x", "--count=abc", NULL}, "not an integer"},
        {{"x", "-n", "500", NULL}, "out of range"},
        {{"x", "--mem", "12Q", NULL}, "not a size"},
        {{"x", "--lr", "nan", NULL}, "not a finite number"},
        {{"x", "--all=1", NULL}, "takes no argument"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int argc = 0;
        while (cases[i].args[argc]) argc++;
        int status = run_child(cases[i].args, argc, out, sizeof out);
        CHECK(status == 2);
        if (!strstr(out, cases[i].needle) || !strstr(out, "Try 'llm-unit --help'")) {
            printf("# case %zu: got '%s'\n", i, out);
            CHECK(0);
        }
    }
}

TEST(help_and_version_exit_0)
{
    char out[4096];
    char *help[] = {"x", "--help", NULL}, *version[] = {"x", "--version", NULL}, *h[] = {"x", "-h", NULL};
    CHECK(run_child(help, 2, out, sizeof out) == 0);
    CHECK(strstr(out, "--count N") && strstr(out, "Usage:") && strstr(out, "--version"));
    CHECK(run_child(h, 2, out, sizeof out) == 0);
    CHECK(strstr(out, "-o, --out FILE") != NULL);
    CHECK(run_child(version, 2, out, sizeof out) == 0);
    CHECK(strstr(out, "llm-unit (llmux) " LLM_VERSION) != NULL);
}

TEST(atomic_files)
{
    char dir[] = "/tmp/llmux-cli-XXXXXX", path[64], buf[16];
    llm_err e;
    llm_atomic a;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/out.bin", dir);
    CHECK(llm_atomic_open(&a, path, &e) == 0);
    CHECK(llm_write_all(a.fd, "new", 3, path, &e) == 0);
    CHECK(access(path, F_OK) != 0);   /* nothing at the final name until commit */
    CHECK(llm_atomic_commit(&a, &e) == 0);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && read(fd, buf, sizeof buf) == 3 && !memcmp(buf, "new", 3));
    close(fd);
    /* an aborted rewrite leaves the old content and no temp file */
    CHECK(llm_atomic_open(&a, path, &e) == 0);
    CHECK(llm_write_all(a.fd, "partial", 7, path, &e) == 0);
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s", a.tmp);
    llm_atomic_abort(&a);
    CHECK(access(tmp, F_OK) != 0);
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && read(fd, buf, sizeof buf) == 3);
    close(fd);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == (0666 & ~(mode_t)umask(022)));
    /* through a symbolic link the named file is replaced and the link kept */
    char link[96];
    snprintf(link, sizeof link, "%s/link.bin", dir);
    CHECK(symlink(path, link) == 0);
    CHECK(llm_atomic_open(&a, link, &e) == 0);
    CHECK(llm_write_all(a.fd, "via", 3, link, &e) == 0);
    CHECK(llm_atomic_commit(&a, &e) == 0);
    struct stat lst;
    CHECK(lstat(link, &lst) == 0 && S_ISLNK(lst.st_mode));
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && read(fd, buf, sizeof buf) == 3 && !memcmp(buf, "via", 3));
    close(fd);
    unlink(link);
    /* a device is written in place, never replaced by a file */
    CHECK(llm_atomic_open(&a, "/dev/null", &e) == 0 && a.direct);
    CHECK(llm_write_all(a.fd, "x", 1, "/dev/null", &e) == 0);
    CHECK(llm_atomic_commit(&a, &e) == 0);
    CHECK(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode));
    CHECK(llm_atomic_open(&a, dir, &e) != 0);   /* a directory is refused */
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    RUN(parses_mixed_options_and_operands);
    RUN(usage_errors_exit_2_with_a_hint);
    RUN(help_and_version_exit_0);
    RUN(atomic_files);
    return unit_done();
}
