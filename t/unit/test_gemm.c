/* The matrix multiplies: the refs against hand-computed values, then
 * llmk_sgemm and the Linear layer against their refs on fresh random inputs
 * (all four transpose combinations, odd sizes that leave edge tiles, padded
 * leading dimensions, alpha/beta, NaN in C with beta == 0, accumulation into
 * pre-filled gradients), on one thread and on two.
 *
 * Error bound: each output is a dot product of length K summed in float
 * (the ref sums in double), so its error is at most ~ K * u (u = 2^-24)
 * times mag = |alpha| |op(A)| |op(B)| + |beta| |C|, the same product on
 * absolute values, which cancellation cannot make small. With random inputs
 * the rounding errors have random signs: they total ~ u * K / 7 at most
 * over a matrix (the k-th partial sum is ~ sqrt(k) / 3 for inputs uniform
 * in [-1, 1]) against mag ~ K / 4, so max|fast - ref| / max(mag) stays near
 * 2.4 * u ~ 1.5e-7 whatever K is. The check allows 1e-5; a term lost or
 * counted twice costs ~ 1 / K of mag, caught up to K ~ 1e5, and an index or
 * alpha/beta bug costs order 1. */
#include "llmk.h"
#include "unit.h"

#include <math.h>

#define TOL 1e-5

static float urand(void) { return (float)((double)(unit_rand() >> 11) / 9007199254740992.0 * 2 - 1); }

static float *rand_buf(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = urand();
    return p;
}

/* |x|, or NULL for NULL */
static float *abs_copy(const float *x, size_t n)
{
    if (!x) return NULL;
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = fabsf(x[i]);
    return p;
}

/* max |x - y| / (max mag + tiny) over rows of `cols` at stride ld; a NaN or
 * infinity in x counts as a failure */
static double rel_err(const float *x, const float *y, const float *mag, size_t rows, size_t cols, size_t ld)
{
    double err = 0, big = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            double a = x[i * ld + j], b = y[i * ld + j];
            if (!isfinite(a)) return INFINITY;
            if (fabs(a - b) > err) err = fabs(a - b);
            if (mag[i * ld + j] > big) big = mag[i * ld + j];
        }
    return err / (big + 1e-30);
}

TEST(refs_known_values)
{
    /* A (2, 3) @ B (3, 2) = [[58, 64], [139, 154]] */
    const float A[] = {1, 2, 3, 4, 5, 6}, B[] = {7, 8, 9, 10, 11, 12};
    const float At[] = {1, 4, 2, 5, 3, 6}, Bt[] = {7, 9, 11, 8, 10, 12};
    float C[4];
    llmk_sgemm_ref(0, 0, 2, 2, 3, 1, A, 3, B, 2, 0, C, 2);
    CHECK(C[0] == 58 && C[1] == 64 && C[2] == 139 && C[3] == 154);
    llmk_sgemm_ref(1, 1, 2, 2, 3, 1, At, 2, Bt, 3, 0, C, 2);
    CHECK(C[0] == 58 && C[1] == 64 && C[2] == 139 && C[3] == 154);
    /* alpha = 2, beta = -1 on C = [[1, 2], [3, 4]], B transposed only */
    float D[] = {1, 2, 3, 4};
    llmk_sgemm_ref(0, 1, 2, 2, 3, 2, A, 3, Bt, 3, -1, D, 2);
    CHECK(D[0] == 115 && D[1] == 126 && D[2] == 275 && D[3] == 304);
    /* beta == 0 ignores a NaN in C */
    float E[] = {NAN, NAN, NAN, NAN};
    llmk_sgemm_ref(1, 0, 2, 2, 3, 1, At, 2, B, 2, 0, E, 2);
    CHECK(E[0] == 58 && E[3] == 154);

    /* Linear: inp (2, 3) = A, w (2, 3) = rows [7 9 11], [8 10 12], bias [1, -1]:
     * out = A @ w^T + bias = [[59, 63], [140, 153]] */
    const float bias[] = {1, -1};
    float out[4];
    llmk_linear_forward_ref(out, A, Bt, bias, 2, 3, 2);
    CHECK(out[0] == 59 && out[1] == 63 && out[2] == 140 && out[3] == 153);
    /* dout = [[1, 0], [0, 2]]: dinp = dout @ w = [[7, 9, 11], [16, 20, 24]],
     * dw = dout^T @ inp = [[1, 2, 3], [8, 10, 12]], dbias = [1, 2]; all added to 1 */
    const float dout[] = {1, 0, 0, 2};
    float dinp[6], dw[6], db[2];
    for (int i = 0; i < 6; i++) dinp[i] = dw[i] = 1;
    db[0] = db[1] = 1;
    llmk_linear_backward_ref(dinp, dw, db, dout, A, Bt, 2, 3, 2);
    const float want_dinp[] = {8, 10, 12, 17, 21, 25}, want_dw[] = {2, 3, 4, 9, 11, 13};
    for (int i = 0; i < 6; i++) CHECK(dinp[i] == want_dinp[i] && dw[i] == want_dw[i]);
    CHECK(db[0] == 2 && db[1] == 3);
}

/* one random sgemm case against the ref; returns nonzero when it fails */
static int sgemm_case(int ta, int tb, size_t M, size_t N, size_t K, float alpha, float beta, size_t pad)
{
    size_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    size_t arows = ta ? K : M, brows = tb ? N : K;
    float *A = rand_buf(arows * lda), *B = rand_buf(brows * ldb), *C0 = rand_buf(M * ldc);
    float *C1 = malloc((M * ldc + 1) * sizeof(float)), *C2 = malloc((M * ldc + 1) * sizeof(float));
    if (beta == 0)   /* beta == 0 must not read C: NaN in it must not leak */
        for (size_t i = 0; i < M * ldc; i++) C0[i] = NAN;
    memcpy(C1, C0, M * ldc * sizeof(float));
    memcpy(C2, C0, M * ldc * sizeof(float));
    llmk_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C1, ldc);
    llmk_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C2, ldc);
    float *absA = abs_copy(A, arows * lda), *absB = abs_copy(B, brows * ldb), *mag = abs_copy(C0, M * ldc);
    llmk_sgemm_ref(ta, tb, M, N, K, fabsf(alpha), absA, lda, absB, ldb, fabsf(beta), mag, ldc);
    double err = rel_err(C2, C1, mag, M, N, ldc);
    free(absA), free(absB), free(mag);
    int bad = !(err < TOL);
    for (size_t i = 0; i < M; i++)   /* the padding between rows of C is left alone */
        for (size_t j = N; j < ldc; j++) bad |= memcmp(&C2[i * ldc + j], &C0[i * ldc + j], sizeof(float)) != 0;
    if (bad)
        printf("# sgemm(%d, %d, M=%zu, N=%zu, K=%zu, alpha=%g, beta=%g, pad=%zu, threads=%d): rel err %.3g\n", ta, tb,
               M, N, K, alpha, beta, pad, llmk_threads(), err);
    free(A), free(B), free(C0), free(C1), free(C2);
    return bad;
}

static const size_t odd_sizes[] = {1, 2, 7, 12, 16, 31, 33, 48, 65, 97, 130};
#define NODD (sizeof odd_sizes / sizeof odd_sizes[0])

TEST(sgemm_odd_sizes_all_transposes)
{
    int bad = 0;
    for (int threads = 1; threads <= 2; threads++) {
        llmk_set_threads(threads);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int rep = 0; rep < 40; rep++) {
                    size_t M = odd_sizes[unit_rand() % NODD], N = odd_sizes[unit_rand() % NODD],
                           K = odd_sizes[unit_rand() % NODD], pad = unit_rand() % 3 ? unit_rand() % 5 : 0;
                    float alpha = rep % 4 == 0 ? 1.0f : urand() * 2;
                    float beta = rep % 3 == 0 ? 0.0f : rep % 3 == 1 ? 1.0f : urand();
                    bad += sgemm_case(ta, tb, M, N, K, alpha, beta, pad);
                }
    }
    llmk_set_threads(0);
    CHECK(bad == 0);
}

/* sizes past the cache blocks (K > 384 splits K; N > 480 and M > 3072 split
 * the packs) and big enough to be split between threads */
TEST(sgemm_blocked_and_threaded)
{
    static const size_t shapes[][3] = {
        {130, 200, 100}, {97, 1000, 65}, {256, 513, 770}, {1030, 33, 129}, {3100, 35, 50}, {40, 1100, 900},
        {200, 64, 2000}, {1, 700, 300}, {600, 1, 300},
    };
    int bad = 0;
    for (int threads = 1; threads <= 2; threads++) {
        llmk_set_threads(threads);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int ta = (int)(unit_rand() & 1), tb = (int)(unit_rand() & 1);
            float beta = s % 3 == 0 ? 0.0f : s % 3 == 1 ? 1.0f : urand();
            bad += sgemm_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], s % 2 ? 1.0f : urand(), beta,
                              s % 2 ? 0 : 3);
        }
    }
    llmk_set_threads(0);
    CHECK(bad == 0);
}

/* M <= 4 with B transposed (a Linear layer decoding a token) takes dot
 * products instead of packing: K around the 16-lane steps, N around 4 */
TEST(sgemm_few_rows)
{
    static const size_t ks[] = {1, 15, 16, 17, 300, 800}, ns[] = {1, 3, 4, 5, 700};
    int bad = 0;
    for (int threads = 1; threads <= 2; threads++) {
        llmk_set_threads(threads);
        for (size_t M = 1; M <= 5; M++)
            for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
                for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++) {
                    float beta = (a + b) % 3 == 0 ? 0.0f : (a + b) % 3 == 1 ? 1.0f : urand();
                    bad += sgemm_case(0, 1, M, ns[b], ks[a], (a + b) % 2 ? 1.0f : urand(), beta, (a + M) % 2 ? 0 : 3);
                }
    }
    llmk_set_threads(0);
    CHECK(bad == 0);
}

TEST(sgemm_degenerate)
{
    /* K == 0: C = beta * C; M or N == 0: nothing is touched */
    float A[1] = {NAN}, B[1] = {NAN}, C[6] = {1, 2, 3, 4, 5, 6};
    llmk_sgemm(0, 0, 2, 3, 0, 1, A, 1, B, 3, 0.5f, C, 3);
    CHECK(C[0] == 0.5f && C[5] == 3);
    for (int i = 0; i < 6; i++) C[i] = NAN;
    llmk_sgemm(1, 1, 2, 3, 0, 1, A, 2, B, 1, 0, C, 3);
    int zeros = 0;
    for (int i = 0; i < 6; i++) zeros += C[i] == 0;
    CHECK(zeros == 6);
    C[0] = 7;
    llmk_sgemm(0, 0, 0, 3, 4, 1, A, 4, B, 3, 0, C, 3);
    llmk_sgemm(0, 0, 2, 0, 4, 1, A, 4, B, 1, 0, C, 1);
    CHECK(C[0] == 7);
}

static int linear_case(size_t rows, size_t ic, size_t oc, int with_bias, int grads)
{
    float *inp = rand_buf(rows * ic), *w = rand_buf(oc * ic), *bias = with_bias ? rand_buf(oc) : NULL;
    float *o1 = rand_buf(rows * oc), *o2 = rand_buf(rows * oc), *dout = rand_buf(rows * oc);
    float *a_inp = abs_copy(inp, rows * ic), *a_w = abs_copy(w, oc * ic), *a_bias = abs_copy(bias, oc),
          *a_dout = abs_copy(dout, rows * oc), *m_out = malloc(rows * oc * sizeof(float) + 1);
    llmk_linear_forward_ref(o1, inp, w, bias, rows, ic, oc);
    llmk_linear_forward(o2, inp, w, bias, rows, ic, oc);
    llmk_linear_forward_ref(m_out, a_inp, a_w, a_bias, rows, ic, oc);
    double e_out = rel_err(o2, o1, m_out, rows, oc, oc);
    /* gradients start from random values: the kernels must add to them */
    float *di1 = rand_buf(rows * ic), *dw1 = rand_buf(oc * ic), *db1 = rand_buf(oc);
    float *di2 = abs_copy(di1, rows * ic), *dw2 = abs_copy(dw1, oc * ic), *db2 = abs_copy(db1, oc);
    float *m_di = abs_copy(di1, rows * ic), *m_dw = abs_copy(dw1, oc * ic), *m_db = abs_copy(db1, oc);
    memcpy(di2, di1, rows * ic * sizeof(float));
    memcpy(dw2, dw1, oc * ic * sizeof(float));
    memcpy(db2, db1, oc * sizeof(float));
    llmk_linear_backward_ref(grads & 1 ? di1 : NULL, grads & 2 ? dw1 : NULL, grads & 4 ? db1 : NULL, dout, inp, w,
                             rows, ic, oc);
    llmk_linear_backward(grads & 1 ? di2 : NULL, grads & 2 ? dw2 : NULL, grads & 4 ? db2 : NULL, dout, inp, w, rows,
                         ic, oc);
    llmk_linear_backward_ref(m_di, m_dw, m_db, a_dout, a_inp, a_w, rows, ic, oc);
    double e_di = rel_err(di2, di1, m_di, rows, ic, ic), e_dw = rel_err(dw2, dw1, m_dw, oc, ic, ic),
           e_db = rel_err(db2, db1, m_db, 1, oc, oc);
    int bad = !(e_out < TOL && e_di < TOL && e_dw < TOL && e_db < TOL);
    if (bad)
        printf("# linear rows=%zu ic=%zu oc=%zu bias=%d grads=%d threads=%d: out %.3g dinp %.3g dw %.3g dbias %.3g\n",
               rows, ic, oc, with_bias, grads, llmk_threads(), e_out, e_di, e_dw, e_db);
    free(inp), free(w), free(bias), free(o1), free(o2), free(dout);
    free(a_inp), free(a_w), free(a_bias), free(a_dout), free(m_out);
    free(di1), free(dw1), free(db1), free(di2), free(dw2), free(db2), free(m_di), free(m_dw), free(m_db);
    return bad;
}

TEST(linear_matches_ref)
{
    /* rows, ic, oc, and which gradients (bit 0: dinp, 1: dw, 2: dbias; the others NULL) */
    static const size_t shapes[][4] = {
        {1, 7, 5, 7},     {3, 100, 37, 7},    {7, 33, 65, 2},    {64, 48, 96, 7}, {130, 97, 31, 5},
        {256, 192, 576, 7}, {100, 130, 1000, 6}, {33, 520, 70, 7}, {600, 5, 4500, 7},   /* threaded bias sums */
    };
    int bad = 0;
    for (int threads = 1; threads <= 2; threads++) {
        llmk_set_threads(threads);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int with_bias = (int)(s % 2) ^ (threads == 2);   /* each shape with and without bias */
            bad += linear_case(shapes[s][0], shapes[s][1], shapes[s][2], with_bias, (int)shapes[s][3]);
        }
    }
    llmk_set_threads(0);
    CHECK(bad == 0);
    printf("# cpu path: %s\n", llmk_cpu_path());
}

/* Each row of a rowwise call is bit for bit the row alone (rows = 1), for
 * any row count, thread count and bias; and the plain call agrees with it
 * while rows <= LLMK_GEMM_SMALL_M. */
TEST(linear_rowwise_rows_independent)
{
    static const size_t shapes[][2] = {{64, 64}, {100, 37}, {2048, 300}, {33, 1000}, {16, 4}};
    for (int threads = 1; threads <= 2; threads++) {
        llmk_set_threads(threads);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            size_t ic = shapes[s][0], oc = shapes[s][1], R = 19;
            float *x = malloc(R * ic * 4), *w = malloc(ic * oc * 4), *b = malloc(oc * 4);
            float *one = malloc(oc * 4), *all = malloc(R * oc * 4), *plain = malloc(R * oc * 4);
            for (size_t i = 0; i < R * ic; i++) x[i] = urand();
            for (size_t i = 0; i < ic * oc; i++) w[i] = urand();
            for (size_t i = 0; i < oc; i++) b[i] = urand();
            for (size_t rows = 1; rows <= R; rows += (rows < 6 ? 1 : 6)) {
                const float *bias = rows % 2 ? b : NULL;
                llmk_linear_forward_rowwise(all, x, w, bias, rows, ic, oc);
                llmk_linear_forward(plain, x, w, bias, rows, ic, oc);
                for (size_t r = 0; r < rows; r++) {
                    llmk_linear_forward(one, x + r * ic, w, bias, 1, ic, oc);
                    CHECK(memcmp(one, all + r * oc, oc * 4) == 0);
                    if (rows <= LLMK_GEMM_SMALL_M) CHECK(memcmp(one, plain + r * oc, oc * 4) == 0);
                }
            }
            free(x), free(w), free(b), free(one), free(all), free(plain);
        }
    }
    llmk_set_threads(0);
}

int main(void)
{
    unit_seed();
    RUN(refs_known_values);
    RUN(sgemm_odd_sizes_all_transposes);
    RUN(sgemm_blocked_and_threaded);
    RUN(sgemm_few_rows);
    RUN(sgemm_degenerate);
    RUN(linear_matches_ref);
    RUN(linear_rowwise_rows_independent);
    return unit_done();
}
