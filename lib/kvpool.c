/* Blocks of a paged KV cache: see kvpool.h. */
#include "kvpool.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

typedef struct {
    float *data;
    uint32_t refs;
    int registered;
    uint64_t key, parent;
    uint32_t *tokens;        /* (block_tokens) while registered */
    uint32_t hnext;          /* the next block in its bucket */
    uint32_t prev, next;     /* the list of free registered blocks, oldest first */
    int in_lru;
} block;

struct llm_kvpool {
    size_t block_floats, block_tokens, max_blocks;
    block *b;
    size_t n, cap;           /* blocks made */
    uint32_t *plain;         /* free blocks not registered (a stack) */
    size_t nplain;
    uint32_t lru_head, lru_tail;   /* free registered blocks */
    size_t nlru, used;
    uint32_t *buckets;       /* registry: chains through hnext */
    size_t nbuckets, nregistered;
};

llm_kvpool *llm_kvpool_new(size_t block_floats, size_t block_tokens, size_t max_blocks)
{
    llm_kvpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->block_floats = block_floats;
    p->block_tokens = block_tokens;
    p->max_blocks = max_blocks;
    p->lru_head = p->lru_tail = LLM_KVPOOL_NONE;
    return p;
}

void llm_kvpool_free(llm_kvpool *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) free(p->b[i].data), free(p->b[i].tokens);
    free(p->b);
    free(p->plain);
    free(p->buckets);
    free(p);
}

float *llm_kvpool_data(const llm_kvpool *p, uint32_t b) { return p->b[b].data; }
uint32_t llm_kvpool_refs(const llm_kvpool *p, uint32_t b) { return p->b[b].refs; }
int llm_kvpool_registered(const llm_kvpool *p, uint32_t b) { return p->b[b].registered; }
size_t llm_kvpool_used(const llm_kvpool *p) { return p->used; }
size_t llm_kvpool_max(const llm_kvpool *p) { return p->max_blocks; }
size_t llm_kvpool_block_bytes(const llm_kvpool *p) { return p->block_floats * sizeof(float); }

size_t llm_kvpool_available(const llm_kvpool *p)
{
    if (!p->max_blocks) return SIZE_MAX;
    return p->max_blocks - p->n + p->nplain + p->nlru;
}

/* ---- the list of free registered blocks ---- */

static void lru_remove(llm_kvpool *p, uint32_t i)
{
    block *k = &p->b[i];
    if (k->prev != LLM_KVPOOL_NONE) p->b[k->prev].next = k->next;
    else p->lru_head = k->next;
    if (k->next != LLM_KVPOOL_NONE) p->b[k->next].prev = k->prev;
    else p->lru_tail = k->prev;
    k->in_lru = 0;
    p->nlru--;
}

static void lru_push(llm_kvpool *p, uint32_t i)
{
    block *k = &p->b[i];
    k->prev = p->lru_tail, k->next = LLM_KVPOOL_NONE;
    if (p->lru_tail != LLM_KVPOOL_NONE) p->b[p->lru_tail].next = i;
    else p->lru_head = i;
    p->lru_tail = i;
    k->in_lru = 1;
    p->nlru++;
}

/* ---- the registry ---- */

uint64_t llm_kvpool_key(const llm_kvpool *p, uint64_t parent, const uint32_t *tokens)
{
    return XXH3_64bits_withSeed(tokens, p->block_tokens * sizeof *tokens, parent);
}

static int rehash(llm_kvpool *p, size_t nb)
{
    uint32_t *nbk = malloc(nb * sizeof *nbk);
    if (!nbk) return -1;
    for (size_t i = 0; i < nb; i++) nbk[i] = LLM_KVPOOL_NONE;
    for (size_t i = 0; i < p->n; i++)
        if (p->b[i].registered) {
            size_t h = p->b[i].key & (nb - 1);
            p->b[i].hnext = nbk[h];
            nbk[h] = (uint32_t)i;
        }
    free(p->buckets);
    p->buckets = nbk;
    p->nbuckets = nb;
    return 0;
}

void llm_kvpool_register(llm_kvpool *p, uint32_t b, uint64_t key, uint64_t parent, const uint32_t *tokens)
{
    block *k = &p->b[b];
    if (k->registered) return;
    if (p->nregistered + 1 > p->nbuckets / 2 && rehash(p, p->nbuckets ? p->nbuckets * 2 : 64)) return;
    for (uint32_t i = p->buckets[key & (p->nbuckets - 1)]; i != LLM_KVPOOL_NONE; i = p->b[i].hnext)
        if (p->b[i].key == key) return;   /* the same prefix is there: keep that one */
    if (!k->tokens && !(k->tokens = malloc(p->block_tokens * sizeof *k->tokens))) return;
    memcpy(k->tokens, tokens, p->block_tokens * sizeof *tokens);
    k->key = key, k->parent = parent, k->registered = 1;
    size_t h = key & (p->nbuckets - 1);
    k->hnext = p->buckets[h];
    p->buckets[h] = b;
    p->nregistered++;
}

void llm_kvpool_unregister(llm_kvpool *p, uint32_t b)
{
    block *k = &p->b[b];
    if (!k->registered) return;
    uint32_t *at = &p->buckets[k->key & (p->nbuckets - 1)];
    while (*at != b) at = &p->b[*at].hnext;
    *at = k->hnext;
    k->registered = 0;
    p->nregistered--;
    if (k->in_lru) {   /* free and no longer worth keeping: a plain free block */
        lru_remove(p, b);
        p->plain[p->nplain++] = b;
    }
}

uint32_t llm_kvpool_lookup(llm_kvpool *p, uint64_t key, uint64_t parent, const uint32_t *tokens)
{
    if (!p->nbuckets) return LLM_KVPOOL_NONE;
    for (uint32_t i = p->buckets[key & (p->nbuckets - 1)]; i != LLM_KVPOOL_NONE; i = p->b[i].hnext) {
        block *k = &p->b[i];
        if (k->key != key || k->parent != parent || memcmp(k->tokens, tokens, p->block_tokens * sizeof *tokens)) continue;
        llm_kvpool_ref(p, i);
        return i;
    }
    return LLM_KVPOOL_NONE;
}

/* ---- blocks ---- */

uint32_t llm_kvpool_alloc(llm_kvpool *p)
{
    uint32_t i = LLM_KVPOOL_NONE;
    if (p->nplain) {
        i = p->plain[--p->nplain];
    } else if ((!p->max_blocks || p->n < p->max_blocks) && p->n < LLM_KVPOOL_NONE) {
        if (p->n == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 64;
            block *nb = realloc(p->b, cap * sizeof *nb);
            if (!nb) return LLM_KVPOOL_NONE;
            p->b = nb;
            uint32_t *pl = realloc(p->plain, cap * sizeof *pl);
            if (!pl) return LLM_KVPOOL_NONE;
            p->plain = pl;
            p->cap = cap;
        }
        void *data = NULL;
        size_t bytes = (p->block_floats * sizeof(float) + 63) / 64 * 64;
        if (posix_memalign(&data, 64, bytes ? bytes : 64)) data = NULL;
        if (!data) {
            if (p->nlru) goto evict;
            return LLM_KVPOOL_NONE;
        }
        memset(&p->b[p->n], 0, sizeof p->b[p->n]);
        p->b[p->n].data = data;
        i = (uint32_t)p->n++;
    } else if (p->nlru) {
    evict:
        i = p->lru_head;
        llm_kvpool_unregister(p, i);   /* moves it to the plain stack */
        i = p->plain[--p->nplain];
    } else {
        return LLM_KVPOOL_NONE;
    }
    p->b[i].refs = 1;
    p->used++;
    return i;
}

void llm_kvpool_ref(llm_kvpool *p, uint32_t b)
{
    block *k = &p->b[b];
    if (k->refs++ == 0) {   /* taken back from the free registered blocks */
        if (k->in_lru) lru_remove(p, b);
        p->used++;
    }
}

void llm_kvpool_unref(llm_kvpool *p, uint32_t b)
{
    block *k = &p->b[b];
    if (k->refs == 0 || --k->refs) return;
    p->used--;
    if (k->registered) lru_push(p, b);
    else p->plain[p->nplain++] = b;
}
