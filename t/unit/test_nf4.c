/* nf4 (bitsandbytes' NF4 with double quantization): the tables, the layout
 * by hand, the rounding rules and their ties, round-trip error bounds, the
 * CPU paths against the refs (t/run-all runs this with LLMK_CPU=avx2 and
 * =scalar too), and the quantized Linear layer against a double dot. The
 * formulas against an independent numpy reading of bitsandbytes are in
 * t/conformance/test_quant_nf4.py. */
#include "llmk.h"
#include "nf4.h"
#include "quant.h"
#include "unit.h"

#include <math.h>

/* uniform in [-1, 1) */
static float urand(void) { return (float)((double)(unit_rand() >> 11) / 9007199254740992.0 * 2 - 1); }
/* roughly normal, with an occasional outlier, as real weights are */
static float nrand(void)
{
    float g = (urand() + urand() + urand() + urand()) * 0.866f;
    return unit_rand() % 64 ? g : g * 8;
}
static uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static void wr_f32(uint8_t *p, float f)
{
    uint32_t u = f_bits(f);
    p[0] = (uint8_t)u, p[1] = (uint8_t)(u >> 8), p[2] = (uint8_t)(u >> 16), p[3] = (uint8_t)(u >> 24);
}
static int same_floats(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (f_bits(a[i]) != f_bits(b[i])) {
            printf("# element %zu: %.9g (%08x) != %.9g (%08x)\n", i, a[i], f_bits(a[i]), b[i], f_bits(b[i]));
            return 0;
        }
    return 1;
}

/* a valid tensor of n weights with random codes, absmax codes, scales of
 * many sizes and an offset */
static void random_tensor(uint8_t *w, size_t n)
{
    size_t nb = n / 64, ng = llmk__nf4_ngroups(n);
    for (size_t i = 0; i < n / 2 + nb; i++) w[i] = (uint8_t)unit_rand();
    for (size_t g = 0; g < ng; g++) wr_f32(w + llmk__nf4_scales_at(n) + 4 * g, ldexpf(urand() + 1.5f, (int)(unit_rand() % 40) - 30));
    wr_f32(w + llmk__nf4_offset_at(n), ldexpf(urand() + 1.5f, (int)(unit_rand() % 20) - 12));
}

TEST(traits_and_sizes)
{
    llmk_qtype t;
    CHECK(llmk_qtype_find("nf4", &t) == 0 && t == LLMK_NF4);
    CHECK(!strcmp(llmk_qtype_traits(LLMK_NF4)->name, "nf4"));
    CHECK_EQ_U64(llmk_qtype_traits(LLMK_NF4)->block_elems, 64);
    CHECK_EQ_U64(llmk_qtype_traits(LLMK_NF4)->block_bytes, 33);
    /* n/2 codes + n/64 absmax codes + 4 per 256 blocks (rounded up) + 4 */
    CHECK_EQ_U64(llmk_qbytes(LLMK_NF4, 0), 4);
    CHECK_EQ_U64(llmk_qbytes(LLMK_NF4, 64), 32 + 1 + 4 + 4);
    CHECK_EQ_U64(llmk_qbytes(LLMK_NF4, 64 * 256), 256 * 33 + 4 + 4);
    CHECK_EQ_U64(llmk_qbytes(LLMK_NF4, 64 * 257), 257 * 33 + 8 + 4);
    CHECK_EQ_U64(llmk_qbytes(LLMK_NF4, 4096 * 4096), 4096 * 4096 / 64 * 33 + 4 * 1024 + 4);
    CHECK_EQ_U64(llmk__nf4_absmax_at(640), 320);
    CHECK_EQ_U64(llmk__nf4_scales_at(640), 330);
    CHECK_EQ_U64(llmk__nf4_offset_at(640), 334);
    /* the library's size of a logical shape agrees, tail included */
    uint64_t nbytes = 0;
    const llm_quant_type *q = llm_quant_find("nf4");
    CHECK(q != NULL);
    uint64_t shape[2] = {300, 128};
    CHECK(q && llm_quant_nbytes(q, 2, shape, &nbytes) == 0);
    CHECK_EQ_U64(nbytes, llmk_qbytes(LLMK_NF4, 300 * 128));
    uint64_t bad[2] = {3, 96};
    CHECK(q && llm_quant_nbytes(q, 2, bad, &nbytes) == -1);
    uint64_t huge[2] = {1ull << 62, 64};
    CHECK(q && llm_quant_nbytes(q, 2, huge, &nbytes) == -1);
}

/* The codebook as QLoRA and bitsandbytes give it, and the thresholds
 * between its values. */
TEST(codebook)
{
    const float *N = llmk__nf4_codebook, *T = llmk__nf4_thresholds;
    CHECK(N[0] == -1.0f && N[7] == 0.0f && N[15] == 1.0f);
    CHECK(N[1] == -0.6961928009986877f && N[8] == 0.07958029955625534f && N[14] == 0.7229568362236023f);
    CHECK_EQ_U64(f_bits(N[1]), 0xbf3239b1);    /* -0.6961928009986877 in binary32 */
    CHECK_EQ_U64(f_bits(N[13]), 0x3f1007ab);   /* 0.5626170039176941 */
    for (int k = 0; k < 15; k++) {
        CHECK(N[k] < N[k + 1]);
        /* each threshold is its neighbours' midpoint, to within a float's rounding */
        double mid = ((double)N[k] + N[k + 1]) / 2;
        CHECK(fabs(T[k] - mid) <= 1e-7 * fabs(mid) + 1e-9);
    }
}

/* create_dynamic_map(signed=True) recomputed by bitsandbytes' algorithm
 * with torch's float arithmetic (see nf4_ref.c), against the table */
TEST(dynamic_map)
{
    const float *M = llmk__nf4_map;
    float v[256];
    int k = 0;
    static const double pow10[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1};
    for (int i = 0; i < 7; i++) {
        int steps = (1 << i) + 1, half = steps / 2;
        float start = 0.1f, end = 1.0f, step = (end - start) / (float)(steps - 1), b[65];
        for (int j = 0; j < steps; j++)
            b[j] = j < half ? fmaf(step, (float)j, start) : fmaf(-step, (float)(steps - j - 1), end);
        float scale = (float)pow10[i];
        for (int j = 0; j + 1 < steps; j++) {
            float mean = (b[j] + b[j + 1]) / 2.0f;
            v[k++] = scale * mean;
            v[k++] = -scale * mean;
        }
    }
    v[k++] = 0.0f;
    v[k++] = 1.0f;
    CHECK_EQ_U64(k, 256);
    for (int i = 1; i < 256; i++)   /* insertion sort */
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            float t = v[j];
            v[j] = v[j - 1], v[j - 1] = t;
        }
    CHECK(same_floats(v, M, 256));
    for (int i = 0; i + 1 < 256; i++) CHECK(M[i] < M[i + 1]);
    for (int i = 0; i < 127; i++) CHECK(M[i] == -M[254 - i]);
    CHECK(M[127] == 0.0f && M[255] == 1.0f);
    CHECK_EQ_U64(f_bits(M[254]), 0x3f7e3333);   /* 0.99296875 (midpoint of 0.9859375 and 1) */
    CHECK_EQ_U64(f_bits(M[0]), 0xbf7e3333);
    CHECK(M[128] == 5.5000004e-07f);            /* 1e-6 x 0.55 in float */
}

/* the two roundings: codes by thresholds (ties down) and the map's
 * nearest value (ties to the even index, as the kernel's search ends) */
TEST(rounding_and_ties)
{
    const float *N = llmk__nf4_codebook, *T = llmk__nf4_thresholds, *M = llmk__nf4_map;
    for (int k = 0; k < 16; k++) CHECK_EQ_U64(llmk__nf4_code(N[k]), k);
    for (int k = 0; k < 15; k++) {
        CHECK_EQ_U64(llmk__nf4_code(T[k]), k);                            /* at the threshold: the lower */
        CHECK_EQ_U64(llmk__nf4_code(nextafterf(T[k], 2.0f)), k + 1);      /* just above: the upper */
    }
    CHECK_EQ_U64(llmk__nf4_code(-1.5f), 0);
    CHECK_EQ_U64(llmk__nf4_code(1.5f), 15);
    CHECK_EQ_U64(llmk__nf4_code(NAN), 0);
    for (int i = 0; i < 256; i++) CHECK_EQ_U64(llmk__nf4_map_code(M[i]), i);
    int ties_ok = 1, near_ok = 1;
    for (int i = 0; i + 1 < 256; i++) {
        float mid = (M[i] + M[i + 1]) * 0.5f;
        if (mid > M[i] && mid < M[i + 1] && llmk__nf4_map_code(mid) != (i % 2 ? i + 1 : i)) ties_ok = 0;
        if (llmk__nf4_map_code(nextafterf(mid, -2.0f)) != i || llmk__nf4_map_code(nextafterf(mid, 2.0f)) != i + 1) near_ok = 0;
    }
    CHECK(ties_ok);
    CHECK(near_ok);
    CHECK_EQ_U64(llmk__nf4_map_code(-1.0f), 0);
    CHECK_EQ_U64(llmk__nf4_map_code(1.0f), 255);
    /* random values: the nearest codes, to within the rounding of the float
     * midpoints and thresholds */
    int bad = 0;
    for (int r = 0; r < 20000; r++) {
        float s = urand() * (r % 2 ? 1.0f : ldexpf(1.0f, -(int)(unit_rand() % 20)));
        int c = llmk__nf4_code(s), m = llmk__nf4_map_code(s);
        for (int j = 0; j < 16; j++)
            if (fabs((double)s - N[c]) > fabs((double)s - N[j]) + 1e-7) bad++;
        for (int j = 0; j < 256; j++)
            if (fabs((double)s - M[m]) > fabs((double)s - M[j]) + 1e-7 * fabs(s)) bad++;
    }
    CHECK_EQ_U64(bad, 0);
}

/* a tensor written by hand decodes to the values llm-tensors(5) gives */
TEST(layout_by_hand)
{
    enum { n = 128 };
    uint8_t w[1 + 64 + 2 + 4 + 4];
    uint8_t *p = w + 1;   /* odd address: no alignment needed */
    const float *N = llmk__nf4_codebook, *M = llmk__nf4_map;
    for (int k = 0; k < 64; k++) p[k] = (uint8_t)((k & 15) << 4 | (15 - (k & 15)));
    p[64] = 255, p[65] = 100;   /* absmax codes */
    wr_f32(p + 66, 2.0f);       /* the scale of the only group */
    wr_f32(p + 70, 0.5f);       /* the offset */
    CHECK_EQ_U64(llmk_qbytes(LLMK_NF4, n), 74);
    float a0 = 1.0f * 2.0f + 0.5f, a1 = M[100] * 2.0f + 0.5f, want[n], got[n], fast[n], am[2];
    for (int k = 0; k < 64; k++) {
        float a = k < 32 ? a0 : a1;
        want[2 * k] = N[k & 15] * a;            /* the high nibble: the first of the pair */
        want[2 * k + 1] = N[15 - (k & 15)] * a;
    }
    llmk__nf4_absmax(am, p, n, 0, 2);
    CHECK(am[0] == 2.5f && am[1] == a1);
    llmk_dequantize_ref(LLMK_NF4, got, p, n);
    llmk_dequantize(LLMK_NF4, fast, p, n);
    CHECK(same_floats(got, want, n));
    CHECK(same_floats(fast, want, n));
    CHECK(got[0] == -2.5f && got[1] == 2.5f && got[14] == 0.0f);
}

/* Quantizing known values gives the bytes of the rules: the sections, the
 * nibble order, the offset and scale, and an all-zero block. */
TEST(quantize_known_values)
{
    enum { n = 192 };
    float x[n], back[n];
    uint8_t q[n / 2 + 3 + 4 + 4];
    const float *N = llmk__nf4_codebook;
    /* block 0: codebook values x 3 (absmax 3: codes are the indices);
     * block 1: x 1 (absmax 1); block 2: zeros */
    for (int j = 0; j < 64; j++) {
        x[j] = N[(j * 7) & 15] * 3.0f;
        x[64 + j] = N[(j * 5 + 3) & 15];
        x[128 + j] = 0.0f;
    }
    llmk_quantize_ref(LLMK_NF4, q, x, n);
    int codes_ok = 1;
    for (int k = 0; k < 32; k++) {
        if (q[k] != (((2 * k * 7) & 15) << 4 | (((2 * k + 1) * 7) & 15))) codes_ok = 0;
        if (q[32 + k] != (((2 * k * 5 + 3) & 15) << 4 | (((2 * k + 1) * 5 + 3) & 15))) codes_ok = 0;
        if (q[64 + k] != 0x77) codes_ok = 0;   /* zeros: code 7 (0.0) */
    }
    CHECK(codes_ok);
    /* offset = mean(3, 1, 0) = 4/3; d = (5/3, -1/3, -4/3), scale 5/3 */
    float offset = (float)(4.0 / 3.0), d0 = 3.0f - offset, d2 = 0.0f - offset;
    CHECK(llmk__nf4_rdf32(q + 96 + 3 + 4) == offset);
    CHECK(llmk__nf4_rdf32(q + 96 + 3) == d0);
    CHECK_EQ_U64(q[96], 255);   /* d0 / scale = 1 */
    CHECK_EQ_U64(q[96 + 1], llmk__nf4_map_code((1.0f - offset) * (1.0f / d0)));
    CHECK_EQ_U64(q[96 + 2], llmk__nf4_map_code(d2 * (1.0f / d0)));
    llmk_dequantize_ref(LLMK_NF4, back, q, n);
    for (int j = 0; j < 64; j++) CHECK(back[j] == x[j]);   /* absmax 3 comes back exactly */
    for (int j = 128; j < n; j++) CHECK(back[j] == 0.0f);
    /* one block: offset = absmax, scale 0 */
    llmk_quantize_ref(LLMK_NF4, q, x, 64);
    CHECK(llmk__nf4_rdf32(q + 33) == 0.0f && llmk__nf4_rdf32(q + 37) == 3.0f);
    llmk_dequantize_ref(LLMK_NF4, back, q, 64);
    CHECK(same_floats(back, x, 64));
}

/* Random weights, n / 64 not a multiple of 256: each absmax comes back
 * within half a step of the map, each weight within half a step of the
 * codebook, and the codes are the nearest. */
TEST(round_trip_bounds)
{
    const size_t sizes[] = {64, 64 * 255, 64 * 600, 64 * 1025};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si], nb = n / 64;
        float *x = malloc(n * 4), *back = malloc(n * 4), *am = malloc(nb * 4);
        uint8_t *q = malloc(llmk_qbytes(LLMK_NF4, n));
        float scale = ldexpf(1.0f, (int)(unit_rand() % 30) - 20);
        for (size_t i = 0; i < n; i++) x[i] = nrand() * scale;
        llmk_quantize_ref(LLMK_NF4, q, x, n);
        llmk_dequantize_ref(LLMK_NF4, back, q, n);
        llmk__nf4_absmax(am, q, n, 0, nb);
        double sum = 0;
        for (size_t b = 0; b < nb; b++) {
            float m = 0;
            for (int j = 0; j < 64; j++) m = fmaxf(m, fabsf(x[64 * b + j]));
            sum += m;
        }
        float offset = (float)(sum / (double)nb);
        CHECK(llmk__nf4_rdf32(q + llmk__nf4_offset_at(n)) == offset);
        int am_ok = 1, w_ok = 1;
        double sq = 0, ref = 0;
        for (size_t b = 0; b < nb; b++) {
            float m = 0;
            for (int j = 0; j < 64; j++) m = fmaxf(m, fabsf(x[64 * b + j]));
            float sg = llmk__nf4_rdf32(q + llmk__nf4_scales_at(n) + 4 * (b / 256));
            /* the map's widest step is 0.9 / 64: half of it, of the scale */
            if (fabs((double)am[b] - m) > 0.00704 * sg + 1e-6 * m) am_ok = 0;
            for (int j = 0; j < 64; j++) {
                double e = fabs((double)back[64 * b + j] - x[64 * b + j]);
                /* the codebook's widest step is -1 to -0.6961928: half of it, of the absmax */
                if (e > 0.15191 * m + fabs((double)am[b] - m) + 1e-6 * m) {
                    if (w_ok) printf("# n %zu block %zu: x %.9g back %.9g absmax %.9g, decoded %.9g\n", n, b, x[64 * b + j], back[64 * b + j], m, am[b]);
                    w_ok = 0;
                }
                sq += e * e;
                ref += (double)x[64 * b + j] * x[64 * b + j];
            }
        }
        CHECK(am_ok);
        CHECK(w_ok);
        if (nb > 100) CHECK(sqrt(sq / ref) < 0.16);   /* about 0.1 for normal weights, 0.14 with these outliers */
        free(x), free(back), free(am), free(q);
    }
}

/* the CPU dequantization is the ref's, bit for bit, whole and by rows */
TEST(dequantize_fast_vs_ref)
{
    const size_t ics[] = {64, 192, 4096}, ocs[] = {1, 300, 17};
    for (int t = 0; t < 3; t++) {
        size_t ic = ics[t], oc = ocs[t], n = ic * oc;
        uint8_t *w = malloc(llmk_qbytes(LLMK_NF4, n) + 1);
        float *a = malloc(n * 4), *b = malloc(n * 4), *r = malloc(n * 4);
        random_tensor(w + 1, n);
        llmk_dequantize_ref(LLMK_NF4, a, w + 1, n);
        llmk_dequantize(LLMK_NF4, b, w + 1, n);
        CHECK(same_floats(a, b, n));
        /* rows: slices crossing the groups' boundaries */
        size_t spans[][2] = {{0, oc}, {0, 1}, {oc - 1, oc}, {oc / 3, oc / 3 + (oc + 1) / 2}};
        for (int s = 0; s < 4; s++) {
            size_t r0 = spans[s][0], r1 = spans[s][1];
            llmk_dequantize_rows(LLMK_NF4, r, w + 1, ic, oc, r0, r1);
            CHECK(same_floats(r, a + r0 * ic, (r1 - r0) * ic));
            llmk__nf4_dequantize_rows_ref(r, w + 1, ic, oc, r0, r1);
            CHECK(same_floats(r, a + r0 * ic, (r1 - r0) * ic));
        }
        free(w), free(a), free(b), free(r);
    }
}

/* the Linear layer: the ref is the double dot of x with the dequantized
 * weights; the CPU path agrees within float rounding, gives each output
 * the same bits whatever the number of rows and threads */
TEST(qlinear)
{
    /* (rows, ic, oc): odd blocks, stretches of 512 columns and a part one,
     * tiles of 8 x rows and of 16 weight rows and their remainders */
    const size_t shapes[][3] = {{1, 64, 3}, {1, 2048, 40}, {5, 192, 33}, {9, 4096, 7}, {70, 128, 9}, {13, 704, 37}};
    for (int s = 0; s < 6; s++) {
        size_t rows = shapes[s][0], ic = shapes[s][1], oc = shapes[s][2], n = ic * oc;
        uint8_t *w = malloc(llmk_qbytes(LLMK_NF4, n));
        float *wf = malloc(n * 4), *x = malloc(rows * ic * 4), *ref = malloc(rows * oc * 4);
        float *fast = malloc(rows * oc * 4), *one = malloc(oc * 4), *t1 = malloc(rows * oc * 4);
        for (size_t i = 0; i < n; i++) wf[i] = nrand() * 0.02f;
        for (size_t i = 0; i < rows * ic; i++) x[i] = nrand();
        llmk_quantize_ref(LLMK_NF4, w, wf, n);
        llmk_dequantize_ref(LLMK_NF4, wf, w, n);
        llmk_qlinear_ref(LLMK_NF4, ref, x, w, rows, ic, oc);
        llmk_qlinear(LLMK_NF4, fast, x, w, rows, ic, oc);
        int ref_ok = 1, fast_ok = 1, rows_ok = 1;
        for (size_t r = 0; r < rows; r++) {
            for (size_t o = 0; o < oc; o++) {
                double d = 0, mag = 0;
                for (size_t i = 0; i < ic; i++) {
                    d += (double)wf[o * ic + i] * x[r * ic + i];
                    mag += fabs((double)wf[o * ic + i] * x[r * ic + i]);
                }
                if (ref[r * oc + o] != (float)d) ref_ok = 0;
                /* lanes of ic / 16 fused steps, 64-weight blocks, a sum of 16 */
                double tol = (ic / 8.0 + 40) * 0x1p-24 * mag + 1e-30;
                if (fabs(fast[r * oc + o] - d) > tol) {
                    if (fast_ok) printf("# rows %zu ic %zu: out[%zu][%zu] = %.9g, double %.9g\n", rows, ic, r, o, fast[r * oc + o], d);
                    fast_ok = 0;
                }
            }
            llmk_qlinear(LLMK_NF4, one, x + r * ic, w, 1, ic, oc);
            if (memcmp(one, fast + r * oc, oc * 4)) rows_ok = 0;
        }
        CHECK(ref_ok);
        CHECK(fast_ok);
        CHECK(rows_ok);
        llmk_set_threads(1);
        llmk_qlinear(LLMK_NF4, t1, x, w, rows, ic, oc);
        llmk_set_threads(0);
        CHECK(!memcmp(t1, fast, rows * oc * 4));
        free(w), free(wf), free(x), free(ref), free(fast), free(one), free(t1);
    }
}

/* random valid bytes (codes the quantizer never writes, scales of every
 * size) through the Linear layer too */
TEST(qlinear_random_bytes)
{
    size_t rows = 3, ic = 320, oc = 300, n = ic * oc;
    uint8_t *w = malloc(llmk_qbytes(LLMK_NF4, n));
    float *wf = malloc(n * 4), *x = malloc(rows * ic * 4), *fast = malloc(rows * oc * 4);
    random_tensor(w, n);
    llmk_dequantize_ref(LLMK_NF4, wf, w, n);
    for (size_t i = 0; i < rows * ic; i++) x[i] = urand();
    llmk_qlinear(LLMK_NF4, fast, x, w, rows, ic, oc);
    int ok = 1;
    for (size_t r = 0; r < rows; r++)
        for (size_t o = 0; o < oc; o++) {
            double d = 0, mag = 0;
            for (size_t i = 0; i < ic; i++) {
                d += (double)wf[o * ic + i] * x[r * ic + i];
                mag += fabs((double)wf[o * ic + i] * x[r * ic + i]);
            }
            if (fabs(fast[r * oc + o] - d) > (ic / 8.0 + 40) * 0x1p-24 * mag + 1e-30) ok = 0;
        }
    CHECK(ok);
    free(w), free(wf), free(x), free(fast);
}

TEST(qlinear_edges)
{
    size_t ic = 128, oc = 5;
    uint8_t *w = malloc(llmk_qbytes(LLMK_NF4, ic * oc));
    float x[2 * 128], out[10];
    for (size_t i = 0; i < 2 * ic; i++) x[i] = urand();
    random_tensor(w, ic * oc);
    int bad = 0;
    for (int i = 0; i < 10; i++) out[i] = NAN;
    llmk_qlinear(LLMK_NF4, out, x, w, 2, 0, oc);   /* ic = 0: empty sums */
    for (int i = 0; i < 10; i++) bad += out[i] != 0.0f;
    for (int i = 0; i < 10; i++) out[i] = NAN;
    llmk_qlinear_ref(LLMK_NF4, out, x, w, 2, 0, oc);
    for (int i = 0; i < 10; i++) bad += out[i] != 0.0f;
    for (int i = 0; i < 10; i++) out[i] = NAN;
    llmk_qlinear(LLMK_NF4, out, x, w, 0, ic, oc);  /* no rows, no outputs: nothing written */
    llmk_qlinear(LLMK_NF4, out, x, w, 2, ic, 0);
    for (int i = 0; i < 10; i++) bad += !isnan(out[i]);
    CHECK(bad == 0);
    free(w);
}

int main(void)
{
    unit_seed();
    printf("# cpu path: %s\n", llmk_cpu_path());
    RUN(traits_and_sizes);
    RUN(codebook);
    RUN(dynamic_map);
    RUN(rounding_and_ties);
    RUN(layout_by_hand);
    RUN(quantize_known_values);
    RUN(round_trip_bounds);
    RUN(dequantize_fast_vs_ref);
    RUN(qlinear);
    RUN(qlinear_random_bytes);
    RUN(qlinear_edges);
    return unit_done();
}
