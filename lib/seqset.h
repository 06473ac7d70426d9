/* seqset.h — training sequences on disk: shard sets, and the reader that
 * training and evaluation share.
 *
 * A shard set is a directory:
 *   manifest.json    {"format":"llmux-shards","version":1,"tokenizer",
 *                     "vocab_size","eos_id","seq_len","token_width","mask",
 *                     "sequences","documents","tokens","dropped","padded",
 *                     "shards":[{"file","sequences","bytes","xxh3_64"}]}
 *   shard-NNNNN.bin  a 64-byte header ("LLMXSEQ1", u32 token_width,
 *                     u32 seq_len, u32 flags (1: masks), u32 0, u64 count,
 *                     32 zero bytes), then `count` records of T + 1
 *                     little-endian tokens of token_width bytes, each
 *                     followed by T + 1 mask bytes when flags has 1.
 * Records have one size, so sequence i is found by arithmetic (O(1)).
 * Every shard's XXH3-64 (of the whole file) is in the manifest; a shard is
 * checked against it before its first sequence is read, and a mismatch or a
 * size that disagrees is an error naming the shard. See llm-shards(5).
 *
 * The writer builds the set in a temporary directory beside the target and
 * renames it into place when complete; an existing target is refused. */
#ifndef LLMUX_SEQSET_H
#define LLMUX_SEQSET_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LLM_SEQSET_MAGIC "LLMXSEQ1"
#define LLM_SEQSET_HEADER 64

typedef struct {
    const char *tokenizer;
    uint64_t vocab_size, eos_id;
    uint32_t seq_len, token_width;
    int masks;
    uint64_t shard_bytes;     /* start a new shard past about this many bytes */
} llm_seqset_info;

typedef struct {
    uint64_t documents, tokens, dropped, padded;
} llm_seqset_counts;

/* ---- records: n = seq_len + 1 tokens, little-endian, then n mask bytes ---- */
size_t llm_seq_record_bytes(uint32_t seq_len, uint32_t token_width, int masks);
/* -1 when a token does not fit token_width bytes; mask NULL: no mask bytes. */
int llm_seq_encode(void *rec, const uint32_t *tokens, const uint8_t *mask, size_t n, int token_width);
void llm_seq_decode(uint32_t *tokens, uint8_t *mask, const void *rec, size_t n, int token_width);

/* ---- writing ---- */
typedef struct llm_seqset_writer llm_seqset_writer;
int llm_seqset_writer_open(llm_seqset_writer **out, const char *dir, const llm_seqset_info *info, llm_err *err);
/* n == seq_len + 1 tokens; mask (n bytes) exactly when info.masks. */
int llm_seqset_writer_add(llm_seqset_writer *w, const uint32_t *tokens, const uint8_t *mask, size_t n, llm_err *err);
/* The same for a record already in the shard's layout (llm_seq_encode). */
int llm_seqset_writer_add_record(llm_seqset_writer *w, const void *rec, llm_err *err);
/* Writes the manifest and renames the set into place. */
int llm_seqset_writer_finish(llm_seqset_writer *w, const llm_seqset_counts *counts, llm_err *err);
/* Removes the temporary directory (after a failure); frees w. */
void llm_seqset_writer_abort(llm_seqset_writer *w);

/* ---- reading ---- */
typedef struct llm_seqset llm_seqset;
/* Opens a shard set directory (or DIR/train when DIR holds no manifest but
 * that), or a file holding the stream form (kind "seqs", llm-shard without
 * -o), which is read through once, every record checked, and then mapped.
 * Checks the manifest and every shard's size now; checksums when a shard is
 * first read (or all by llm_seqset_verify). A stream has no checksums. */
int llm_seqset_open(const char *dir, llm_seqset **out, llm_err *err);
void llm_seqset_close(llm_seqset *s);
uint64_t llm_seqset_count(const llm_seqset *s);
uint32_t llm_seqset_seq_len(const llm_seqset *s);
int llm_seqset_has_masks(const llm_seqset *s);
size_t llm_seqset_shards(const llm_seqset *s);
/* Sequence i: seq_len + 1 tokens into tokens, and the mask into mask (when
 * the set has masks and mask is not NULL). */
int llm_seqset_get(llm_seqset *s, uint64_t i, uint32_t *tokens, uint8_t *mask, llm_err *err);
/* Checks every shard's checksum now. */
int llm_seqset_verify(llm_seqset *s, llm_err *err);
/* The manifest's text, for llm-inspect. */
const char *llm_seqset_manifest(const llm_seqset *s);

#endif
