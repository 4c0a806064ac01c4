// engine/linalg.cpp — SVD and QR through LAPACK (inside libopenblas), column-major underneath.
#include "linalg.h"
#include <algorithm>
#include <vector>
#include "check.h"

extern "C" {   // Fortran LAPACK, as OpenBLAS exports it (arguments by pointer, column-major)
void sgesdd_(const char* jobz, const int* m, const int* n, float* a, const int* lda, float* s, float* u,
             const int* ldu, float* vt, const int* ldvt, float* work, const int* lwork, int* iwork, int* info);
void sgeqrf_(const int* m, const int* n, float* a, const int* lda, float* tau, float* work, const int* lwork,
             int* info);
void sorgqr_(const int* m, const int* n, const int* k, float* a, const int* lda, const float* tau, float* work,
             const int* lwork, int* info);
}

static void check_matrix(const Tensor& W, const char* what) {
    ENGINE_CHECK(W.ndim() == 2 && W.numel() > 0, ShapeError, "{}: needs a non-empty matrix, got {}", what,
                 W.shape().str());
    ENGINE_CHECK(W.size(0) < (int64_t(1) << 30) && W.size(1) < (int64_t(1) << 30), ShapeError, "{}: {} is too large for LAPACK",
                 what, W.shape().str());
}

// A row-major (m, n) buffer read by LAPACK is the column-major (n, m) matrix Wᵀ. So sgesdd on
// it gives Wᵀ = U' S V'ᵀ, i.e. W = V' S U'ᵀ: LAPACK's VT buffer (k × m, column-major) read
// row-major is W's U (m, k), and its U buffer (n × k, column-major) read row-major is W's Vh (k, n).
Svd svd(const Tensor& W) {
    check_matrix(W, "svd");
    const int m = int(W.size(0)), n = int(W.size(1)), k = std::min(m, n);
    std::vector<float> a(W.data(), W.data() + W.numel());   // sgesdd destroys its input
    Svd r{Tensor::empty({m, k}), Tensor::empty({k}), Tensor::empty({k, n})};
    const int lda = n, ldu = n, ldvt = k;
    std::vector<int> iwork(size_t(8) * k);
    int info = 0, lwork = -1;
    float query = 0;
    sgesdd_("S", &n, &m, a.data(), &lda, r.S.data(), r.Vh.data(), &ldu, r.U.data(), &ldvt, &query, &lwork,
            iwork.data(), &info);
    lwork = int(query) + 1;
    std::vector<float> work(static_cast<size_t>(lwork));
    sgesdd_("S", &n, &m, a.data(), &lda, r.S.data(), r.Vh.data(), &ldu, r.U.data(), &ldvt, work.data(), &lwork,
            iwork.data(), &info);
    ENGINE_CHECK(info == 0, ValueError, "svd: LAPACK sgesdd failed on {} (info {}{})", W.shape().str(), info,
                 info > 0 ? ": did not converge" : "");
    return r;
}

// QR needs W itself, not Wᵀ, in column-major order: transpose into a copy, factor, and
// transpose Q and R back.
Qr qr(const Tensor& W) {
    check_matrix(W, "qr");
    const int m = int(W.size(0)), n = int(W.size(1)), k = std::min(m, n);
    const float* w = W.data();
    std::vector<float> a(static_cast<size_t>(m) * n), tau(static_cast<size_t>(k));
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) a[size_t(j) * m + i] = w[size_t(i) * n + j];
    int info = 0, lwork = -1;
    float query = 0;
    sgeqrf_(&m, &n, a.data(), &m, tau.data(), &query, &lwork, &info);
    lwork = std::max(int(query), n) + 1;
    std::vector<float> work(static_cast<size_t>(lwork));
    sgeqrf_(&m, &n, a.data(), &m, tau.data(), work.data(), &lwork, &info);
    ENGINE_CHECK(info == 0, ValueError, "qr: LAPACK sgeqrf failed on {} (info {})", W.shape().str(), info);
    Qr r{Tensor::empty({m, k}), Tensor::zeros({k, n})};
    for (int i = 0; i < k; i++)   // R: the upper triangle of the first k rows
        for (int j = i; j < n; j++) r.R.data()[size_t(i) * n + j] = a[size_t(j) * m + i];
    lwork = -1;
    sorgqr_(&m, &k, &k, a.data(), &m, tau.data(), &query, &lwork, &info);
    lwork = std::max(int(query), k) + 1;
    work.assign(size_t(lwork), 0.f);
    sorgqr_(&m, &k, &k, a.data(), &m, tau.data(), work.data(), &lwork, &info);
    ENGINE_CHECK(info == 0, ValueError, "qr: LAPACK sorgqr failed on {} (info {})", W.shape().str(), info);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < k; j++) r.Q.data()[size_t(i) * k + j] = a[size_t(j) * m + i];
    return r;
}

extern "C" void sgesv_(const int* n, const int* nrhs, float* a, const int* lda, int* ipiv, float* b, const int* ldb,
                       int* info);

// Row-major A X = B is column-major Aᵀ-storage; solve with the transposed copies and transpose back.
Tensor solve(const Tensor& A, const Tensor& B) {
    check_matrix(A, "solve");
    ENGINE_CHECK(A.size(0) == A.size(1) && B.ndim() == 2 && B.size(0) == A.size(0), ShapeError,
                 "solve: A {} must be square and B {} have as many rows", A.shape().str(), B.shape().str());
    const int n = int(A.size(0)), m = int(B.size(1));
    std::vector<float> a(static_cast<size_t>(n) * n), b(static_cast<size_t>(n) * m);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) a[size_t(j) * n + i] = A.data()[size_t(i) * n + j];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) b[size_t(j) * n + i] = B.data()[size_t(i) * m + j];
    std::vector<int> ipiv(static_cast<size_t>(n));
    int info = 0;
    sgesv_(&n, &m, a.data(), &n, ipiv.data(), b.data(), &n, &info);
    ENGINE_CHECK(info == 0, ValueError, "solve: LAPACK sgesv failed on {} (info {}{})", A.shape().str(), info,
                 info > 0 ? ": the matrix is singular" : "");
    Tensor X = Tensor::empty({n, m});
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) X.data()[size_t(i) * m + j] = b[size_t(j) * n + i];
    return X;
}
