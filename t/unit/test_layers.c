/* The fp32 layer kernels: every fast version against its _ref on fresh random
 * inputs of odd sizes, every backward _ref against central finite
 * differences of a double-precision forward written out here, accumulation
 * into pre-filled gradients, NULL gradients, masked cross-entropy rows,
 * AdamW bit for bit (and against a worked example), RoPE's inverse. main()
 * runs the whole set with the default pool, with one thread and with three.
 *
 * Error bounds are per element, |fast - ref| <= tol_i, with tol_i built
 * from the magnitudes of the terms that make the result (so a bound does not
 * blow up where a result happens to cancel to ~0). The float kernels round
 * each operation to 2^-24 ~ 6e-8 relative; the comments give the budget. */
#include "llmk.h"
#include "unit.h"

#include <math.h>

static const size_t Cs[] = {1, 7, 16, 33, 64, 100, 768};
#define NCS (sizeof Cs / sizeof Cs[0])

/* uniform in [-a, a) */
static float urand(float a) { return (float)(((double)(unit_rand() >> 40) / (double)(1ull << 24)) * 2.0 - 1.0) * a; }
static size_t rand_rows(void) { return 1 + (size_t)(unit_rand() % 37); }
static float *fnew(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }
static double *dnew(size_t n) { return malloc((n ? n : 1) * sizeof(double)); }
static float *frand(size_t n, float a)
{
    float *x = fnew(n);
    for (size_t i = 0; i < n; i++) x[i] = urand(a);
    return x;
}
static float *fcopy(const float *x, size_t n)
{
    float *y = fnew(n);
    memcpy(y, x, n * sizeof *y);
    return y;
}
static double *dfrom(const float *x, size_t n)
{
    double *y = dnew(n);
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}
static int same(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof *a) == 0; }

/* Counts elements outside |got - want| <= rel * scale[i] (scale NULL: |want|)
 * + abs; reports the worst ratio as a TAP comment. */
static size_t n_far(const char *what, const float *got, const float *want, const double *scale, size_t n, double rel,
                    double abs)
{
    size_t bad = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = rel * (scale ? scale[i] : fabs((double)want[i])) + abs;
        double e = fabs((double)got[i] - (double)want[i]);
        if (!(e <= tol)) bad++;
        if (tol > 0 && e / tol > worst) worst = e / tol;
    }
    if (bad) printf("# %s: %zu of %zu elements out of bounds, worst err/tol %.3g\n", what, bad, n, worst);
    return bad;
}

/* Accumulation: backward into pre-filled `pre` gave `acc`, into zeros gave
 * `zero`: acc must be pre + zero up to the one extra rounding of the sum
 * (plus the fast kernels' sums, done once either way). */
static size_t n_not_added(const char *what, const float *acc, const float *pre, const float *zero, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double want = (double)pre[i] + zero[i];
        if (!(fabs(acc[i] - want) <= 2.5e-7 * (fabs(pre[i]) + fabs(zero[i])) + 1e-30)) bad++;
    }
    if (bad) printf("# %s: %zu of %zu gradients not accumulated\n", what, bad, n);
    return bad;
}

/* ---- finite differences ----
 * A scalar loss of double parameters; fd_dir perturbs the n doubles at p
 * along d and returns the central difference D(h) = (f(p + h d) -
 * f(p - h d)) / 2h, Richardson-extrapolated: (4 D(h/2) - D(h)) / 3 cancels
 * the h^2 term, leaving O((h/s)^4) for a function that bends on a scale s
 * (s ~ sqrt(eps) = 1e-3 for RMSNorm of one small channel). With h = 1e-5
 * on O(1) inputs that is ~1e-8 even there, and rounding adds ~1e-16 |f| / h
 * = 1e-11 |f|: far below the float gradients' own ~1e-7. p is restored. */
typedef double (*loss_fn)(void *ctx);

static double central(loss_fn f, void *ctx, double *p, const double *save, const double *d, size_t n, double h)
{
    for (size_t i = 0; i < n; i++) p[i] = save[i] + h * d[i];
    double fp = f(ctx);
    for (size_t i = 0; i < n; i++) p[i] = save[i] - h * d[i];
    double fm = f(ctx);
    return (fp - fm) / (2 * h);
}

static double fd_dir(loss_fn f, void *ctx, double *p, const double *d, size_t n, double h)
{
    double *save = dnew(n);
    memcpy(save, p, n * sizeof *p);
    double d1 = central(f, ctx, p, save, d, n, h), d2 = central(f, ctx, p, save, d, n, h / 2);
    memcpy(p, save, n * sizeof *p);
    free(save);
    return (4 * d2 - d1) / 3;
}

/* sum(grad * d) against the finite difference: the float gradient's
 * rounding (a few ulp per element) bounds the dot product by ~1e-6 of
 * sum |grad * d|; 2e-5 leaves room and still catches any wrong term. Where
 * a gradient is a difference of larger terms, terms[i] gives their size
 * (the inputs' own float rounding, e.g. of a saved rstd, is relative to
 * those). */
static int grad_ok_terms(const char *what, const float *grad, const double *d, size_t n, double fd,
                         const double *terms)
{
    double dot = 0, mag = 0;
    for (size_t i = 0; i < n; i++) {
        dot += grad[i] * d[i];
        mag += fabs(d[i]) * (terms && terms[i] > fabs(grad[i]) ? terms[i] : fabs(grad[i]));
    }
    int ok = fabs(dot - fd) <= 2e-5 * mag + 1e-9;
    if (!ok) printf("# %s: analytic %.9g, finite difference %.9g (magnitude %.3g)\n", what, dot, fd, mag);
    return ok;
}

static int grad_ok(const char *what, const float *grad, const double *d, size_t n, double fd)
{
    return grad_ok_terms(what, grad, d, n, fd, NULL);
}

static double *drand(size_t n)
{
    double *d = dnew(n);
    for (size_t i = 0; i < n; i++) d[i] = urand(1.0f);
    return d;
}

/* ==== embeddings ==== */

/* Additions of the same values in the same order: fast == ref exactly. */
TEST(embed_fast_matches_ref)
{
    for (size_t ci = 0; ci < NCS + 1; ci++) {
        size_t C = ci < NCS ? Cs[ci] : 768, rows = ci < NCS ? rand_rows() : 300, T = 1 + rows / 3, Vv = 11;
        uint32_t *ids = malloc(rows * sizeof *ids);
        for (size_t r = 0; r < rows; r++) ids[r] = (uint32_t)(unit_rand() % Vv);   /* repeats: rows that would race */
        float *wte = frand(Vv * C, 1), *wpe = frand(T * C, 1), *a = fnew(rows * C), *b = fnew(rows * C);
        for (int pos = 0; pos < 2; pos++) {
            llmk_embed_forward_ref(a, ids, wte, pos ? wpe : NULL, rows, T, C);
            llmk_embed_forward(b, ids, wte, pos ? wpe : NULL, rows, T, C);
            CHECK(same(a, b, rows * C));
        }
        float *dout = frand(rows * C, 1), *g1 = frand(Vv * C, 1), *g2 = fcopy(g1, Vv * C);
        float *p1 = frand(T * C, 1), *p2 = fcopy(p1, T * C);
        llmk_embed_backward_ref(g1, p1, dout, ids, rows, T, C);
        llmk_embed_backward(g2, p2, dout, ids, rows, T, C);
        CHECK(same(g1, g2, Vv * C));
        CHECK(same(p1, p2, T * C));
        /* NULL: the other gradient alone, unchanged results */
        float *g3 = frand(Vv * C, 1), *g4 = fcopy(g3, Vv * C), *p3 = frand(T * C, 1), *p4 = fcopy(p3, T * C);
        llmk_embed_backward_ref(g3, NULL, dout, ids, rows, T, C);
        llmk_embed_backward(g4, NULL, dout, ids, rows, T, C);
        CHECK(same(g3, g4, Vv * C));
        llmk_embed_backward_ref(NULL, p3, dout, ids, rows, T, C);
        llmk_embed_backward(NULL, p4, dout, ids, rows, T, C);
        CHECK(same(p3, p4, T * C));
        llmk_embed_backward(NULL, NULL, dout, ids, rows, T, C);
        free(ids), free(wte), free(wpe), free(a), free(b), free(dout), free(g1), free(g2), free(p1), free(p2);
        free(g3), free(g4), free(p3), free(p4);
    }
}

typedef struct {
    const uint32_t *ids;
    double *wte, *wpe, *wts;
    size_t rows, T, C;
} embed_fd;

static double embed_loss(void *ctx)
{
    embed_fd *k = ctx;
    double L = 0;
    for (size_t r = 0; r < k->rows; r++)
        for (size_t c = 0; c < k->C; c++)
            L += (k->wte[k->ids[r] * k->C + c] + k->wpe[(r % k->T) * k->C + c]) * k->wts[r * k->C + c];
    return L;
}

/* L = sum(out * wts): dL/dwte, dL/dwpe = embed_backward(dout = wts), and it
 * accumulates. */
TEST(embed_ref_gradients)
{
    size_t rows = 29, T = 8, C = 7, Vv = 5;
    uint32_t ids[29];
    for (size_t r = 0; r < rows; r++) ids[r] = (uint32_t)(unit_rand() % Vv);
    float *wte = frand(Vv * C, 1), *wpe = frand(T * C, 1), *wts = frand(rows * C, 1);
    float *gte = calloc(Vv * C, 4), *gpe = calloc(T * C, 4), *out = fnew(rows * C);
    llmk_embed_forward_ref(out, ids, wte, wpe, rows, T, C);
    embed_fd k = {ids, dfrom(wte, Vv * C), dfrom(wpe, T * C), dfrom(wts, rows * C), rows, T, C};
    double L = 0;
    for (size_t i = 0; i < rows * C; i++) L += (double)out[i] * wts[i];
    CHECK(fabs(L - embed_loss(&k)) <= 1e-6 * (1 + fabs(L)));
    llmk_embed_backward_ref(gte, gpe, wts, ids, rows, T, C);
    double *d = drand(Vv * C), *e = drand(T * C);
    CHECK(grad_ok("dwte", gte, d, Vv * C, fd_dir(embed_loss, &k, k.wte, d, Vv * C, 1e-5)));
    CHECK(grad_ok("dwpe", gpe, e, T * C, fd_dir(embed_loss, &k, k.wpe, e, T * C, 1e-5)));
    /* accumulation, with small integers so that every sum is exact: the
     * _ref and the fast version must both give pre + gradient exactly */
    float *pre = fnew(Vv * C), *acc = fnew(Vv * C), *zero = calloc(Vv * C, 4), *ints = fnew(rows * C);
    for (size_t i = 0; i < Vv * C; i++) pre[i] = (float)(int)(unit_rand() % 17) - 8;
    for (size_t i = 0; i < rows * C; i++) ints[i] = (float)(int)(unit_rand() % 17) - 8;
    llmk_embed_backward_ref(zero, NULL, ints, ids, rows, T, C);
    for (int fast = 0; fast < 2; fast++) {
        memcpy(acc, pre, Vv * C * sizeof *acc);
        (fast ? llmk_embed_backward : llmk_embed_backward_ref)(acc, NULL, ints, ids, rows, T, C);
        int ok = 1;
        for (size_t i = 0; i < Vv * C; i++) ok &= acc[i] == pre[i] + zero[i];
        CHECK(ok);
    }
    free(zero), free(ints);
    free(wte), free(wpe), free(wts), free(gte), free(gpe), free(out), free(k.wte), free(k.wpe), free(k.wts);
    free(d), free(e), free(pre), free(acc);
}

/* ==== LayerNorm and RMSNorm ==== */

/* Inputs with an offset, so the mean is not ~0 and the two-pass variance
 * matters. */
static float *norm_input(size_t rows, size_t C)
{
    float *x = fnew(rows * C);
    for (size_t r = 0; r < rows; r++) {
        float off = urand(3), sc = 0.1f + (float)(unit_rand() % 100) / 20.0f;
        for (size_t c = 0; c < C; c++) x[r * C + c] = off + urand(sc);
    }
    return x;
}

/* Bounds for LayerNorm. Forward: the fast kernel sums C floats in W lanes
 * (C / W <= 48 sequential adds each) for the mean and the variance, so mean
 * and rstd carry relative errors ~48 * 6e-8 ~ 3e-6 at worst, ~3e-7
 * typically; out = xhat * w + b inherits that relative to |xhat w| + |b|:
 * tol = 4e-6 * (|xhat w| + |b|) + 1e-7 (the +1e-7 covers C = 1, where
 * xhat = 0 by cancellation). mean and rstd: 4e-6 relative; mean also 4e-6
 * of the row's scale (it may be ~0).
 * Backward, dinp: rstd * (g - mean(g) - xhat mean(g xhat)): float row sums
 * as above, so tol = 1e-5 * rstd * (|g| + |mean g| + |xhat mean(g xhat)|
 * + mean|g| + mean|g xhat|). dw, db: column sums over <= 300 rows in float
 * (sequential, each term rounded): tol = 1e-5 * (sum |terms| + |pre|). */
static void ln_case(size_t rows, size_t C, int use_w, int use_b)
{
    float eps = 1e-5f;
    float *x = norm_input(rows, C), *w = use_w ? frand(C, 2) : NULL, *b = use_b ? frand(C, 1) : NULL;
    float *o1 = fnew(rows * C), *o2 = fnew(rows * C), *m1 = fnew(rows), *m2 = fnew(rows), *r1 = fnew(rows),
          *r2 = fnew(rows);
    llmk_layernorm_forward_ref(o1, m1, r1, x, w, b, rows, C, eps);
    llmk_layernorm_forward(o2, m2, r2, x, w, b, rows, C, eps);
    double *sc = dnew(rows * C), *msc = dnew(rows);
    for (size_t r = 0; r < rows; r++) {
        double mx = 0;
        for (size_t c = 0; c < C; c++) {
            size_t i = r * C + c;
            double xh = ((double)x[i] - m1[r]) * r1[r];
            sc[i] = fabs(xh * (w ? w[c] : 1)) + fabs(b ? b[c] : 0) + 0.025;   /* 0.025 * 4e-6 = 1e-7 */
            if (fabs(x[i]) > mx) mx = fabs(x[i]);
        }
        msc[r] = fabs(m1[r]) + mx;
    }
    CHECK(n_far("layernorm out", o2, o1, sc, rows * C, 4e-6, 0) == 0);
    CHECK(n_far("layernorm mean", m2, m1, msc, rows, 4e-6, 0) == 0);
    CHECK(n_far("layernorm rstd", r2, r1, NULL, rows, 4e-6, 0) == 0);
    /* NULL mean and rstd: same out */
    llmk_layernorm_forward(o2, NULL, NULL, x, w, b, rows, C, eps);
    CHECK(n_far("layernorm out (no stats)", o2, o1, sc, rows * C, 4e-6, 0) == 0);

    float *dout = frand(rows * C, 1);
    float *di1 = frand(rows * C, 1), *di2 = fcopy(di1, rows * C), *pre_di = fcopy(di1, rows * C);
    float *dw1 = frand(C, 1), *dw2 = fcopy(dw1, C), *db1 = frand(C, 1), *db2 = fcopy(db1, C);
    float *pre_dw = fcopy(dw1, C), *pre_db = fcopy(db1, C);
    llmk_layernorm_backward_ref(di1, dw1, db1, dout, x, w, m1, r1, rows, C);
    llmk_layernorm_backward(di2, dw2, db2, dout, x, w, m1, r1, rows, C);
    double *tol_di = dnew(rows * C), *tol_dw = dnew(C), *tol_db = dnew(C);
    for (size_t c = 0; c < C; c++) tol_dw[c] = fabs(pre_dw[c]), tol_db[c] = fabs(pre_db[c]);
    for (size_t r = 0; r < rows; r++) {
        double sg = 0, sgx = 0, ag = 0, agx = 0;
        for (size_t c = 0; c < C; c++) {
            size_t i = r * C + c;
            double g = (double)dout[i] * (w ? w[c] : 1), xh = ((double)x[i] - m1[r]) * r1[r];
            sg += g, sgx += g * xh, ag += fabs(g), agx += fabs(g * xh);
            tol_dw[c] += fabs(dout[i] * xh);
            tol_db[c] += fabs(dout[i]);
        }
        sg /= C, sgx /= C, ag /= C, agx /= C;
        for (size_t c = 0; c < C; c++) {
            size_t i = r * C + c;
            double g = (double)dout[i] * (w ? w[c] : 1), xh = ((double)x[i] - m1[r]) * r1[r];
            tol_di[i] = r1[r] * (fabs(g) + fabs(sg) + fabs(xh * sgx) + ag + agx) + fabs(pre_di[i]);
        }
    }
    CHECK(n_far("layernorm dinp", di2, di1, tol_di, rows * C, 1e-5, 0) == 0);
    CHECK(n_far("layernorm dw", dw2, dw1, tol_dw, C, 1e-5, 0) == 0);
    CHECK(n_far("layernorm db", db2, db1, tol_db, C, 1e-5, 0) == 0);

    /* accumulation and NULL gradients, for both versions */
    for (int fast = 0; fast < 2; fast++) {
        void (*bwd)(float *, float *, float *, const float *, const float *, const float *, const float *,
                    const float *, size_t, size_t) = fast ? llmk_layernorm_backward : llmk_layernorm_backward_ref;
        float *zi = calloc(rows * C, 4), *zw = calloc(C, 4), *zb = calloc(C, 4);
        float *ai = fcopy(pre_di, rows * C), *aw = fcopy(pre_dw, C), *ab = fcopy(pre_db, C);
        bwd(zi, zw, zb, dout, x, w, m1, r1, rows, C);
        bwd(ai, aw, ab, dout, x, w, m1, r1, rows, C);
        CHECK(n_not_added("layernorm dinp", ai, pre_di, zi, rows * C) == 0);
        CHECK(n_not_added("layernorm dw", aw, pre_dw, zw, C) == 0);
        CHECK(n_not_added("layernorm db", ab, pre_db, zb, C) == 0);
        float *ni = fcopy(pre_di, rows * C), *nw = fcopy(pre_dw, C), *nb = fcopy(pre_db, C);
        bwd(ni, NULL, NULL, dout, x, w, m1, r1, rows, C);
        bwd(NULL, nw, NULL, dout, x, w, m1, r1, rows, C);
        bwd(NULL, NULL, nb, dout, x, w, m1, r1, rows, C);
        bwd(NULL, NULL, NULL, dout, x, w, m1, r1, rows, C);
        CHECK(same(ni, ai, rows * C));
        CHECK(same(nw, aw, C));
        CHECK(same(nb, ab, C));
        free(zi), free(zw), free(zb), free(ai), free(aw), free(ab), free(ni), free(nw), free(nb);
    }
    free(x), free(w), free(b), free(o1), free(o2), free(m1), free(m2), free(r1), free(r2), free(sc), free(msc);
    free(dout), free(di1), free(di2), free(pre_di), free(dw1), free(dw2), free(db1), free(db2), free(pre_dw);
    free(pre_db), free(tol_di), free(tol_dw), free(tol_db);
}

TEST(layernorm_fast_matches_ref)
{
    for (size_t ci = 0; ci < NCS; ci++) ln_case(rand_rows(), Cs[ci], 1, 1);
    ln_case(rand_rows(), 33, 0, 1);
    ln_case(rand_rows(), 100, 1, 0);
    ln_case(300, 768, 1, 1);   /* many tasks, rows and channel blocks */
}

typedef struct {
    double *x, *w, *b, *wts;
    size_t rows, C;
    double eps;
    int rms;
} norm_fd;

/* sum(out * wts) of LayerNorm / RMSNorm in double */
static double norm_loss(void *ctx)
{
    norm_fd *k = ctx;
    double L = 0;
    for (size_t r = 0; r < k->rows; r++) {
        const double *x = k->x + r * k->C;
        double m = 0, v = 0;
        if (!k->rms) {
            for (size_t c = 0; c < k->C; c++) m += x[c];
            m /= k->C;
        }
        for (size_t c = 0; c < k->C; c++) v += (x[c] - m) * (x[c] - m);
        double rs = 1 / sqrt(v / k->C + k->eps);
        for (size_t c = 0; c < k->C; c++)
            L += ((x[c] - m) * rs * k->w[c] + (k->b ? k->b[c] : 0)) * k->wts[r * k->C + c];
    }
    return L;
}

/* The forward _ref against the double forward (rounding only: 2e-7), and
 * dinp, dw, db of the backward _ref against finite differences. */
TEST(norm_ref_gradients)
{
    for (int rms = 0; rms < 2; rms++) {
        for (size_t ci = 0; ci < NCS; ci++) {
            size_t C = Cs[ci], rows = rand_rows();
            float eps = 1e-5f, *x = norm_input(rows, C), *w = frand(C, 2), *b = frand(C, 1), *wts = frand(rows * C, 1);
            float *out = fnew(rows * C), *mean = fnew(rows), *rstd = fnew(rows);
            float *di = calloc(rows * C, 4), *dw = calloc(C, 4), *db = calloc(C, 4);
            norm_fd k = {dfrom(x, rows * C), dfrom(w, C), rms ? NULL : dfrom(b, C), dfrom(wts, rows * C), rows, C, eps,
                         rms};
            if (rms) {
                llmk_rmsnorm_forward_ref(out, rstd, x, w, rows, C, eps);
                llmk_rmsnorm_backward_ref(di, dw, wts, x, w, rstd, rows, C);
            } else {
                llmk_layernorm_forward_ref(out, mean, rstd, x, w, b, rows, C, eps);
                llmk_layernorm_backward_ref(di, dw, db, wts, x, w, mean, rstd, rows, C);
            }
            double L = 0, mag = 0;
            for (size_t i = 0; i < rows * C; i++) L += (double)out[i] * wts[i], mag += fabs((double)out[i] * wts[i]);
            CHECK(fabs(L - norm_loss(&k)) <= 2e-7 * mag + 1e-12);
            /* the sizes of the terms of dinp (see the _ref): with C = 1 they cancel */
            double *terms = dnew(rows * C);
            for (size_t r = 0; r < rows; r++) {
                double m = rms ? 0 : mean[r], rs = rstd[r], ag = 0, agx = 0;
                for (size_t c = 0; c < C; c++) {
                    double g = (double)wts[r * C + c] * w[c], xh = (x[r * C + c] - m) * rs;
                    ag += fabs(g), agx += fabs(g * xh);
                }
                for (size_t c = 0; c < C; c++) {
                    double g = (double)wts[r * C + c] * w[c], xh = (x[r * C + c] - m) * rs;
                    terms[r * C + c] = rs * (fabs(g) + (rms ? 0 : ag / C) + fabs(xh) * agx / C);
                }
            }
            /* dw, db: sums over rows, which may cancel too */
            double *tw = dnew(C), *tb = dnew(C);
            for (size_t c = 0; c < C; c++) {
                tw[c] = tb[c] = 0;
                for (size_t r = 0; r < rows; r++) {
                    tw[c] += fabs(wts[r * C + c] * (x[r * C + c] - (rms ? 0 : mean[r])) * rstd[r]);
                    tb[c] += fabs(wts[r * C + c]);
                }
            }
            double *dx = drand(rows * C), *dwv = drand(C), *dbv = drand(C);
            CHECK(grad_ok_terms(rms ? "rmsnorm dinp" : "layernorm dinp", di, dx, rows * C,
                                fd_dir(norm_loss, &k, k.x, dx, rows * C, 1e-5), terms));
            CHECK(grad_ok_terms(rms ? "rmsnorm dw" : "layernorm dw", dw, dwv, C,
                                fd_dir(norm_loss, &k, k.w, dwv, C, 1e-5), tw));
            if (!rms) CHECK(grad_ok_terms("layernorm db", db, dbv, C, fd_dir(norm_loss, &k, k.b, dbv, C, 1e-5), tb));
            free(terms), free(tw), free(tb);
            free(x), free(w), free(b), free(wts), free(out), free(mean), free(rstd), free(di), free(dw), free(db);
            free(k.x), free(k.w), free(k.b), free(k.wts), free(dx), free(dwv), free(dbv);
        }
    }
}

/* Bounds for RMSNorm, as for LayerNorm: forward out = x rstd w with rstd
 * from a float sum of squares in W lanes: 4e-6 relative. dinp = rstd g -
 * rstd^3/C x sum(g x): tol = 1e-5 * (rstd |g| + rstd^3/C |x| sum|g x|);
 * dw: column sums, 1e-5 of sum |terms| + |pre|. */
static void rms_case(size_t rows, size_t C, int use_w)
{
    float eps = 1e-6f;
    float *x = norm_input(rows, C), *w = use_w ? frand(C, 2) : NULL;
    float *o1 = fnew(rows * C), *o2 = fnew(rows * C), *r1 = fnew(rows), *r2 = fnew(rows);
    llmk_rmsnorm_forward_ref(o1, r1, x, w, rows, C, eps);
    llmk_rmsnorm_forward(o2, r2, x, w, rows, C, eps);
    CHECK(n_far("rmsnorm out", o2, o1, NULL, rows * C, 4e-6, 1e-30) == 0);
    CHECK(n_far("rmsnorm rstd", r2, r1, NULL, rows, 4e-6, 0) == 0);
    llmk_rmsnorm_forward(o2, NULL, x, w, rows, C, eps);
    CHECK(n_far("rmsnorm out (no rstd)", o2, o1, NULL, rows * C, 4e-6, 1e-30) == 0);

    float *dout = frand(rows * C, 1);
    float *di1 = frand(rows * C, 1), *di2 = fcopy(di1, rows * C), *pre_di = fcopy(di1, rows * C);
    float *dw1 = frand(C, 1), *dw2 = fcopy(dw1, C), *pre_dw = fcopy(dw1, C);
    llmk_rmsnorm_backward_ref(di1, dw1, dout, x, w, r1, rows, C);
    llmk_rmsnorm_backward(di2, dw2, dout, x, w, r1, rows, C);
    double *tol_di = dnew(rows * C), *tol_dw = dnew(C);
    for (size_t c = 0; c < C; c++) tol_dw[c] = fabs(pre_dw[c]);
    for (size_t r = 0; r < rows; r++) {
        double rs = r1[r], agx = 0;
        for (size_t c = 0; c < C; c++) {
            size_t i = r * C + c;
            agx += fabs((double)dout[i] * (w ? w[c] : 1) * x[i]);
            tol_dw[c] += fabs((double)dout[i] * x[i] * rs);
        }
        for (size_t c = 0; c < C; c++) {
            size_t i = r * C + c;
            tol_di[i] = rs * fabs((double)dout[i] * (w ? w[c] : 1)) + rs * rs * rs / C * fabs(x[i]) * agx +
                        fabs(pre_di[i]);
        }
    }
    CHECK(n_far("rmsnorm dinp", di2, di1, tol_di, rows * C, 1e-5, 0) == 0);
    CHECK(n_far("rmsnorm dw", dw2, dw1, tol_dw, C, 1e-5, 0) == 0);
    for (int fast = 0; fast < 2; fast++) {
        void (*bwd)(float *, float *, const float *, const float *, const float *, const float *, size_t, size_t) =
            fast ? llmk_rmsnorm_backward : llmk_rmsnorm_backward_ref;
        float *zi = calloc(rows * C, 4), *zw = calloc(C, 4), *ai = fcopy(pre_di, rows * C), *aw = fcopy(pre_dw, C);
        bwd(zi, zw, dout, x, w, r1, rows, C);
        bwd(ai, aw, dout, x, w, r1, rows, C);
        CHECK(n_not_added("rmsnorm dinp", ai, pre_di, zi, rows * C) == 0);
        CHECK(n_not_added("rmsnorm dw", aw, pre_dw, zw, C) == 0);
        float *ni = fcopy(pre_di, rows * C), *nw = fcopy(pre_dw, C);
        bwd(ni, NULL, dout, x, w, r1, rows, C);
        bwd(NULL, nw, dout, x, w, r1, rows, C);
        bwd(NULL, NULL, dout, x, w, r1, rows, C);
        CHECK(same(ni, ai, rows * C));
        CHECK(same(nw, aw, C));
        free(zi), free(zw), free(ai), free(aw), free(ni), free(nw);
    }
    free(x), free(w), free(o1), free(o2), free(r1), free(r2), free(dout), free(di1), free(di2), free(pre_di);
    free(dw1), free(dw2), free(pre_dw), free(tol_di), free(tol_dw);
}

TEST(rmsnorm_fast_matches_ref)
{
    for (size_t ci = 0; ci < NCS; ci++) rms_case(rand_rows(), Cs[ci], 1);
    rms_case(rand_rows(), 33, 0);
    rms_case(300, 768, 1);
}

/* ==== activations ==== */

#define GS 0.79788456080286535588
#define GA 0.044715

/* sigmoid(z) and 1 - sigmoid(z) in double, neither cancelling */
static void sig2(double z, double *s, double *sc)
{
    double q = exp(-fabs(z)), d = 1 / (1 + q);
    *s = z >= 0 ? d : q * d;
    *sc = z >= 0 ? q * d : d;
}

/* Bounds for GELU. Both compute x s, s = sigmoid(z), z = 2u, from
 * exp(-|z|), the fast one in float with a vector exp of ~1-2 ulp. Rounding
 * z = 2 sqrt(2/pi) x (1 + a x^2) in float (~2 ulp) moves s by |z| (1 - s)
 * times that relative (z reaches -70 at x = -9), so
 *   tol = (1e-6 + 4e-7 |z| (1 - s)) |x s| + 2e-45 (1 + |x|)
 * (the last term: s subnormal, x < -10, good to 1.4e-45 absolute).
 * Gradient s + x K s (1 - s): the terms cancel near x ~ -0.75, so the bound
 * is relative to the terms: (1e-6 + 4e-7 |z|) |dout| (s + |x K s (1 - s)|)
 * + 1e-6 |pre|. */
TEST(gelu_fast_matches_ref)
{
    size_t sizes[] = {1, 7, 16, 33, 100, 768, 4099, 100003};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        float *x = fnew(n), *a = fnew(n), *b = fnew(n);
        for (size_t i = 0; i < n; i++) x[i] = urand(i % 5 ? 4.0f : 20.0f);   /* tails too */
        float *dout = frand(n, 1), *d1 = frand(n, 1), *d2 = fcopy(d1, n), *pre = fcopy(d1, n);
        double *ftol = dnew(n), *tol = dnew(n);
        for (size_t i = 0; i < n; i++) {
            double xi = x[i], z = 2 * GS * (xi + GA * xi * xi * xi), s, sc;
            sig2(z, &s, &sc);
            double rel = 1e-6 + 4e-7 * fabs(z) * sc;
            ftol[i] = rel * fabs(xi * s) + 2e-45 * (1 + fabs(xi));
            tol[i] = (1e-6 + 4e-7 * fabs(z)) * fabs(dout[i]) * (s + fabs(xi * 2 * GS * (1 + 3 * GA * xi * xi) * s * sc)) +
                     1e-6 * fabs(pre[i]) + 2e-45 * (1 + fabs(xi * xi * xi));
        }
        llmk_gelu_forward_ref(a, x, n);
        llmk_gelu_forward(b, x, n);
        CHECK(n_far("gelu", b, a, ftol, n, 1, 0) == 0);
        llmk_gelu_backward_ref(d1, x, dout, n);
        llmk_gelu_backward(d2, x, dout, n);
        CHECK(n_far("gelu backward", d2, d1, tol, n, 1, 0) == 0);
        free(ftol);
        for (int fast = 0; fast < 2; fast++) {
            float *z = calloc(n, 4), *acc = fcopy(pre, n);
            (fast ? llmk_gelu_backward : llmk_gelu_backward_ref)(z, x, dout, n);
            (fast ? llmk_gelu_backward : llmk_gelu_backward_ref)(acc, x, dout, n);
            CHECK(n_not_added("gelu", acc, pre, z, n) == 0);
            free(z), free(acc);
        }
        llmk_gelu_backward(NULL, x, dout, n);
        llmk_gelu_backward_ref(NULL, x, dout, n);
        free(x), free(a), free(b), free(dout), free(d1), free(d2), free(pre), free(tol);
    }
}

/* GPT-2's gelu_new at a few points, computed with Python's math module:
 * 0.5*x*(1+math.tanh(math.sqrt(2/math.pi)*(x+0.044715*x**3))). */
TEST(gelu_known_values)
{
    float x[] = {-3.0f, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 3.0f};
    double want[] = {-0.0036373920817729943, -0.15880800939172324, -0.15428599017485606, 0.0,
                     0.34571400982514394, 0.8411919906082768, 2.996362607918227};
    float a[7], b[7];
    llmk_gelu_forward_ref(a, x, 7);
    llmk_gelu_forward(b, x, 7);
    for (int i = 0; i < 7; i++) {
        CHECK(fabs(a[i] - want[i]) <= 1e-7 * fabs(want[i]) + 1e-30);
        CHECK(fabs(b[i] - want[i]) <= 1e-6 * fabs(want[i]) + 1e-30);
    }
}

typedef struct {
    double *x, *wts;
    size_t rows, F;
    int swiglu;
} act_fd;

static double act_loss(void *ctx)
{
    act_fd *k = ctx;
    double L = 0;
    if (!k->swiglu) {
        for (size_t i = 0; i < k->F; i++) {
            double x = k->x[i];
            L += 0.5 * x * (1 + tanh(GS * (x + GA * x * x * x))) * k->wts[i];
        }
        return L;
    }
    for (size_t r = 0; r < k->rows; r++)
        for (size_t i = 0; i < k->F; i++) {
            double g = k->x[r * 2 * k->F + i], u = k->x[r * 2 * k->F + k->F + i];
            L += g / (1 + exp(-g)) * u * k->wts[r * k->F + i];
        }
    return L;
}

TEST(activation_ref_gradients)
{
    for (size_t ci = 0; ci < NCS; ci++) {
        size_t n = Cs[ci] * 3, rows = rand_rows(), F = Cs[ci];
        /* GELU */
        float *x = frand(n, 4), *wts = frand(n, 1), *out = fnew(n), *dx = calloc(n, 4);
        act_fd k = {dfrom(x, n), dfrom(wts, n), 1, n, 0};
        llmk_gelu_forward_ref(out, x, n);
        double L = 0;
        for (size_t i = 0; i < n; i++) L += (double)out[i] * wts[i];
        CHECK(fabs(L - act_loss(&k)) <= 2e-7 * n);
        llmk_gelu_backward_ref(dx, x, wts, n);
        double *d = drand(n);
        CHECK(grad_ok("gelu", dx, d, n, fd_dir(act_loss, &k, k.x, d, n, 1e-5)));
        free(x), free(wts), free(out), free(dx), free(k.x), free(k.wts), free(d);
        /* SwiGLU */
        x = frand(rows * 2 * F, 4), wts = frand(rows * F, 1), out = fnew(rows * F), dx = calloc(rows * 2 * F, 4);
        act_fd s = {dfrom(x, rows * 2 * F), dfrom(wts, rows * F), rows, F, 1};
        llmk_swiglu_forward_ref(out, x, rows, F);
        L = 0;
        for (size_t i = 0; i < rows * F; i++) L += (double)out[i] * wts[i];
        CHECK(fabs(L - act_loss(&s)) <= 2e-7 * rows * F * 4);
        llmk_swiglu_backward_ref(dx, x, wts, rows, F);
        d = drand(rows * 2 * F);
        CHECK(grad_ok("swiglu", dx, d, rows * 2 * F, fd_dir(act_loss, &s, s.x, d, rows * 2 * F, 1e-5)));
        free(x), free(wts), free(out), free(dx), free(s.x), free(s.wts), free(d);
    }
}

/* Bounds for SwiGLU: out = g s u, a few ulp (g is exact here, unlike
 * GELU's z): 1e-6 relative, + 2e-45 (1 + |u| (1 + |g|)) where s, g s or the
 * result are subnormal (g < -87: each good to 1.4e-45 absolute only). dgate = dout u s (1 + g (1 - s)) can cancel
 * (g ~ -1.28): tol = 1e-6 |dout u| s (1 + |g (1 - s)|) + 1e-6 |pre|; dup:
 * 1e-6 (|dout g s| + |pre|). */
TEST(swiglu_fast_matches_ref)
{
    for (size_t ci = 0; ci < NCS + 1; ci++) {
        size_t F = ci < NCS ? Cs[ci] : 2048, rows = ci < NCS ? rand_rows() : 40, n = rows * 2 * F;
        float *x = fnew(n), *a = fnew(rows * F), *b = fnew(rows * F);
        for (size_t i = 0; i < n; i++) x[i] = urand(i % 7 ? 6.0f : 100.0f);
        float *dout = frand(rows * F, 1), *d1 = frand(n, 1), *d2 = fcopy(d1, n), *pre = fcopy(d1, n);
        double *tol = dnew(n), *ftol = dnew(rows * F);
        for (size_t r = 0; r < rows; r++)
            for (size_t i = 0; i < F; i++) {
                double g = x[r * 2 * F + i], u = x[r * 2 * F + F + i], s, sc, dv = dout[r * F + i];
                sig2(g, &s, &sc);
                /* a subnormal s (g < -87) is good to 1.4e-45 absolute only */
                ftol[r * F + i] = 1e-6 * fabs(g * s * u) + 2e-45 * (1 + fabs(u) * (1 + fabs(g)));
                tol[r * 2 * F + i] = 1e-6 * (fabs(dv * u) * s * (1 + fabs(g * sc)) + fabs(pre[r * 2 * F + i])) +
                                     2e-45 * (1 + fabs(dv * u) * (1 + fabs(g)));
                tol[r * 2 * F + F + i] =
                    1e-6 * (fabs(dv * g * s) + fabs(pre[r * 2 * F + F + i])) + 2e-45 * (1 + fabs(dv * g));
            }
        llmk_swiglu_forward_ref(a, x, rows, F);
        llmk_swiglu_forward(b, x, rows, F);
        CHECK(n_far("swiglu", b, a, ftol, rows * F, 1, 0) == 0);
        llmk_swiglu_backward_ref(d1, x, dout, rows, F);
        llmk_swiglu_backward(d2, x, dout, rows, F);
        CHECK(n_far("swiglu backward", d2, d1, tol, n, 1, 0) == 0);
        free(ftol);
        for (int fast = 0; fast < 2; fast++) {
            float *z = calloc(n, 4), *acc = fcopy(pre, n);
            (fast ? llmk_swiglu_backward : llmk_swiglu_backward_ref)(z, x, dout, rows, F);
            (fast ? llmk_swiglu_backward : llmk_swiglu_backward_ref)(acc, x, dout, rows, F);
            CHECK(n_not_added("swiglu", acc, pre, z, n) == 0);
            free(z), free(acc);
        }
        llmk_swiglu_backward(NULL, x, dout, rows, F);
        llmk_swiglu_backward_ref(NULL, x, dout, rows, F);
        free(x), free(a), free(b), free(dout), free(d1), free(d2), free(pre), free(tol);
    }
}

/* ==== RoPE ==== */

/* The fast version does the _ref's float arithmetic: identical results.
 * Heads past `heads` and the rest of each row stay untouched. */
TEST(rope_fast_matches_ref)
{
    size_t Ds[] = {2, 8, 64, 128, 96, 512};
    for (size_t di = 0; di < sizeof Ds / sizeof *Ds; di++) {
        size_t D = Ds[di], rows = di == 3 ? 600 : rand_rows(), T = 1 + (size_t)(unit_rand() % 40), heads = 1 + di % 3;
        size_t stride = (heads + 2) * D + 3, n = rows * stride;
        float *x = frand(n, 2), *a = fcopy(x, n), *b = fcopy(x, n);
        float theta = di & 1 ? 500000.0f : 10000.0f;
        llmk_rope_forward_ref(a, rows, T, heads, D, stride, theta);
        llmk_rope_forward(b, rows, T, heads, D, stride, theta);
        CHECK(same(a, b, n));
        int untouched = 1;
        for (size_t r = 0; r < rows; r++)
            for (size_t i = heads * D; i < stride; i++) untouched &= a[r * stride + i] == x[r * stride + i];
        CHECK(untouched);
        llmk_rope_backward_ref(a, rows, T, heads, D, stride, theta);
        llmk_rope_backward(b, rows, T, heads, D, stride, theta);
        CHECK(same(a, b, n));
        /* backward undoes forward: cos^2 + sin^2 = 1 up to rounding, a few ulp of the pair's norm */
        double *nrm = dnew(n);
        for (size_t r = 0; r < rows; r++)
            for (size_t i = 0; i < stride; i++) {
                size_t j = r * stride + i, hd = i / D, q = i % D, h = D / 2;
                nrm[j] = hd < heads ? hypot(x[r * stride + hd * D + q % h], x[r * stride + hd * D + q % h + h]) : 0;
            }
        CHECK(n_far("rope backward(forward(x))", a, x, nrm, n, 5e-7, 0) == 0);
        free(x), free(a), free(b), free(nrm);
    }
}

/* The rotation is linear, so its gradient is its transpose: for any x and
 * y, <forward(x), y> == <x, backward(y)> (in double, up to rounding). That
 * is the finite-difference check of a linear map, exact in h. */
TEST(rope_backward_is_transpose)
{
    size_t D = 16, rows = 13, T = 5, heads = 2, stride = heads * D, n = rows * stride;
    float *x = frand(n, 1), *y = frand(n, 1), *fx = fcopy(x, n), *by = fcopy(y, n);
    llmk_rope_forward_ref(fx, rows, T, heads, D, stride, 10000.0f);
    llmk_rope_backward_ref(by, rows, T, heads, D, stride, 10000.0f);
    double a = 0, b = 0, mag = 0;
    for (size_t i = 0; i < n; i++) a += (double)fx[i] * y[i], b += (double)x[i] * by[i], mag += fabs(x[i] * y[i]);
    CHECK(fabs(a - b) <= 1e-6 * mag);
    free(x), free(y), free(fx), free(by);
}

/* A worked example: D = 4, theta = 10000: inv_freq = {1, 10000^-0.5 = 0.01};
 * position p = r % T rotates pair (0, 2) by p and pair (1, 3) by p/100. */
TEST(rope_known_values)
{
    size_t T = 3, rows = 4;
    float x[16];
    for (size_t r = 0; r < rows; r++) x[r * 4] = 1, x[r * 4 + 1] = 2, x[r * 4 + 2] = 0, x[r * 4 + 3] = 0;
    float y[16];
    memcpy(y, x, sizeof x);
    llmk_rope_forward_ref(x, rows, T, 1, 4, 4, 10000.0f);
    llmk_rope_forward(y, rows, T, 1, 4, 4, 10000.0f);
    for (size_t r = 0; r < rows; r++) {
        double p = (double)(r % T);
        CHECK(fabs(x[r * 4] - cos(p)) < 1e-7 && fabs(x[r * 4 + 2] - sin(p)) < 1e-7);
        CHECK(fabs(x[r * 4 + 1] - 2 * cos(p / 100)) < 2e-7 && fabs(x[r * 4 + 3] - 2 * sin(p / 100)) < 2e-7);
    }
    CHECK(same(x, y, 16));
}

/* ==== softmax cross-entropy ==== */

/* Bounds. Loss: the fast kernel's terms exp(x - max) carry ~1-2 ulp each
 * (all positive, summed in double), so log(sum) is off by ~2e-7 absolute:
 * tol = 1e-6 (1 + |loss|). Gradient: exp(x - max) * (scale / sum) in
 * float, a few ulp of p; x - max itself is rounded, moving p by |x - max|
 * ulp, which is at most ~1e-8 absolute where it matters (p |x - max| <= 1/e):
 * tol = |scale| (1e-6 p + 3e-8) + 1e-6 |ref| (the target's p - 1). */
static void xent_case(size_t rows, size_t V, float spread)
{
    float *x = fnew(rows * V);
    uint32_t *t = malloc(rows * sizeof *t);
    float *sc = fnew(rows);
    for (size_t r = 0; r < rows; r++) {
        t[r] = (uint32_t)(unit_rand() % V);
        sc[r] = r % 4 == 1 ? 0.0f : urand(1) + 2;   /* every fourth row masked */
        for (size_t i = 0; i < V; i++) x[r * V + i] = urand(spread);
        if (r % 3 == 0) x[r * V + t[r]] += 2 * spread;   /* a confident row: loss ~ 0 */
    }
    float *a = fcopy(x, rows * V), *b = fcopy(x, rows * V), *la = fnew(rows), *lb = fnew(rows);
    llmk_softmax_xent_ref(la, a, t, NULL, rows, V);   /* loss only: logits untouched */
    llmk_softmax_xent(lb, b, t, NULL, rows, V);
    CHECK(same(a, x, rows * V) && same(b, x, rows * V));
    double *ltol = dnew(rows);
    for (size_t r = 0; r < rows; r++) ltol[r] = 1 + fabs(la[r]);
    CHECK(n_far("xent loss", lb, la, ltol, rows, 1e-6, 0) == 0);
    llmk_softmax_xent_ref(la, a, t, sc, rows, V);
    llmk_softmax_xent(lb, b, t, sc, rows, V);
    CHECK(n_far("xent loss (with grad)", lb, la, ltol, rows, 1e-6, 0) == 0);
    double *gtol = dnew(rows * V);
    int masked = 1;
    for (size_t r = 0; r < rows; r++) {
        double lse = la[r] + (double)x[r * V + t[r]];
        for (size_t i = 0; i < V; i++) {
            double p = exp((double)x[r * V + i] - lse);
            gtol[r * V + i] = fabs(sc[r]) * (1e-6 * p + 3e-8) + 1e-6 * fabs(a[r * V + i]);
            if (sc[r] == 0) masked &= a[r * V + i] == 0 && b[r * V + i] == 0 && !signbit(b[r * V + i]);
        }
    }
    CHECK(masked);
    CHECK(n_far("xent grad", b, a, gtol, rows * V, 1, 0) == 0);
    /* loss NULL: gradient only, the same */
    float *c = fcopy(x, rows * V);
    llmk_softmax_xent(NULL, c, t, sc, rows, V);
    CHECK(same(c, b, rows * V));
    free(x), free(t), free(sc), free(a), free(b), free(la), free(lb), free(ltol), free(gtol), free(c);
}

TEST(xent_fast_matches_ref)
{
    for (size_t ci = 0; ci < NCS; ci++) xent_case(rand_rows(), Cs[ci], 4);
    xent_case(9, 50257, 8);
    xent_case(5, 32000, 30);   /* wide logits: most exp terms far below 1 */
}

typedef struct {
    double *x, *sc;
    const uint32_t *t;
    size_t rows, V;
} xent_fd;

static double xent_loss(void *ctx)
{
    xent_fd *k = ctx;
    double L = 0;
    for (size_t r = 0; r < k->rows; r++) {
        const double *x = k->x + r * k->V;
        double mx = -INFINITY, s = 0;
        for (size_t i = 0; i < k->V; i++) mx = x[i] > mx ? x[i] : mx;
        for (size_t i = 0; i < k->V; i++) s += exp(x[i] - mx);
        L += k->sc[r] * (mx + log(s) - x[k->t[r]]);
    }
    return L;
}

/* The gradient the _ref writes is that of sum_r scale_r * loss_r; its loss
 * matches the double logsumexp to float rounding. */
TEST(xent_ref_gradients)
{
    for (size_t ci = 0; ci < NCS; ci++) {
        size_t V = Cs[ci], rows = rand_rows();
        float *x = frand(rows * V, 3), *sc = fnew(rows), *loss = fnew(rows);
        uint32_t *t = malloc(rows * sizeof *t);
        for (size_t r = 0; r < rows; r++) t[r] = (uint32_t)(unit_rand() % V), sc[r] = r % 5 == 2 ? 0 : urand(1);
        xent_fd k = {dfrom(x, rows * V), dfrom(sc, rows), t, rows, V};
        float *g = fcopy(x, rows * V);
        llmk_softmax_xent_ref(loss, g, t, sc, rows, V);
        double L = 0, mag = 0;
        for (size_t r = 0; r < rows; r++) L += sc[r] * (double)loss[r], mag += fabs(sc[r] * (double)loss[r]);
        CHECK(fabs(L - xent_loss(&k)) <= 2e-7 * mag + 1e-7 * rows);
        double *d = drand(rows * V);
        CHECK(grad_ok("xent", g, d, rows * V, fd_dir(xent_loss, &k, k.x, d, rows * V, 1e-5)));
        free(x), free(sc), free(loss), free(t), free(k.x), free(k.sc), free(g), free(d);
    }
}

/* ==== AdamW ==== */

static void adamw_pair(size_t n, llmk_adamw_args a, int steps)
{
    float *p1 = frand(n, 1), *g = frand(n, 1e-2f), *m1 = frand(n, 1e-3f), *v1 = fnew(n);
    for (size_t i = 0; i < n; i++) v1[i] = urand(1e-5f) + 1e-5f;
    float *p2 = fcopy(p1, n), *m2 = fcopy(m1, n), *v2 = fcopy(v1, n);
    for (int s = 0; s < steps; s++, a.step++) {
        for (size_t i = 0; i < n; i += 1 + i % 5) g[i] = urand(1e-2f);
        llmk_adamw_ref(p1, g, m1, v1, n, &a);
        llmk_adamw(p2, g, m2, v2, n, &a);
    }
    CHECK(same(p1, p2, n));
    CHECK(same(m1, m2, n));
    CHECK(same(v1, v2, n));
    free(p1), free(g), free(m1), free(v1), free(p2), free(m2), free(v2);
}

/* The fast version must give the _ref's bits (same operations, same order). */
TEST(adamw_fast_equals_ref)
{
    llmk_adamw_args base = {.lr = 3e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f,
                            .grad_scale = 1.0f, .step = 1};
    size_t sizes[] = {1, 7, 16, 33, 64, 100, 768, 100003};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        llmk_adamw_args a = base;
        adamw_pair(sizes[si], a, 3);
        a.grad_scale = 0.37f;   /* clipping */
        a.step = 1000;
        adamw_pair(sizes[si], a, 2);
        a.weight_decay = 0;
        a.beta1 = 0.3f;   /* lerp weight >= 0.5: torch's other formula */
        a.beta2 = 0.999f;
        adamw_pair(sizes[si], a, 2);
    }
}

/* Two steps worked by hand in exact arithmetic, lr = 0.1, beta2 = 0.75,
 * eps = 0 (so only rounding separates the result from the real-number one),
 * weight_decay = 0.5 (decay factor 0.95), and beta1 = 0.5 (lerp weight 0.5:
 * torch's "large weight" form) or 0.75 (weight 0.25, the other form):
 * step 1, grad 0.5, param 1: p = 0.95; m = 0.25 (0.125); v = 0.0625;
 *   bc1 = 0.5 (0.25), bc2 = 0.25: denom = 0.25 / 0.5 = 0.5;
 *   p -= (0.1 / bc1) * m / 0.5 = 0.1 -> 0.85 either way
 * step 2, grad -1: p = 0.8075; m = -0.375 (0.125 + 0.25 * -1.125 = -0.15625);
 *   v = 0.046875 + 0.25 = 0.296875; bc1 = 0.75 (0.4375), bc2 = 0.4375:
 *   denom = sqrt(0.296875 / 0.4375) = sqrt(19/28);
 *   p = 0.8075 - (0.1 / bc1) m / sqrt(19/28)
 *     = 0.8075 + 0.05 / sqrt(19/28) = 0.86819770 (0.8075 + (1/28) / sqrt(19/28))
 * m and v are exact in float; p is a few roundings (ulp 6e-8) from the real
 * value. grad_scale 2 on halved gradients must give the same bits. */
TEST(adamw_ref_worked_example)
{
    for (int form = 0; form < 2; form++) {
        llmk_adamw_args a = {.lr = 0.1f, .beta1 = form ? 0.75f : 0.5f, .beta2 = 0.75f, .eps = 0,
                             .weight_decay = 0.5f, .grad_scale = 1.0f, .step = 1};
        float p[1] = {1}, m[1] = {0}, v[1] = {0}, g1[1] = {0.5f}, g2[1] = {-1};
        float q[1] = {1}, mq[1] = {0}, vq[1] = {0}, h1[1] = {0.25f}, h2[1] = {-0.5f};
        llmk_adamw_ref(p, g1, m, v, 1, &a);
        CHECK(fabs(p[0] - 0.85) <= 2e-7 && m[0] == (form ? 0.125f : 0.25f) && v[0] == 0.0625f);
        a.grad_scale = 2;
        llmk_adamw_ref(q, h1, mq, vq, 1, &a);
        CHECK(q[0] == p[0] && mq[0] == m[0] && vq[0] == v[0]);
        a.step = 2;
        a.grad_scale = 1;
        llmk_adamw_ref(p, g2, m, v, 1, &a);
        double want = 0.8075 + (form ? 1.0 / 28 : 0.05) / sqrt(19.0 / 28.0);
        CHECK(m[0] == (form ? -0.15625f : -0.375f) && v[0] == 0.296875f);
        CHECK(fabs(p[0] - want) <= 3e-7);
        a.grad_scale = 2;
        llmk_adamw_ref(q, h2, mq, vq, 1, &a);
        CHECK(q[0] == p[0] && mq[0] == m[0] && vq[0] == v[0]);
        /* the fast version, on the same example */
        float r[1] = {1}, mr[1] = {0}, vr[1] = {0};
        a.step = 1, a.grad_scale = 1;
        llmk_adamw(r, g1, mr, vr, 1, &a);
        a.step = 2;
        llmk_adamw(r, g2, mr, vr, 1, &a);
        CHECK(r[0] == p[0] && mr[0] == m[0] && vr[0] == v[0]);
    }
}

/* ==== sum of squares ==== */

/* Both accumulate in double: squares of floats are exact in double, so
 * the only difference is the order of ~n roundings of 1e-16: 1e-12
 * relative. Small integers sum exactly. */
TEST(sumsq_matches_ref)
{
    size_t sizes[] = {0, 1, 7, 16, 33, 100, 768, 65537, 3000017};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        float *x = frand(n, 3);
        double a = llmk_sumsq_ref(x, n), b = llmk_sumsq(x, n);
        CHECK(fabs(a - b) <= 1e-12 * a);
        for (size_t i = 0; i < n; i++) x[i] = (float)(int)(unit_rand() % 201) - 100;
        double exact = 0;
        for (size_t i = 0; i < n; i++) exact += x[i] * x[i];   /* integers < 2^53: exact */
        CHECK(llmk_sumsq_ref(x, n) == exact);
        CHECK(llmk_sumsq(x, n) == exact);
        free(x);
    }
}

static void run_all(void)
{
    printf("# threads %d, cpu path %s\n", llmk_threads(), llmk_cpu_path());
    RUN(embed_fast_matches_ref);
    RUN(embed_ref_gradients);
    RUN(layernorm_fast_matches_ref);
    RUN(norm_ref_gradients);
    RUN(rmsnorm_fast_matches_ref);
    RUN(gelu_fast_matches_ref);
    RUN(gelu_known_values);
    RUN(activation_ref_gradients);
    RUN(swiglu_fast_matches_ref);
    RUN(rope_fast_matches_ref);
    RUN(rope_backward_is_transpose);
    RUN(rope_known_values);
    RUN(xent_fast_matches_ref);
    RUN(xent_ref_gradients);
    RUN(adamw_fast_equals_ref);
    RUN(adamw_ref_worked_example);
    RUN(sumsq_matches_ref);
}

int main(void)
{
    unit_seed();
    run_all();   /* the default pool */
    llmk_set_threads(1);
    run_all();
    llmk_set_threads(3);   /* more threads than this machine may have: uneven splits */
    run_all();
    llmk_set_threads(0);
    return unit_done();
}
