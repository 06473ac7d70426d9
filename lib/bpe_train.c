/* bpe_train.c — byte-level BPE training (see bpe_train.h), and the writer of
 * the tokenizer.json it produces.
 *
 * Layout of the training state (all arrays indexed by plain integers, grown
 * by doubling):
 *   words   one entry per distinct word of two bytes or more: its count and
 *           its current symbols (token ids) in one shared array, rewritten in
 *           place as merges shorten it;
 *   pairs   one entry per pair of ids ever seen adjacent: its weighted count
 *           (signed: updated by +/- deltas), and a singly linked list (in one
 *           node pool) of the words it was added to — possibly stale or
 *           repeated, which the merge loop tolerates;
 *   heap    (count, pair) entries, a max-heap on count then the smaller pair;
 *           an entry whose count is no longer the pair's is re-pushed with
 *           the current count when popped (lazy deletion). Every pair whose
 *           count grows gets a fresh entry, so the top entry, once its count
 *           is current, is the true maximum. */
#include "bpe_train.h"
#include "hash.h"
#include "unicode.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- GPT-2's byte-to-unicode mapping ---- */

static int bl_printable(unsigned b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174); }

typedef struct {
    unsigned cp[256];           /* byte -> code point */
    unsigned char utf8[256][2]; /* its UTF-8 (every code point is < 0x800) */
    unsigned char len[256];
    unsigned char order[256];   /* bytes ordered by code point: GPT-2's id order */
} bytelevel;

static void bytelevel_init(bytelevel *bl)
{
    unsigned extra = 0;
    for (unsigned b = 0; b < 256; b++) bl->cp[b] = bl_printable(b) ? b : 256 + extra++;
    for (unsigned b = 0; b < 256; b++) {
        unsigned c = bl->cp[b];
        if (c < 0x80) { bl->utf8[b][0] = (unsigned char)c; bl->len[b] = 1; }
        else { bl->utf8[b][0] = (unsigned char)(0xc0 | (c >> 6)); bl->utf8[b][1] = (unsigned char)(0x80 | (c & 0x3f)); bl->len[b] = 2; }
    }
    unsigned n = 0;
    for (unsigned b = 0; b < 256; b++) if (bl_printable(b)) bl->order[n++] = (unsigned char)b;
    for (unsigned b = 0; b < 256; b++) if (!bl_printable(b)) bl->order[n++] = (unsigned char)b;
}

/* Decodes one UTF-8 character at s[0..n); returns its length (0 if invalid). */
static size_t utf8_char(const unsigned char *s, size_t n, unsigned *cp)
{
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    size_t len;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; c &= 0x1f; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; c &= 0x0f; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; c &= 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    *cp = c;
    return len;
}

/* Offset of the first invalid byte, or n when s[0..n) is valid UTF-8. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
    return llm_utf8_valid_prefix((const char *)s, n);
}

/* ---- a hash map of byte strings -> counts (or ids) ---- */


/* Keys of up to 16 bytes live in the slot itself (zero-padded), so that
 * counting a short word touches one cache line; longer keys live in an arena. */
#define INLINE_KEY 16

typedef struct {
    uint64_t count; /* 0: empty slot */
    uint32_t hash;  /* low half of the 64-bit hash; the slot index derives from it */
    uint32_t len;
    union {
        uint64_t w[2];  /* len <= INLINE_KEY: the key */
        uint64_t off;   /* else: its offset in the arena */
    } k;
} wslot;

_Static_assert(sizeof(wslot) == 32, "two slots per cache line");

typedef struct {
    wslot *slots;
    size_t mask, used;
    unsigned char *arena;
    size_t alen, acap;
} wmap;

static void wmap_free(wmap *m)
{
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

static inline const unsigned char *wslot_key(const wmap *m, const wslot *s)
{
    return s->len <= INLINE_KEY ? (const unsigned char *)s->k.w : m->arena + s->k.off;
}

/* Loads a short key zero-padded; `avail` bytes may be read from p (>= n). */
static inline void key_load(const unsigned char *p, size_t n, size_t avail, uint64_t w[2])
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (avail >= 16) {
        memcpy(w, p, 16);
        w[0] &= n >= 8 ? ~0ull : (1ull << (8 * n)) - 1;
        w[1] &= n >= 16 ? ~0ull : n <= 8 ? 0 : (1ull << (8 * (n - 8))) - 1;
        return;
    }
#endif
    (void)avail;
    w[0] = w[1] = 0;
    memcpy(w, p, n);
}

static inline uint64_t hash_short(const uint64_t w[2], size_t n)
{
    return llm_hash_mix((w[0] * 0x9e3779b97f4a7c15ull) ^ ((w[1] + n) * 0xc2b2ae3d27d4eb4full));
}

static int wmap_grow(wmap *m)
{
    size_t cap = m->slots ? (m->mask + 1) * 2 : 1024;
    wslot *s = aligned_alloc(64, cap * sizeof *s); /* a slot never straddles two cache lines */
    if (!s) return -1;
    memset(s, 0, cap * sizeof *s);
    if (m->slots) {
        for (size_t i = 0; i <= m->mask; i++) {
            wslot *o = &m->slots[i];
            if (!o->count) continue;
            size_t j = o->hash & (cap - 1);
            while (s[j].count) j = (j + 1) & (cap - 1);
            s[j] = *o;
        }
        free(m->slots);
    }
    m->slots = s;
    m->mask = cap - 1;
    return 0;
}

/* A key ready for lookup: its hash, and its bytes when short. */
typedef struct {
    const unsigned char *p;
    size_t n;
    uint64_t w[2];
    uint32_t hash;
} wkey;

static inline void wkey_make(wkey *k, const unsigned char *p, size_t n, size_t avail)
{
    k->p = p;
    k->n = n;
    if (n <= INLINE_KEY) {
        key_load(p, n, avail, k->w);
        k->hash = (uint32_t)hash_short(k->w, n);
    } else {
        k->w[0] = k->w[1] = 0;
        k->hash = (uint32_t)llm_hash_bytes(p, n);
    }
}

/* Finds the key or, when `count` is not 0, inserts it; adds `count` to its
 * value. Returns the slot; NULL when absent (count 0) or out of memory. */
static wslot *wmap_upsert_key(wmap *m, const wkey *kk, uint64_t count)
{
    if (count && (!m->slots || (m->used + 1) * 2 > m->mask + 1))
        if (wmap_grow(m)) return NULL;
    if (!m->slots) return NULL;
    const unsigned char *key = kk->p;
    size_t n = kk->n;
    const uint64_t *w = kk->w;
    uint32_t hash = kk->hash;
    size_t i = hash & m->mask;
    for (;; i = (i + 1) & m->mask) {
        wslot *s = &m->slots[i];
        if (!s->count) break;
        if (s->hash != hash || s->len != n) continue;
        if (n <= INLINE_KEY ? (s->k.w[0] == w[0] && s->k.w[1] == w[1]) : !memcmp(m->arena + s->k.off, key, n)) {
            s->count += count;
            return s;
        }
    }
    if (!count) return NULL;
    wslot *s = &m->slots[i];
    if (n <= INLINE_KEY) {
        s->k.w[0] = w[0];
        s->k.w[1] = w[1];
    } else {
        if (m->alen + n > m->acap) {
            size_t cap = m->acap ? m->acap : 4096;
            while (cap < m->alen + n) cap *= 2;
            unsigned char *a = realloc(m->arena, cap);
            if (!a) return NULL;
            m->arena = a;
            m->acap = cap;
        }
        memcpy(m->arena + m->alen, key, n);
        s->k.off = m->alen;
        m->alen += n;
    }
    s->count = count;
    s->len = (uint32_t)n;
    s->hash = hash;
    m->used++;
    return s;
}

static wslot *wmap_upsert(wmap *m, const unsigned char *key, size_t n, size_t avail, uint64_t count)
{
    wkey k;
    wkey_make(&k, key, n, avail);
    return wmap_upsert_key(m, &k, count);
}

static wslot *wmap_add(wmap *m, const unsigned char *key, size_t n, uint64_t count)
{
    return wmap_upsert(m, key, n, n, count);
}

static wslot *wmap_find(wmap *m, const unsigned char *key, size_t n) { return wmap_upsert(m, key, n, n, 0); }

/* ---- the trainer ---- */

struct llm_bpe_trainer {
    const llm_pretok *p;
    int threads;
    size_t min_chunk;
    wmap words;
    uint64_t total;
    size_t out_vocab, out_merges;
};

llm_bpe_trainer *llm_bpe_trainer_new(const llm_pretok *p)
{
    llm_bpe_trainer *t = calloc(1, sizeof *t);
    if (t) t->p = p;
    return t;
}

void llm_bpe_trainer_free(llm_bpe_trainer *t)
{
    if (!t) return;
    wmap_free(&t->words);
    free(t);
}

void llm_bpe_trainer_set_threads(llm_bpe_trainer *t, int threads, size_t min_chunk)
{
    t->threads = threads;
    t->min_chunk = min_chunk;
}

size_t llm_bpe_trainer_words(const llm_bpe_trainer *t, uint64_t *total)
{
    if (total) *total = t->total;
    return t->words.used;
}

size_t llm_bpe_trainer_vocab_size(const llm_bpe_trainer *t) { return t->out_vocab; }
size_t llm_bpe_trainer_merges(const llm_bpe_trainer *t) { return t->out_merges; }

static int count_word(wmap *m, const unsigned char *w, size_t n, size_t avail, uint64_t count)
{
    return wmap_upsert(m, w, n, avail, count) ? 0 : -1;
}

int llm_bpe_trainer_add_word(llm_bpe_trainer *t, const void *word, size_t n, uint64_t count, llm_err *err)
{
    if (n == 0) return llm_errf(err, "bpe train: empty word");
    if (n > UINT32_MAX) return llm_errf(err, "bpe train: word of %zu bytes is too long", n);
    if (count == 0) return 0;
    if (count_word(&t->words, word, n, n, count)) return llm_errf(err, "bpe train: out of memory");
    t->total += count;
    return 0;
}

/* ---- counting, in chunks on threads ---- */

#define PENDING 64 /* pieces a chunk keeps aside until its start is resynchronised */

typedef struct {
    const llm_pretok *p;
    const char *text;
    size_t n;
    size_t q, qnext;          /* chunk start; the chain stops at the first position >= qnext */
    int keep_pending;         /* all chunks but the first */
    wmap own, *map;           /* the first chunk counts straight into the trainer's map */
    uint64_t total;
    size_t pstart[PENDING], pend[PENDING];
    int npend;
    size_t z;                 /* where the chain stopped */
    int failed;               /* 1: out of memory; 2: piece too long */
} chunk_job;

static int is_pcre(const llm_pretok *p) { return !strcmp(llm_pretok_engine(p), "pcre2"); }

#define RING 8 /* pieces in flight: each one's slot is prefetched RING pieces before it is counted */

static void *count_chunk(void *arg)
{
    chunk_job *j = arg;
    llm_pretok_scratch *s = llm_pretok_scratch_new(j->p);
    if (!s && is_pcre(j->p)) { j->failed = 1; return NULL; }
    const unsigned char *text = (const unsigned char *)j->text;
    wkey ring[RING];
    unsigned head = 0, inflight = 0;
    size_t pos = j->q, st, en;
    while (pos < j->qnext) {
        if (!llm_pretok_find(j->p, s, j->text, j->n, pos, &st, &en)) { pos = j->n; break; }
        pos = en;
        if (j->keep_pending && j->npend < PENDING) {
            j->pstart[j->npend] = st;
            j->pend[j->npend++] = en;
            continue;
        }
        if (en - st > UINT32_MAX) { j->failed = 2; break; }
        if (inflight == RING) {
            if (!wmap_upsert_key(j->map, &ring[head], 1)) { j->failed = 1; break; }
            inflight--;
            head = (head + 1) % RING;
        }
        wkey *k = &ring[(head + inflight++) % RING];
        wkey_make(k, text + st, en - st, j->n - st);
        if (j->map->slots) __builtin_prefetch(&j->map->slots[k->hash & j->map->mask]);
        j->total++;
    }
    for (; inflight && !j->failed; inflight--, head = (head + 1) % RING)
        if (!wmap_upsert_key(j->map, &ring[head], 1)) j->failed = 1;
    j->z = pos;
    llm_pretok_scratch_free(s);
    return NULL;
}

/* Merges src's counts into dst. */
static int wmap_merge(wmap *dst, const wmap *src)
{
    for (size_t i = 0; src->slots && i <= src->mask; i++) {
        const wslot *s = &src->slots[i];
        if (!s->count) continue;
        if (!wmap_add(dst, wslot_key(src, s), s->len, s->count)) return -1;
    }
    return 0;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

int llm_bpe_trainer_add_text(llm_bpe_trainer *t, const char *text, size_t n, llm_err *err)
{
    if (!t->p) return llm_errf(err, "bpe train: no pretokenizer to split text with");
    size_t bad = utf8_invalid_at((const unsigned char *)text, n);
    if (bad < n) return llm_errf(err, "invalid UTF-8 at byte %zu", bad);
    if (n == 0) return 0;

    size_t min_chunk = t->min_chunk ? t->min_chunk : (size_t)1 << 20;
    int nt = t->threads > 0 ? t->threads : online_cpus();
    if ((size_t)nt > n / min_chunk) nt = (int)(n / min_chunk);
    if (nt < 1) nt = 1;

    chunk_job *jobs = calloc((size_t)nt, sizeof *jobs);
    pthread_t *tids = calloc((size_t)nt, sizeof *tids);
    char *started = calloc((size_t)nt, 1);
    if (!jobs || !tids || !started) {
        free(jobs), free(tids), free(started);
        return llm_errf(err, "bpe train: out of memory");
    }
    /* chunk starts: just after a newline near the even split, else the next
     * character start (any start is correct; a newline resyncs at once) */
    size_t prev = 0;
    for (int i = 0; i < nt; i++) {
        size_t q = 0;
        if (i > 0) {
            q = n / (size_t)nt * (size_t)i;
            if (q < prev) q = prev;
            size_t lim = q + 4096 < n ? q + 4096 : n;
            size_t k = q;
            while (k < lim && text[k] != '\n') k++;
            if (k < lim) q = k + 1;
            else while (q < n && ((unsigned char)text[q] & 0xc0) == 0x80) q++;
        }
        jobs[i].q = q;
        prev = q;
    }
    int rc = 0;
    for (int i = 0; i < nt; i++) {
        chunk_job *j = &jobs[i];
        j->p = t->p;
        j->text = text;
        j->n = n;
        j->qnext = i + 1 < nt ? jobs[i + 1].q : n;
        j->keep_pending = i > 0;
        j->map = i == 0 ? &t->words : &j->own;
    }
    for (int i = 1; i < nt; i++)
        started[i] = pthread_create(&tids[i], NULL, count_chunk, &jobs[i]) == 0;
    count_chunk(&jobs[0]);
    for (int i = 1; i < nt; i++) {
        if (started[i]) pthread_join(tids[i], NULL);
        else count_chunk(&jobs[i]);
    }

    /* walk the seams in order: continue the true chain from where the chunk
     * before stopped until it lands on one of the positions the next chunk
     * started from; then that chunk's counts are the chain's. */
    llm_pretok_scratch *s = llm_pretok_scratch_new(t->p);
    int failed = jobs[0].failed;
    t->total += jobs[0].total;
    size_t pos = jobs[0].z, st, en;
    int i = 1;
    if (!s && is_pcre(t->p)) failed = 1;
    for (; i < nt && !failed; i++) {
        chunk_job *j = &jobs[i];
        if (j->failed) { failed = j->failed; break; }
        int k = 0, synced = 0;
        for (;;) {
            size_t ck = k == 0 ? j->q : j->pend[k - 1];
            while (k < j->npend && ck < pos) ck = j->pend[k++];
            if (ck == pos) { synced = 1; break; }
            if (ck < pos) break;            /* passed every pending position */
            if (!llm_pretok_find(t->p, s, text, n, pos, &st, &en)) st = en = n;
            if (en > st) {
                if (en - st > UINT32_MAX) { failed = 2; break; }
                if (count_word(&t->words, (const unsigned char *)text + st, en - st, n - st, 1)) { failed = 1; break; }
                t->total++;
            }
            pos = en;
        }
        if (failed || !synced) break;
        for (int m = k; m < j->npend; m++) {
            if (j->pend[m] - j->pstart[m] > UINT32_MAX) { failed = 2; break; }
            if (count_word(&t->words, (const unsigned char *)text + j->pstart[m], j->pend[m] - j->pstart[m],
                           n - j->pstart[m], 1)) {
                failed = 1;
                break;
            }
            t->total++;
        }
        if (failed || wmap_merge(&t->words, &j->own)) { failed = failed ? failed : 1; break; }
        t->total += j->total;
        pos = j->z;
    }
    if (!failed && i < nt) {
        /* no resync near chunk i's start (a pattern whose matches depend on
         * far context): the rest of the text, in one pass */
        while (pos < n && !failed) {
            if (!llm_pretok_find(t->p, s, text, n, pos, &st, &en)) break;
            if (en - st > UINT32_MAX) failed = 2;
            else if (count_word(&t->words, (const unsigned char *)text + st, en - st, n - st, 1)) failed = 1;
            else t->total++;
            pos = en;
        }
    }
    if (failed == 1) rc = llm_errf(err, "bpe train: out of memory");
    else if (failed == 2) rc = llm_errf(err, "bpe train: a piece of 4 GiB or more");
    llm_pretok_scratch_free(s);
    for (int m = 1; m < nt; m++) wmap_free(&jobs[m].own);
    free(jobs), free(tids), free(started);
    return rc;
}

/* ---- training ---- */

#define NONE UINT32_MAX

typedef struct { uint64_t count, key; uint32_t pair; } heap_ent;

typedef struct {
    /* words */
    size_t nw;
    struct word {
        uint64_t count;
        uint64_t off;          /* its symbols: syms[off .. off + len) */
        uint32_t len;
        uint32_t stamp;        /* the merge step that last visited it */
    } *words;
    uint32_t *syms;
    /* pairs */
    size_t np, pcap;
    struct pair {
        int64_t count;         /* weighted occurrences now */
        uint64_t key;          /* left id << 32 | right id */
        uint64_t voff;         /* its words: va[voff .. voff + vlen), capacity vcap */
        uint32_t vlen, vcap;
        uint32_t last;         /* the word last added to the list */
        uint32_t flags;        /* 1: touched this step; 2: merged before */
    } *pairs;
    struct pslot { uint64_t key; uint64_t id1; } *pslot; /* open addressing: id + 1, 0 empty */
    size_t pmask;
    /* word lists, one vector per pair in one arena: the initial ones packed
     * in word order; vectors that grow move to blocks of 2^k entries, and
     * freed blocks go to a free list per k (the link in their first 8 bytes) */
    uint32_t *va;
    size_t valen, vacap;
    uint64_t vfree[33];
    /* heap */
    heap_ent *heap;
    size_t nh, hcap;
    uint32_t *touched;
    size_t ntouched, tcap;
    /* tokens */
    wmap tokmap;               /* bytes -> id + 1 */
    unsigned char *tb;         /* token bytes */
    size_t tblen, tbcap;
    uint64_t *toff;
    uint32_t *tlen;
    size_t ntok, tokcap;
    /* merges */
    uint32_t *merges;          /* pairs (left, right) */
    size_t nmerges, mcap;
    int oom;
} tstate;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static inline size_t pair_home(uint64_t key, size_t mask) { return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 20) & mask; }

static int pairs_rehash(tstate *s)
{
    size_t cap = s->pslot ? (s->pmask + 1) * 2 : 1 << 16;
    struct pslot *slot = aligned_alloc(64, cap * sizeof *slot);
    if (!slot) return -1;
    memset(slot, 0, cap * sizeof *slot);
    for (size_t i = 0; i < s->np; i++) {
        size_t j = pair_home(s->pairs[i].key, cap - 1);
        while (slot[j].id1) j = (j + 1) & (cap - 1);
        slot[j].key = s->pairs[i].key;
        slot[j].id1 = i + 1;
    }
    free(s->pslot);
    s->pslot = slot;
    s->pmask = cap - 1;
    return 0;
}

/* The index of pair (a, b), created when new; NONE when out of memory. */
static uint32_t pair_get(tstate *s, uint32_t a, uint32_t b)
{
    uint64_t key = (uint64_t)a << 32 | b;
    size_t i = pair_home(key, s->pmask);
    for (;; i = (i + 1) & s->pmask) {
        if (!s->pslot[i].id1) break;
        if (s->pslot[i].key == key) return (uint32_t)(s->pslot[i].id1 - 1);
    }
    if (s->np + 1 >= NONE) return NONE;
    if (grow((void **)&s->pairs, &s->pcap, s->np + 1, sizeof *s->pairs)) return NONE;
    uint32_t id = (uint32_t)s->np++;
    s->pairs[id] = (struct pair){0, key, 0, 0, 0, NONE, 0};
    s->pslot[i].key = key;
    s->pslot[i].id1 = (uint64_t)id + 1;
    if (s->np * 2 > s->pmask + 1 && pairs_rehash(s)) return NONE;
    return id;
}

static int vec_alloc(tstate *s, unsigned k, uint64_t *off)
{
    if (s->vfree[k] != UINT64_MAX) {
        *off = s->vfree[k];
        memcpy(&s->vfree[k], s->va + *off, sizeof s->vfree[k]);
        return 0;
    }
    if (grow((void **)&s->va, &s->vacap, s->valen + ((size_t)1 << k), sizeof *s->va)) return -1;
    *off = s->valen;
    s->valen += (size_t)1 << k;
    return 0;
}

static void vec_free(tstate *s, uint64_t off, uint32_t cap)
{
    if (cap < 2) return;
    unsigned k = 31u - (unsigned)__builtin_clz(cap); /* a block serves the class it covers */
    memcpy(s->va + off, &s->vfree[k], sizeof s->vfree[k]);
    s->vfree[k] = off;
}

static int pair_add_word(tstate *s, uint32_t pid, uint32_t w)
{
    struct pair *pr = &s->pairs[pid];
    if (pr->last == w) return 0;
    uint32_t len = pr->vlen;
    if (len == pr->vcap) {
        if (len >= 1u << 30) return -1;
        unsigned k = len < 2 ? 1 : 32u - (unsigned)__builtin_clz(len); /* 2^k > len */
        uint64_t off;
        if (vec_alloc(s, k, &off)) return -1;
        memcpy(s->va + off, s->va + pr->voff, len * sizeof *s->va);
        vec_free(s, pr->voff, pr->vcap);
        pr->voff = off;
        pr->vcap = 1u << k;
    }
    s->va[pr->voff + len] = w;
    pr->vlen = len + 1;
    pr->last = w;
    return 0;
}

static inline int heap_above(const heap_ent *x, const heap_ent *y)
{
    return x->count > y->count || (x->count == y->count && x->key < y->key);
}

static void heap_down(heap_ent *h, size_t n, size_t i)
{
    heap_ent e = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_above(&h[c + 1], &h[c])) c++;
        if (!heap_above(&h[c], &e)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

static int heap_push(tstate *s, uint32_t pid)
{
    if (grow((void **)&s->heap, &s->hcap, s->nh + 1, sizeof *s->heap)) return -1;
    heap_ent e = {(uint64_t)s->pairs[pid].count, s->pairs[pid].key, pid};
    size_t i = s->nh++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_above(&e, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = e;
    return 0;
}

static heap_ent heap_pop(tstate *s)
{
    heap_ent top = s->heap[0];
    s->heap[0] = s->heap[--s->nh];
    if (s->nh) heap_down(s->heap, s->nh, 0);
    return top;
}

/* Appends a token of bytes[0..n) with the next id (not interned). */
static uint32_t token_append(tstate *s, const unsigned char *bytes, size_t n)
{
    if (s->ntok + 1 >= NONE) return NONE;
    if (grow((void **)&s->tb, &s->tbcap, s->tblen + n, 1)) return NONE;
    if (s->ntok + 1 > s->tokcap) {
        size_t cap = s->tokcap ? s->tokcap * 2 : 1024;
        void *o = realloc(s->toff, cap * sizeof *s->toff);
        if (o) s->toff = o;
        void *l = realloc(s->tlen, cap * sizeof *s->tlen);
        if (l) s->tlen = l;
        if (!o || !l) return NONE;
        s->tokcap = cap;
    }
    uint32_t id = (uint32_t)s->ntok++;
    if (n) memcpy(s->tb + s->tblen, bytes, n);
    s->toff[id] = s->tblen;
    s->tlen[id] = (uint32_t)n;
    s->tblen += n;
    return id;
}

/* Adds token bytes[0..n) as the next id, or returns the id it already has.
 * *fresh says which. NONE when out of memory. */
static uint32_t token_intern(tstate *s, const unsigned char *bytes, size_t n, int *fresh)
{
    *fresh = 0;
    wslot *w = wmap_find(&s->tokmap, bytes, n);
    if (w) return (uint32_t)(w->count - 1);
    uint32_t id = token_append(s, bytes, n);
    if (id == NONE || !wmap_add(&s->tokmap, bytes, n, (uint64_t)id + 1)) return NONE;
    *fresh = 1;
    return id;
}

/* The bytes whose byte-level string is s (UTF-8), if every character of s is
 * in the mapping; their length, or -1. */
static long bytelevel_preimage(const bytelevel *bl, const char *str, unsigned char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)str;
    size_t n = strlen(str), o = 0;
    for (size_t i = 0; i < n;) {
        unsigned cp;
        size_t len = utf8_char(p + i, n - i, &cp);
        if (!len || o >= cap) return -1;
        int b = -1;
        if (cp < 256 && bl_printable(cp)) b = (int)cp;
        else if (cp >= 256 && cp < 256 + 68)
            for (unsigned k = 0; k < 256; k++)
                if (bl->cp[k] == cp) { b = (int)k; break; }
        if (b < 0) return -1;
        out[o++] = (unsigned char)b;
        i += len;
    }
    return (long)o;
}

static void tstate_free(tstate *s)
{
    free(s->words), free(s->syms);
    free(s->pairs);
    free(s->pslot), free(s->va), free(s->heap), free(s->touched);
    wmap_free(&s->tokmap);
    free(s->tb), free(s->toff), free(s->tlen), free(s->merges);
}

/* pair (x, y) gains or loses `delta` in word w */
static inline int pair_change(tstate *s, uint32_t x, uint32_t y, int64_t delta, uint32_t w)
{
    uint32_t pid = pair_get(s, x, y);
    if (pid == NONE) return -1;
    s->pairs[pid].count += delta;
    if (delta > 0) {
        if (pair_add_word(s, pid, w)) return -1;
        if (!(s->pairs[pid].flags & 1)) {
            if (grow((void **)&s->touched, &s->tcap, s->ntouched + 1, sizeof *s->touched)) return -1;
            s->touched[s->ntouched++] = pid;
            s->pairs[pid].flags |= 1;
        }
    }
    return 0;
}

/* Replaces every (a, b) in word w by n, left to right, as BpeTrainer does. */
static int merge_word(tstate *s, uint32_t w, uint32_t pid, uint32_t a, uint32_t b, uint32_t n)
{
    struct word *wd = &s->words[w];
    uint32_t *sym = s->syms + wd->off;
    uint32_t len = wd->len, o = 0;
    int64_t wc = (int64_t)wd->count;
    for (uint32_t r = 0; r < len; r++) {
        if (r + 1 < len && sym[r] == a && sym[r + 1] == b) {
            s->pairs[pid].count -= wc;
            if (o > 0) {
                uint32_t prev = sym[o - 1];
                if (pair_change(s, prev, a, -wc, w) || pair_change(s, prev, n, wc, w)) return -1;
            }
            if (r + 2 < len) {
                uint32_t next = sym[r + 2];
                if (pair_change(s, b, next, -wc, w) || pair_change(s, n, next, wc, w)) return -1;
            }
            sym[o++] = n;
            r++;
        } else {
            sym[o++] = sym[r];
        }
    }
    wd->len = o;
    return 0;
}

static int train(llm_bpe_trainer *t, tstate *s, const bytelevel *bl, size_t vocab_size,
                 const char *const *specials, size_t nspecial, llm_err *err)
{
#define OOM() return llm_errf(err, "bpe train: out of memory")
    /* ids: specials, then the bytes in GPT-2's order */
    for (size_t i = 0; i < nspecial; i++) {
        size_t cap = strlen(specials[i]);
        unsigned char *pre = malloc(cap);
        if (!pre) OOM();
        long pn = bytelevel_preimage(bl, specials[i], pre, cap);
        /* a special spelled like a byte-level string (its vocab key) takes
         * the place of those bytes; the vocab shows its text either way */
        int bad = token_append(s, pre, pn > 0 ? (size_t)pn : 0) == NONE ||
                  (pn > 0 && !wmap_find(&s->tokmap, pre, (size_t)pn) &&
                   !wmap_add(&s->tokmap, pre, (size_t)pn, (uint64_t)i + 1));
        free(pre);
        if (bad) OOM();
    }
    uint32_t byte_id[256];
    for (int k = 0; k < 256; k++) {
        unsigned char b = bl->order[k];
        int fresh;
        uint32_t id = token_intern(s, &b, 1, &fresh);
        if (id == NONE) OOM();
        byte_id[b] = id;
    }
    if (vocab_size < s->ntok)
        return llm_errf(err, "vocabulary size %zu is smaller than the 256 byte tokens and %zu special token%s (%zu)",
                        vocab_size, nspecial, nspecial == 1 ? "" : "s", s->ntok);

    /* words of two bytes or more */
    const wmap *wm = &t->words;
    size_t nsym = 0;
    for (size_t i = 0; wm->slots && i <= wm->mask; i++)
        if (wm->slots[i].count && wm->slots[i].len >= 2) { s->nw++; nsym += wm->slots[i].len; }
    if (s->nw >= NONE) return llm_errf(err, "bpe train: more than 4G distinct words");
    s->words = calloc(s->nw ? s->nw : 1, sizeof *s->words);
    s->syms = malloc((nsym ? nsym : 1) * sizeof *s->syms);
    if (!s->words || !s->syms || pairs_rehash(s)) OOM();
    /* the pairs of every word, and each pair's words packed in word order */
    uint32_t *pidseq = malloc((nsym ? nsym : 1) * sizeof *pidseq);
    if (!pidseq) OOM();
    size_t w = 0, off = 0;
    for (size_t i = 0; wm->slots && i <= wm->mask; i++) {
        const wslot *ws = &wm->slots[i];
        if (!ws->count || ws->len < 2) continue;
        const unsigned char *k = wslot_key(wm, ws);
        s->words[w].count = ws->count;
        s->words[w].off = off;
        s->words[w].len = ws->len;
        for (uint32_t j = 0; j < ws->len; j++) s->syms[off + j] = byte_id[k[j]];
        for (uint32_t j = 0; j + 1 < ws->len; j++) {
            uint32_t pid = pair_get(s, s->syms[off + j], s->syms[off + j + 1]);
            if (pid == NONE) { free(pidseq); OOM(); }
            pidseq[off + j] = pid;
            struct pair *pr = &s->pairs[pid];
            pr->count += (int64_t)ws->count;
            if (pr->last != w) {  /* vcap counts the pair's words for now */
                pr->last = (uint32_t)w;
                pr->vcap++;
            }
        }
        off += ws->len;
        w++;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < s->np; i++) {
        s->pairs[i].voff = sum;
        sum += s->pairs[i].vcap;
        s->pairs[i].last = NONE;
    }
    for (unsigned k = 0; k < 33; k++) s->vfree[k] = UINT64_MAX;
    if (grow((void **)&s->va, &s->vacap, sum + 1, sizeof *s->va)) { free(pidseq); OOM(); }
    s->valen = sum;
    for (w = 0; w < s->nw; w++) {
        for (uint32_t j = 0; j + 1 < s->words[w].len; j++) {
            uint32_t pid = pidseq[s->words[w].off + j];
            struct pair *pr = &s->pairs[pid];
            if (pr->last == w) continue;
            pr->last = (uint32_t)w;
            s->va[pr->voff + pr->vlen++] = (uint32_t)w;
        }
    }
    free(pidseq);
    if (grow((void **)&s->heap, &s->hcap, s->np + 1, sizeof *s->heap)) OOM();
    for (size_t i = 0; i < s->np; i++) s->heap[i] = (heap_ent){(uint64_t)s->pairs[i].count, s->pairs[i].key, (uint32_t)i};
    s->nh = s->np;
    for (size_t i = s->nh / 2; i-- > 0;) heap_down(s->heap, s->nh, i);

    /* merge */
    size_t vocab = s->ntok;
    uint32_t step = 0;
    unsigned char *buf = NULL;
    size_t bufcap = 0;
    while (vocab < vocab_size && s->nh) {
        heap_ent top = heap_pop(s);
        uint32_t pid = top.pair;
        if ((int64_t)top.count != s->pairs[pid].count) {
            if (s->pairs[pid].count > 0 && heap_push(s, pid)) goto oom;
            continue;
        }
        if (top.count == 0) continue;
        uint32_t a = (uint32_t)(top.key >> 32), b = (uint32_t)top.key;
        size_t la = s->tlen[a], lb = s->tlen[b];
        if (grow((void **)&buf, &bufcap, la + lb, 1)) goto oom;
        memcpy(buf, s->tb + s->toff[a], la);
        memcpy(buf + la, s->tb + s->toff[b], lb);
        int fresh;
        uint32_t n = token_intern(s, buf, la + lb, &fresh);
        if (n == NONE) goto oom;
        if (fresh) vocab++;
        if (!(s->pairs[pid].flags & 2)) {
            if (grow((void **)&s->merges, &s->mcap, 2 * s->nmerges + 2, sizeof *s->merges)) goto oom;
            s->merges[2 * s->nmerges] = a;
            s->merges[2 * s->nmerges + 1] = b;
            s->nmerges++;
            s->pairs[pid].flags |= 2;
        }
        if (++step == 0) { /* stamps wrapped: clear them */
            for (size_t i = 0; i < s->nw; i++) s->words[i].stamp = 0;
            step = 1;
        }
        uint64_t voff = s->pairs[pid].voff;
        uint32_t vlen = s->pairs[pid].vlen;
        for (uint32_t x = 0; x < vlen; x++) {
            if (x + 8 < vlen) /* the words are scattered: ask for them early */
                __builtin_prefetch(&s->words[s->va[voff + x + 8]]);
            if (x + 4 < vlen) __builtin_prefetch(&s->syms[s->words[s->va[voff + x + 4]].off]);
            uint32_t wi = s->va[voff + x]; /* merge_word may move the arena: index it afresh */
            if (s->words[wi].stamp == step) continue;
            s->words[wi].stamp = step;
            if (merge_word(s, wi, pid, a, b, n)) goto oom;
        }
        vec_free(s, voff, s->pairs[pid].vcap);
        s->pairs[pid].vlen = s->pairs[pid].vcap = 0;
        s->pairs[pid].last = NONE;
        for (size_t i = 0; i < s->ntouched; i++) {
            uint32_t q = s->touched[i];
            s->pairs[q].flags &= ~1u;
            if (s->pairs[q].count > 0 && heap_push(s, q)) goto oom;
        }
        s->ntouched = 0;
    }
    free(buf);
    t->out_vocab = vocab;
    t->out_merges = s->nmerges;
    return 0;
oom:
    free(buf);
    OOM();
#undef OOM
}

/* ---- the tokenizer.json ---- */

static void put_token(llm_strbuf *sb, const bytelevel *bl, const tstate *s, uint32_t id,
                      const char *const *specials, size_t nspecial)
{
    if (id < nspecial) {
        llm_sb_json_string(sb, specials[id]);
        return;
    }
    const unsigned char *p = s->tb + s->toff[id];
    size_t n = s->tlen[id];
    char tmp[256];
    size_t o = 0;
    tmp[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (o + 4 > sizeof tmp) { llm_sb_add(sb, tmp, o); o = 0; }
        unsigned char c = p[i];
        if (c == '"' || c == '\\') { tmp[o++] = '\\'; tmp[o++] = (char)c; }
        else { memcpy(tmp + o, bl->utf8[c], bl->len[c]); o += bl->len[c]; }
    }
    tmp[o++] = '"';
    llm_sb_add(sb, tmp, o);
}

static void write_json(llm_strbuf *sb, const bytelevel *bl, const tstate *s, const char *const *specials,
                       size_t nspecial, const char *pattern)
{
    llm_sb_puts(sb, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    for (size_t i = 0; i < nspecial; i++) {
        llm_sb_printf(sb, "%s\n    {\"id\": %zu, \"content\": ", i ? "," : "", i);
        llm_sb_json_string(sb, specials[i]);
        llm_sb_puts(sb, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
                        "\"special\": true}");
    }
    llm_sb_puts(sb, nspecial ? "\n  ],\n" : "],\n");
    llm_sb_puts(sb, "  \"normalizer\": null,\n"
                    "  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [\n"
                    "    {\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    llm_sb_json_string(sb, pattern);
    llm_sb_puts(sb, "}, \"behavior\": \"Isolated\", \"invert\": false},\n"
                    "    {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}\n"
                    "  ]},\n"
                    "  \"post_processor\": null,\n"
                    "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, "
                    "\"use_regex\": true},\n"
                    "  \"model\": {\n"
                    "    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
                    "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
                    "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n"
                    "    \"vocab\": {");
    for (size_t id = 0; id < s->ntok; id++) {
        llm_sb_puts(sb, id ? ",\n      " : "\n      ");
        put_token(sb, bl, s, (uint32_t)id, specials, nspecial);
        llm_sb_printf(sb, ": %zu", id);
    }
    llm_sb_puts(sb, "\n    },\n    \"merges\": [");
    for (size_t m = 0; m < s->nmerges; m++) {
        llm_sb_puts(sb, m ? ",\n      [" : "\n      [");
        put_token(sb, bl, s, s->merges[2 * m], specials, nspecial);
        llm_sb_puts(sb, ", ");
        put_token(sb, bl, s, s->merges[2 * m + 1], specials, nspecial);
        llm_sb_puts(sb, "]");
    }
    llm_sb_puts(sb, s->nmerges ? "\n    ]\n  }\n}\n" : "]\n  }\n}\n");
}

int llm_bpe_trainer_finish(llm_bpe_trainer *t, size_t vocab_size, const char *const *specials, size_t nspecial,
                           const char *pattern, llm_strbuf *tokenizer_json, llm_err *err)
{
    t->out_vocab = t->out_merges = 0;
    if (!pattern) return llm_errf(err, "bpe train: no pre-tokenization pattern");
    if (utf8_invalid_at((const unsigned char *)pattern, strlen(pattern)) < strlen(pattern))
        return llm_errf(err, "bpe train: the pattern is not valid UTF-8");
    for (size_t i = 0; i < nspecial; i++) {
        if (!specials[i] || !specials[i][0]) return llm_errf(err, "special token %zu is empty", i + 1);
        size_t len = strlen(specials[i]);
        if (utf8_invalid_at((const unsigned char *)specials[i], len) < len)
            return llm_errf(err, "special token %zu is not valid UTF-8", i + 1);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(specials[i], specials[j])) return llm_errf(err, "special token '%s' is given twice", specials[i]);
    }
    bytelevel bl;
    bytelevel_init(&bl);
    tstate s;
    memset(&s, 0, sizeof s);
    int rc = train(t, &s, &bl, vocab_size, specials, nspecial, err);
    if (rc == 0) {
        write_json(tokenizer_json, &bl, &s, specials, nspecial, pattern);
        if (tokenizer_json->failed) rc = llm_errf(err, "bpe train: out of memory writing the tokenizer.json");
    }
    if (rc) t->out_vocab = t->out_merges = 0;
    tstate_free(&s);
    return rc;
}
