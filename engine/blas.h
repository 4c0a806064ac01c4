// engine/blas.h — the one GEMM entry point. The only file that includes <cblas.h> is blas.cpp.
//
// Row-major, PyTorch style: C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C.
// Transposes are flags passed to cblas_sgemm, never copies. beta = 0 overwrites C (its
// old contents may be garbage, even NaN); beta = 1 accumulates, as every backward does.
//
// See Note [Threading: rows are independent] in engine/parallel.h: OpenBLAS's threads share
// our OpenMP pool, and a gemm called inside a parallel region runs single-threaded.
#pragma once
#include <cstdint>

enum class Trans { N, T };

void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, const float* B,
          float beta, float* C);

// The same with explicit leading dimensions (row strides), for sub-matrices such as one
// attention head inside a (B, H, T, D) tensor. lda/ldb/ldc count floats between rows.
void gemm_ld(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The OpenBLAS kernels in use, e.g. "SkylakeX" (see Note [OpenBLAS kernel on AVX-512 AMD CPUs] in
// engine/openblas_core.cpp).
const char* blas_core();
