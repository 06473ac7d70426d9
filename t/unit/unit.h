/* unit.h — a tiny TAP harness for the C unit tests.
 *
 *   TEST(name) { CHECK(cond); CHECK_EQ_U64(a, b); ... }
 *   int main(void) { RUN(name); ...; return unit_done(); }
 *
 * Each RUN prints "ok N - name" or "not ok N - name" with the failed checks
 * as "# file:line: ..." lines before it; t/run-all counts them. */
#ifndef LLMUX_UNIT_H
#define LLMUX_UNIT_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int unit_failures, unit_count, unit_failed_total;

#define TEST(name) static void test_##name(void)
#define RUN(name)                                                                  \
    do {                                                                           \
        unit_failures = 0;                                                         \
        test_##name();                                                             \
        unit_count++;                                                              \
        printf("%sok %d - %s\n", unit_failures ? "not " : "", unit_count, #name); \
        fflush(stdout);                                                            \
        if (unit_failures) unit_failed_total++;                                    \
    } while (0)

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            printf("# %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            unit_failures++;                                                \
        }                                                                   \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                                        \
    do {                                                                                          \
        uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                                          \
        if (a_ != b_) {                                                                           \
            printf("# %s:%d: %s == %s: %" PRIu64 " != %" PRIu64 "\n", __FILE__, __LINE__, #a, #b, a_, b_); \
            unit_failures++;                                                                      \
        }                                                                                         \
    } while (0)

/* err must mention `needle` */
#define CHECK_ERR(rc, err, needle)                                                              \
    do {                                                                                        \
        if ((rc) == 0) {                                                                        \
            printf("# %s:%d: expected failure mentioning '%s', got success\n", __FILE__, __LINE__, needle); \
            unit_failures++;                                                                    \
        } else if (!strstr((err).msg, needle)) {                                                \
            printf("# %s:%d: error '%s' does not mention '%s'\n", __FILE__, __LINE__, (err).msg, needle); \
            unit_failures++;                                                                    \
        }                                                                                       \
    } while (0)

static inline int unit_done(void) { return unit_failed_total ? 1 : 0; }

/* xorshift64*: fresh inputs each run unless UNIT_SEED is set; the seed is printed. */
static uint64_t unit_rng_state;
static inline void unit_seed(void)
{
    const char *s = getenv("UNIT_SEED");
    unit_rng_state = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ (uint64_t)clock();
    if (!unit_rng_state) unit_rng_state = 88172645463325252ull;
    printf("# UNIT_SEED=%" PRIu64 "\n", unit_rng_state);
}
static inline uint64_t unit_rand(void)
{
    unit_rng_state ^= unit_rng_state >> 12;
    unit_rng_state ^= unit_rng_state << 25;
    unit_rng_state ^= unit_rng_state >> 27;
    return unit_rng_state * 2685821657736338717ull;
}

#endif
