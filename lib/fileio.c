#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int llm_write_all(int fd, const void *buf, size_t n, const char *name, llm_err *err)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return llm_errf(err, "%s: write failed: %s", name, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

long long llm_read_full(int fd, void *buf, size_t n, const char *name, llm_err *err)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return llm_errf(err, "%s: read failed: %s", name, strerror(errno));
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long long)got;
}

/* Temp files to remove if a signal ends the program. Plain array of fixed
 * size so that the signal handler touches no allocator. */
#define MAX_PENDING 64
static char *volatile pending[MAX_PENDING];

static int register_tmp(char *tmp)
{
    for (int i = 0; i < MAX_PENDING; i++)
        if (!pending[i]) { pending[i] = tmp; return i; }
    return -1;
}

static void unregister_tmp(llm_atomic *a)
{
    if (a->slot >= 0) pending[a->slot] = NULL;
    a->slot = -1;
}

void llm_atomic_cleanup_all(void)
{
    for (int i = 0; i < MAX_PENDING; i++)
        if (pending[i]) unlink(pending[i]);
}

/* The temp file beside path, registered for cleanup. */
static int open_temp(llm_atomic *a, const char *path, llm_err *err)
{
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    const char *base = slash ? slash + 1 : path;
    if (!*base) return llm_errf(err, "%s: not a file name", path);
    a->path = strdup(path);
    a->tmp = malloc(dirlen + strlen(base) + 16);
    if (!a->path || !a->tmp) { llm_atomic_abort(a); return llm_errf(err, "%s: out of memory", path); }
    sprintf(a->tmp, "%.*s.%s.tmp.XXXXXX", (int)dirlen, path, base);
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);   /* no window where the file exists unregistered */
    a->fd = mkstemp(a->tmp);
    int saved = errno;
    if (a->fd >= 0) a->slot = register_tmp(a->tmp);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (a->fd < 0) {
        llm_errf(err, "%s: cannot create a temporary file beside it: %s", path, strerror(saved));
        free(a->tmp); a->tmp = NULL;
        llm_atomic_abort(a);
        return -1;
    }
    mode_t mask = umask(0);   /* mkstemp makes 0600; outputs get the usual 0666 & ~umask */
    umask(mask);
    fchmod(a->fd, 0666 & ~mask);
    return 0;
}

int llm_atomic_open(llm_atomic *a, const char *path, llm_err *err)
{
    memset(a, 0, sizeof *a);
    a->fd = -1;
    a->slot = -1;
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (exists && (!S_ISREG(st.st_mode) || !strncmp(path, "/dev/", 5))) {
        /* a device, pipe or terminal, or anything named under /dev
         * (-o /dev/stdout, even when stdout is a file): written in place; a
         * rename would put a file where the device was */
        if (S_ISDIR(st.st_mode)) return llm_errf(err, "%s: is a directory", path);
        a->fd = open(path, O_WRONLY | O_CLOEXEC);
        if (a->fd < 0) return llm_errf(err, "%s: %s", path, strerror(errno));
        a->direct = 1;
        return 0;
    }
    /* through a symbolic link, the file it names is replaced, not the link */
    char *real = lstat(path, &st) == 0 && S_ISLNK(st.st_mode) ? realpath(path, NULL) : NULL;
    int rc = open_temp(a, real ? real : path, err);
    free(real);
    return rc;
}

int llm_atomic_commit(llm_atomic *a, llm_err *err)
{
    if (a->direct) {
        int fd = a->fd;
        a->fd = -1;
        a->direct = 0;
        return close(fd) == 0 ? 0 : llm_errf(err, "write failed: %s", strerror(errno));
    }
    if (fsync(a->fd) != 0 && errno != EINVAL) {
        llm_errf(err, "%s: fsync failed: %s", a->path, strerror(errno));
        llm_atomic_abort(a);
        return -1;
    }
    int fd = a->fd;
    a->fd = -1;
    if (close(fd) != 0) {
        llm_errf(err, "%s: close failed: %s", a->path, strerror(errno));
        llm_atomic_abort(a);
        return -1;
    }
    if (rename(a->tmp, a->path) != 0) {
        llm_errf(err, "%s: rename from temporary file failed: %s", a->path, strerror(errno));
        llm_atomic_abort(a);
        return -1;
    }
    /* make the rename itself durable: fsync the directory that holds it */
    const char *slash = strrchr(a->path, '/');
    char *dir = slash ? strndup(a->path, (size_t)(slash - a->path) + 1) : strdup(".");
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    free(dir);
    unregister_tmp(a);
    free(a->tmp); a->tmp = NULL;
    free(a->path); a->path = NULL;
    return 0;
}

void llm_atomic_abort(llm_atomic *a)
{
    a->direct = 0;
    if (a->fd >= 0) close(a->fd);
    a->fd = -1;
    if (a->tmp) unlink(a->tmp);
    unregister_tmp(a);
    free(a->tmp); a->tmp = NULL;
    free(a->path); a->path = NULL;
}

int llm_map_file(llm_mapped *m, const char *path, llm_err *err)
{
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return llm_errf(err, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return llm_errf(err, "%s: %s", path, strerror(errno)); }
    if (S_ISDIR(st.st_mode)) { close(fd); return llm_errf(err, "%s: is a directory", path); }
    if (!S_ISREG(st.st_mode)) { close(fd); return llm_errf(err, "%s: not a regular file", path); }
    if (st.st_size == 0) { close(fd); m->data = (const unsigned char *)""; return 0; }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int saved = errno;
    close(fd);
    if (p == MAP_FAILED) return llm_errf(err, "%s: cannot map: %s", path, strerror(saved));
    m->map = p;
    m->data = p;
    m->size = (size_t)st.st_size;
    return 0;
}

void llm_unmap_file(llm_mapped *m)
{
    if (m->map) munmap(m->map, m->size);
    memset(m, 0, sizeof *m);
}
