/* Causal self-attention (kernels/attention_*.c): the fast kernels against the
 * scalar refs on random inputs over many shapes, the refs' gradients against
 * finite differences of a double-precision forward written here, and the
 * properties the model relies on: att rows are distributions, the future
 * never leaks into the past, backward accumulates, scratch is only working
 * memory, and the thread count never changes a bit of the result. Then the
 * same for attention over a KV cache (llmk_attention_cached), where a row
 * must also come out the same however its sequence's tokens are batched. */
#include "llmk.h"
#include "unit.h"

#include <math.h>

static const double U = 5.9604644775390625e-8;   /* float unit roundoff, 2^-24 */

static double uniform(void) { return (double)(unit_rand() >> 11) / 9007199254740992.0 * 2 - 1; }   /* [-1, 1) */

static void fill(float *x, size_t n, double a)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(a * uniform());
}

static void fill_nan(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

static float *alloc_f(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }

/* max |a - r| (*err) and max |r| (*mag) over `rows` runs of `run` elements
 * `stride` apart; a NaN anywhere counts as an infinite error */
static void diff_strided(double *err, double *mag, const float *a, const float *r, size_t rows, size_t stride,
                         size_t run)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t k = 0; k < run; k++) {
            double x = a[i * stride + k], y = r[i * stride + k];
            if (isnan(x) || isnan(y)) num = INFINITY;
            if (fabs(x - y) > num) num = fabs(x - y);
            if (fabs(y) > den) den = fabs(y);
        }
    *err = num, *mag = den;
}

/* max |a - r| / max |r| */
static double nerr(const float *a, const float *r, size_t n)
{
    double err, mag;
    diff_strided(&err, &mag, a, r, 1, n, n);
    return mag > 0 ? err / mag : err;
}

static double maxabs_strided(const float *x, size_t rows, size_t stride, size_t run)
{
    double m = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t k = 0; k < run; k++) m = fmax(m, fabs(x[i * stride + k]));
    return m;
}

typedef struct { size_t B, T, H, KVH, D; } shape;

static const size_t Ts[] = {1, 2, 7, 64, 65}, Ds[] = {1, 8, 33, 64}, HKs[][2] = {{1, 1}, {4, 4}, {4, 2}, {8, 1}},
                    Bs[] = {1, 3};
#define FOR_SHAPES(s)                                                                           \
    for (size_t ti = 0; ti < 5; ti++)                                                           \
        for (size_t di = 0; di < 4; di++)                                                       \
            for (size_t hi = 0; hi < 4; hi++)                                                   \
                for (size_t bi = 0; bi < 2; bi++)                                               \
                    for (shape s = {Bs[bi], Ts[ti], HKs[hi][0], HKs[hi][1], Ds[di]}, *once_ = &s; once_; once_ = NULL)

static size_t qkv_n(shape s) { return s.B * s.T * (s.H + 2 * s.KVH) * s.D; }
static size_t out_n(shape s) { return s.B * s.T * s.H * s.D; }
static size_t att_n(shape s) { return s.B * s.H * s.T * s.T; }

/* The largest |score| the inputs allow: qkv entries are at most `a` in size,
 * so |q.k| / sqrt(D) <= a^2 sqrt(D). */
static double score_bound(shape s, double a) { return a * a * sqrt((double)s.D); }

/* Forward error model, normalised by the largest element of the ref's
 * result (the ref rounds once from double, so this is the fast kernel's
 * own rounding). A score is a D-term FMA sum whose rounding errors scale with
 * the partial sums, so its absolute error is a small multiple of u S; a
 * probability moves by that error relative to itself (twice: its own score
 * and the max / normaliser), plus ~2 u for exp, ~u for the scaling and a
 * random-walk sqrt(T) u for the T-term sum, which is small next to the
 * other terms for T <= 65; out adds a T-term sum of p_j v_j with errors
 * relative to its partial sums. So both are c u (1 + S) with c of a few
 * units: measured (seeds over all the shapes here and T up to 256, D up to
 * 128) out and att stay under 3 u while S <= 11 and under 0.3 S u for
 * S up to 100. The bound 4 u (4 + S) is five times the largest error seen
 * over 50 seeds (out, a = 3) and ten times or more elsewhere, and still
 * catches an exp or a sum that loses a few bits. */
static double fwd_bound(shape s, double a) { return 4 * U * (4 + score_bound(s, a)); }

/* The sizes of the terms the backward sums are made of, for normalising
 * its errors: dP = max |dout_t . v_j| (j <= t), colsum = the largest
 * column sum of att (how much weight one key collects), and the largest
 * |q|, |k|, |dout| elements. */
typedef struct { double dP, colsum, q, k, dout, scale; } term_sizes;

static term_sizes sizes(shape s, const float *qkv, const float *att, const float *dout)
{
    size_t C3 = (s.H + 2 * s.KVH) * s.D, group = s.H / s.KVH, rows = s.B * s.T;
    term_sizes z = {0, 0, maxabs_strided(qkv, rows, C3, s.H * s.D), maxabs_strided(qkv + s.H * s.D, rows, C3, s.KVH * s.D),
                    maxabs_strided(dout, 1, 0, out_n(s)), 1 / sqrt((double)s.D)};
    for (size_t b = 0; b < s.B; b++)
        for (size_t h = 0; h < s.H; h++) {
            const float *v0 = qkv + b * s.T * C3 + (s.H + s.KVH + h / group) * s.D;
            const float *P = att + (b * s.H + h) * s.T * s.T;
            for (size_t t = 0; t < s.T; t++) {
                const float *o = dout + (b * s.T + t) * s.H * s.D + h * s.D;
                for (size_t j = 0; j <= t; j++) {
                    double d = 0;
                    for (size_t e = 0; e < s.D; e++) d += (double)o[e] * v0[j * C3 + e];
                    z.dP = fmax(z.dP, fabs(d));
                }
            }
            for (size_t j = 0; j < s.T; j++) {
                double c = 0;
                for (size_t t = j; t < s.T; t++) c += P[t * s.T + j];
                z.colsum = fmax(z.colsum, c);
            }
        }
    return z;
}

/* Backward, per part (dq, dk, dv). dP is a D-term sum, dS = p (dP - sum p
 * dP) a T-term sum and a subtraction, dq, dk, dv T-term sums of dS k, dS q,
 * p dout (dk and dv over the group's heads too). The subtraction cancels
 * when the dP of a row are close, and then dS, and a dq or dk made of few
 * such terms, can be much smaller than the rounding of the dP it came from
 * (in any float implementation: the ref is exact, the fast kernel is not).
 * So the error is normalised by the larger of the part's largest element
 * and the size of the largest term its sums are made of: scale dP max|k|
 * for dq (|dS_j| <= 2 p_j dP and the p_j sum to 1), scale dP max|q| for dk,
 * max|dout| for dv. Each stage has errors of the forward's form, c u (1 +
 * S), and dk and dv add sums of group * T terms whose errors grow like
 * sqrt(group T) u: measured with inputs of size 1 (over 50 seeds) dq and
 * dk stay under 8 u, and dv reaches 16 u only at D = 1, T = 64, group 8,
 * where the sums are longest next to the rest. Twice the forward's bound
 * plus 4 sqrt(group T) u (51 u for D = 1, T = 7, group 1; 130 u for D = 1,
 * T = 64, group 8; 128 u for D = 64, T = 65, group 1) is at least six
 * times the largest error seen, and ten to twenty times for dq and dk. */
static double bwd_bound(shape s, double a)
{
    return 2 * fwd_bound(s, a) + 4 * U * sqrt((double)(s.H / s.KVH * s.T));
}

static double worst_out, worst_att, worst_dq, worst_dk, worst_dv;   /* measured / bound, printed */

static void note(double *worst, double err, double bound)
{
    if (err / bound > *worst) *worst = err / bound;
}

TEST(forward_matches_ref)
{
    int bad = 0;
    FOR_SHAPES(s)
        for (int peaky = 0; peaky < 2; peaky++) {
            /* inputs of size 1, and of size 3 (scores up to 9 sqrt(D): a
             * softmax that puts nearly everything on one key) */
            double a = peaky ? 3 : 1;
            float *qkv = alloc_f(qkv_n(s)), *o1 = alloc_f(out_n(s)), *o2 = alloc_f(out_n(s)),
                  *a1 = alloc_f(att_n(s)), *a2 = alloc_f(att_n(s));
            fill(qkv, qkv_n(s), a);
            fill_nan(o1, out_n(s)), fill_nan(o2, out_n(s)), fill_nan(a1, att_n(s)), fill_nan(a2, att_n(s));
            llmk_attention_forward_ref(o1, a1, qkv, s.B, s.T, s.H, s.KVH, s.D);
            llmk_attention_forward(o2, a2, qkv, s.B, s.T, s.H, s.KVH, s.D);
            double bound = fwd_bound(s, a), eo = nerr(o2, o1, out_n(s)), ea = nerr(a2, a1, att_n(s));
            note(&worst_out, eo, bound);
            note(&worst_att, ea, bound);
            if (!(eo <= bound && ea <= bound)) {
                if (bad++ < 5)
                    printf("# B=%zu T=%zu H=%zu KVH=%zu D=%zu a=%g: out err %.3g att err %.3g bound %.3g\n", s.B, s.T,
                           s.H, s.KVH, s.D, a, eo, ea, bound);
            }
            free(qkv), free(o1), free(o2), free(a1), free(a2);
        }
    CHECK(bad == 0);
    printf("# cpu path %s: largest forward error / bound: out %.3f att %.3f\n", llmk_cpu_path(), worst_out,
           worst_att);
}

/* Every att row is a probability distribution over j <= t and exactly 0
 * above the diagonal (att starts as NaN, so every entry must be written).
 * The sum of t + 1 float probabilities, each within ~2 u of exact, rounded
 * in a (t+1)-term float sum, is within (t + 5) u of 1: with T <= 65 that is
 * under 5e-6; the check allows 1e-5. */
TEST(att_rows_are_distributions)
{
    int bad = 0;
    FOR_SHAPES(s)
        for (int fast = 0; fast < 2; fast++) {
            float *qkv = alloc_f(qkv_n(s)), *o = alloc_f(out_n(s)), *att = alloc_f(att_n(s));
            fill(qkv, qkv_n(s), 2);
            fill_nan(att, att_n(s));
            (fast ? llmk_attention_forward : llmk_attention_forward_ref)(o, att, qkv, s.B, s.T, s.H, s.KVH, s.D);
            for (size_t r = 0; r < s.B * s.H * s.T; r++) {
                const float *p = att + r * s.T;
                size_t t = r % s.T;
                double sum = 0;
                for (size_t j = 0; j <= t; j++) {
                    if (!(p[j] >= 0 && p[j] <= 1)) bad++;
                    sum += p[j];
                }
                if (!(fabs(sum - 1) <= 1e-5)) bad++;
                for (size_t j = t + 1; j < s.T; j++)
                    if (p[j] != 0 || signbit(p[j])) bad++;
            }
            free(qkv), free(o), free(att);
        }
    CHECK(bad == 0);
}

/* Changing q, k, v of the positions after t0 leaves out and att of the
 * positions up to t0 bit for bit as they were. */
TEST(forward_is_causal)
{
    int bad = 0;
    shape shapes[] = {{2, 65, 4, 2, 64}, {1, 40, 8, 1, 33}, {3, 17, 4, 4, 8}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        shape s = shapes[si];
        size_t C3 = (s.H + 2 * s.KVH) * s.D;
        for (int fast = 0; fast < 2; fast++) {
            float *qkv = alloc_f(qkv_n(s)), *o1 = alloc_f(out_n(s)), *o2 = alloc_f(out_n(s)),
                  *a1 = alloc_f(att_n(s)), *a2 = alloc_f(att_n(s));
            void (*f)(float *, float *, const float *, size_t, size_t, size_t, size_t, size_t) =
                fast ? llmk_attention_forward : llmk_attention_forward_ref;
            fill(qkv, qkv_n(s), 1.5);
            f(o1, a1, qkv, s.B, s.T, s.H, s.KVH, s.D);
            size_t t0 = (size_t)(unit_rand() % (s.T - 1));
            for (size_t b = 0; b < s.B; b++) fill(qkv + (b * s.T + t0 + 1) * C3, (s.T - t0 - 1) * C3, 1.5);
            f(o2, a2, qkv, s.B, s.T, s.H, s.KVH, s.D);
            for (size_t b = 0; b < s.B; b++) {
                bad += memcmp(o1 + b * s.T * s.H * s.D, o2 + b * s.T * s.H * s.D, (t0 + 1) * s.H * s.D * 4) != 0;
                for (size_t h = 0; h < s.H; h++)
                    bad += memcmp(a1 + (b * s.H + h) * s.T * s.T, a2 + (b * s.H + h) * s.T * s.T,
                                  (t0 + 1) * s.T * 4) != 0;
            }
            free(qkv), free(o1), free(o2), free(a1), free(a2);
        }
    }
    CHECK(bad == 0);
}

/* The fast backward against the ref, from zero gradients (the error model is
 * bwd_bound's, per part dq / dk / dv), with scratch full of NaN (it must be
 * written before it is read). Then accumulation: from random gradients P
 * the result must be P + (the gradient from zero), to within the roundings
 * of the additions into the running sums (bounded in the loop). */
TEST(backward_matches_ref)
{
    int bad = 0, bad_acc = 0;
    FOR_SHAPES(s) {
        double a = 1;
        size_t C3 = (s.H + 2 * s.KVH) * s.D, rows = s.B * s.T, n = qkv_n(s);
        float *qkv = alloc_f(n), *o = alloc_f(out_n(s)), *att = alloc_f(att_n(s)), *dout = alloc_f(out_n(s)),
              *g1 = alloc_f(n), *g2 = alloc_f(n), *scr = alloc_f(att_n(s)), *pre = alloc_f(n), *acc = alloc_f(n);
        fill(qkv, n, a);
        fill(dout, out_n(s), 1);
        llmk_attention_forward_ref(o, att, qkv, s.B, s.T, s.H, s.KVH, s.D);
        memset(g1, 0, n * 4), memset(g2, 0, n * 4);
        fill_nan(scr, att_n(s));
        llmk_attention_backward_ref(g1, scr, dout, qkv, att, s.B, s.T, s.H, s.KVH, s.D);
        fill_nan(scr, att_n(s));
        llmk_attention_backward(g2, scr, dout, qkv, att, s.B, s.T, s.H, s.KVH, s.D);
        double bound = bwd_bound(s, a), err, mag;
        term_sizes z = sizes(s, qkv, att, dout);
        diff_strided(&err, &mag, g2, g1, rows, C3, s.H * s.D);
        double eq = err / fmax(mag, z.scale * z.dP * z.k);
        diff_strided(&err, &mag, g2 + s.H * s.D, g1 + s.H * s.D, rows, C3, s.KVH * s.D);
        double ek = err / fmax(mag, z.scale * z.dP * z.q);
        diff_strided(&err, &mag, g2 + (s.H + s.KVH) * s.D, g1 + (s.H + s.KVH) * s.D, rows, C3, s.KVH * s.D);
        double ev = err / fmax(mag, z.dout);
        note(&worst_dq, eq, bound), note(&worst_dk, ek, bound), note(&worst_dv, ev, bound);
        if (!(eq <= bound && ek <= bound && ev <= bound) && bad++ < 5)
            printf("# B=%zu T=%zu H=%zu KVH=%zu D=%zu: dq err %.3g dk err %.3g dv err %.3g bound %.3g\n", s.B, s.T, s.H,
                   s.KVH, s.D, eq, ek, ev, bound);
        for (int fast = 0; fast < 2; fast++) {
            const float *g = fast ? g2 : g1;
            fill(pre, n, 1);
            memcpy(acc, pre, n * 4);
            (fast ? llmk_attention_backward : llmk_attention_backward_ref)(acc, scr, dout, qkv, att, s.B, s.T, s.H,
                                                                           s.KVH, s.D);
            /* each addition rounds relative to its running sum: dq takes one
             * addition per element, dk and dv one per head of the group,
             * each head's share at most scale * 2 dP max|q| * colsum (dk) or
             * max|dout| * colsum (dv); g's own additions round likewise, so
             * the two differ by at most 2 (group + 1) u (|P| + that) */
            double grp = (double)(s.H / s.KVH), part_k = grp * z.scale * 2 * z.dP * z.q * z.colsum,
                   part_v = grp * z.dout * z.colsum;
            for (size_t i = 0; i < n; i++) {
                size_t c = i % C3;
                double run = c < s.H * s.D ? fabs(g[i]) : c < (s.H + s.KVH) * s.D ? part_k : part_v;
                if (!(fabs((double)acc[i] - ((double)pre[i] + g[i])) <= 2 * (grp + 1) * U * (fabs(pre[i]) + run))) bad_acc++;
            }
        }
        free(qkv), free(o), free(att), free(dout), free(g1), free(g2), free(scr), free(pre), free(acc);
    }
    CHECK(bad == 0);
    CHECK(bad_acc == 0);
    printf("# cpu path %s: largest backward error / bound: dq %.3f dk %.3f dv %.3f\n", llmk_cpu_path(), worst_dq,
           worst_dk, worst_dv);
}

/* ---- finite differences ----
 * L(qkv) = sum(out * w) computed entirely in double, so that a central
 * difference with step 1e-5 is accurate to ~1e-9 relative (truncation
 * ~h^2 L''' and cancellation ~1e-16 / h), far below the float gradients'
 * own error. */
static double loss_double(const double *x, const float *w, shape s)
{
    size_t C3 = (s.H + 2 * s.KVH) * s.D, group = s.H / s.KVH;
    double scale = 1 / sqrt((double)s.D), L = 0;
    double *p = malloc(s.T * sizeof(double));
    for (size_t b = 0; b < s.B; b++)
        for (size_t h = 0; h < s.H; h++)
            for (size_t t = 0; t < s.T; t++) {
                const double *q = x + (b * s.T + t) * C3 + h * s.D;
                size_t ko = (s.H + h / group) * s.D, vo = (s.H + s.KVH + h / group) * s.D;
                double mx = -INFINITY, sum = 0;
                for (size_t j = 0; j <= t; j++) {
                    double d = 0;
                    for (size_t e = 0; e < s.D; e++) d += q[e] * x[(b * s.T + j) * C3 + ko + e];
                    p[j] = d * scale;
                    if (p[j] > mx) mx = p[j];
                }
                for (size_t j = 0; j <= t; j++) sum += p[j] = exp(p[j] - mx);
                for (size_t e = 0; e < s.D; e++) {
                    double o = 0;
                    for (size_t j = 0; j <= t; j++) o += p[j] / sum * x[(b * s.T + j) * C3 + vo + e];
                    L += o * w[(b * s.T + t) * s.H * s.D + h * s.D + e];
                }
            }
    free(p);
    return L;
}

/* The gradient of L is backward(dout = w). For random directions r over
 * the q part, the k part, the v part and all of qkv, (L(x + hr) - L(x - hr))
 * / 2h must equal sum_i g_i r_i. The float gradients are within bwd_bound
 * (under 130 u, 8e-6) of the size of their terms, and the errors of a sum
 * over random directions partly cancel, so the two agree to well within
 * 1e-5 of sum_i |g_i r_i| (measured: under 6e-8, for the ref and the fast
 * kernel alike); a wrong term in any of dq, dk, dv is off by O(1). */
TEST(backward_matches_finite_differences)
{
    shape shapes[] = {{1, 1, 1, 1, 1}, {2, 7, 4, 2, 8}, {1, 5, 3, 1, 3}, {1, 33, 8, 1, 16}, {2, 20, 4, 4, 64}};
    int bad = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        shape s = shapes[si];
        size_t C3 = (s.H + 2 * s.KVH) * s.D, n = qkv_n(s);
        float *qkv = alloc_f(n), *o = alloc_f(out_n(s)), *att = alloc_f(att_n(s)), *w = alloc_f(out_n(s)),
              *g = alloc_f(n), *scr = alloc_f(att_n(s));
        double *x = malloc(n * sizeof(double)), *xp = malloc(n * sizeof(double)), *r = malloc(n * sizeof(double));
        fill(qkv, n, 1);
        fill(w, out_n(s), 1);
        for (size_t i = 0; i < n; i++) x[i] = qkv[i];
        llmk_attention_forward_ref(o, att, qkv, s.B, s.T, s.H, s.KVH, s.D);
        for (int fast = 0; fast < 2; fast++) {
            memset(g, 0, n * 4);
            (fast ? llmk_attention_backward : llmk_attention_backward_ref)(g, scr, w, qkv, att, s.B, s.T, s.H, s.KVH,
                                                                           s.D);
            for (int part = 0; part < 4; part++) {   /* q, k, v, all */
                size_t lo[] = {0, s.H * s.D, (s.H + s.KVH) * s.D, 0}, hi[] = {s.H * s.D, (s.H + s.KVH) * s.D, C3, C3};
                for (size_t i = 0; i < n; i++) {
                    size_t c = i % C3;
                    r[i] = c >= lo[part] && c < hi[part] ? uniform() : 0;
                }
                const double step = 1e-5;
                for (size_t i = 0; i < n; i++) xp[i] = x[i] + step * r[i];
                double Lp = loss_double(xp, w, s);
                for (size_t i = 0; i < n; i++) xp[i] = x[i] - step * r[i];
                double Lm = loss_double(xp, w, s), fd = (Lp - Lm) / (2 * step);
                double an = 0, mag = 0;
                for (size_t i = 0; i < n; i++) an += g[i] * r[i], mag += fabs(g[i] * r[i]);
                /* T = 1: the scores do not matter, dq = dk = 0 exactly */
                if (!(fabs(fd - an) <= 1e-5 * mag + 1e-12)) {
                    if (bad++ < 5)
                        printf("# %s B=%zu T=%zu H=%zu KVH=%zu D=%zu part %d: fd %.9g analytic %.9g (scale %.3g)\n",
                               fast ? "fast" : "ref", s.B, s.T, s.H, s.KVH, s.D, part, fd, an, mag);
                }
            }
        }
        free(qkv), free(o), free(att), free(w), free(g), free(scr), free(x), free(xp), free(r);
    }
    CHECK(bad == 0);
}

/* With dout zero after position t0 the gradients of the positions after t0
 * are exactly zero: nothing at or before t0 depends on them. */
TEST(backward_is_causal)
{
    shape s = {2, 50, 8, 2, 32};
    size_t C3 = (s.H + 2 * s.KVH) * s.D, n = qkv_n(s);
    float *qkv = alloc_f(n), *o = alloc_f(out_n(s)), *att = alloc_f(att_n(s)), *dout = alloc_f(out_n(s)),
          *g = alloc_f(n), *scr = alloc_f(att_n(s));
    int bad = 0;
    for (int fast = 0; fast < 2; fast++) {
        size_t t0 = (size_t)(unit_rand() % (s.T - 1));
        fill(qkv, n, 1);
        fill(dout, out_n(s), 1);
        for (size_t b = 0; b < s.B; b++) memset(dout + (b * s.T + t0 + 1) * s.H * s.D, 0, (s.T - t0 - 1) * s.H * s.D * 4);
        llmk_attention_forward(o, att, qkv, s.B, s.T, s.H, s.KVH, s.D);
        memset(g, 0, n * 4);
        (fast ? llmk_attention_backward : llmk_attention_backward_ref)(g, scr, dout, qkv, att, s.B, s.T, s.H, s.KVH,
                                                                       s.D);
        for (size_t b = 0; b < s.B; b++)
            for (size_t i = (b * s.T + t0 + 1) * C3; i < (b + 1) * s.T * C3; i++) bad += g[i] != 0;
    }
    CHECK(bad == 0);
    free(qkv), free(o), free(att), free(dout), free(g), free(scr);
}

/* One thread, two and three give the same bits (the work is split by rows,
 * each computed in one fixed order). The shapes are big enough to be
 * split, with B*KVH (the backward's units) smaller than, equal to, a
 * multiple of and not a multiple of the thread counts, so that both
 * backward schedules run, and T = 520 puts dS in scratch. */
TEST(threads_do_not_change_results)
{
    shape shapes[] = {{4, 64, 12, 12, 64}, {1, 65, 1, 1, 64}, {3, 65, 8, 2, 33}, {1, 129, 8, 1, 128}, {2, 520, 2, 2, 16}};
    int bad = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        shape s = shapes[si];
        size_t n = qkv_n(s);
        float *qkv = alloc_f(n), *dout = alloc_f(out_n(s)), *pre = alloc_f(n), *scr = alloc_f(att_n(s));
        float *o[3], *att[3], *g[3];
        fill(qkv, n, 1.5);
        fill(dout, out_n(s), 1);
        fill(pre, n, 1);
        for (int k = 0; k < 3; k++) {
            o[k] = alloc_f(out_n(s)), att[k] = alloc_f(att_n(s)), g[k] = alloc_f(n);
            llmk_set_threads(k + 1);
            llmk_attention_forward(o[k], att[k], qkv, s.B, s.T, s.H, s.KVH, s.D);
            memcpy(g[k], pre, n * 4);
            llmk_attention_backward(g[k], scr, dout, qkv, att[k], s.B, s.T, s.H, s.KVH, s.D);
        }
        for (int k = 1; k < 3; k++) {
            bad += memcmp(o[0], o[k], out_n(s) * 4) != 0;
            bad += memcmp(att[0], att[k], att_n(s) * 4) != 0;
            bad += memcmp(g[0], g[k], n * 4) != 0;
        }
        for (int k = 0; k < 3; k++) free(o[k]), free(att[k]), free(g[k]);
        free(qkv), free(dout), free(pre), free(scr);
    }
    llmk_set_threads(0);
    CHECK(bad == 0);
}

/* T = 520: past the length where the backward keeps dS in a per-thread
 * buffer, so dS goes through scratch; the same bounds as above. */
TEST(long_sequence_matches_ref)
{
    shape s = {2, 520, 2, 1, 16};
    size_t C3 = (s.H + 2 * s.KVH) * s.D, n = qkv_n(s);
    float *qkv = alloc_f(n), *o1 = alloc_f(out_n(s)), *o2 = alloc_f(out_n(s)), *a1 = alloc_f(att_n(s)),
          *a2 = alloc_f(att_n(s)), *dout = alloc_f(out_n(s)), *g1 = alloc_f(n), *g2 = alloc_f(n), *scr = alloc_f(att_n(s));
    fill(qkv, n, 1);
    fill(dout, out_n(s), 1);
    llmk_attention_forward_ref(o1, a1, qkv, s.B, s.T, s.H, s.KVH, s.D);
    llmk_attention_forward(o2, a2, qkv, s.B, s.T, s.H, s.KVH, s.D);
    CHECK(nerr(o2, o1, out_n(s)) <= fwd_bound(s, 1));
    CHECK(nerr(a2, a1, att_n(s)) <= fwd_bound(s, 1));
    memset(g1, 0, n * 4), memset(g2, 0, n * 4);
    llmk_attention_backward_ref(g1, scr, dout, qkv, a1, s.B, s.T, s.H, s.KVH, s.D);
    fill_nan(scr, att_n(s));
    llmk_attention_backward(g2, scr, dout, qkv, a1, s.B, s.T, s.H, s.KVH, s.D);
    term_sizes z = sizes(s, qkv, a1, dout);
    double err, mag, bound = bwd_bound(s, 1);
    diff_strided(&err, &mag, g2, g1, s.B * s.T, C3, s.H * s.D);
    CHECK(err / fmax(mag, z.scale * z.dP * z.k) <= bound);
    diff_strided(&err, &mag, g2 + s.H * s.D, g1 + s.H * s.D, s.B * s.T, C3, s.KVH * s.D);
    CHECK(err / fmax(mag, z.scale * z.dP * z.q) <= bound);
    diff_strided(&err, &mag, g2 + (s.H + s.KVH) * s.D, g1 + (s.H + s.KVH) * s.D, s.B * s.T, C3, s.KVH * s.D);
    CHECK(err / fmax(mag, z.dout) <= bound);
    free(qkv), free(o1), free(o2), free(a1), free(a2), free(dout), free(g1), free(g2), free(scr);
}

/* Shapes the header rules out (a zero dimension, H not a multiple of KVH)
 * touch nothing. */
TEST(bad_shapes_do_nothing)
{
    float qkv[64], out[64], att[64], g[64], scr[64], dout[64];
    fill(qkv, 64, 1), fill(dout, 64, 1);
    size_t dims[][4] = {{0, 2, 2, 2}, {1, 0, 2, 2}, {1, 2, 0, 1}, {1, 2, 2, 0}, {1, 2, 3, 2}, {1, 2, 1, 2}};
    int bad = 0;
    for (int i = 0; i < 6; i++)
        for (int fast = 0; fast < 2; fast++) {
            fill_nan(out, 64), fill_nan(att, 64), memset(g, 0, sizeof g);
            (fast ? llmk_attention_forward : llmk_attention_forward_ref)(out, att, qkv, dims[i][0], dims[i][1],
                                                                         dims[i][2], dims[i][3], 2);
            (fast ? llmk_attention_backward : llmk_attention_backward_ref)(g, scr, dout, qkv, att, dims[i][0],
                                                                           dims[i][1], dims[i][2], dims[i][3], 2);
            for (int k = 0; k < 64; k++) bad += !isnan(out[k]) || !isnan(att[k]) || g[k] != 0;
        }
    CHECK(bad == 0);
}

/* ---- attention over a KV cache: llmk_attention_cached ----
 * n queries at positions pos0 .. pos0 + n - 1 over a cache of pos0 + n
 * positions, with rows padded past their heads (q_stride > H D, kv_stride
 * > KVH D) so that a kernel that assumes packed rows fails. */

typedef struct { size_t n, pos0, H, KVH, D; } cshape;

typedef struct {
    float *q, *k, *v;
    size_t qs, kvs;
} cinputs;

static cinputs cached_inputs(cshape s, double a)
{
    cinputs in = {NULL, NULL, NULL, s.H * s.D + 3, s.KVH * s.D + 5};
    size_t len = s.pos0 + s.n;
    in.q = alloc_f(s.n * in.qs), in.k = alloc_f(len * in.kvs), in.v = alloc_f(len * in.kvs);
    fill(in.q, s.n * in.qs, a), fill(in.k, len * in.kvs, a), fill(in.v, len * in.kvs, 1);
    return in;
}

static void cached_free(cinputs in) { free(in.q), free(in.k), free(in.v); }

static void cached_run(float *out, cinputs in, cshape s)
{
    llmk_attention_cached(out, in.q, in.qs, in.k, in.v, in.kvs, s.n, s.pos0, s.H, s.KVH, s.D);
}

/* fwd_bound's model, with the sums now over up to pos0 + n keys (500 here,
 * not 65): their random-walk sqrt(len) u is no longer small next to the
 * rest and is added, 4 u sqrt(len). Measured over 8 seeds (inputs of size
 * 1 and 3), the largest error is 0.14 of this bound on the SIMD paths and
 * 0.16 on the scalar one (its float sums are sequential), the worst cases
 * at D = 1 and pos0 = 300. */
static double cached_bound(cshape s, double a)
{
    return 4 * U * (4 + a * a * sqrt((double)s.D) + sqrt((double)(s.pos0 + s.n)));
}

/* The fast kernel against the ref over n x pos0 x H/KVH, each with one of
 * the head sizes (all three pairings of each value with the others), plus
 * head sizes that are not a multiple of the vector width; rows compared:
 * all of them up to n = 17, else the first two, the middle one, the last
 * two and two at random (the ref computes one row at a time: n = 1 at its
 * position). */
TEST(cached_matches_ref)
{
    static const size_t ns[] = {1, 3, 17, 64, 200}, p0s[] = {0, 5, 300}, hds[] = {64, 128, 80},
                        hks[][2] = {{4, 4}, {8, 2}, {32, 8}};
    cshape shapes[5 * 3 * 3 + 6];
    size_t ns_ = 0;
    for (size_t ni = 0; ni < 5; ni++)
        for (size_t pi = 0; pi < 3; pi++)
            for (size_t hi = 0; hi < 3; hi++)
                shapes[ns_++] = (cshape){ns[ni], p0s[pi], hks[hi][0], hks[hi][1], hds[(2 * ni + pi + hi) % 3]};
    cshape odd[] = {{17, 40, 8, 2, 33}, {64, 5, 4, 1, 1}, {3, 300, 6, 3, 8}, {200, 0, 2, 2, 24}, {1, 77, 8, 8, 16},
                    {40, 33, 12, 4, 96}};
    for (size_t i = 0; i < 6; i++) shapes[ns_++] = odd[i];
    int bad = 0;
    double worst = 0;
    for (size_t si = 0; si < ns_; si++)
        for (int peaky = 0; peaky < 2; peaky++) {
            cshape s = shapes[si];
            if (peaky && s.n * (s.pos0 + s.n) * s.H * s.D > (1u << 22)) continue;   /* the small ones only */
            double a = peaky ? 3 : 1;
            cinputs in = cached_inputs(s, a);
            size_t HD = s.H * s.D;
            float *out = alloc_f(s.n * HD), *ref = alloc_f(HD);
            fill_nan(out, s.n * HD);
            cached_run(out, in, s);
            size_t rows[7] = {0, 1, s.n / 2, s.n - 2, s.n - 1, (size_t)(unit_rand() % s.n), (size_t)(unit_rand() % s.n)};
            double err = 0, mag = 0;
            for (size_t ri = 0; ri < (s.n <= 17 ? s.n : 7); ri++) {
                size_t i = s.n <= 17 ? ri : rows[ri];
                double e, m;
                llmk_attention_cached_ref(ref, in.q + i * in.qs, in.qs, in.k, in.v, in.kvs, 1, s.pos0 + i, s.H, s.KVH,
                                          s.D);
                diff_strided(&e, &m, out + i * HD, ref, 1, HD, HD);
                err = fmax(err, e), mag = fmax(mag, m);
            }
            double ne = mag > 0 ? err / mag : err, bound = cached_bound(s, a);
            note(&worst, ne, bound);
            if (!(ne <= bound) && bad++ < 5)
                printf("# n=%zu pos0=%zu H=%zu KVH=%zu D=%zu a=%g: err %.3g bound %.3g\n", s.n, s.pos0, s.H, s.KVH, s.D,
                       a, ne, bound);
            free(out), free(ref);
            cached_free(in);
        }
    CHECK(bad == 0);
    printf("# cpu path %s: largest cached attention error / bound: %.3f\n", llmk_cpu_path(), worst);
}

/* A row's result depends only on its query, its position and the cache
 * up to it: the same bits whether it is computed alone (n = 1, the cache
 * cut after it and the rest NaN), in the whole call, or in either half of
 * the call cut in two; and a value after a row's position that is infinite
 * (which the row never reads, so it must not be multiplied by 0 either)
 * changes nothing before it. */
TEST(cached_rows_do_not_depend_on_batching)
{
    cshape shapes[] = {{70, 37, 8, 2, 64}, {40, 0, 32, 8, 128}, {33, 300, 4, 4, 80}, {20, 3, 12, 4, 33},
                       {5, 90, 16, 1, 64}, {64, 1, 6, 2, 1}, {20, 50, 1, 1, 64}, {3, 200, 32, 8, 64}};
    int bad = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        cshape s = shapes[si];
        cinputs in = cached_inputs(s, 2);
        size_t HD = s.H * s.D, len = s.pos0 + s.n, cut = 1 + (size_t)(unit_rand() % (s.n - 1));
        float *all = alloc_f(s.n * HD), *part = alloc_f(s.n * HD), *one = alloc_f(HD);
        float *k1 = alloc_f(len * in.kvs), *v1 = alloc_f(len * in.kvs);
        cached_run(all, in, s);
        /* in two calls: rows 0 .. cut-1, then the rest */
        llmk_attention_cached(part, in.q, in.qs, in.k, in.v, in.kvs, cut, s.pos0, s.H, s.KVH, s.D);
        llmk_attention_cached(part + cut * HD, in.q + cut * in.qs, in.qs, in.k, in.v, in.kvs, s.n - cut, s.pos0 + cut,
                              s.H, s.KVH, s.D);
        bad += memcmp(all, part, s.n * HD * 4) != 0;
        /* one at a time, what follows in the cache NaN */
        for (size_t i = 0; i < s.n; i++) {
            size_t upto = (s.pos0 + i + 1) * in.kvs;
            memcpy(k1, in.k, upto * 4), memcpy(v1, in.v, upto * 4);
            fill_nan(k1 + upto, len * in.kvs - upto), fill_nan(v1 + upto, len * in.kvs - upto);
            llmk_attention_cached(one, in.q + i * in.qs, in.qs, k1, v1, in.kvs, 1, s.pos0 + i, s.H, s.KVH, s.D);
            bad += memcmp(one, all + i * HD, HD * 4) != 0;
        }
        /* an infinite value at the last position */
        for (size_t e = 0; e < in.kvs; e++) in.v[(len - 1) * in.kvs + e] = INFINITY;
        cached_run(part, in, s);
        bad += memcmp(all, part, (s.n - 1) * HD * 4) != 0;
        free(all), free(part), free(one), free(k1), free(v1);
        cached_free(in);
    }
    CHECK(bad == 0);
}

/* A paged cache (llmk_attention_paged) gives the contiguous cache's bits:
 * the same rows copied into blocks of 32 or 64 positions laid out in
 * reverse order in one buffer, with NaN between them (a block read past its
 * end or at the wrong place shows), and the ref alike. */
TEST(paged_matches_contiguous)
{
    cshape shapes[] = {{1, 0, 4, 4, 64}, {1, 95, 32, 8, 64}, {1, 500, 8, 2, 128}, {3, 31, 4, 1, 80},
                       {70, 37, 8, 2, 64}, {40, 0, 32, 8, 128}, {5, 90, 16, 1, 64}, {20, 3, 12, 4, 33}};
    static const size_t blens[] = {32, 64};
    int bad = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (size_t bi = 0; bi < 2; bi++) {
            cshape s = shapes[si];
            cinputs in = cached_inputs(s, 2);
            size_t HD = s.H * s.D, len = s.pos0 + s.n, bl = blens[bi], nb = (len + bl - 1) / bl;
            size_t bfloats = (bl + 1) * in.kvs;   /* a block and a row of NaN */
            float *kbuf = alloc_f(nb * bfloats), *vbuf = alloc_f(nb * bfloats);
            const float **kb = malloc(nb * sizeof *kb), **vb = malloc(nb * sizeof *vb);
            fill_nan(kbuf, nb * bfloats), fill_nan(vbuf, nb * bfloats);
            for (size_t b = 0; b < nb; b++) {
                size_t at = (nb - 1 - b) * bfloats, rows = b + 1 < nb ? bl : len - b * bl;
                memcpy(kbuf + at, in.k + b * bl * in.kvs, rows * in.kvs * 4);
                memcpy(vbuf + at, in.v + b * bl * in.kvs, rows * in.kvs * 4);
                kb[b] = kbuf + at, vb[b] = vbuf + at;
            }
            float *want = alloc_f(s.n * HD), *got = alloc_f(s.n * HD), *ref = alloc_f(HD), *pref = alloc_f(HD);
            cached_run(want, in, s);
            llmk_attention_paged(got, in.q, in.qs, kb, vb, bl, in.kvs, s.n, s.pos0, s.H, s.KVH, s.D);
            bad += memcmp(want, got, s.n * HD * 4) != 0;
            size_t i = s.n - 1;
            llmk_attention_cached_ref(ref, in.q + i * in.qs, in.qs, in.k, in.v, in.kvs, 1, s.pos0 + i, s.H, s.KVH, s.D);
            llmk_attention_paged_ref(pref, in.q + i * in.qs, in.qs, kb, vb, bl, in.kvs, 1, s.pos0 + i, s.H, s.KVH, s.D);
            bad += memcmp(ref, pref, HD * 4) != 0;
            if (bad) printf("# paged n=%zu pos0=%zu H=%zu KVH=%zu D=%zu block %zu differs\n", s.n, s.pos0, s.H, s.KVH,
                            s.D, bl);
            free(want), free(got), free(ref), free(pref), free(kbuf), free(vbuf), free(kb), free(vb);
            cached_free(in);
        }
    CHECK(bad == 0);
}

/* 1, 2 and 3 threads give the same bits, over shapes whose work items are
 * fewer than, as many as and many more than the threads (and are cut
 * differently for different thread counts). */
TEST(cached_threads_do_not_change_results)
{
    cshape shapes[] = {{1, 500, 32, 8, 64}, {1, 700, 32, 1, 64}, {1, 300, 4, 2, 128}, {100, 50, 8, 2, 64},
                       {129, 0, 12, 12, 80}, {7, 1000, 16, 4, 33}, {20, 50, 1, 1, 64}, {2, 400, 6, 3, 64}};
    int bad = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        cshape s = shapes[si];
        cinputs in = cached_inputs(s, 1.5);
        size_t on = s.n * s.H * s.D;
        float *o[3];
        for (int t = 0; t < 3; t++) {
            o[t] = alloc_f(on);
            llmk_set_threads(t + 1);
            cached_run(o[t], in, s);
        }
        bad += memcmp(o[0], o[1], on * 4) != 0;
        bad += memcmp(o[0], o[2], on * 4) != 0;
        for (int t = 0; t < 3; t++) free(o[t]);
        cached_free(in);
    }
    llmk_set_threads(0);
    CHECK(bad == 0);
}

/* Shapes the header rules out, and n = 0 or D = 0, touch nothing. */
TEST(cached_bad_shapes_do_nothing)
{
    float q[64], k[64], v[64], out[64];
    fill(q, 64, 1), fill(k, 64, 1), fill(v, 64, 1);
    size_t dims[][4] = {{0, 2, 1, 2}, {2, 0, 2, 2}, {2, 2, 0, 1}, {2, 2, 2, 0}, {2, 3, 2, 2}, {2, 1, 2, 2}, {2, 2, 2, 0}};
    int bad = 0;
    for (int i = 0; i < 7; i++)
        for (int fast = 0; fast < 2; fast++) {
            size_t n = dims[i][0], H = dims[i][1], KVH = dims[i][2], D = dims[i][3];
            fill_nan(out, 64);
            (fast ? llmk_attention_cached : llmk_attention_cached_ref)(out, q, 8, k, v, 4, n, 1, H, KVH, D);
            for (int e = 0; e < 64; e++) bad += !isnan(out[e]);
        }
    CHECK(bad == 0);
}

int main(void)
{
    unit_seed();
    RUN(forward_matches_ref);
    RUN(att_rows_are_distributions);
    RUN(forward_is_causal);
    RUN(backward_matches_ref);
    RUN(backward_matches_finite_differences);
    RUN(backward_is_causal);
    RUN(threads_do_not_change_results);
    RUN(long_sequence_matches_ref);
    RUN(bad_shapes_do_nothing);
    RUN(cached_matches_ref);
    RUN(cached_rows_do_not_depend_on_batching);
    RUN(cached_threads_do_not_change_results);
    RUN(paged_matches_contiguous);
    RUN(cached_bad_shapes_do_nothing);
    return unit_done();
}
