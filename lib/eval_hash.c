/* Content hashes of evaluated files: see eval_hash.h. */
#include "eval_hash.h"
#include "fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

int llm_eval_hash_path(const char *path, char hex[LLM_EVAL_HASH_LEN + 1], llm_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0) return llm_errf(err, "%s: %s", path, strerror(errno));
    char *manifest = NULL;
    const char *file = path;
    if (S_ISDIR(st.st_mode)) {
        /* DIR/manifest.json, or DIR/train/manifest.json as llm_seqset_open reads it */
        size_t n = strlen(path) + sizeof "/train/manifest.json";
        if (!(manifest = malloc(n))) return llm_errf(err, "out of memory");
        snprintf(manifest, n, "%s/manifest.json", path);
        if (stat(manifest, &st) != 0) snprintf(manifest, n, "%s/train/manifest.json", path);
        file = manifest;
    }
    llm_mapped m;
    int rc = llm_map_file(&m, file, err);
    free(manifest);
    if (rc) return -1;
    snprintf(hex, LLM_EVAL_HASH_LEN + 1, "%016llx", (unsigned long long)XXH3_64bits(m.data, m.size));
    llm_unmap_file(&m);
    return 0;
}
