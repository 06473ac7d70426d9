/* Quantized blocks (q8_0, q4_0, q4_k): the refs against hand-made blocks and
 * error bounds, the fast kernels against the refs, and the quantized Linear
 * layer against a float product. The layouts against other implementations
 * are in t/conformance/test_quant_gguf.py. */
#include "llmk.h"
#include "unit.h"

#include <math.h>

static const llmk_qtype TYPES[] = {LLMK_Q8_0, LLMK_Q4_0, LLMK_Q4_K};

/* uniform in [-1, 1) */
static float urand(void) { return (float)((double)(unit_rand() >> 11) / 9007199254740992.0 * 2 - 1); }
/* roughly normal (sum of 4 uniforms, variance 1) */
static float gauss(void) { return (urand() + urand() + urand() + urand()) * 0.866f; }
/* the same with an occasional outlier, as real weights have */
static float nrand(void) { return unit_rand() % 64 ? gauss() : gauss() * 8; }

static float f16(uint16_t h)
{
    float f;
    llmk_f16_to_f32_ref(&f, &h, 1);
    return f;
}
static uint16_t to_f16(float f)
{
    uint16_t h;
    llmk_f32_to_f16_ref(&h, &f, 1);
    return h;
}
static float rd_f16(const uint8_t *p) { return f16((uint16_t)(p[0] | p[1] << 8)); }
static void wr_f16(uint8_t *p, uint16_t h) { p[0] = (uint8_t)h, p[1] = (uint8_t)(h >> 8); }
static uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* q4_k's 12 scale bytes from 8 six-bit scales and minimums, by the rule
 * llm-tensors(5) gives for reading them */
static void pack_q4k_scales(uint8_t *s, const uint8_t *sc, const uint8_t *m)
{
    memset(s, 0, 12);
    for (int i = 0; i < 4; i++) {
        s[i] = (uint8_t)(sc[i] | (sc[i + 4] >> 4) << 6);
        s[i + 4] = (uint8_t)(m[i] | (m[i + 4] >> 4) << 6);
        s[i + 8] = (uint8_t)((sc[i + 4] & 15) | (m[i + 4] & 15) << 4);
    }
}

TEST(traits)
{
    CHECK(!strcmp(llmk_qtype_traits(LLMK_Q8_0)->name, "q8_0"));
    CHECK_EQ_U64(llmk_qtype_traits(LLMK_Q8_0)->block_elems, 32);
    CHECK_EQ_U64(llmk_qtype_traits(LLMK_Q8_0)->block_bytes, 34);
    CHECK(!strcmp(llmk_qtype_traits(LLMK_Q4_0)->name, "q4_0"));
    CHECK_EQ_U64(llmk_qtype_traits(LLMK_Q4_0)->block_bytes, 18);
    CHECK(!strcmp(llmk_qtype_traits(LLMK_Q4_K)->name, "q4_k"));
    CHECK_EQ_U64(llmk_qtype_traits(LLMK_Q4_K)->block_elems, 256);
    CHECK_EQ_U64(llmk_qtype_traits(LLMK_Q4_K)->block_bytes, 144);
    CHECK(llmk_qtype_traits(LLMK_QTYPE_COUNT) == NULL);
    CHECK_EQ_U64(llmk_qbytes(LLMK_Q8_0, 4096), 128 * 34);
    CHECK_EQ_U64(llmk_qbytes(LLMK_Q4_0, 4096), 128 * 18);
    CHECK_EQ_U64(llmk_qbytes(LLMK_Q4_K, 4096), 16 * 144);
    CHECK_EQ_U64(llmk_qbytes(LLMK_Q4_K, 0), 0);
}

/* blocks written by hand decode to the values llm-tensors(5) gives, on
 * both paths */
TEST(hand_made_blocks)
{
    uint8_t b8[34 + 1], b4[18 + 1], bk[144 + 1];
    float want[256], got[256], fast[256];
    /* q8_0: d = 0.5, q[j] = j - 16, and one -128 */
    wr_f16(b8 + 1, 0x3800);
    for (int j = 0; j < 32; j++) b8[1 + 2 + j] = (uint8_t)(int8_t)(j - 16);
    b8[1 + 2 + 31] = 0x80;
    for (int j = 0; j < 32; j++) want[j] = (j - 16) * 0.5f;
    want[31] = -64.0f;
    llmk_dequantize_ref(LLMK_Q8_0, got, b8 + 1, 32);   /* odd address: no alignment needed */
    llmk_dequantize(LLMK_Q8_0, fast, b8 + 1, 32);
    CHECK(!memcmp(got, want, 32 * sizeof(float)));
    CHECK(!memcmp(fast, want, 32 * sizeof(float)));

    /* q4_0: d = -2, byte j = j | (15 - j) << 4: weight j = -2 (j - 8), weight j+16 = -2 (7 - j) */
    wr_f16(b4 + 1, 0xc000);
    for (int j = 0; j < 16; j++) b4[1 + 2 + j] = (uint8_t)(j | (15 - j) << 4);
    for (int j = 0; j < 16; j++) want[j] = -2.0f * (j - 8), want[j + 16] = -2.0f * (7 - j);
    llmk_dequantize_ref(LLMK_Q4_0, got, b4 + 1, 32);
    llmk_dequantize(LLMK_Q4_0, fast, b4 + 1, 32);
    CHECK(!memcmp(got, want, 32 * sizeof(float)));
    CHECK(!memcmp(fast, want, 32 * sizeof(float)));

    /* q4_k: d = 0.25, dmin = 0.5, scales and minimums that use the top bits,
     * code of weight l in run j = (l + 3j) & 15 */
    const uint8_t sc[8] = {1, 2, 3, 63, 17, 33, 48, 5}, m[8] = {0, 1, 62, 4, 35, 16, 63, 2};
    wr_f16(bk + 1, 0x3400);
    wr_f16(bk + 3, 0x3800);
    pack_q4k_scales(bk + 5, sc, m);
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l++) {
            int code = (l + 3 * j) & 15;
            uint8_t *q = bk + 1 + 16 + 32 * (j / 2) + l;
            if (j % 2 == 0) *q = (uint8_t)code;
            else *q |= (uint8_t)(code << 4);
            want[32 * j + l] = 0.25f * sc[j] * code - 0.5f * m[j];   /* exact in float */
        }
    llmk_dequantize_ref(LLMK_Q4_K, got, bk + 1, 256);
    llmk_dequantize(LLMK_Q4_K, fast, bk + 1, 256);
    CHECK(!memcmp(got, want, 256 * sizeof(float)));
    CHECK(!memcmp(fast, want, 256 * sizeof(float)));
    /* the packed bytes by hand for two runs: run 3's scale 63 lies in byte 3's low 6
     * bits, run 4's scale 17 = 0b010001 splits into byte 8's low nibble (1) and
     * byte 0's top bits (01) */
    CHECK_EQ_U64(bk[5 + 3] & 63, 63);
    CHECK_EQ_U64(bk[5 + 8] & 15, 1);
    CHECK_EQ_U64(bk[5 + 0] >> 6, 1);
}

/* Quantizing known values gives the bytes llama.cpp's rules give. */
TEST(quantize_known_values)
{
    float x[256];
    uint8_t b[144];
    /* q8_0: amax 127 -> d = 1, codes = x rounded half away from zero */
    for (int j = 0; j < 32; j++) x[j] = (float)j - 15.5f;
    x[0] = -127.0f;
    llmk_quantize_ref(LLMK_Q8_0, b, x, 32);
    CHECK_EQ_U64(b[0] | b[1] << 8, 0x3c00);
    CHECK((int8_t)b[2] == -127);
    CHECK((int8_t)b[2 + 1] == -15);   /* -14.5 -> -15 */
    CHECK((int8_t)b[2 + 16] == 1);    /* 0.5 -> 1 */
    CHECK((int8_t)b[2 + 31] == 16);   /* 15.5 -> 16 */
    /* q4_0: the largest magnitude (first of ties) maps to -8: max = -8 here, d = 1 */
    for (int j = 0; j < 32; j++) x[j] = (float)(j % 16) - 7.0f;   /* -7 .. 8 */
    x[5] = -8.0f;
    x[9] = 8.0f;   /* |8| ties |-8|: the first one (x[5] = -8) sets d = 1 */
    llmk_quantize_ref(LLMK_Q4_0, b, x, 32);
    CHECK_EQ_U64(b[0] | b[1] << 8, 0x3c00);
    CHECK_EQ_U64(b[2 + 5] & 15, 0);   /* -8 -> code 0 */
    CHECK_EQ_U64(b[2 + 9] & 15, 15);  /* +8 -> 16.5 truncated to 16, capped at 15 */
    CHECK_EQ_U64(b[2 + 0] & 15, 1);   /* -7 -> 1.5 -> 1 */
    CHECK_EQ_U64(b[2 + 0] >> 4, 1);   /* x[16] = -7 */
    /* q4_k: a zero block is all zero bytes */
    memset(x, 0, sizeof x);
    memset(b, 0xff, sizeof b);
    llmk_quantize_ref(LLMK_Q4_K, b, x, 256);
    int nonzero = 0;
    for (int i = 0; i < 144; i++) nonzero += b[i] != 0;
    CHECK(nonzero == 0);
    /* q4_k: codes 0..15 times 1/4 in every run are reproduced exactly */
    for (int j = 0; j < 256; j++) x[j] = (float)(j % 16) * 0.25f;
    llmk_quantize_ref(LLMK_Q4_K, b, x, 256);
    float y[256];
    llmk_dequantize_ref(LLMK_Q4_K, y, b, 256);
    double maxerr = 0;
    for (int j = 0; j < 256; j++) maxerr = fmax(maxerr, fabs(y[j] - x[j]));
    CHECK(maxerr <= 3.75 * ldexp(1, -11));   /* d = 0.25/63 rounded to f16: 2^-11 relative */
}

/* Round trips of random rows, against bounds that follow from the rules:
 *   q8_0: code = round(x / d) with d = amax / 127 exactly; stored d16 is d
 *         rounded to f16 (relative 2^-11), so |x - code d16| <= d/2 +
 *         127 |d - d16| (plus a few float roundings: 1e-6 d).
 *   q4_0: code = trunc(x / d + 8.5) with d = max / -8: |x - (code - 8) d16|
 *         <= |d|/2 + 8 |d - d16| while x / d <= 7.5; above that (values near
 *         -max) code 16 is capped at 15 and the error grows to at most |d|.
 *   q4_k: 8 runs of 32, each an affine 4-bit grid (step d sc, offset dmin
 *         m) fitted by a search and then rounded to 6-bit scales: no
 *         per-weight bound holds (clamping is possible), so the bound is on
 *         the RMSE. On each run rounding to the nearest grid point gives at
 *         most step/2 per weight, and step ~ (max - min) / 15 of the run;
 *         the test asks RMSE <= 0.5 x mean(max - min)/15 over a row, at
 *         every scale. For near-normal data (no outliers) the range of 32
 *         samples is about 4 sigma, so the uniform-error model step/sqrt(12)
 *         gives RMSE / rms(x) ~ 4/15/3.46 = 0.077; measured 0.069 (worst
 *         0.071 over 50 rows) at every scale from 2^-10 to 2^4, and the test
 *         allows 0.08 there. Below 2^-10 sigma, d = max scale / 63 and dmin
 *         fall into f16's subnormals and lose relative precision (0.08 at
 *         2^-14, 0.24 at 2^-16): the format's limit, ggml's too. */
TEST(roundtrip_error_bounds)
{
    enum { N = 4096 };
    static float x[N], y[N];
    static uint8_t q[N / 32 * 34];
    int bad8 = 0, bad4 = 0, bad4far = 0, badk = 0;
    double worst_rel = 0;
    for (int rep = 0; rep < 30; rep++) {
        float scale = ldexpf(1.0f, (int)(unit_rand() % 30) - 15);
        for (int i = 0; i < N; i++) x[i] = (rep % 3 == 0 ? urand() : rep % 3 == 1 ? gauss() : nrand()) * scale;

        llmk_quantize_ref(LLMK_Q8_0, q, x, N);
        llmk_dequantize_ref(LLMK_Q8_0, y, q, N);
        for (int b = 0; b < N / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
            double d = (double)amax / 127, d16 = rd_f16(q + 34 * b);
            double bound = d / 2 + 127 * fabs(d - d16) + 1e-6 * d;
            for (int j = 0; j < 32; j++) bad8 += fabs((double)x[32 * b + j] - y[32 * b + j]) > bound;
        }

        llmk_quantize_ref(LLMK_Q4_0, q, x, N);
        llmk_dequantize_ref(LLMK_Q4_0, y, q, N);
        for (int b = 0; b < N / 32; b++) {
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
                if (amax < fabsf(x[32 * b + j])) amax = fabsf(x[32 * b + j]), max = x[32 * b + j];
            double d = (double)max / -8, d16 = rd_f16(q + 18 * b);
            for (int j = 0; j < 32; j++) {
                double xv = x[32 * b + j], err = fabs(xv - y[32 * b + j]);
                double slack = 8 * fabs(d - d16) + 1e-6 * fabs(d);
                if (xv / d <= 7.5) bad4 += err > fabs(d) / 2 + slack;
                else bad4far += err > fabs(d) + slack;
            }
        }

        llmk_quantize_ref(LLMK_Q4_K, q, x, N);
        llmk_dequantize_ref(LLMK_Q4_K, y, q, N);
        double se = 0, sx = 0, steps = 0;
        for (int i = 0; i < N; i++) se += ((double)x[i] - y[i]) * ((double)x[i] - y[i]), sx += (double)x[i] * x[i];
        for (int r = 0; r < N / 32; r++) {
            float lo = 0, hi = 0;   /* the grid always reaches 0 from below: min <= 0 */
            for (int j = 0; j < 32; j++) lo = fminf(lo, x[32 * r + j]), hi = fmaxf(hi, x[32 * r + j]);
            steps += ((double)hi - lo) / 15;
        }
        double rmse = sqrt(se / N);
        /* below 2^-10 the super-block's f16 d and dmin (about a thousandth of
         * the weights) fall among f16 subnormals, whose coarse steps add to
         * the error (seen: 0.51 of a step at 2^-15): the bound holds above */
        if (scale >= 0x1p-10f) badk += rmse > 0.5 * steps / (N / 32);
        if (rep % 3 == 1 && scale >= 0x1p-10f) worst_rel = fmax(worst_rel, rmse / sqrt(sx / N));
    }
    CHECK(bad8 == 0);
    CHECK(bad4 == 0);
    CHECK(bad4far == 0);
    CHECK(badk == 0);
    CHECK(worst_rel <= 0.08);
    printf("# q4_k relative RMSE on near-normal rows: worst %.4f\n", worst_rel);
}

/* random blocks: random bytes with a finite d (and dmin), or real quantized values */
static void random_blocks(llmk_qtype t, uint8_t *w, size_t n, int real, float *scratch)
{
    if (real) {
        for (size_t i = 0; i < n; i++) scratch[i] = nrand();
        llmk_quantize_ref(t, w, scratch, n);
        return;
    }
    const llmk_qtraits *q = llmk_qtype_traits(t);
    size_t bytes = llmk_qbytes(t, n);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)unit_rand();
    for (size_t b = 0; b < n / q->block_elems; b++) {
        uint8_t *blk = w + b * q->block_bytes;
        wr_f16(blk, to_f16(urand() * 0.1f));
        if (t == LLMK_Q4_K) wr_f16(blk + 2, to_f16(urand() * 0.1f));
    }
}

TEST(dequantize_fast_matches_ref)
{
    enum { N = 256 * 37 };
    static uint8_t w[N / 32 * 34 + 1];
    static float a[N], b[N], scratch[N];
    int bad = 0;
    for (int rep = 0; rep < 60; rep++) {
        llmk_qtype t = TYPES[rep % 3];
        size_t be = llmk_qtype_traits(t)->block_elems;
        size_t n = (unit_rand() % (N / be + 1)) * be, off = rep & 1;
        random_blocks(t, w + off, n, rep % 4 == 3, scratch);
        if (rep % 5 == 0) {   /* any bytes at all: f16 infinities, NaNs and subnormals in d */
            for (size_t i = 0; i < llmk_qbytes(t, n); i++) w[off + i] = (uint8_t)unit_rand();
        }
        memset(a, 0, sizeof a);
        memset(b, 0, sizeof b);
        llmk_dequantize_ref(t, a, w + off, n);
        llmk_dequantize(t, b, w + off, n);
        bad += memcmp(a, b, sizeof a) != 0;
    }
    CHECK(bad == 0);
    printf("# cpu path: %s%s\n", llmk_cpu_path(), llmk_cpu()->avx512vnni ? " (vnni)" : "");
}

/* x quantized to q8_0 and back: what the q8_0 and q4_0 dot products see */
static void x_as_seen_q8_0(double *xq, const float *x, size_t n)
{
    uint8_t blk[34];
    float v[32];
    for (size_t b = 0; b < n / 32; b++) {
        llmk_quantize_ref(LLMK_Q8_0, blk, x + 32 * b, 32);
        llmk_dequantize_ref(LLMK_Q8_0, v, blk, 32);
        for (int j = 0; j < 32; j++) xq[32 * b + j] = v[j];
    }
}

/* |fast - ref| for q8_0 and q4_0. Each block's integer dot is exact in both;
 * a block term is isum x (d_w d_x) (d_w d_x exact: two f16 values). The ref
 * rounds each term and adds them in order; the fast path fuses the multiply
 * into the add and sums in 16 (or 8) lanes, then across lanes. Either sum of
 * nb terms is within (nb + 1) u sum|term| of the exact sum (u = 2^-24,
 * first order), so they differ by at most 2 (nb + 1) u sum|term|, and
 * sum|term| <= sum_i |w_i| |xq_i| (w dequantized, xq as the dots see x).
 * q4_k keeps the ref's float steps, so there fast == ref bit for bit.
 *
 * From LLMK_QLINEAR_GEMM_ROWS rows on, the fast path is another product: the
 * fp32 GEMM of x itself and the weights dequantized (bit for bit the ref's
 * dequantization), so the bound above, which rests on both paths seeing the
 * same quantized x, does not apply. Checked instead, per output:
 *  - against the exact sum_k w_k x_k (double): each product is exact inside
 *    a fused multiply-add and a term passes through at most kc roundings in
 *    its K block plus one per later K block, fewer than 2 ic in all, so the
 *    error is within 2 ic u sum_k |w_k x_k| (first order);
 *  - against the ref, through the exact sum: that bound plus the ref's own
 *    distance from it, x's quantization sum_k |w_k| e_k (e_k as in
 *    qlinear_ref_vs_float, which tests that bound) and 1e-5 sum_k |w_k x_k|.
 * (The scalar path has no GEMM path: there llmk_qlinear is the ref.) */
static int qlinear_compare(llmk_qtype t, size_t rows, size_t ic, size_t oc, int real, const char *what)
{
    size_t rb = llmk_qbytes(t, ic), be = llmk_qtype_traits(t)->block_elems, nb = ic / be;
    uint8_t *w = malloc(rb * oc + 1);
    float *x = malloc(rows * ic * sizeof(float)), *wd = malloc(oc * ic * sizeof(float));
    float *r = malloc(rows * oc * sizeof(float)), *f = malloc(rows * oc * sizeof(float));
    double *xq = malloc(ic * sizeof(double));
    int bad = 0;
    random_blocks(t, w, ic * oc, real, wd);
    for (size_t i = 0; i < rows * ic; i++) x[i] = nrand();
    llmk_dequantize_ref(t, wd, w, ic * oc);
    llmk_qlinear_ref(t, r, x, w, rows, ic, oc);
    for (size_t i = 0; i < rows * oc; i++) f[i] = NAN;
    llmk_qlinear(t, f, x, w, rows, ic, oc);
    for (size_t i = 0; i < rows; i++) {
        if (rows >= LLMK_QLINEAR_GEMM_ROWS && strcmp(llmk_cpu_path(), "scalar")) {
            const float *xr = x + i * ic;
            for (size_t b = 0; b < nb; b++) {   /* xq[k]: x's quantization error bound e_k */
                double amax = 0;
                for (size_t k = b * be; k < (b + 1) * be; k++) amax = fmax(amax, fabs(xr[k]));
                for (size_t k = b * be; k < (b + 1) * be; k++) xq[k] = (t == LLMK_Q4_K ? 0.51 : 0.57) * amax / 127;
            }
            for (size_t o = 0; o < oc; o++) {
                double exact = 0, abs_sum = 0, xerr = 0, got = f[i * oc + o], ref = r[i * oc + o];
                for (size_t k = 0; k < ic; k++) {
                    double wk = wd[o * ic + k];
                    exact += wk * xr[k];
                    abs_sum += fabs(wk * xr[k]);
                    xerr += fabs(wk) * xq[k];
                }
                double tol = 2.0 * (double)ic * ldexp(1, -24) * abs_sum + 1e-30;
                bad += !(fabs(got - exact) <= tol);
                bad += !(fabs(got - ref) <= tol + xerr + 1e-5 * abs_sum);
            }
            continue;
        }
        if (t != LLMK_Q4_K) x_as_seen_q8_0(xq, x + i * ic, ic);
        for (size_t o = 0; o < oc; o++) {
            float a = r[i * oc + o], b = f[i * oc + o];
            if (t == LLMK_Q4_K) {
                if (f_bits(a) != f_bits(b)) bad++;
                continue;
            }
            double s = 0;
            for (size_t k = 0; k < ic; k++) s += fabs((double)wd[o * ic + k] * xq[k]);
            double tol = 2.0 * (double)(nb + 1) * ldexp(1, -24) * s + 1e-30;
            if (!(fabs((double)a - b) <= tol)) bad++;
        }
    }
    if (bad)
        printf("# %s %s rows %zu ic %zu oc %zu: %d outputs differ\n", what, llmk_qtype_traits(t)->name, rows, ic, oc,
               bad);
    free(w), free(x), free(wd), free(r), free(f), free(xq);
    return bad;
}

static int qlinear_all_shapes(const char *what)
{
    static const size_t ics[] = {32, 256, 512, 768}, ocs[] = {1, 3, 64, 100}, rowss[] = {1, 2, 5};
    int bad = 0;
    for (int ti = 0; ti < 3; ti++)
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++)
                for (int c = 0; c < 3; c++) {
                    if (ics[a] % llmk_qtype_traits(TYPES[ti])->block_elems) continue;
                    bad += qlinear_compare(TYPES[ti], rowss[c], ics[a], ocs[b], (a + b + c) & 1, what);
                }
    /* longer rows: several 16-block steps and a tail */
    bad += qlinear_compare(LLMK_Q8_0, 3, 32 * 45, 37, 1, what);
    bad += qlinear_compare(LLMK_Q4_0, 3, 32 * 45, 37, 0, what);
    bad += qlinear_compare(LLMK_Q4_K, 3, 256 * 9, 37, 1, what);
    /* on either side of the prefill threshold: the int8 dots' most rows; the
     * GEMM with whole and partial 12-row tiles, partial and several 32-column
     * panels (two threads' worth), one K block and several (q4_k's 9 blocks of
     * 256 in K blocks rounded up to 512: 4 x 512 + 256) */
    const size_t R = LLMK_QLINEAR_GEMM_ROWS;
    for (int ti = 0; ti < 3; ti++) {
        llmk_qtype t = TYPES[ti];
        size_t ic = t == LLMK_Q4_K ? 256 * 9 : 32 * 45;
        bad += qlinear_compare(t, R - 1, ic, 37, ti & 1, what);
        bad += qlinear_compare(t, R, 256, 37, 1, what);
        bad += qlinear_compare(t, R + 7, ic, 300, (ti & 1) ^ 1, what);
        bad += qlinear_compare(t, 3 * R + 1, 768, 100, 1, what);
    }
    return bad;
}

TEST(qlinear_fast_matches_ref)
{
    CHECK(qlinear_all_shapes(llmk_cpu_path()) == 0);
}

/* The AVX-512 path without VNNI (maddubs + madd), on a processor that has
 * VNNI: llmk_cpu()'s struct is an ordinary (non-const) object inside
 * kernels/cpu.c, and llmk_qlinear reads the flag at every call. */
TEST(qlinear_avx512_without_vnni)
{
    llmk_cpu_features *f = (llmk_cpu_features *)llmk_cpu();
    if (!f->avx512vnni) {
        printf("# no VNNI here (or hidden): the madd path ran above\n");
        return;
    }
    f->avx512vnni = 0;
    CHECK(qlinear_all_shapes("avx512-novnni") == 0);
    f->avx512vnni = 1;
}

/* The ref against the float product it approximates: sum_k w_k x_k in
 * double with w dequantized and x unquantized. The difference is x's
 * quantization, |sum_k w_k (x_k - xq_k)| <= sum_k |w_k| e_k, with e_k x's
 * per-element error bound: q8_0 blocks d/2 + 127 |d - d16| <= 0.57 d
 * (d = amax/127, f16 rounding 2^-11 relative); q8_K blocks (float d) 0.51 d;
 * plus the float sum's own error, <= 1e-5 of sum |w_k x_k| here. Also, for
 * q8_0 and q4_0, the ref against sum_k w_k xq_k with x quantized exactly as
 * the dots see it: only float rounding left, (nb + 1) u sum |w_k xq_k|. */
TEST(qlinear_ref_vs_float)
{
    int bad = 0, bad_tight = 0;
    for (int rep = 0; rep < 24; rep++) {
        llmk_qtype t = TYPES[rep % 3];
        size_t ic = t == LLMK_Q4_K ? 256 * (size_t)(1 + rep % 4) : 32 * (1 + (size_t)(unit_rand() % 40));
        size_t oc = 7, rows = 2;
        size_t be = llmk_qtype_traits(t)->block_elems, nb = ic / be;
        uint8_t *w = malloc(llmk_qbytes(t, ic) * oc);
        float *x = malloc(rows * ic * sizeof(float)), *wd = malloc(oc * ic * sizeof(float)), out[14];
        double *xq = malloc(ic * sizeof(double));
        random_blocks(t, w, ic * oc, 1, wd);
        for (size_t i = 0; i < rows * ic; i++) x[i] = nrand() * 3;
        llmk_dequantize_ref(t, wd, w, ic * oc);
        llmk_qlinear_ref(t, out, x, w, rows, ic, oc);
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * ic;
            if (t != LLMK_Q4_K) x_as_seen_q8_0(xq, xr, ic);
            for (size_t o = 0; o < oc; o++) {
                double exact = 0, bound = 0, abs_sum = 0, seen = 0, seen_abs = 0;
                for (size_t b = 0; b < nb; b++) {
                    double amax = 0;
                    for (size_t k = b * be; k < (b + 1) * be; k++) amax = fmax(amax, fabs(xr[k]));
                    double e = (t == LLMK_Q4_K ? 0.51 : 0.57) * amax / 127;
                    for (size_t k = b * be; k < (b + 1) * be; k++) {
                        double wk = wd[o * ic + k];
                        exact += wk * xr[k];
                        bound += fabs(wk) * e;
                        abs_sum += fabs(wk * xr[k]);
                        if (t != LLMK_Q4_K) seen += wk * xq[k], seen_abs += fabs(wk * xq[k]);
                    }
                }
                double got = out[r * oc + o];
                bad += !(fabs(got - exact) <= bound + 1e-5 * abs_sum);
                if (t != LLMK_Q4_K)
                    bad_tight += !(fabs(got - seen) <= (double)(nb + 1) * ldexp(1, -24) * seen_abs);
            }
        }
        free(w), free(x), free(wd), free(xq);
    }
    CHECK(bad == 0);
    CHECK(bad_tight == 0);
}

/* all-zero x, zero-length rows, a zero block of weights */
TEST(qlinear_edges)
{
    for (int ti = 0; ti < 3; ti++) {
        llmk_qtype t = TYPES[ti];
        size_t ic = 512, oc = 5, rb = llmk_qbytes(t, ic);
        uint8_t *w = malloc(rb * oc);
        float x[2 * 512] = {0}, out[10], *wf = malloc(ic * oc * sizeof(float));
        random_blocks(t, w, ic * oc, 1, wf);
        for (int i = 0; i < 10; i++) out[i] = NAN;
        llmk_qlinear(t, out, x, w, 2, ic, oc);
        int bad = 0;
        for (int i = 0; i < 10; i++) bad += out[i] != 0.0f;
        for (int i = 0; i < 10; i++) out[i] = NAN;
        llmk_qlinear(t, out, x, w, 2, 0, oc);   /* ic = 0: empty sums */
        for (int i = 0; i < 10; i++) bad += out[i] != 0.0f;
        llmk_qlinear(t, out, x, w, 0, ic, oc);  /* no rows: nothing written */
        llmk_qlinear(t, out, x, w, 2, ic, 0);
        CHECK(bad == 0);
        free(w), free(wf);
    }
}

/* llmk_qlinear_rowwise: each row bit for bit what llmk_qlinear gives it
 * alone, at row counts on both sides of LLMK_QLINEAR_GEMM_ROWS, every type. */
TEST(qlinear_rowwise_rows_independent)
{
    const size_t ic = 512, oc = 70, R = LLMK_QLINEAR_GEMM_ROWS + 9;
    for (int t = 0; t < LLMK_QTYPE_COUNT; t++) {
        size_t wb = llmk_qbytes((llmk_qtype)t, ic * oc);
        float *wf = malloc(ic * oc * 4), *x = malloc(R * ic * 4), *one = malloc(oc * 4), *all = malloc(R * oc * 4);
        uint8_t *w = malloc(wb);
        for (size_t i = 0; i < ic * oc; i++) wf[i] = urand();
        for (size_t i = 0; i < R * ic; i++) x[i] = urand();
        llmk_quantize_ref((llmk_qtype)t, w, wf, ic * oc);
        for (size_t rows = 1; rows <= R; rows += 5) {
            llmk_qlinear_rowwise((llmk_qtype)t, all, x, w, rows, ic, oc);
            for (size_t r = 0; r < rows; r++) {
                llmk_qlinear((llmk_qtype)t, one, x + r * ic, w, 1, ic, oc);
                CHECK(memcmp(one, all + r * oc, oc * 4) == 0);
            }
        }
        free(wf), free(x), free(one), free(all), free(w);
    }
}

/* llmk_qlinear_rowwise from 1 to 20 rows: every row bit for bit what
 * llmk_qlinear gives it alone (rows = 1), for each type, at several thread
 * counts, with the rows at shifting offsets in the call (so each row takes
 * different places in the passes and quads of the multi-row dots). Shapes:
 * odd oc; for q8_0 and q4_0 whole 16-block steps and a tail (8-block steps
 * with AVX2), for q4_k ic a multiple of 256. x rows at very different
 * scales, one all zero; weights both quantized and random bytes (q8_0 codes
 * of -128, the largest and smallest nibbles). The AVX-512 path runs with
 * VNNI and, where the processor has it, without (see above). */
static int rowwise_bitwise(const char *what)
{
    enum { MAXR = 20, SHIFT = 3, NX = MAXR + SHIFT };
    static const size_t shapes[][2] = {{32 * 45, 37}, {256 * 3, 67}, {256 * 9, 5}, {32 * 16, 1}, {256, 19}};
    static const int threads[] = {1, 2, 3};
    int bad = 0, saved = llmk_threads();
    for (int ti = 0; ti < 3; ti++) {
        llmk_qtype t = TYPES[ti];
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            size_t ic = shapes[si][0], oc = shapes[si][1];
            if (ic % llmk_qtype_traits(t)->block_elems) continue;
            uint8_t *w = malloc(llmk_qbytes(t, ic) * oc);
            float *x = malloc(NX * ic * sizeof(float)), *scratch = malloc(ic * oc * sizeof(float));
            float *alone = malloc(NX * oc * sizeof(float)), *all = malloc(MAXR * oc * sizeof(float));
            random_blocks(t, w, ic * oc, si & 1, scratch);
            for (size_t r = 0; r < NX; r++) {
                float scale = ldexpf(1.0f, (int)(r % 7) * 3 - 9);
                for (size_t k = 0; k < ic; k++) x[r * ic + k] = r == 5 ? 0.0f : nrand() * scale;
            }
            llmk_set_threads(1);
            for (size_t r = 0; r < NX; r++) llmk_qlinear(t, alone + r * oc, x + r * ic, w, 1, ic, oc);
            for (int th = 0; th < 3; th++) {
                llmk_set_threads(threads[th]);
                for (size_t rows = 1; rows <= MAXR; rows++) {
                    size_t off = (rows + (size_t)th) % (SHIFT + 1);
                    for (size_t i = 0; i < rows * oc; i++) all[i] = NAN;
                    llmk_qlinear_rowwise(t, all, x + off * ic, w, rows, ic, oc);
                    int b = memcmp(all, alone + off * oc, rows * oc * sizeof(float)) != 0;
                    if (b)
                        printf("# %s %s ic %zu oc %zu rows %zu (from row %zu), %d threads: differs from rows alone\n",
                               what, llmk_qtype_traits(t)->name, ic, oc, rows, off, threads[th]);
                    bad += b;
                }
            }
            free(w), free(x), free(scratch), free(alone), free(all);
        }
    }
    llmk_set_threads(saved);
    return bad;
}

TEST(qlinear_rowwise_bitwise_1_to_20_rows)
{
    CHECK(rowwise_bitwise(llmk_cpu_path()) == 0);
    llmk_cpu_features *f = (llmk_cpu_features *)llmk_cpu();
    if (f->avx512vnni) {
        f->avx512vnni = 0;
        CHECK(rowwise_bitwise("avx512-novnni") == 0);
        f->avx512vnni = 1;
    }
}

int main(void)
{
    unit_seed();
    RUN(traits);
    RUN(hand_made_blocks);
    RUN(quantize_known_values);
    RUN(roundtrip_error_bounds);
    RUN(dequantize_fast_matches_ref);
    RUN(qlinear_fast_matches_ref);
    RUN(qlinear_avx512_without_vnni);
    RUN(qlinear_ref_vs_float);
    RUN(qlinear_edges);
    RUN(qlinear_rowwise_rows_independent);
    RUN(qlinear_rowwise_bitwise_1_to_20_rows);
    return unit_done();
}
