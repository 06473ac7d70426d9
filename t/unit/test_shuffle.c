/* The external shuffle: every record once, in key order, the same order
 * whatever the memory budget (including budgets that force re-splitting). */
#include "shuffle.h"
#include "unit.h"

#include <stdlib.h>

#define REC 56   /* record bytes: the index, then filler derived from it */

typedef struct {
    uint64_t *seen;
    uint64_t n, bad;
} collect;

static void make_record(unsigned char *rec, uint64_t i)
{
    memcpy(rec, &i, 8);
    for (int j = 8; j < REC; j++) rec[j] = (unsigned char)(i * 31 + (uint64_t)j);
}

static int take(void *ctx, const void *rec, llm_err *err)
{
    (void)err;
    collect *c = ctx;
    uint64_t i;
    memcpy(&i, rec, 8);
    unsigned char want[REC];
    make_record(want, i);
    if (memcmp(want, rec, REC)) c->bad++;
    c->seen[c->n++] = i;
    return 0;
}

/* shuffles 0..n-1 under `mem`; returns the order (malloc'd) or NULL */
static uint64_t *shuffle(uint64_t n, uint64_t seed, size_t mem)
{
    llm_err err;
    llm_shuffler *s;
    if (llm_shuffler_new(&s, REC, seed, mem, "/tmp", &err)) {
        printf("# %s\n", err.msg);
        return NULL;
    }
    unsigned char rec[REC];
    for (uint64_t i = 0; i < n; i++) {
        make_record(rec, i);
        if (llm_shuffler_add(s, rec, &err)) { printf("# %s\n", err.msg); llm_shuffler_free(s); return NULL; }
    }
    collect c = {calloc(n + 1, 8), 0, 0};
    int rc = llm_shuffler_finish(s, take, &c, &err);
    if (rc) printf("# %s\n", err.msg);
    llm_shuffler_free(s);
    if (rc || c.n != n || c.bad) { free(c.seen); return NULL; }
    return c.seen;
}

static int is_key_order(const uint64_t *order, uint64_t n, uint64_t seed)
{
    for (uint64_t i = 1; i < n; i++)
        if (llm_shuffle_key(order[i - 1], seed) >= llm_shuffle_key(order[i], seed)) return 0;
    return 1;
}

static int is_permutation(const uint64_t *order, uint64_t n)
{
    unsigned char *hit = calloc(n, 1);
    int ok = 1;
    for (uint64_t i = 0; i < n; i++) {
        if (order[i] >= n || hit[order[i]]) ok = 0;
        else hit[order[i]] = 1;
    }
    free(hit);
    return ok;
}

TEST(every_record_once_in_key_order)
{
    uint64_t n = 5000;
    uint64_t *o = shuffle(n, 7, 16u << 20);
    CHECK(o != NULL);
    if (!o) return;
    CHECK(is_permutation(o, n));
    CHECK(is_key_order(o, n, 7));
    uint64_t in_place = 0;
    for (uint64_t i = 0; i < n; i++) in_place += o[i] == i;
    CHECK(in_place < 20);   /* a shuffle, not the identity (about 1 expected) */
    free(o);
}

TEST(order_does_not_depend_on_memory)
{
    /* 60000 records of 64 bytes = 3.8 MB; under 64 KiB every top-level bucket
     * (about 60 KB with its index) is over half the budget and is split again */
    uint64_t n = 60000;
    uint64_t *big = shuffle(n, 3, 64u << 20), *small = shuffle(n, 3, 64u << 10);
    CHECK(big && small);
    if (big && small) {
        CHECK(is_permutation(small, n));
        CHECK(memcmp(big, small, n * 8) == 0);
    }
    free(big);
    free(small);
}

TEST(seeds_give_different_orders)
{
    uint64_t *a = shuffle(100, 1, 1u << 20), *b = shuffle(100, 2, 1u << 20), *c = shuffle(100, 1, 1u << 20);
    CHECK(a && b && c);
    if (a && b && c) {
        CHECK(memcmp(a, b, 800) != 0);
        CHECK(memcmp(a, c, 800) == 0);
    }
    free(a);
    free(b);
    free(c);
}

TEST(empty_and_single)
{
    uint64_t *o = shuffle(0, 1, 1u << 20);
    CHECK(o != NULL);
    free(o);
    o = shuffle(1, 1, 1u << 20);
    CHECK(o && o[0] == 0);
    free(o);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

TEST(keys_are_a_bijection_sample)
{
    /* distinct keys for the first million indices of a seed: a sort finds no repeat */
    uint64_t n = 1u << 20, *k = malloc(n * 8), dup = 0;
    for (uint64_t i = 0; i < n; i++) k[i] = llm_shuffle_key(i, 42);
    qsort(k, n, 8, cmp_u64);
    for (uint64_t i = 1; i < n; i++) dup += k[i] == k[i - 1];
    CHECK(dup == 0);
    free(k);
}

TEST(budget_too_small_is_an_error)
{
    llm_err err;
    llm_shuffler *s;
    CHECK_ERR(llm_shuffler_new(&s, REC, 1, 1000, "/tmp", &err), err, "too small");
    CHECK_ERR(llm_shuffler_new(&s, 1u << 20, 1, 1u << 20, "/tmp", &err), err, "too small");
    CHECK_ERR(llm_shuffler_new(&s, REC, 1, 1u << 20, "/nonexistent/dir", &err), err, "/nonexistent/dir");
}

int main(void)
{
    RUN(every_record_once_in_key_order);
    RUN(order_does_not_depend_on_memory);
    RUN(seeds_give_different_orders);
    RUN(empty_and_single);
    RUN(keys_are_a_bijection_sample);
    RUN(budget_too_small_is_an_error);
    return unit_done();
}
