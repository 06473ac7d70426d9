#include "bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- hashing ---- */

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    return mix(h ^ w);
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
    uint32_t *index;                 /* open addressing: bytes -> id (NONE = empty) */
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
    uint32_t *idx = malloc(cap * sizeof *idx);
    if (!idx) return -1;
    memset(idx, 0xff, cap * sizeof *idx);
    for (size_t i = 0; i < b->index_cap; i++) {
        uint32_t id = b->index[i];
        if (id == NONE) continue;
        size_t n;
        const unsigned char *p = llm_bpe_token(b, id, &n);
        size_t h = (size_t)hash_bytes(p, n) & (cap - 1);
        while (idx[h] != NONE) h = (h + 1) & (cap - 1);
        idx[h] = id;
    }
    free(b->index);
    b->index = idx;
    b->index_cap = cap;
    return 0;
}

int llm_bpe_lookup(const llm_bpe *b, const void *bytes, size_t n, uint32_t *id)
{
    if (!b->index_cap) return -1;
    size_t h = (size_t)hash_bytes(bytes, n) & (b->index_cap - 1);
    for (;; h = (h + 1) & (b->index_cap - 1)) {
        uint32_t cand = b->index[h];
        if (cand == NONE) return -1;
        size_t m;
        const unsigned char *p = llm_bpe_token(b, cand, &m);
        if (m == n && !memcmp(p, bytes, n)) { *id = cand; return 0; }
    }
}

int llm_bpe_set_token(llm_bpe *b, uint32_t id, const void *bytes, size_t n, llm_err *err)
{
    if (n == 0 || n >= (1u << 24)) return llm_errf(err, "token %u: length %zu is out of range", id, n);
    if (id == NONE) return llm_errf(err, "token id %u is out of range", id);
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
    size_t h = (size_t)hash_bytes(bytes, n) & (b->index_cap - 1);
    while (b->index[h] != NONE) h = (h + 1) & (b->index_cap - 1);
    b->index[h] = id;
    b->index_used++;
    b->prepared = 0;
    return 0;
}

static size_t pair_hash(uint64_t key, size_t cap) { return (size_t)mix(key) & (cap - 1); }

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

static int pair_insert(llm_bpe *b, uint32_t left, uint32_t right, uint32_t rank, uint32_t result)
{
    if ((b->pair_used + 1) * 2 > b->pair_cap) {
        size_t cap = b->pair_cap ? 2 * b->pair_cap : 4096;
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
    }
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

int llm_bpe_merges_from_ranks(llm_bpe *b, llm_err *err)
{
    for (uint32_t id = 0; id < b->ntok; id++) {
        size_t n;
        const unsigned char *p = llm_bpe_token(b, id, &n);
        if (!p || n < 2) continue;
        for (size_t k = 1; k < n; k++) {
            uint32_t x, y;
            if (llm_bpe_lookup(b, p, k, &x) == 0 && llm_bpe_lookup(b, p + k, n - k, &y) == 0 &&
                pair_insert(b, x, y, id, id))
                return llm_errf(err, "out of memory");
        }
    }
    return 0;
}

void llm_bpe_set_whole_piece_lookup(llm_bpe *b, int on) { b->whole_piece = on; }

void llm_bpe_set_char_symbols(llm_bpe *b, int byte_fallback, uint32_t unk)
{
    b->char_symbols = 1;
    b->byte_fallback = byte_fallback;
    b->unk = unk;
    b->prepared = 0;
}

static void prepare(llm_bpe *b)
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
    if (!b->prepared) prepare(b);
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

/* Heap entry: a candidate merge of the symbol at `pos` with its right
 * neighbour, valid while both still hold the ids it was made from. */
typedef struct {
    uint32_t rank, pos, left, right;
} cand;

static int cand_less(const cand *a, const cand *b) { return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos; }

typedef struct {
    cand *v;
    size_t n, cap;
} heap;

static int heap_push(heap *h, cand c)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 256;
        cand *v = realloc(h->v, cap * sizeof *v);
        if (!v) return -1;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_less(&c, &h->v[parent])) break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = c;
    return 0;
}

static cand heap_pop(heap *h)
{
    cand top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *mc = &last;
        if (l < h->n && cand_less(&h->v[l], mc)) { m = l; mc = &h->v[l]; }
        if (r < h->n && cand_less(&h->v[r], mc)) { m = r; }
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n) h->v[i] = last;
    return top;
}

#define CACHE_SLOTS 4096
#define CACHE_PIECE 24
#define CACHE_IDS 12

typedef struct {
    unsigned char len, nids;
    unsigned char piece[CACHE_PIECE];
    uint32_t ids[CACHE_IDS];
} cache_slot;

struct llm_bpe_scratch {
    llm_ids syms;
    uint32_t *next, *prev;   /* linked list over symbol positions */
    size_t list_cap;
    heap h;
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
    free(s->next);
    free(s->prev);
    free(s->h.v);
    free(s->cache);
    free(s);
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

/* Long pieces: a heap of candidate merges over a linked list. */
static int merge_large(const llm_bpe *b, llm_bpe_scratch *s, uint32_t *sym, size_t *count)
{
    size_t n = *count;
    if (n > s->list_cap) {
        uint32_t *nx = realloc(s->next, n * sizeof *nx), *pv = realloc(s->prev, n * sizeof *pv);
        if (nx) s->next = nx;
        if (pv) s->prev = pv;
        if (!nx || !pv) return -1;
        s->list_cap = n;
    }
    uint32_t *next = s->next, *prev = s->prev;
    heap *h = &s->h;
    h->n = 0;
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (uint32_t)(i + 1) : NONE;
        prev[i] = i ? (uint32_t)(i - 1) : NONE;
        uint32_t result;
        if (i + 1 < n) {
            uint32_t r = rank_of(b, sym[i], sym[i + 1], &result);
            if (r != NONE && heap_push(h, (cand){r, (uint32_t)i, sym[i], sym[i + 1]})) return -1;
        }
    }
    while (h->n) {
        cand c = heap_pop(h);
        uint32_t right = next[c.pos];
        if (sym[c.pos] != c.left || right == NONE || sym[right] != c.right) continue;   /* stale */
        uint32_t result;
        rank_of(b, c.left, c.right, &result);
        sym[c.pos] = result;
        sym[right] = NONE;                       /* removed */
        next[c.pos] = next[right];
        if (next[right] != NONE) prev[next[right]] = c.pos;
        uint32_t p = prev[c.pos], q = next[c.pos], r;
        if (p != NONE && (r = rank_of(b, sym[p], sym[c.pos], &result)) != NONE &&
            heap_push(h, (cand){r, p, sym[p], sym[c.pos]}))
            return -1;
        if (q != NONE && (r = rank_of(b, sym[c.pos], sym[q], &result)) != NONE &&
            heap_push(h, (cand){r, c.pos, sym[c.pos], sym[q]}))
            return -1;
    }
    size_t k = 0;
    for (uint32_t i = 0; i != NONE && i < n; i = next[i]) sym[k++] = sym[i];
    *count = k;
    return 0;
}

int llm_bpe_encode(const llm_bpe *cb, llm_bpe_scratch *s, const unsigned char *piece, size_t n, llm_ids *out,
                   llm_err *err)
{
    llm_bpe *b = (llm_bpe *)cb;
    if (!b->prepared) prepare(b);   /* first use; callers encode from one thread first */
    uint32_t id;
    if (b->whole_piece && llm_bpe_lookup(b, piece, n, &id) == 0)
        return llm_ids_push(out, id) ? llm_errf(err, "out of memory") : 0;
    cache_slot *slot = NULL;
    if (n <= CACHE_PIECE) {
        slot = &s->cache[hash_bytes(piece, n) & (CACHE_SLOTS - 1)];
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
    if (slot && count <= CACHE_IDS) {
        slot->len = (unsigned char)n;
        slot->nids = (unsigned char)count;
        memcpy(slot->piece, piece, n);
        memcpy(slot->ids, s->syms.v, count * sizeof *slot->ids);
    }
    return 0;
}
