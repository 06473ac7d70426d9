#include "encode_pool.h"
#include "chat_encode.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_BYTES (1u << 20)
#define BATCH_DOCS 4096

typedef struct {
    size_t text_off, text_len, origin_off;
    const char *borrowed;     /* the caller's text, not copied (parts of a long document) */
    json_t *record;
    size_t ids_off, nids;     /* into the batch's ids / mask */
    char *error;
    uint64_t index;           /* the document's; the parts of a long one share it */
    int more;                 /* more parts of this document follow */
} doc_slot;

enum { FREE, FILLING, READY, WORKING, DONE };

typedef struct {
    int state;
    uint64_t first_index;
    doc_slot *docs;
    size_t ndocs, cap_docs;
    char *bytes;              /* texts and origins, back to back */
    size_t nbytes, cap_bytes;
    size_t text_bytes;        /* text in this batch, copied or borrowed: what sizes it */
    llm_ids ids;
    uint8_t *mask;
    size_t mask_cap;
} batch;

struct llm_encpool {
    const llm_tokenizer *tok;
    int flags, instruct, threads;
    llm_emit_fn emit;
    void *ctx;
    batch *batches;
    int nbatches;
    int fill, next_work, next_emit;   /* ring positions */
    uint64_t submitted;
    pthread_t *workers;
    llm_tok_scratch *scratch;      /* threads == 1: the caller's thread encodes */
    llm_chat_segments segs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    int failed;
    llm_err err;
    int borrow;                /* submit_part borrows the text instead of copying it */
    llm_ids joined;            /* ids of the parts of a long document emitted so far */
    size_t joined_bytes;
    char *joined_error;
};

#define PART_BYTES (256u << 10)   /* a long document is cut into parts of about this size */

static int push_bytes(batch *b, const char *p, size_t n, size_t *off)
{
    if (b->nbytes + n + 1 > b->cap_bytes) {
        size_t cap = b->cap_bytes ? b->cap_bytes : BATCH_BYTES + 4096;
        while (cap < b->nbytes + n + 1) cap *= 2;
        char *nb = realloc(b->bytes, cap);
        if (!nb) return -1;
        b->bytes = nb;
        b->cap_bytes = cap;
    }
    *off = b->nbytes;
    if (n) memcpy(b->bytes + b->nbytes, p, n);
    b->bytes[b->nbytes + n] = 0;
    b->nbytes += n + 1;
    return 0;
}

static int mask_reserve(batch *b, size_t n)
{
    if (n <= b->mask_cap) return 0;
    size_t cap = b->mask_cap ? b->mask_cap : 65536;
    while (cap < n) cap *= 2;
    uint8_t *m = realloc(b->mask, cap);
    if (!m) return -1;
    b->mask = m;
    b->mask_cap = cap;
    return 0;
}

/* Encodes one instruction record's segments; fills ids and mask, and the
 * bytes of rendered text in *bytes. A special segment is exactly one token,
 * which the tokenizer must have. */
static int encode_record(const llm_encpool *p, llm_tok_scratch *s, llm_chat_segments *segs, batch *b,
                         const json_t *record, size_t *bytes, llm_err *err)
{
    llm_chat_segments_reset(segs);
    if (llm_chat_render((llm_chat_format)p->instruct, record, segs, err)) return -1;
    *bytes = 0;
    int after_text = 0;   /* the previous segment was text: this one continues it */
    for (size_t i = 0; i < segs->count; i++) {
        const llm_chat_segment *g = &segs->seg[i];
        size_t before = b->ids.n;
        *bytes += g->len;
        if (llm_chat_encode_segment(p->tok, s, g, after_text, &b->ids, err)) return -1;
        after_text = !g->eos && !g->special && g->len;
        if (mask_reserve(b, b->ids.n)) return llm_errf(err, "out of memory");
        memset(b->mask + before, g->trained ? 1 : 0, b->ids.n - before);
    }
    return 0;
}

static void encode_batch(llm_encpool *p, batch *b, llm_tok_scratch *s, llm_chat_segments *segs)
{
    b->ids.n = 0;
    for (size_t i = 0; i < b->ndocs; i++) {
        doc_slot *d = &b->docs[i];
        llm_err err;
        d->ids_off = b->ids.n;
        int rc = p->instruct >= 0 ? encode_record(p, s, segs, b, d->record, &d->text_len, &err)
                                  : llm_tok_encode(p->tok, s, d->borrowed ? d->borrowed : b->bytes + d->text_off,
                                                   d->text_len, p->flags, &b->ids, &err);
        if (rc) {
            b->ids.n = d->ids_off;
            d->error = strdup(err.msg);
        }
        d->nids = b->ids.n - d->ids_off;
    }
}

static void *worker(void *arg)
{
    llm_encpool *p = arg;
    llm_tok_scratch *s = llm_tok_scratch_new(p->tok);
    llm_chat_segments segs = {0};
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stopping && p->batches[p->next_work].state != READY) pthread_cond_wait(&p->cv, &p->mu);
        if (p->batches[p->next_work].state != READY) break;
        batch *b = &p->batches[p->next_work];
        b->state = WORKING;
        p->next_work = (p->next_work + 1) % p->nbatches;
        pthread_mutex_unlock(&p->mu);
        if (s) encode_batch(p, b, s, &segs);
        pthread_mutex_lock(&p->mu);
        b->state = DONE;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    llm_chat_segments_free(&segs);
    llm_tok_scratch_free(s);
    return NULL;
}

int llm_encpool_new(llm_encpool **out, const llm_tokenizer *t, int threads, int flags, int instruct,
                    llm_emit_fn emit, void *ctx, llm_err *err)
{
    *out = NULL;
    llm_encpool *p = calloc(1, sizeof *p);
    if (!p) return llm_errf(err, "out of memory");
    p->tok = t;
    p->flags = flags;
    p->instruct = instruct;
    p->threads = threads < 1 ? 1 : threads;
    p->emit = emit;
    p->ctx = ctx;
    p->nbatches = p->threads == 1 ? 1 : 2 * p->threads + 1;
    p->batches = calloc((size_t)p->nbatches, sizeof *p->batches);
    if (!p->batches) { free(p); return llm_errf(err, "out of memory"); }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (p->threads > 1) {
        p->workers = calloc((size_t)p->threads, sizeof *p->workers);
        for (int i = 0; i < p->threads; i++)
            if (!p->workers || pthread_create(&p->workers[i], NULL, worker, p)) {
                p->threads = i;   /* those started are joined by free */
                llm_encpool_free(p);
                return llm_errf(err, "cannot start encoding threads");
            }
    }
    *out = p;
    return 0;
}

/* Emits batch b (DONE) in order and frees it for reuse. Caller holds no lock. */
static int emit_batch(llm_encpool *p, batch *b, llm_err *err)
{
    for (size_t i = 0; i < b->ndocs && !p->failed; i++) {
        doc_slot *d = &b->docs[i];
        const uint32_t *ids = b->ids.v + d->ids_off;
        size_t n = d->nids, bytes = d->text_len;
        const char *error = d->error;
        if (d->more || p->joined.n || p->joined_bytes || p->joined_error) {   /* a part of a long document */
            for (size_t k = 0; k < n; k++)
                if (llm_ids_push(&p->joined, ids[k])) { llm_errf(&p->err, "out of memory"); p->failed = 1; }
            p->joined_bytes += bytes;
            if (error && !p->joined_error) p->joined_error = strdup(error);
            if (d->more) continue;
            ids = p->joined.v;
            n = p->joined.n;
            bytes = p->joined_bytes;
            error = p->joined_error;
        }
        llm_encoded e = {d->index, b->bytes + d->origin_off, error ? NULL : ids, error ? 0 : n,
                         p->instruct >= 0 ? b->mask + d->ids_off : NULL, bytes, error};
        if (p->emit(p->ctx, &e, &p->err)) p->failed = 1;
        p->joined.n = 0;
        p->joined_bytes = 0;
        free(p->joined_error);
        p->joined_error = NULL;
    }
    for (size_t i = 0; i < b->ndocs; i++) {
        free(b->docs[i].error);
        json_decref(b->docs[i].record);
    }
    b->ndocs = 0;
    b->nbytes = 0;
    b->text_bytes = 0;
    if (p->failed) { *err = p->err; return -1; }
    return 0;
}

/* Hands the filling batch to the workers (or encodes it here), then emits
 * whatever is done in order; waits only when every batch is busy. */
static int flush(llm_encpool *p, int wait_all, llm_err *err)
{
    batch *f = &p->batches[p->fill];
    if (f->state == FILLING) {
        if (p->threads == 1) {
            if (!p->scratch && !(p->scratch = llm_tok_scratch_new(p->tok))) return llm_errf(err, "out of memory");
            encode_batch(p, f, p->scratch, &p->segs);
            f->state = DONE;
        } else {
            pthread_mutex_lock(&p->mu);
            f->state = READY;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
        }
        p->fill = (p->fill + 1) % p->nbatches;
    }
    for (;;) {
        batch *e = &p->batches[p->next_emit];
        pthread_mutex_lock(&p->mu);
        int pending = e->state == READY || e->state == WORKING;
        int must_wait = pending && (wait_all || p->batches[p->fill].state != FREE);
        while (must_wait && e->state != DONE) pthread_cond_wait(&p->cv, &p->mu);
        int done = e->state == DONE;
        pthread_mutex_unlock(&p->mu);
        if (!done) return 0;
        if (emit_batch(p, e, err)) return -1;
        pthread_mutex_lock(&p->mu);
        e->state = FREE;
        pthread_mutex_unlock(&p->mu);
        p->next_emit = (p->next_emit + 1) % p->nbatches;
    }
}

static int submit_part(llm_encpool *p, const char *text, size_t len, const json_t *record, const char *origin,
                       int more, llm_err *err);

int llm_encpool_submit(llm_encpool *p, const char *text, size_t len, const json_t *record, const char *origin,
                       llm_err *err)
{
    if (p->failed) { *err = p->err; return -1; }
    /* a long document is cut where the tokenizer allows, so that its parts
     * keep every thread busy; the ids are joined again when emitted. The
     * parts are not copied: the workers read the caller's text, and this
     * call returns only when they are done with it. */
    if (p->threads > 1 && !record && text && len > 2 * PART_BYTES &&
        llm_tok_cut_point(p->tok, p->flags, text, len, PART_BYTES) < len) {
        p->borrow = 1;
        int rc = 0;
        /* the parts' ids are joined on emit: room for about one id per 3 bytes up front */
        if (p->joined.cap < len / 3) {
            uint32_t *v = realloc(p->joined.v, len / 3 * sizeof *v);
            if (v) { p->joined.v = v; p->joined.cap = len / 3; }
        }
        while (!rc && len > 2 * PART_BYTES) {
            size_t cut = llm_tok_cut_point(p->tok, p->flags, text, len, PART_BYTES);
            if (cut >= len) break;
            rc = submit_part(p, text, cut, NULL, origin, 1, err);
            text += cut;
            len -= cut;
        }
        if (!rc) rc = submit_part(p, text, len, NULL, origin, 0, err);
        if (!rc) rc = flush(p, 1, err);
        p->borrow = 0;
        return rc;
    }
    return submit_part(p, text, len, record, origin, 0, err);
}

static int submit_part(llm_encpool *p, const char *text, size_t len, const json_t *record, const char *origin,
                       int more, llm_err *err)
{
    batch *b = &p->batches[p->fill];
    if (b->state == FREE) {   /* only this thread moves a batch out of FREE; workers read state under the lock */
        pthread_mutex_lock(&p->mu);
        b->state = FILLING;
        pthread_mutex_unlock(&p->mu);
        b->first_index = p->submitted;
    }
    if (b->ndocs == b->cap_docs) {
        size_t cap = b->cap_docs ? 2 * b->cap_docs : 256;
        doc_slot *d = realloc(b->docs, cap * sizeof *d);
        if (!d) return llm_errf(err, "out of memory");
        b->docs = d;
        b->cap_docs = cap;
    }
    doc_slot *d = &b->docs[b->ndocs];
    memset(d, 0, sizeof *d);
    int copy = text && !p->borrow;
    if (push_bytes(b, copy ? text : "", copy ? len : 0, &d->text_off) || push_bytes(b, origin, strlen(origin), &d->origin_off))
        return llm_errf(err, "out of memory");
    d->borrowed = p->borrow ? text : NULL;
    d->text_len = text ? len : 0;
    if (record) d->record = json_incref((json_t *)record);
    d->index = p->submitted;
    d->more = more;
    b->ndocs++;
    if (!more) p->submitted++;
    b->text_bytes += len;
    if (b->text_bytes >= BATCH_BYTES || b->ndocs >= BATCH_DOCS) return flush(p, 0, err);
    return 0;
}

int llm_encpool_finish(llm_encpool *p, llm_err *err)
{
    if (p->failed) { *err = p->err; return -1; }
    return flush(p, 1, err);
}

void llm_encpool_free(llm_encpool *p)
{
    if (!p) return;
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        p->stopping = 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < p->threads; i++) pthread_join(p->workers[i], NULL);
        free(p->workers);
    }
    for (int i = 0; i < p->nbatches; i++) {
        batch *b = &p->batches[i];
        for (size_t k = 0; k < b->ndocs; k++) { free(b->docs[k].error); json_decref(b->docs[k].record); }
        free(b->docs);
        free(b->bytes);
        llm_ids_free(&b->ids);
        free(b->mask);
    }
    free(p->batches);
    llm_ids_free(&p->joined);
    free(p->joined_error);
    llm_tok_scratch_free(p->scratch);
    llm_chat_segments_free(&p->segs);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
