// engine/ops_linear.cpp — linear and matmul, each one gemm forward and up to two backward.
#include <algorithm>
#include "blas.h"
#include "kernels.h"
#include "ops.h"

// y = x Wᵀ + b.  x: (..., in)  W: (out, in)  b: (out) or none  ->  y: (..., out)
Tensor linear(const Tensor& x, const Tensor& W, const Tensor& b) {
    ENGINE_CHECK(W.ndim() == 2 && x.ndim() >= 1 && x.shape().back() == W.size(1), ShapeError,
                 "linear: x {} and W {} do not match (W must be (out, {}))", x.shape().str(), W.shape().str(),
                 x.ndim() ? x.shape().back() : 0);
    const int64_t in = W.size(1), out = W.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
    ENGINE_CHECK(!b.defined() || b.shape() == Shape{out}, ShapeError, "linear: bias {} must be [{}] for W {}",
                 b.defined() ? b.shape().str() : "", out, W.shape().str());

    Tensor y = Tensor::empty(x.shape().with_back(out));
    float* yp = y.data();
    if (b.defined()) {   // y = b (broadcast over rows), then y += x Wᵀ
        const float* bp = b.data();
        map_rows(yp, rows, out, [bp](int64_t, int64_t o) { return bp[o]; });
    }
    gemm(Trans::N, Trans::T, rows, out, in, 1.f, x.data(), W.data(), b.defined() ? 1.f : 0.f, yp);

    // Save x only if dW will be computed, W only if dx will (Note [Frozen tensors ...] 3).
    Saved xs = needs_grad(W) ? save(x) : Saved(), Ws = needs_grad(x) ? save(W) : Saved();
    record(y, "linear", {x, W, b}, [xs, Ws, rows, in, out](const Tensor& dy, Grads& g) {
        // forward: y[r,o] = sum_i x[r,i] W[o,i] + b[o]
        if (g.needs(0)) {   // dx[r,i] = sum_o dy[r,o] W[o,i]:  dx = dy W
            GradBuf dx = g.buf(0);
            gemm(Trans::N, Trans::N, rows, in, out, 1.f, dy.data(), Ws.data(), dx.beta, dx.p);
        }
        if (g.needs(1)) {   // dW[o,i] = sum_r dy[r,o] x[r,i]:  dW = dyᵀ x   (skipped for a frozen W)
            GradBuf dW = g.buf(1);
            gemm(Trans::T, Trans::N, out, in, rows, 1.f, dy.data(), xs.data(), dW.beta, dW.p);
        }
        if (g.needs(2)) add_column_sums(g.buf(2), dy.data(), rows, out);   // db[o] = sum_r dy[r,o]
    });
    return y;
}

// y = a b.  a: (M, K)  b: (K, N)  ->  (M, N)
Tensor matmul(const Tensor& a, const Tensor& b) {
    ENGINE_CHECK(a.ndim() == 2 && b.ndim() == 2 && a.size(1) == b.size(0), ShapeError,
                 "matmul: a {} and b {} do not match (need (M,K) and (K,N))", a.shape().str(), b.shape().str());
    const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
    Tensor y = Tensor::empty({M, N});
    gemm(Trans::N, Trans::N, M, N, K, 1.f, a.data(), b.data(), 0.f, y.data());
    Saved as = needs_grad(b) ? save(a) : Saved(), bs = needs_grad(a) ? save(b) : Saved();
    record(y, "matmul", {a, b}, [as, bs, M, K, N](const Tensor& dy, Grads& g) {
        if (g.needs(0)) {   // da = dy bᵀ   (M,N)(N,K)
            GradBuf da = g.buf(0);
            gemm(Trans::N, Trans::T, M, K, N, 1.f, dy.data(), bs.data(), da.beta, da.p);
        }
        if (g.needs(1)) {   // db = aᵀ dy   (K,M)(M,N)
            GradBuf db = g.buf(1);
            gemm(Trans::T, Trans::N, K, N, M, 1.f, as.data(), dy.data(), db.beta, db.p);
        }
    });
    return y;
}
