/* Every kernel against its _ref on fresh random inputs, and the refs against
 * exhaustive or known values. */
#include "llmk.h"
#include "unit.h"

#include <math.h>

static float bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* random floats over every class: normals of all exponents, subnormals,
 * zeros, infinities, NaNs, and values right at rounding ties */
static float random_float(void)
{
    uint64_t r = unit_rand();
    switch (r % 8) {
    case 0: return bits_f((uint32_t)(r >> 32) & 0x807fffffu);                 /* subnormal / zero */
    case 1: return bits_f(((uint32_t)(r >> 32) & 0x80000000u) | 0x7f800000u | (uint32_t)(r >> 40)); /* inf/NaN */
    case 2: return bits_f(((uint32_t)(r >> 32) & 0xffff0000u) | 0x8000u);     /* bf16 tie */
    case 3: return bits_f(((uint32_t)(r >> 32) & 0xffffe000u) | 0x1000u);     /* f16 tie (in range or not) */
    default: return bits_f((uint32_t)(r >> 32));
    }
}

TEST(f16_to_f32_ref_exhaustive_roundtrip)
{
    /* every f16 value converts to f32 and back to itself (NaNs come back quiet) */
    static uint16_t h[65536], back[65536];
    static float f[65536];
    for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    llmk_f16_to_f32_ref(f, h, 65536);
    llmk_f32_to_f16_ref(back, f, 65536);
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        int is_nan = (i & 0x7c00) == 0x7c00 && (i & 0x3ff);
        uint16_t want = is_nan ? (uint16_t)(i | 0x200) : (uint16_t)i;
        if (back[i] != want) bad++;
    }
    CHECK(bad == 0);
    CHECK(f[0x3c00] == 1.0f);
    CHECK(f[0x0001] == ldexpf(1, -24));
    CHECK(f[0x7bff] == 65504.0f);
    CHECK(isinf(f[0xfc00]) && f[0xfc00] < 0);
}

TEST(f32_to_f16_ref_rounding)
{
    float in[] = {65504.0f, 65519.99f, 65520.0f, 1.0f + ldexpf(1, -11), 1.0f + 3 * ldexpf(1, -11),
                  ldexpf(1, -25), ldexpf(3, -26), -0.0f};
    uint16_t want[] = {0x7bff, 0x7bff, 0x7c00, 0x3c00, 0x3c02, 0x0000, 0x0001, 0x8000};
    uint16_t out[8];
    llmk_f32_to_f16_ref(out, in, 8);
    for (int i = 0; i < 8; i++) CHECK_EQ_U64(out[i], want[i]);
}

TEST(bf16_ref_known_values)
{
    float in[] = {1.0f, bits_f(0x3f808000u), bits_f(0x3f818000u), bits_f(0x7fc00001u), bits_f(0x7f800001u),
                  bits_f(0x00010000u), bits_f(0x7f7fffffu)};
    uint16_t want[] = {0x3f80, 0x3f80, 0x3f82, 0x7fc0, 0x7fc0, 0x0001, 0x7f80};
    uint16_t out[7];
    llmk_f32_to_bf16_ref(out, in, 7);
    for (int i = 0; i < 7; i++) CHECK_EQ_U64(out[i], want[i]);
    float back[7];
    llmk_bf16_to_f32_ref(back, out, 7);
    CHECK(back[0] == 1.0f);
    CHECK(f_bits(back[5]) == 0x00010000u);
}

/* SIMD paths against the refs, at lengths that exercise vector bodies and tails,
 * on unaligned pointers */
TEST(simd_conversions_match_ref)
{
    enum { N = 4099 };
    static float f[N + 1], a[N + 1], b[N + 1];
    static uint16_t h[N + 1], x[N + 1], y[N + 1];
    int bad = 0;
    for (int rep = 0; rep < 20; rep++) {
        size_t n = (size_t)(unit_rand() % N), off = rep & 1;
        for (size_t i = 0; i < n + 1; i++) { f[i] = random_float(); h[i] = (uint16_t)unit_rand(); }
        llmk_f16_to_f32_ref(a + off, h + off, n - off * (n > 0));
        llmk_f16_to_f32(b + off, h + off, n - off * (n > 0));
        bad += memcmp(a, b, sizeof a) != 0;
        llmk_bf16_to_f32_ref(a + off, h + off, n - off * (n > 0));
        llmk_bf16_to_f32(b + off, h + off, n - off * (n > 0));
        bad += memcmp(a, b, sizeof a) != 0;
        llmk_f32_to_f16_ref(x + off, f + off, n - off * (n > 0));
        llmk_f32_to_f16(y + off, f + off, n - off * (n > 0));
        bad += memcmp(x, y, sizeof x) != 0;
        llmk_f32_to_bf16_ref(x + off, f + off, n - off * (n > 0));
        llmk_f32_to_bf16(y + off, f + off, n - off * (n > 0));
        bad += memcmp(x, y, sizeof x) != 0;
    }
    CHECK(bad == 0);
    printf("# cpu path: %s\n", llmk_cpu_path());
}

TEST(stats_match_ref)
{
    enum { N = 10007 };
    static float x[N];
    for (int rep = 0; rep < 10; rep++) {
        size_t n = (size_t)(unit_rand() % N);
        for (size_t i = 0; i < n; i++)
            x[i] = (unit_rand() % 50) ? (float)((double)(int64_t)unit_rand() / 9.2e18 * 100) : random_float();
        llmk_stats r, s;
        llmk_stats_f32_ref(&r, x, n);
        llmk_stats_f32(&s, x, n);
        CHECK_EQ_U64(r.count, s.count);
        CHECK_EQ_U64(r.nan, s.nan);
        CHECK_EQ_U64(r.inf, s.inf);
        if (r.count) {
            CHECK(r.min == s.min);
            CHECK(r.max == s.max);
            /* summation order differs: double sums of floats agree to ~1e-12 relative */
            CHECK(fabs(r.sum - s.sum) <= 1e-9 * (fabs(r.sumsq) + 1));
            CHECK(fabs(r.sumsq - s.sumsq) <= 1e-9 * (r.sumsq + 1));
        }
    }
}

int main(void)
{
    unit_seed();
    RUN(f16_to_f32_ref_exhaustive_roundtrip);
    RUN(f32_to_f16_ref_rounding);
    RUN(bf16_ref_known_values);
    RUN(simd_conversions_match_ref);
    RUN(stats_match_ref);
    return unit_done();
}
