// peft/lora_init.cpp — where LoRA's A and B start: HF PEFT's `init_lora_weights` options.
//
//   true (default)  A ~ kaiming-uniform(a = √5) = U(−1/√in, 1/√in), B = 0       (Hu et al. 2021)
//   false           A as above, B ~ U(−1/√r, 1/√r): not the identity at init (for testing, as HF)
//   "gaussian"      A ~ N(0, (1/r)²), B = 0
//   "pissa"         from W's SVD, W = U S Vh (Meng et al. 2024, "PiSSA: Principal Singular values
//                   and Singular vectors Adaptation"): with S' = S[:r] / s,
//                       A = diag(√S') Vh[:r, :],   B = U[:, :r] diag(√S'),
//                   so s·B A is W's best rank-r approximation, and the base keeps the residual
//                   W_res = W − s·B A. The adapter starts on the principal directions and the
//                   model is unchanged at init (W_res + s·B A = W up to rounding).
//   "pissa_niter_K" the same from a randomized SVD (Halko et al. 2011) with K subspace
//                   iterations, as torch.svd_lowrank(W, q = r, niter = K); its random start comes
//                   from our generator, not torch's, so the numbers differ from HF's run.
//   "olora"         from W's QR, W = Q R (Büyükakyüz 2024, "OLoRA: Orthonormal Low-Rank
//                   Adaptation"): A = R[:r, :], B = Q[:, :r], the base keeps W − s·B A.
// The SVD and QR are LAPACK's (engine/linalg.h); PiSSA and OLoRA need r ≤ min(in, out).
#include <cmath>
#include "engine/blas.h"
#include "engine/linalg.h"
#include "lora.h"

bool lora_init_mutates_base(const std::string& kind) { return kind.rfind("pissa", 0) == 0 || kind == "olora"; }

// U (m, r), S (r), Vh (r, n) of the best rank-r approximation, found in the range of W Ω.
static Svd randomized_svd(const Tensor& W, int64_t r, int64_t niter, Rng& rng) {
    const int64_t m = W.size(0), n = W.size(1);
    Tensor X = Tensor::empty({m, r}), Y = Tensor::empty({n, r});
    Tensor omega = Tensor::randn({n, r}, rng);
    gemm(Trans::N, Trans::N, m, r, n, 1.f, W.data(), omega.data(), 0.f, X.data());   // X = W Ω
    Tensor Q = qr(X).Q;
    for (int64_t it = 0; it < niter; it++) {   // power iterations sharpen the spectrum: Q ← qr(W Wᵀ Q)
        gemm(Trans::T, Trans::N, n, r, m, 1.f, W.data(), Q.data(), 0.f, Y.data());   // Y = Wᵀ Q
        Tensor P = qr(Y).Q;
        gemm(Trans::N, Trans::N, m, r, n, 1.f, W.data(), P.data(), 0.f, X.data());   // X = W P
        Q = qr(X).Q;
    }
    Tensor Bs = Tensor::empty({r, n});   // W ≈ Q (Qᵀ W): the SVD of the small r × n matrix Qᵀ W
    gemm(Trans::T, Trans::N, r, n, m, 1.f, Q.data(), W.data(), 0.f, Bs.data());
    Svd small = svd(Bs);
    Svd out{Tensor::empty({m, r}), small.S, small.Vh};
    gemm(Trans::N, Trans::N, m, r, r, 1.f, Q.data(), small.U.data(), 0.f, out.U.data());
    return out;
}

LoraInit lora_init(const std::string& kind, const Tensor& W, int64_t r, float s, Rng& rng) {
    const int64_t out = W.size(0), in = W.size(1);
    LoraInit init;
    if (!lora_init_mutates_base(kind)) {
        const float bound = 1.f / std::sqrt(float(in));   // kaiming-uniform, a = √5
        init.A = kind == "gaussian" ? Tensor::randn({r, in}, rng, 1.f / float(r)) : Tensor::uniform({r, in}, rng, -bound, bound);
        const float bb = 1.f / std::sqrt(float(r));
        init.B = kind == "false" ? Tensor::uniform({out, r}, rng, -bb, bb) : Tensor::zeros({out, r});
        return init;
    }
    ENGINE_CHECK(r <= std::min(in, out), ValueError,
                 "`r` = {} is larger than min(in, out) = {} of a {} weight: init_lora_weights \"{}\" takes r "
                 "singular or QR directions", r, std::min(in, out), W.shape().str(), kind);
    init.A = Tensor::empty({r, in});
    init.B = Tensor::empty({out, r});
    if (kind == "olora") {
        Qr f = qr(W);   // Q (out, k), R (k, in)
        const int64_t k = f.Q.size(1);
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < in; j++) init.A.data()[i * in + j] = f.R.data()[i * in + j];
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < r; i++) init.B.data()[o * r + i] = f.Q.data()[o * k + i];
    } else {
        Svd f;
        if (kind == "pissa") f = svd(W);
        else f = randomized_svd(W, r, std::stoll(kind.substr(kind.find("_niter_") + 7)), rng);
        const int64_t k = f.S.numel();
        for (int64_t i = 0; i < r; i++) {
            const float root = std::sqrt(f.S.data()[i] / s);   // √(S / s)
            for (int64_t j = 0; j < in; j++) init.A.data()[i * in + j] = root * f.Vh.data()[i * in + j];
            for (int64_t o = 0; o < out; o++) init.B.data()[o * r + i] = f.U.data()[o * k + i] * root;
        }
    }
    // W_res = W − s·(B A), as HF computes it (the product, times s, subtracted)
    init.W_res = W.clone(Mem::Params);
    Tensor BA = Tensor::empty({out, in});
    gemm(Trans::N, Trans::N, out, in, r, 1.f, init.B.data(), init.A.data(), 0.f, BA.data());
    const float* d = BA.data();
    float* w = init.W_res.data();
    for (int64_t k = 0; k < out * in; k++) w[k] -= s * d[k];
    return init;
}
