// engine/blas.cpp — gemm over OpenBLAS's cblas_sgemm (row-major), with argument checks.
#include "blas.h"
#include <cblas.h>
#include <limits>
#include "check.h"

void gemm_ld(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    constexpr int64_t kMax = std::numeric_limits<int>::max();   // cblas takes int sizes
    ENGINE_CHECK(M >= 0 && N >= 0 && K >= 0 && M <= kMax && N <= kMax && K <= kMax && lda <= kMax &&
                     ldb <= kMax && ldc <= kMax,
                 ValueError, "gemm: sizes M={} N={} K={} out of range", M, N, K);
    ENGINE_CHECK(lda >= (ta == Trans::N ? K : M) && ldb >= (tb == Trans::N ? N : K) && ldc >= N, ValueError,
                 "gemm: leading dimensions lda={} ldb={} ldc={} too small for M={} N={} K={}", lda, ldb, ldc, M,
                 N, K);
    if (M == 0 || N == 0) return;
    if (K == 0) {   // the sum over k is empty: C = beta C (BLAS would skip this too, but be explicit)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, ta == Trans::N ? CblasNoTrans : CblasTrans, tb == Trans::N ? CblasNoTrans : CblasTrans,
                int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, const float* B,
          float beta, float* C) {
    gemm_ld(ta, tb, M, N, K, alpha, A, ta == Trans::N ? K : M, B, tb == Trans::N ? N : K, beta, C, N);
}
