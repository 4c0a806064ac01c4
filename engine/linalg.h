// engine/linalg.h — the two matrix decompositions the PEFT initialisations need (PiSSA's SVD,
// OLoRA's QR), from the LAPACK that OpenBLAS ships (sgesdd_, sgeqrf_/sorgqr_). No gradients:
// they run once, at init, on frozen weights.
//
// Matrices are row-major (out, in) like every weight here. LAPACK is column-major; the
// wrappers do the transposition bookkeeping so callers see PyTorch's torch.linalg results:
//   svd(W) -> U (m, k), S (k) descending, Vh (k, n), k = min(m, n), W = U diag(S) Vh
//   qr(W)  -> Q (m, k) with orthonormal columns, R (k, n) upper triangular, W = Q R
// (Householder QR as LAPACK computes it: R's diagonal may be negative, as in torch.linalg.qr.)
#pragma once
#include "tensor.h"

struct Svd {
    Tensor U, S, Vh;
};
Svd svd(const Tensor& W);   // ValueError naming the LAPACK routine when it does not converge

struct Qr {
    Tensor Q, R;
};
Qr qr(const Tensor& W);

// X = A⁻¹ B for a square A (n, n) and B (n, m), by LU with partial pivoting (LAPACK sgesv_).
// ValueError when A is singular.
Tensor solve(const Tensor& A, const Tensor& B);
