/* eval_hash.h — the content hashes that say what llm-eval evaluated.
 *
 * A file's hash is the XXH3-64 (seed 0) of its bytes, as 16 lowercase hex
 * digits: the form a shard set's manifest gives each shard. A directory (a
 * shard set) is hashed as its manifest.json (or train/manifest.json, where
 * the directory holds the train and val sets of llm-shard --val and the
 * reader takes train), which names every shard with
 * its own XXH3-64 (checked when the set is read), so the manifest's hash
 * pins every byte of the set. Python's xxhash.xxh3_64_hexdigest gives the
 * same text. */
#ifndef LLMUX_EVAL_HASH_H
#define LLMUX_EVAL_HASH_H

#include "err.h"

#define LLM_EVAL_HASH_LEN 16

/* hex: 17 bytes, NUL-terminated. */
int llm_eval_hash_path(const char *path, char hex[LLM_EVAL_HASH_LEN + 1], llm_err *err);

#endif
