// engine/blas.cpp — gemm over OpenBLAS's cblas_sgemm (row-major), with argument checks.
#include "blas.h"
#include <cblas.h>
#include <omp.h>
#include <algorithm>
#include <limits>
#include <cstdlib>
#include "check.h"
#include "parallel.h"
#include "profile.h"

extern "C" char* openblas_get_corename(void);

// Note [OpenBLAS kernel on AVX-512 AMD CPUs]
// OpenBLAS built with DYNAMIC_ARCH (Debian's) picks its kernels from the CPU model number when
// the library loads. A release older than the CPU (0.3.21 in Debian 12 on a Zen 5 EPYC) does not
// know its AMD family and falls back to the AVX2 "Haswell" kernels, although the CPU runs
// AVX-512 at full width: sgemm then reaches about half the machine's rate (measured here on a
// Zen 5 EPYC, 2 threads, n = 2048: Haswell 188-199 GFLOP/s, SkylakeX 363-372). Newer OpenBLAS
// treats these CPUs as their Intel AVX-512 counterparts, Cooperlake when bfloat16 is there and
// SkylakeX otherwise; so do we, through OpenBLAS's own override, the OPENBLAS_CORETYPE
// environment variable. It is read by the library's initialiser, which runs before any
// constructor of ours, so it is set from .preinit_array, which the loader runs before the
// initialisers of shared libraries. A user's own OPENBLAS_CORETYPE is never replaced, and the
// variable is inherited by child processes, so a reference trainer run by `peft bench --suite
// --reference` uses the same kernels. Under valgrind, which hides AVX-512 from CPUID, nothing
// is set. blas_core() reports the kernels in use.
static void choose_openblas_core() {
    __builtin_cpu_init();   // needed this early, before any constructor has run
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl");
    if (__builtin_cpu_is("amd") && avx512)
        setenv("OPENBLAS_CORETYPE", __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX", 0);
}
__attribute__((section(".preinit_array"), used)) static void (*const choose_openblas_core_at_load)() =
    choose_openblas_core;
// The C library rebuilds the environment after .preinit_array has run; setting the variable
// again from an ordinary initialiser keeps it for getenv and for child processes.
static const bool openblas_core_kept = (choose_openblas_core(), true);

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
    if (gemm_watched())   // Note [Op profile], Note [GEMM floor]
        profile_gemm({ta, tb, M, N, K, lda, ldb, ldc, beta, omp_get_level() > 0});
    if (K == 0) {   // the sum over k is empty: C = beta C (BLAS would skip this too, but be explicit)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
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
