// engine/blas.cpp — gemm over OpenBLAS's cblas_sgemm (row-major), with argument checks.
#include "blas.h"
#include <cblas.h>
#include <omp.h>
#include <algorithm>
#include <limits>
#include "check.h"
#include "parallel.h"
#include "profile_hook.h"

extern "C" char* openblas_get_corename(void);

const char* blas_core() { return openblas_get_corename(); }

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
    if (profile_hook) profile_hook->gemm_flop(2.0 * double(M) * double(N) * double(K));   // Note [Profiling hook]
    if (K == 0) {   // the sum over k is empty: C = beta C (BLAS would skip this too, but be explicit)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
        return;
    }
    // One row of C (a generated token's forward through a Linear): sgemm would first pack all of
    // B — for a weight matrix that copy costs as much as the product — so call sgemv, which reads
    // B once: C = alpha · op(B)ᵀ a + beta · C with a the row of A (stride lda when A is transposed).
    if (M == 1 && omp_get_level() == 0) {
        if (beta == 0.f) std::fill(C, C + N, 0.f);   // C may hold garbage (NaN), and 0 · NaN is NaN
        const int inc = ta == Trans::N ? 1 : int(lda);
        if (tb == Trans::T) cblas_sgemv(CblasRowMajor, CblasNoTrans, int(N), int(K), alpha, B, int(ldb), A, inc, beta, C, 1);
        else cblas_sgemv(CblasRowMajor, CblasTrans, int(K), int(N), alpha, B, int(ldb), A, inc, beta, C, 1);
        return;
    }
    auto sgemm = [&](int64_t m0, int64_t m1) {   // rows [m0, m1) of C
        const float* Am = A + (ta == Trans::N ? m0 * lda : m0);
        cblas_sgemm(CblasRowMajor, ta == Trans::N ? CblasNoTrans : CblasTrans, tb == Trans::N ? CblasNoTrans : CblasTrans,
                    int(m1 - m0), int(N), int(K), alpha, Am, int(lda), B, int(ldb), beta, C + m0 * ldc, int(ldc));
    };
    // Note [Small GEMMs in two halves]
    // Below kSplitMax FLOPs, OpenBLAS's threads spend much of a GEMM waiting for each other. Such
    // a GEMM is cut into two halves of rows of C, always the same two whatever the thread
    // count, each a single-threaded sgemm (gemm inside a parallel region runs on its thread):
    // on two threads they run side by side, on one one after the other, with the same bits.
    // Measured here: the tiny config's step 13 % faster; shapes of 6e8 FLOPs and more gained
    // nothing, so they keep OpenBLAS's own threading. A gemm called from inside any parallel
    // region, even a team of one thread (attention's heads with --threads 1), is never cut:
    // testing omp_in_parallel() instead, which is false in a team of one, made each of those
    // small per-head GEMMs two calls and a nested region, and --threads 1 attention 1.3-1.9x slower.
    constexpr double kSplitMax = 2e8;
    const int64_t half = (M / 2 + 15) / 16 * 16;
    if (2.0 * double(M) * double(N) * double(K) < kSplitMax && M >= 64 && omp_get_level() == 0) {
#pragma omp parallel for schedule(static) num_threads(std::min(2, num_threads()))
        for (int h = 0; h < 2; h++) sgemm(h ? half : 0, h ? M : half);
        return;
    }
    sgemm(0, M);
}

void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, const float* B,
          float beta, float* C) {
    gemm_ld(ta, tb, M, N, K, alpha, A, ta == Trans::N ? K : M, B, tb == Trans::N ? N : K, beta, C, N);
}
