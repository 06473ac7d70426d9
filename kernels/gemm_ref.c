/* Scalar oracles for the matrix multiplies: plain loops with double
 * accumulators, so they are more accurate than any float kernel they judge.
 * The Linear layer refs are written out directly (not through sgemm) so that
 * they check the fast versions' use of sgemm independently. */
#include "llmk.h"

/* C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C, row-major. */
void llmk_sgemm_ref(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                    const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            double s = 0;
            for (size_t p = 0; p < K; p++) {
                double a = trans_a ? A[p * lda + i] : A[i * lda + p];
                double b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
                s += a * b;
            }
            double v = (double)alpha * s;
            if (beta != 0) v += (double)beta * C[i * ldc + j];   /* beta == 0: C may hold NaN */
            C[i * ldc + j] = (float)v;
        }
}

/* out (rows, oc) = inp (rows, ic) @ w (oc, ic)^T + bias (oc) */
void llmk_linear_forward_ref(float *out, const float *inp, const float *w, const float *bias, size_t rows, size_t ic,
                             size_t oc)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t o = 0; o < oc; o++) {
            double s = bias ? bias[o] : 0;
            for (size_t i = 0; i < ic; i++) s += (double)inp[r * ic + i] * w[o * ic + i];
            out[r * oc + o] = (float)s;
        }
}

/* dinp (rows, ic) += dout (rows, oc) @ w (oc, ic); dw (oc, ic) += dout^T @ inp;
 * dbias (oc) += column sums of dout. NULL gradients are skipped. */
void llmk_linear_backward_ref(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w,
                              size_t rows, size_t ic, size_t oc)
{
    if (dinp)
        for (size_t r = 0; r < rows; r++)
            for (size_t i = 0; i < ic; i++) {
                double s = 0;
                for (size_t o = 0; o < oc; o++) s += (double)dout[r * oc + o] * w[o * ic + i];
                dinp[r * ic + i] = (float)(dinp[r * ic + i] + s);
            }
    if (dw)
        for (size_t o = 0; o < oc; o++)
            for (size_t i = 0; i < ic; i++) {
                double s = 0;
                for (size_t r = 0; r < rows; r++) s += (double)dout[r * oc + o] * inp[r * ic + i];
                dw[o * ic + i] = (float)(dw[o * ic + i] + s);
            }
    if (dbias)
        for (size_t o = 0; o < oc; o++) {
            double s = 0;
            for (size_t r = 0; r < rows; r++) s += dout[r * oc + o];
            dbias[o] = (float)(dbias[o] + s);
        }
}
