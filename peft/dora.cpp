// peft/dora.cpp — DoRA: LoRA's update split into a direction and a trained magnitude.
//
//     W' = m ⊙ (W + s·B A) / ‖W + s·B A‖,   the norm taken over each output row (over `in`)
// (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"). A and B are LoRA's (same
// init, same keys); m (out) is one more trained number per output, initialised to the row
// norms of W, so that at init (B = 0) W' = ‖W‖ ⊙ W / ‖W‖ = W: the identity.
//
// The norm is treated as a constant in backward (the paper's §4.3, and HF PEFT: it computes
// the norm from a detached B A and detaches the result). That saves the gradient through
// the norm, a full out × in computation per step, and the paper reports no loss in accuracy.
// So the gradient reaches A and B only through the LoRA product, and m through g = m / n.
//
// The forward, as HF PEFT computes it (it never builds W'):
//     g = m / n  (n = ‖W + s·B A‖ per row, no gradient)
//     y = x Wᵀ + b + (g − 1) ⊙ (xd Wᵀ) + g ⊙ s·(xd Aᵀ) Bᵀ,   xd = dropout(x)
// Without dropout xd = x and this is g ⊙ (x Wᵀ + s·(x Aᵀ) Bᵀ) + b = x W'ᵀ + b; that is how it
// is computed here then (one lora_linear and a per-column scale). With dropout the base path
// sees x and only the correction sees xd, exactly as HF.
//
// Saved as HF PEFT: lora_A, lora_B as for LoRA, and "base_model.model.<module>.lora_magnitude_vector"
// of shape [out] (HF stores it as a Parameter named "weight" and strips that suffix on save).
// Merge: W ← (m / ‖W + s·B A‖) ⊙ (W + s·B A) row by row, the bias unchanged.
#include <cmath>
#include "engine/blas.h"
#include "engine/kernels.h"
#include "lora.h"

// The L2 norm of each row of a row-major (out, in) matrix; the sum of squares in double.
static Tensor row_norms(const float* w, int64_t out, int64_t in) {
    Tensor n = Tensor::empty({out});
    for (int64_t o = 0; o < out; o++) {
        double ss = 0;
        for (int64_t i = 0; i < in; i++) ss += double(w[o * in + i]) * w[o * in + i];
        n.data()[o] = float(std::sqrt(ss));
    }
    return n;
}

// W + s·(B A) into V, computed as HF and as LoRA's merge: B A first, then scaled and added.
static Tensor add_update(const Tensor& W, const Tensor& A, const Tensor& B, float s) {
    const int64_t out = W.size(0), in = W.size(1), r = A.size(0);
    Tensor V = Tensor::empty({out, in});
    gemm(Trans::N, Trans::N, out, in, r, 1.f, B.data(), A.data(), 0.f, V.data());
    const float* w = W.data();
    float* v = V.data();
    map_n(v, out * in, [w, v, s](int64_t k) { return w[k] + v[k] * s; });
    return V;
}

Tensor dora_weight_norm(const Tensor& W, const Tensor& A, const Tensor& B, float s) {
    return row_norms(add_update(W, A, B, s).data(), W.size(0), W.size(1));
}

Tensor dora_linear_with_norm(const Tensor& x, const Tensor& W, const Tensor& b, const Tensor& A, const Tensor& B,
                             const Tensor& m, const Tensor& n, float s, float p, bool training, Rng& rng) {
    ENGINE_CHECK(m.shape() == Shape{W.size(0)} && n.shape() == m.shape(), ShapeError,
                 "dora_linear: magnitude {} and norm {} must be [{}] for W {}", m.shape().str(), n.shape().str(),
                 W.size(0), W.shape().str());
    ENGINE_CHECK(!needs_grad(n), ValueError, "dora_linear: the weight norm is a constant (detach it)");
    Tensor inv_n = Tensor::empty({W.size(0)});
    for (int64_t o = 0; o < W.size(0); o++) inv_n.data()[o] = 1.f / n.data()[o];
    Tensor g = mul(m, inv_n);   // m / n: the gradient reaches m, not n
    Rng unused(0);
    if (!(training && p > 0.f)) {   // y = g ⊙ (x Wᵀ + s·(x Aᵀ) Bᵀ) + b
        Tensor y = mul_row_vector(lora_linear(x, W, Tensor(), A, B, s, 0.f, false, unused), g);
        return b.defined() ? add_row_vector(y, b) : y;
    }
    // y = (x Wᵀ + b) + [g ⊙ (xd Wᵀ + s·(xd Aᵀ) Bᵀ) − xd Wᵀ]   (= (g − 1) ⊙ xd Wᵀ + g ⊙ s·lora(xd))
    Tensor xd = dropout(x, p, true, rng);
    Tensor correction = add(mul_row_vector(lora_linear(xd, W, Tensor(), A, B, s, 0.f, false, unused), g),
                            scale(linear(xd, W), -1.f));
    return add(linear(x, W, b), correction);
}

Tensor dora_linear(const Tensor& x, const Tensor& W, const Tensor& b, const Tensor& A, const Tensor& B, const Tensor& m,
                   float s, float p, bool training, Rng& rng) {
    return dora_linear_with_norm(x, W, b, A, B, m, dora_weight_norm(W, A, B, s), s, p, training, rng);
}

void dora_merge(Tensor& W, const Tensor& A, const Tensor& B, const Tensor& m, float s) {
    const int64_t out = W.size(0), in = W.size(1);
    const Tensor V = add_update(W, A, B, s), n = row_norms(V.data(), out, in);
    const float *v = V.data(), *mp = m.data(), *np = n.data();
    map_rows(W.data(), out, in, [v, mp, np, in](int64_t k, int64_t) { return mp[k / in] / np[k / in] * v[k]; });
}
