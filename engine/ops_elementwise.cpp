// engine/ops_elementwise.cpp — same-shape elementwise ops, the two row-vector ops (bias, IA³
// scaling), the activations and dropout. Loops live in engine/kernels.h; each op here is its
// shape check, a one-line forward and the matching one-line backward.
#include <cmath>
#include "kernels.h"
#include "ops.h"
#include "row_kernels.h"

static void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
    ENGINE_CHECK(a.shape() == b.shape(), ShapeError,
                 "{}: a {} and b {} must have the same shape (no implicit broadcasting)", op, a.shape().str(),
                 b.shape().str());
}

// x: (..., C) and v: (C). Returns the number of rows, numel / C.
static int64_t check_row_vector(const char* op, const Tensor& x, const Tensor& v) {
    ENGINE_CHECK(v.ndim() == 1 && x.ndim() >= 1 && x.shape().back() == v.size(0), ShapeError,
                 "{}: x {} and v {} do not match (v must be [C] with C the last dim of x)", op, x.shape().str(),
                 v.shape().str());
    return x.numel() / std::max<int64_t>(v.size(0), 1);
}

// y = a + b, equal shapes.
Tensor add(const Tensor& a, const Tensor& b) {
    check_same_shape("add", a, b);
    const int64_t n = a.numel();
    Tensor y = Tensor::empty(a.shape());
    const float *ap = a.data(), *bp = b.data();
    map_n(y.data(), n, [ap, bp](int64_t i) { return ap[i] + bp[i]; });
    record(y, "add", {a, b}, [n](const Tensor& dy, Grads& g) {
        // forward: y = a + b, so da = dy and db = dy
        const float* d = dy.data();
        for (int k = 0; k < 2; k++)
            if (g.needs(k)) acc_n(g.buf(k), n, [d](int64_t i) { return d[i]; });
    });
    return y;
}

// y = a ⊙ b, equal shapes.
Tensor mul(const Tensor& a, const Tensor& b) {
    check_same_shape("mul", a, b);
    const int64_t n = a.numel();
    Tensor y = Tensor::empty(a.shape());
    const float *ap = a.data(), *bp = b.data();
    map_n(y.data(), n, [ap, bp](int64_t i) { return ap[i] * bp[i]; });
    // da needs b and db needs a: keep each only if that gradient will be computed.
    Saved as = needs_grad(b) ? save(a) : Saved(), bs = needs_grad(a) ? save(b) : Saved();
    record(y, "mul", {a, b}, [as, bs, n](const Tensor& dy, Grads& g) {
        // forward: y = a ⊙ b, so da = dy ⊙ b and db = dy ⊙ a
        const float* d = dy.data();
        if (g.needs(0)) {
            const float* bv = bs.data();
            acc_n(g.buf(0), n, [d, bv](int64_t i) { return d[i] * bv[i]; });
        }
        if (g.needs(1)) {
            const float* av = as.data();
            acc_n(g.buf(1), n, [d, av](int64_t i) { return d[i] * av[i]; });
        }
    });
    return y;
}

// y = s · x.
Tensor scale(const Tensor& x, float s) {
    const int64_t n = x.numel();
    Tensor y = Tensor::empty(x.shape());
    const float* xp = x.data();
    map_n(y.data(), n, [xp, s](int64_t i) { return s * xp[i]; });
    record(y, "scale", {x}, [n, s](const Tensor& dy, Grads& g) {
        // forward: y = s x, so dx = s dy
        const float* d = dy.data();
        acc_n(g.buf(0), n, [d, s](int64_t i) { return s * d[i]; });
    });
    return y;
}

// y[r, j] = x[r, j] + v[j].  x: (..., C)  v: (C)  ->  (..., C)   (a bias)
Tensor add_row_vector(const Tensor& x, const Tensor& v) {
    const int64_t rows = check_row_vector("add_row_vector", x, v), C = v.size(0);
    Tensor y = Tensor::empty(x.shape());
    const float *xp = x.data(), *vp = v.data();
    map_rows(y.data(), rows, C, [xp, vp](int64_t i, int64_t j) { return xp[i] + vp[j]; });
    record(y, "add_row_vector", {x, v}, [rows, C](const Tensor& dy, Grads& g) {
        // forward: y[r,j] = x[r,j] + v[j], so dx = dy and dv[j] = sum_r dy[r,j]
        const float* d = dy.data();
        if (g.needs(0)) acc_n(g.buf(0), rows * C, [d](int64_t i) { return d[i]; });
        if (g.needs(1)) add_column_sums(g.buf(1), d, rows, C);
    });
    return y;
}

// y[r, j] = x[r, j] · v[j].  x: (..., C)  v: (C)  ->  (..., C)   (IA³'s learned scaling)
Tensor mul_row_vector(const Tensor& x, const Tensor& v) {
    const int64_t rows = check_row_vector("mul_row_vector", x, v), C = v.size(0);
    Tensor y = Tensor::empty(x.shape());
    const float *xp = x.data(), *vp = v.data();
    map_rows(y.data(), rows, C, [xp, vp](int64_t i, int64_t j) { return xp[i] * vp[j]; });
    // IA³ trains v on a frozen x: then only x is kept (for dv), never v.
    Saved xs = needs_grad(v) ? save(x) : Saved(), vs = needs_grad(x) ? save(v) : Saved();
    record(y, "mul_row_vector", {x, v}, [xs, vs, rows, C](const Tensor& dy, Grads& g) {
        // forward: y[r,j] = x[r,j] v[j], so dx[r,j] = dy[r,j] v[j] and dv[j] = sum_r dy[r,j] x[r,j]
        const float* d = dy.data();
        if (g.needs(0)) {
            const float* vv = vs.data();
            acc_rows(g.buf(0), rows, C, [d, vv](int64_t i, int64_t j) { return d[i] * vv[j]; });
        }
        if (g.needs(1)) add_column_sums(g.buf(1), d, rows, C, xs.data());
    });
    return y;
}

// ---- activations: y = f(x), so dx = dy · f'(x). Each saves whichever of x, y makes f' cheapest.

// GPT-2's GELU: y = 0.5 x (1 + tanh(u)),  u = √(2/π) (x + 0.044715 x³).
// Since 0.5 (1 + tanh u) = σ(2u), this is y = x σ(2u): one exp instead of a (4x slower) tanh.
static constexpr float kGeluK = 0.7978845608f;   // √(2/π)
static constexpr float kGeluA = 0.044715f;

Tensor gelu(const Tensor& x) {
    const int64_t n = x.numel();
    Tensor y = Tensor::empty(x.shape());
    const float* xp = x.data();
    map_n(y.data(), n, [xp](int64_t i) {
        const float v = xp[i], u = kGeluK * (v + kGeluA * v * v * v);
        return v * sigmoid_of(2.f * u);
    });
    Saved xs = needs_grad(x) ? save(x) : Saved();
    record(y, "gelu", {x}, [xs, n](const Tensor& dy, Grads& g) {
        // forward: y = x s, s = σ(2u), u' = √(2/π)(1 + 3·0.044715 x²), and σ' = σ(1-σ), so
        // dx = dy · (s + x · s(1-s) · 2u')
        const float *d = dy.data(), *xv = xs.data();
        acc_n(g.buf(0), n, [d, xv](int64_t i) {
            const float v = xv[i], u = kGeluK * (v + kGeluA * v * v * v);
            const float s = sigmoid_of(2.f * u), du = kGeluK * (1.f + 3.f * kGeluA * v * v);
            return d[i] * (s + v * s * (1.f - s) * 2.f * du);
        });
    });
    return y;
}

Tensor relu(const Tensor& x) {
    const int64_t n = x.numel();
    Tensor y = Tensor::empty(x.shape());
    const float* xp = x.data();
    map_n(y.data(), n, [xp](int64_t i) { return xp[i] > 0.f ? xp[i] : 0.f; });
    // y > 0 exactly where x > 0, and the next op (a linear) often keeps y anyway
    Saved ys = needs_grad(x) ? save(y) : Saved();
    record(y, "relu", {x}, [ys, n](const Tensor& dy, Grads& g) {
        // forward: y = max(x, 0), so dx = dy where x > 0 (i.e. y > 0), else 0
        const float *d = dy.data(), *yv = ys.data();
        acc_n(g.buf(0), n, [d, yv](int64_t i) { return yv[i] > 0.f ? d[i] : 0.f; });
    });
    return y;
}

Tensor tanh(const Tensor& x) {
    const int64_t n = x.numel();
    Tensor y = Tensor::empty(x.shape());
    const float* xp = x.data();
    map_n(y.data(), n, [xp](int64_t i) { return std::tanh(xp[i]); });
    Saved ys = needs_grad(x) ? save(y) : Saved();
    record(y, "tanh", {x}, [ys, n](const Tensor& dy, Grads& g) {
        // forward: y = tanh x, so dx = dy (1 - y²)
        const float *d = dy.data(), *yv = ys.data();
        acc_n(g.buf(0), n, [d, yv](int64_t i) { return d[i] * (1.f - yv[i] * yv[i]); });
    });
    return y;
}

Tensor sigmoid(const Tensor& x) {
    const int64_t n = x.numel();
    Tensor y = Tensor::empty(x.shape());
    const float* xp = x.data();
    map_n(y.data(), n, [xp](int64_t i) { return sigmoid_of(xp[i]); });
    Saved ys = needs_grad(x) ? save(y) : Saved();
    record(y, "sigmoid", {x}, [ys, n](const Tensor& dy, Grads& g) {
        // forward: y = σ(x), so dx = dy y (1 - y)
        const float *d = dy.data(), *yv = ys.data();
        acc_n(g.buf(0), n, [d, yv](int64_t i) { return d[i] * yv[i] * (1.f - yv[i]); });
    });
    return y;
}

Tensor silu(const Tensor& x) {
    const int64_t n = x.numel();
    Tensor y = Tensor::empty(x.shape());
    const float* xp = x.data();
    map_n(y.data(), n, [xp](int64_t i) { return xp[i] * sigmoid_of(xp[i]); });
    Saved xs = needs_grad(x) ? save(x) : Saved();
    record(y, "silu", {x}, [xs, n](const Tensor& dy, Grads& g) {
        // forward: y = x σ(x), so dx = dy (σ + x σ (1 - σ)) = dy σ (1 + x (1 - σ))
        const float *d = dy.data(), *xv = xs.data();
        acc_n(g.buf(0), n, [d, xv](int64_t i) {
            const float s = sigmoid_of(xv[i]);
            return d[i] * s * (1.f + xv[i] * (1.f - s));
        });
    });
    return y;
}

// ---- dropout

// Inverted dropout: y = x · m / (1 - p), m[i] = 1 with probability 1 - p. The mask is drawn on
// this thread, 32 bits of it from 16 rng.next_u64() calls (each gives two 32-bit draws, element
// i kept when its draw ≥ p·2³²), word after word: a seed fixes it whatever the thread count.
// It is kept as those bits (numel / 8 bytes, 1/32 of x) for backward.
Tensor dropout(const Tensor& x, float p, bool training, Rng& rng) {
    ENGINE_CHECK(p >= 0.f && p < 1.f, ValueError, "dropout: p must be in [0, 1), got {}", p);
    if (p == 0.f || !training) return x;
    const int64_t n = x.numel();
    Tensor mask = draw_dropout_mask(n, p, rng);
    const uint32_t* m = mask_bits(mask);
    const float s = 1.f / (1.f - p);
    Tensor y = Tensor::empty(x.shape());
    const float* xp = x.data();
    map_n(y.data(), n, [xp, m, s](int64_t i) { return mask_kept(m, i) * s * xp[i]; });
    Saved ms = needs_grad(x) ? save(mask) : Saved();
    record(y, "dropout", {x}, [ms, n, s](const Tensor& dy, Grads& g) {
        // forward: y = x m s, so dx = dy m s
        const float* d = dy.data();
        const uint32_t* mv = mask_bits(*ms);
        acc_n(g.buf(0), n, [d, mv, s](int64_t i) { return mask_kept(mv, i) * s * d[i]; });
    });
    return y;
}
