/* fileio.h — checked writes and all-or-nothing output files.
 *
 * An output file is written as a hidden temp file in the same directory
 * (".NAME.tmp.XXXXXX") and renamed over NAME only when complete, so readers
 * see the old file or the new one, never half of one. The temp file is
 * removed on abort, and by llm_atomic_cleanup_all() from signal handlers.
 * A path that names a device or a pipe, or any path under /dev (/dev/stdout,
 * /dev/null), is written in place; a symbolic link's target is replaced, not
 * the link. */
#ifndef LLMUX_FILEIO_H
#define LLMUX_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Writes all n bytes, retrying on EINTR and short writes. `name` is used in
 * the message ("out.stream: write failed: No space left on device"). */
int llm_write_all(int fd, const void *buf, size_t n, const char *name, llm_err *err);

/* Reads up to n bytes, retrying short reads until n or EOF; returns the count
 * read (less than n only at EOF) or -1. */
long long llm_read_full(int fd, void *buf, size_t n, const char *name, llm_err *err);

typedef struct {
    char *path;   /* final name */
    char *tmp;    /* temp name, in the same directory */
    int fd;
    int slot;     /* index in the cleanup registry, -1 when not registered */
    int direct;   /* the path is a device or pipe: written in place, no temp file */
} llm_atomic;

int llm_atomic_open(llm_atomic *a, const char *path, llm_err *err);
/* fsyncs, closes and renames the temp file onto the final path. On failure
 * the temp file is removed and the old file (if any) is left as it was. */
int llm_atomic_commit(llm_atomic *a, llm_err *err);
/* Removes the temp file; the final path is untouched. Safe to call twice. */
void llm_atomic_abort(llm_atomic *a);
/* Unlinks every temp file still open; async-signal-safe. */
void llm_atomic_cleanup_all(void);

/* A read-only view of a whole file: mmap for regular files. */
typedef struct {
    const unsigned char *data;
    size_t size;
    void *map;    /* munmap target, NULL for empty files */
} llm_mapped;

int llm_map_file(llm_mapped *m, const char *path, llm_err *err);
void llm_unmap_file(llm_mapped *m);

#endif
