#include "bpe.h"
#include "hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <pthread.h>
#include <unistd.h>

#define NONE UINT32_MAX

int llm_ids_push(llm_ids *ids, uint32_t id)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? 2 * ids->cap : 64;
        uint32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v) return -1;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return 0;
}

void llm_ids_free(llm_ids *ids)
{
    free(ids->v);
    memset(ids, 0, sizeof *ids);
}

/* ---- the vocabulary and the merges ---- */

typedef struct {
    uint64_t key;      /* left << 32 | right; UINT64_MAX = empty */
    uint32_t rank, result;
} pair_slot;

struct llm_bpe {
    unsigned char *arena;            /* token bytes, back to back */
    size_t arena_len, arena_cap;
    uint64_t *tok_off;               /* (ntok) offset << 24 | length; UINT64_MAX = undefined */
    size_t ntok, tok_cap;
    uint64_t *index;                 /* open addressing: bytes -> hash tag << 32 | id (UINT64_MAX = empty) */
    size_t index_cap, index_used;
    pair_slot *pairs;
    size_t pair_cap, pair_used;
    uint32_t byte_id[256];           /* single-byte tokens */
    uint32_t fallback_id[256];       /* "<0xXX>" tokens */
    int whole_piece, char_symbols, byte_fallback;
    uint32_t unk;
    int prepared;
};

llm_bpe *llm_bpe_new(void)
{
    llm_bpe *b = calloc(1, sizeof *b);
    if (b) b->unk = NONE;
    return b;
}

void llm_bpe_free(llm_bpe *b)
{
    if (!b) return;
    free(b->arena);
    free(b->tok_off);
    free(b->index);
    free(b->pairs);
    free(b);
}

size_t llm_bpe_vocab_size(const llm_bpe *b) { return b->ntok; }

const unsigned char *llm_bpe_token(const llm_bpe *b, uint32_t id, size_t *n)
{
    *n = 0;
    if (id >= b->ntok || b->tok_off[id] == UINT64_MAX) return NULL;
    *n = (size_t)(b->tok_off[id] & 0xffffff);
    return b->arena + (b->tok_off[id] >> 24);
}

static int index_grow(llm_bpe *b)
{
    size_t cap = b->index_cap ? 2 * b->index_cap : 1024;
    uint64_t *idx = malloc(cap * sizeof *idx);
    if (!idx) return -1;
    memset(idx, 0xff, cap * sizeof *idx);
    for (size_t i = 0; i < b->index_cap; i++) {
        uint64_t e = b->index[i];
        if (e == UINT64_MAX) continue;
        size_t h = (size_t)(e >> 32) & (cap - 1);
        while (idx[h] != UINT64_MAX) h = (h + 1) & (cap - 1);
        idx[h] = e;
    }
    free(b->index);
    b->index = idx;
    b->index_cap = cap;
    return 0;
}

/* The slot's tag is the low 32 bits of the hash, so a probe that meets
 * another key usually rejects it without touching the token bytes. */
int llm_bpe_lookup(const llm_bpe *b, const void *bytes, size_t n, uint32_t *id)
{
    if (!b->index_cap) return -1;
    uint64_t hv = llm_hash_bytes(bytes, n), tag = hv & 0xffffffffu;
    for (size_t h = (size_t)tag & (b->index_cap - 1);; h = (h + 1) & (b->index_cap - 1)) {
        uint64_t e = b->index[h];
        if (e == UINT64_MAX) return -1;
        if (e >> 32 != tag) continue;
        uint32_t cand = (uint32_t)e;
        size_t m;
        const unsigned char *p = llm_bpe_token(b, cand, &m);
        if (m == n && !memcmp(p, bytes, n)) { *id = cand; return 0; }
    }
}

int llm_bpe_set_token(llm_bpe *b, uint32_t id, const void *bytes, size_t n, llm_err *err)
{
    if (n == 0 || n >= (1u << 24)) return llm_errf(err, "token %u: length %zu is out of range", id, n);
    if (id >= LLM_BPE_MAX_ID)   /* tables are indexed by id: a wild id must not size them */
        return llm_errf(err, "token id %u is larger than %u", id, LLM_BPE_MAX_ID - 1);
    uint32_t other;
    if (llm_bpe_lookup(b, bytes, n, &other) == 0)
        return llm_errf(err, "tokens %u and %u have the same bytes", other, id);
    if (id >= b->tok_cap) {
        size_t cap = b->tok_cap ? b->tok_cap : 1024;
        while (cap <= id) cap *= 2;
        uint64_t *t = realloc(b->tok_off, cap * sizeof *t);
        if (!t) return llm_errf(err, "out of memory");
        memset(t + b->tok_cap, 0xff, (cap - b->tok_cap) * sizeof *t);
        b->tok_off = t;
        b->tok_cap = cap;
    }
    if (b->tok_off[id] != UINT64_MAX) return llm_errf(err, "token id %u is defined twice", id);
    if (b->arena_len + n > b->arena_cap) {
        size_t cap = b->arena_cap ? b->arena_cap : 1 << 16;
        while (cap < b->arena_len + n) cap *= 2;
        unsigned char *a = realloc(b->arena, cap);
        if (!a) return llm_errf(err, "out of memory");
        b->arena = a;
        b->arena_cap = cap;
    }
    memcpy(b->arena + b->arena_len, bytes, n);
    b->tok_off[id] = (uint64_t)b->arena_len << 24 | n;
    b->arena_len += n;
    if (id >= b->ntok) b->ntok = (size_t)id + 1;
    if ((b->index_used + 1) * 2 > b->index_cap && index_grow(b)) return llm_errf(err, "out of memory");
    uint64_t tag = llm_hash_bytes(bytes, n) & 0xffffffffu;
    size_t h = (size_t)tag & (b->index_cap - 1);
    while (b->index[h] != UINT64_MAX) h = (h + 1) & (b->index_cap - 1);
    b->index[h] = tag << 32 | id;
    b->index_used++;
    b->prepared = 0;
    return 0;
}

static size_t pair_hash(uint64_t key, size_t cap) { return (size_t)llm_hash_mix(key) & (cap - 1); }

static const pair_slot *pair_find(const llm_bpe *b, uint32_t left, uint32_t right)
{
    if (!b->pair_cap) return NULL;
    uint64_t key = (uint64_t)left << 32 | right;
    for (size_t h = pair_hash(key, b->pair_cap);; h = (h + 1) & (b->pair_cap - 1)) {
        const pair_slot *s = &b->pairs[h];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
    }
}

static int pair_reserve(llm_bpe *b, size_t want)
{
    if (want * 2 <= b->pair_cap) return 0;
    size_t cap = b->pair_cap ? b->pair_cap : 4096;
    while (cap < want * 2) cap *= 2;
    pair_slot *p = malloc(cap * sizeof *p);
    if (!p) return -1;
    for (size_t i = 0; i < cap; i++) p[i].key = UINT64_MAX;
    for (size_t i = 0; i < b->pair_cap; i++) {
        if (b->pairs[i].key == UINT64_MAX) continue;
        size_t h = pair_hash(b->pairs[i].key, cap);
        while (p[h].key != UINT64_MAX) h = (h + 1) & (cap - 1);
        p[h] = b->pairs[i];
    }
    free(b->pairs);
    b->pairs = p;
    b->pair_cap = cap;
    return 0;
}

static int pair_insert(llm_bpe *b, uint32_t left, uint32_t right, uint32_t rank, uint32_t result)
{
    if ((b->pair_used + 1) * 2 > b->pair_cap && pair_reserve(b, 2 * b->pair_used + 2)) return -1;
    uint64_t key = (uint64_t)left << 32 | right;
    size_t h = pair_hash(key, b->pair_cap);
    while (b->pairs[h].key != UINT64_MAX && b->pairs[h].key != key) h = (h + 1) & (b->pair_cap - 1);
    if (b->pairs[h].key == key) {   /* the first (lowest-rank) definition wins, as in tokenizers */
        if (rank < b->pairs[h].rank) { b->pairs[h].rank = rank; b->pairs[h].result = result; }
        return 0;
    }
    b->pairs[h] = (pair_slot){key, rank, result};
    b->pair_used++;
    return 0;
}

int llm_bpe_add_merge(llm_bpe *b, uint32_t left, uint32_t right, uint32_t rank, llm_err *err)
{
    size_t ln, rn;
    const unsigned char *lp = llm_bpe_token(b, left, &ln), *rp = llm_bpe_token(b, right, &rn);
    if (!lp || !rp) return llm_errf(err, "merge %u: token %u is not in the vocabulary", rank, lp ? right : left);
    unsigned char stack[256], *joined = ln + rn <= sizeof stack ? stack : malloc(ln + rn);
    if (!joined) return llm_errf(err, "out of memory");
    memcpy(joined, lp, ln);
    memcpy(joined + ln, rp, rn);
    uint32_t result;
    int found = llm_bpe_lookup(b, joined, ln + rn, &result) == 0;
    if (joined != stack) free(joined);
    if (!found) return llm_errf(err, "merge %u: the merged token is not in the vocabulary", rank);
    if (pair_insert(b, left, right, rank, result)) return llm_errf(err, "out of memory");
    return 0;
}

/* One thread's share of llm_bpe_merges_from_ranks: the splits of tokens
 * [from, to) into two tokens, as (x, y, t) triples. Only reads the vocabulary. */
typedef struct {
    const llm_bpe *b;
    uint32_t from, to;
    uint32_t *triples;
    size_t n, cap;
    int failed;
} split_job;

static void *find_splits(void *arg)
{
    split_job *j = arg;
    for (uint32_t id = j->from; id < j->to; id++) {
        size_t n;
        const unsigned char *p = llm_bpe_token(j->b, id, &n);
        if (!p || n < 2) continue;
        for (size_t k = 1; k < n; k++) {
            uint32_t x, y;
            if (llm_bpe_lookup(j->b, p, k, &x) || llm_bpe_lookup(j->b, p + k, n - k, &y)) continue;
            if (j->n + 3 > j->cap) {
                size_t cap = j->cap ? 2 * j->cap : 3 * 4096;
                uint32_t *t = realloc(j->triples, cap * sizeof *t);
                if (!t) { j->failed = 1; return NULL; }
                j->triples = t;
                j->cap = cap;
            }
            j->triples[j->n++] = x;
            j->triples[j->n++] = y;
            j->triples[j->n++] = id;
        }
    }
    return NULL;
}

int llm_bpe_merges_from_ranks(llm_bpe *b, llm_err *err)
{
    /* the lookups (most of a rank file's load time) run on up to 8 threads;
     * the inserts, in id order, on this one */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
    if (b->ntok < 4096) nthreads = 1;
    split_job jobs[8];
    pthread_t tids[8];
    int started[8] = {0};
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < nthreads; i++) {
        jobs[i].b = b;
        jobs[i].from = (uint32_t)(b->ntok * (size_t)i / (size_t)nthreads);
        jobs[i].to = (uint32_t)(b->ntok * (size_t)(i + 1) / (size_t)nthreads);
        if (i == 0) continue;
        started[i] = pthread_create(&tids[i], NULL, find_splits, &jobs[i]) == 0;
        if (!started[i]) find_splits(&jobs[i]);
    }
    find_splits(&jobs[0]);
    for (int i = 1; i < nthreads; i++)
        if (started[i]) pthread_join(tids[i], NULL);
    int rc = 0;
    size_t total = 0;
    for (int i = 0; i < nthreads; i++) { total += jobs[i].n / 3; rc |= jobs[i].failed; }
    if (!rc && pair_reserve(b, b->pair_used + total)) rc = 1;
    for (int i = 0; i < nthreads && !rc; i++)
        for (size_t k = 0; k < jobs[i].n && !rc; k += 3)
            rc = pair_insert(b, jobs[i].triples[k], jobs[i].triples[k + 1], jobs[i].triples[k + 2], jobs[i].triples[k + 2]);
    for (int i = 0; i < nthreads; i++) free(jobs[i].triples);
    return rc ? llm_errf(err, "out of memory") : 0;
}

void llm_bpe_set_whole_piece_lookup(llm_bpe *b, int on) { b->whole_piece = on; }

void llm_bpe_set_char_symbols(llm_bpe *b, int byte_fallback, uint32_t unk)
{
    b->char_symbols = 1;
    b->byte_fallback = byte_fallback;
    b->unk = unk;
    b->prepared = 0;
}

void llm_bpe_prepare(llm_bpe *b)
{
    for (int c = 0; c < 256; c++) {
        unsigned char byte = (unsigned char)c;
        char name[8];
        if (llm_bpe_lookup(b, &byte, 1, &b->byte_id[c])) b->byte_id[c] = NONE;
        snprintf(name, sizeof name, "<0x%02X>", c);
        if (llm_bpe_lookup(b, name, 6, &b->fallback_id[c])) b->fallback_id[c] = NONE;
    }
    b->prepared = 1;
}

/* ---- initial symbols ---- */

static size_t utf8_char_len(unsigned char c, size_t left)
{
    size_t n = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return n <= left ? n : 1;
}

/* Appends the initial symbols of the piece to syms. */
static int initial_symbols(const llm_bpe *b, const unsigned char *p, size_t n, llm_ids *syms, llm_err *err)
{
    if (!b->char_symbols) {
        for (size_t i = 0; i < n; i++) {
            uint32_t id = b->byte_id[p[i]];
            if (id == NONE) return llm_errf(err, "byte 0x%02x has no token in this vocabulary", p[i]);
            if (llm_ids_push(syms, id)) return llm_errf(err, "out of memory");
        }
        return 0;
    }
    for (size_t i = 0; i < n;) {
        size_t len = utf8_char_len(p[i], n - i);
        uint32_t id;
        if (llm_bpe_lookup(b, p + i, len, &id) == 0) {
            if (llm_ids_push(syms, id)) return llm_errf(err, "out of memory");
        } else if (b->byte_fallback) {
            for (size_t k = 0; k < len; k++) {
                uint32_t f = b->fallback_id[p[i + k]];
                if (f == NONE) f = b->unk;
                if (f != NONE && llm_ids_push(syms, f)) return llm_errf(err, "out of memory");
            }
        } else if (b->unk != NONE) {
            if (llm_ids_push(syms, b->unk)) return llm_errf(err, "out of memory");
        }
        i += len;
    }
    return 0;
}

/* ---- the merge loops ---- */

static uint32_t rank_of(const llm_bpe *b, uint32_t l, uint32_t r, uint32_t *result)
{
    const pair_slot *s = pair_find(b, l, r);
    if (!s) return NONE;
    *result = s->result;
    return s->rank;
}

int llm_bpe_encode_ref(const llm_bpe *cb, const unsigned char *piece, size_t n, llm_ids *out, llm_err *err)
{
    llm_bpe *b = (llm_bpe *)cb;
    if (!b->prepared) llm_bpe_prepare(b);
    uint32_t whole;
    if (b->whole_piece && llm_bpe_lookup(b, piece, n, &whole) == 0)
        return llm_ids_push(out, whole) ? llm_errf(err, "out of memory") : 0;
    llm_ids syms = {0};
    if (initial_symbols(b, piece, n, &syms, err)) { llm_ids_free(&syms); return -1; }
    for (;;) {
        uint32_t best = NONE, best_result = 0;
        size_t at = 0;
        for (size_t i = 0; i + 1 < syms.n; i++) {
            uint32_t result, r = rank_of(b, syms.v[i], syms.v[i + 1], &result);
            if (r < best) { best = r; at = i; best_result = result; }
        }
        if (best == NONE) break;
        syms.v[at] = best_result;
        memmove(syms.v + at + 1, syms.v + at + 2, (syms.n - at - 2) * sizeof *syms.v);
        syms.n--;
    }
    int rc = 0;
    for (size_t i = 0; i < syms.n && !rc; i++) rc = llm_ids_push(out, syms.v[i]);
    llm_ids_free(&syms);
    return rc ? llm_errf(err, "out of memory") : 0;
}

#define CACHE_SLOTS 4096
#define CACHE_PIECE 24
#define CACHE_IDS 12

typedef struct {
    unsigned char len, nids;
    unsigned char piece[CACHE_PIECE];
    uint32_t ids[CACHE_IDS];
} cache_slot;

/* The long-piece queue: candidate merges grouped by rank. A binary heap
 * holds only the distinct ranks present (few, so it stays in cache); each
 * rank's bucket holds the positions of its candidates, taken in position
 * order. A merge of rank r creates pairs of other ranks only (their tokens
 * are longer than r's), so a bucket does not grow while it is being drained;
 * a new pair of lower rank is taken before the rest of the bucket. */
typedef struct {
    uint32_t pos, left, right, result;   /* the pair it was made from, to check it still stands */
} cand;

typedef struct {
    uint32_t rank;
    cand *pos;
    size_t n, cap, next;     /* entries [next, n) are still to take */
    int unsorted;
} bucket;

/* One symbol of a long piece: its id (NONE once merged into its left
 * neighbour) and its neighbours, together so that a visit costs one cache
 * line (and one TLB entry) rather than three. */
typedef struct {
    uint32_t sym, next, prev;
} node;

struct llm_bpe_scratch {
    llm_ids syms;
    node *nodes;             /* long pieces: the symbols as a linked list */
    size_t nodes_cap;
    uint32_t *ranks;         /* heap of distinct ranks */
    size_t nranks, ranks_cap;
    bucket *buckets;         /* in use: [0, nbuckets) */
    size_t nbuckets, buckets_cap;
    uint32_t *slot;          /* open addressing: rank -> bucket index + 1 (0 = empty) */
    size_t slot_cap;
    cache_slot *cache;
};

llm_bpe_scratch *llm_bpe_scratch_new(void)
{
    llm_bpe_scratch *s = calloc(1, sizeof *s);
    if (s && !(s->cache = calloc(CACHE_SLOTS, sizeof *s->cache))) { free(s); return NULL; }
    return s;
}

void llm_bpe_scratch_free(llm_bpe_scratch *s)
{
    if (!s) return;
    llm_ids_free(&s->syms);
    free(s->nodes);
    free(s->ranks);
    for (size_t i = 0; i < s->buckets_cap; i++) free(s->buckets[i].pos);
    free(s->buckets);
    free(s->slot);
    free(s->cache);
    free(s);
}

static int rank_heap_push(llm_bpe_scratch *s, uint32_t r)
{
    if (s->nranks == s->ranks_cap) {
        size_t cap = s->ranks_cap ? 2 * s->ranks_cap : 256;
        uint32_t *v = realloc(s->ranks, cap * sizeof *v);
        if (!v) return -1;
        s->ranks = v;
        s->ranks_cap = cap;
    }
    size_t i = s->nranks++;
    while (i > 0 && s->ranks[(i - 1) / 2] > r) {
        s->ranks[i] = s->ranks[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->ranks[i] = r;
    return 0;
}

static void rank_heap_pop(llm_bpe_scratch *s)
{
    uint32_t last = s->ranks[--s->nranks];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        uint32_t mv = last;
        if (l < s->nranks && s->ranks[l] < mv) { m = l; mv = s->ranks[l]; }
        if (l + 1 < s->nranks && s->ranks[l + 1] < mv) m = l + 1;
        if (m == i) break;
        s->ranks[i] = s->ranks[m];
        i = m;
    }
    if (s->nranks) s->ranks[i] = last;
}

static size_t slot_of(const llm_bpe_scratch *s, uint32_t r)
{
    return (size_t)llm_hash_mix(r) & (s->slot_cap - 1);
}

/* The bucket of rank r, made (and its rank queued) when new. */
static bucket *bucket_for(llm_bpe_scratch *s, uint32_t r)
{
    size_t h = slot_of(s, r);
    for (; s->slot[h]; h = (h + 1) & (s->slot_cap - 1))
        if (s->buckets[s->slot[h] - 1].rank == r) {
            bucket *b = &s->buckets[s->slot[h] - 1];
            if (b->next == b->n && rank_heap_push(s, r)) return NULL;   /* drained earlier: queue again */
            return b;
        }
    if (s->nbuckets == s->buckets_cap) {
        size_t cap = s->buckets_cap ? 2 * s->buckets_cap : 256;
        bucket *nb = realloc(s->buckets, cap * sizeof *nb);
        if (!nb) return NULL;
        memset(nb + s->buckets_cap, 0, (cap - s->buckets_cap) * sizeof *nb);
        s->buckets = nb;
        s->buckets_cap = cap;
    }
    bucket *b = &s->buckets[s->nbuckets++];
    b->rank = r;
    b->n = b->next = 0;
    b->unsorted = 0;
    s->slot[h] = (uint32_t)s->nbuckets;
    if (rank_heap_push(s, r)) return NULL;
    return b;
}

static int candidate(llm_bpe_scratch *s, uint32_t r, cand c)
{
    bucket *b = bucket_for(s, r);
    if (!b) return -1;
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 16;
        cand *p = realloc(b->pos, cap * sizeof *p);
        if (!p) return -1;
        b->pos = p;
        b->cap = cap;
    }
    if (b->n > b->next && c.pos < b->pos[b->n - 1].pos) b->unsorted = 1;
    b->pos[b->n++] = c;
    return 0;
}

static int cmp_cand(const void *a, const void *b)
{
    uint32_t x = ((const cand *)a)->pos, y = ((const cand *)b)->pos;
    return x < y ? -1 : x > y;
}

/* Short pieces: the reference loop, keeping the rank of each adjacent pair so
 * that a merge looks up only the two pairs it changes. */
static void merge_small(const llm_bpe *b, uint32_t *sym, size_t *count)
{
    size_t n = *count;
    uint32_t rank[64], result[64];
    for (size_t i = 0; i + 1 < n; i++) rank[i] = rank_of(b, sym[i], sym[i + 1], &result[i]);
    while (n > 1) {
        uint32_t best = NONE;
        size_t at = 0;
        for (size_t i = 0; i + 1 < n; i++)
            if (rank[i] < best) { best = rank[i]; at = i; }
        if (best == NONE) break;
        /* symbols at+2.. move left by one; so do the pairs that start there */
        size_t tail = n - at - 2, pairs_tail = tail ? tail - 1 : 0;
        sym[at] = result[at];
        memmove(sym + at + 1, sym + at + 2, tail * sizeof *sym);
        memmove(rank + at + 1, rank + at + 2, pairs_tail * sizeof *rank);
        memmove(result + at + 1, result + at + 2, pairs_tail * sizeof *result);
        n--;
        if (at + 1 < n) rank[at] = rank_of(b, sym[at], sym[at + 1], &result[at]);
        if (at > 0) rank[at - 1] = rank_of(b, sym[at - 1], sym[at], &result[at - 1]);
    }
    *count = n;
}

/* Memory for the node list of a long piece: 2 MB pages where the kernel
 * gives them on request, since the merges visit the list all over. */
static node *node_alloc(size_t count)
{
    size_t bytes = count * sizeof(node);
    if (bytes < (4u << 20)) return malloc(bytes);
    size_t huge = 2u << 20, rounded = (bytes + huge - 1) / huge * huge;
    void *p;
    if (posix_memalign(&p, huge, rounded)) return NULL;
    madvise(p, rounded, MADV_HUGEPAGE);
    return p;
}

/* Long pieces: candidate merges in the rank queue above, over a linked list
 * of symbols. A candidate is stale when the pair at its position is no longer
 * the one it was made from. */
static int merge_large(const llm_bpe *b, llm_bpe_scratch *s, uint32_t *sym, size_t *count)
{
    size_t n = *count;
    if (n > s->nodes_cap) {
        free(s->nodes);
        s->nodes_cap = 0;
        if (!(s->nodes = node_alloc(n))) return -1;
        s->nodes_cap = n;
    }
    /* distinct ranks are at most the vocabulary: size the table by that, not n */
    size_t distinct = n < b->ntok ? n : b->ntok, want = 1024;
    while (want < 2 * distinct) want *= 2;
    if (want > s->slot_cap) {
        uint32_t *sl = realloc(s->slot, want * sizeof *sl);
        if (!sl) return -1;
        s->slot = sl;
        s->slot_cap = want;
    }
    memset(s->slot, 0, s->slot_cap * sizeof *s->slot);
    s->nbuckets = 0;
    s->nranks = 0;
    node *nd = s->nodes;
    uint32_t result;
    for (size_t i = 0; i < n; i++)
        nd[i] = (node){sym[i], i + 1 < n ? (uint32_t)(i + 1) : NONE, i ? (uint32_t)(i - 1) : NONE};
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t r = rank_of(b, sym[i], sym[i + 1], &result);
        if (r != NONE && candidate(s, r, (cand){(uint32_t)i, sym[i], sym[i + 1], result})) return -1;
    }
    while (s->nranks) {
        uint32_t r = s->ranks[0];
        rank_heap_pop(s);
        size_t h = slot_of(s, r);
        while (s->buckets[s->slot[h] - 1].rank != r) h = (h + 1) & (s->slot_cap - 1);
        size_t bi = s->slot[h] - 1;
        if (s->buckets[bi].unsorted) {
            bucket *bk = &s->buckets[bi];
            qsort(bk->pos + bk->next, bk->n - bk->next, sizeof *bk->pos, cmp_cand);
            bk->unsorted = 0;
        }
        while (s->buckets[bi].next < s->buckets[bi].n) {
            if (s->nranks && s->ranks[0] < r) {          /* a lower rank appeared: it goes first */
                if (rank_heap_push(s, r)) return -1;
                break;
            }
            bucket *bk = &s->buckets[bi];
            /* the positions ahead are known: fetch their nodes while this one is merged */
            if (bk->next + 8 < bk->n) __builtin_prefetch(&nd[bk->pos[bk->next + 8].pos]);
            cand c = bk->pos[bk->next++];
            uint32_t pos = c.pos, right = nd[pos].next;
            if (nd[pos].sym != c.left || right == NONE || nd[right].sym != c.right) continue;   /* stale */
            nd[pos].sym = c.result;
            nd[right].sym = NONE;
            nd[pos].next = nd[right].next;
            if (nd[right].next != NONE) nd[nd[right].next].prev = pos;
            uint32_t p = nd[pos].prev, q = nd[pos].next, nr;
            /* (candidate may grow the buckets array: index, never hold a pointer) */
            if (p != NONE && (nr = rank_of(b, nd[p].sym, nd[pos].sym, &result)) != NONE &&
                candidate(s, nr, (cand){p, nd[p].sym, nd[pos].sym, result}))
                return -1;
            if (q != NONE && (nr = rank_of(b, nd[pos].sym, nd[q].sym, &result)) != NONE &&
                candidate(s, nr, (cand){pos, nd[pos].sym, nd[q].sym, result}))
                return -1;
        }
    }
    size_t k = 0;
    for (uint32_t i = 0; i != NONE; i = nd[i].next) sym[k++] = nd[i].sym;
    *count = k;
    return 0;
}

int llm_bpe_encode(const llm_bpe *cb, llm_bpe_scratch *s, const unsigned char *piece, size_t n, llm_ids *out,
                   llm_err *err)
{
    llm_bpe *b = (llm_bpe *)cb;
    if (!b->prepared) llm_bpe_prepare(b);   /* tokenizers prepare at load; this is for direct users */
    uint32_t id;
    if (b->whole_piece && llm_bpe_lookup(b, piece, n, &id) == 0)
        return llm_ids_push(out, id) ? llm_errf(err, "out of memory") : 0;
    cache_slot *slot = NULL;
    if (n <= CACHE_PIECE) {
        slot = &s->cache[llm_hash_bytes(piece, n) & (CACHE_SLOTS - 1)];
        if (slot->len == n && slot->nids && !memcmp(slot->piece, piece, n)) {
            for (size_t i = 0; i < slot->nids; i++)
                if (llm_ids_push(out, slot->ids[i])) return llm_errf(err, "out of memory");
            return 0;
        }
    }
    s->syms.n = 0;
    if (initial_symbols(b, piece, n, &s->syms, err)) return -1;
    size_t count = s->syms.n;
    if (count <= 64) merge_small(b, s->syms.v, &count);
    else if (merge_large(b, s, s->syms.v, &count)) return llm_errf(err, "out of memory");
    for (size_t i = 0; i < count; i++)
        if (llm_ids_push(out, s->syms.v[i])) return llm_errf(err, "out of memory");
    if (slot && count && count <= CACHE_IDS) {   /* (an empty result, all dropped, is not kept) */
        slot->len = (unsigned char)n;
        slot->nids = (unsigned char)count;
        memcpy(slot->piece, piece, n);
        memcpy(slot->ids, s->syms.v, count * sizeof *slot->ids);
    }
    return 0;
}
