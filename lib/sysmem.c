/* Memory this process can still take: see sysmem.h. */
#include "sysmem.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* The first number in the file path (after the prefix key, when given, on
 * its line); 0 and *v, or -1. */
static int read_number(const char *path, const char *key, uint64_t *v)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    int rc = -1;
    unsigned long long x;
    while (fgets(line, sizeof line, f)) {
        const char *p = line;
        if (key) {
            if (strncmp(line, key, strlen(key))) continue;
            p += strlen(key);
        }
        if (sscanf(p, " %llu", &x) == 1) { *v = x; rc = 0; }
        break;
    }
    fclose(f);
    return rc;
}

static void take(uint64_t *best, const char **what, uint64_t v, const char *name)
{
    if (v < *best) { *best = v; if (what) *what = name; }
}

uint64_t llm_mem_available(const char **what)
{
    uint64_t best = UINT64_MAX, v, used;
    if (what) *what = "nothing";
    if (!read_number("/proc/meminfo", "MemAvailable:", &v)) take(&best, what, v * 1024, "MemAvailable");
    if (!read_number("/sys/fs/cgroup/memory.max", NULL, &v) &&
        !read_number("/sys/fs/cgroup/memory.current", NULL, &used))
        take(&best, what, v > used ? v - used : 0, "the cgroup's memory.max");
    struct rlimit rl;
    if (!getrlimit(RLIMIT_AS, &rl) && rl.rlim_cur != RLIM_INFINITY) {
        uint64_t pages = 0;
        read_number("/proc/self/statm", NULL, &pages);
        uint64_t in_use = pages * (uint64_t)sysconf(_SC_PAGESIZE);
        take(&best, what, rl.rlim_cur > in_use ? rl.rlim_cur - in_use : 0, "RLIMIT_AS (ulimit -v)");
    }
    return best;
}
