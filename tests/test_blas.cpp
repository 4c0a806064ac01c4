// tests/test_blas.cpp — the one GEMM entry point against a naive double-precision matmul.
#include "helpers.h"
#include "engine/blas.h"

TEST_SUITE("blas") {

// Reference: C = op(A) op(B) in double, plain loops.
static std::vector<double> naive(Trans ta, Trans tb, int M, int N, int K, const float* A, const float* B) {
    std::vector<double> C(size_t(M) * N, 0.0);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                double a = ta == Trans::N ? A[i * K + k] : A[k * M + i];
                double b = tb == Trans::N ? B[k * N + j] : B[j * K + k];
                s += a * b;
            }
            C[size_t(i) * N + j] = s;
        }
    return C;
}

TEST_CASE("blas: gemm equals a naive double matmul for all four transpose combinations") {
    Rng rng(11);
    const int M = 37, N = 29, K = 200;   // odd sizes: no accidental alignment
    for (Trans ta : {Trans::N, Trans::T})
        for (Trans tb : {Trans::N, Trans::T}) {
            Tensor A = Tensor::randn({M * K}, rng), B = Tensor::randn({K * N}, rng);
            Tensor C = Tensor::full({M * N}, NAN);   // beta = 0 must overwrite, even NaN
            gemm(ta, tb, M, N, K, 1.f, A.data(), B.data(), 0.f, C.data());
            std::string why;
            // K = 200 products of unit normals: float32 rounding ~1e-6 relative per term
            CHECK_MESSAGE(allclose(C.to_vector(), naive(ta, tb, M, N, K, A.data(), B.data()), 1e-5, 1e-4, &why), why);
            // beta = 1 accumulates
            std::vector<double> twice = naive(ta, tb, M, N, K, A.data(), B.data());
            for (double& v : twice) v *= 2;
            gemm(ta, tb, M, N, K, 1.f, A.data(), B.data(), 1.f, C.data());
            CHECK_MESSAGE(allclose(C.to_vector(), twice, 1e-5, 2e-4, &why), why);
        }
}

TEST_CASE("blas: gemm rejects leading dimensions that are too small") {
    float a[4] = {0}, b[4] = {0}, c[4] = {0};
    CHECK_THROWS_AS(gemm_ld(Trans::N, Trans::N, 2, 2, 2, 1.f, a, 1, b, 2, 0.f, c, 2), ValueError);
}

}  // TEST_SUITE
