/* encode_pool.h — documents to token ids on N threads, results in input order.
 *
 * The caller submits documents (copied into batches of about 1 MB), workers
 * encode whole batches, and the emit callback receives each document's ids
 * (and, for instruction data, its loss mask) strictly in submission order,
 * on the caller's thread. With threads == 1 everything runs on the caller's
 * thread.
 *
 * A document is plain text (encoded with `flags`, see tokenizer.h), or, with
 * an instruction format set, a JSON record rendered by llm_chat_render whose
 * segments are encoded one by one: template special tokens matched as
 * special, message text never, an eos segment as the tokenizer's end of
 * sequence; mask[i] = 1 for tokens of trained segments. */
#ifndef LLMUX_ENCODE_POOL_H
#define LLMUX_ENCODE_POOL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "err.h"
#include "tokenizer.h"

typedef struct {
    uint64_t index;          /* submission order, from 0 */
    const char *origin;      /* as submitted */
    const uint32_t *ids;
    size_t n;
    const uint8_t *mask;     /* (n) for instruction data, else NULL */
    size_t text_bytes;
    const char *error;       /* non-NULL: this document failed (ids empty) */
} llm_encoded;

/* Returns 0 to go on, -1 to stop (llm_encpool_* then fail with the emit error). */
typedef int (*llm_emit_fn)(void *ctx, const llm_encoded *doc, llm_err *err);

typedef struct llm_encpool llm_encpool;

/* instruct: -1 for plain text, else an llm_chat_format for JSON records. */
int llm_encpool_new(llm_encpool **out, const llm_tokenizer *t, int threads, int flags, int instruct,
                    llm_emit_fn emit, void *ctx, llm_err *err);
/* Submits one document (text, or a JSON record when instruct >= 0). */
int llm_encpool_submit(llm_encpool *p, const char *text, size_t len, const json_t *record, const char *origin,
                       llm_err *err);
/* Waits for every submitted document to be emitted. */
int llm_encpool_finish(llm_encpool *p, llm_err *err);
void llm_encpool_free(llm_encpool *p);

#endif
