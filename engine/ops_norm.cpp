// engine/ops_norm.cpp — layernorm and softmax: row-wise ops over the last dimension.
//
// Both work on independent rows of length C (OpenMP over rows), with the row statistics
// (mean and variance, or the softmax normaliser) accumulated in double. The one reduction
// across rows, LayerNorm's dw and db, is split over columns (Note [Threading: rows are
// independent] in engine/parallel.h), so every result is bitwise the same for any thread count.
#include <algorithm>
#include <cmath>
#include <vector>
#include "ops.h"
#include "reference_ops.h"
#include "row_kernels.h"

// Over the last dim C: y = (x - mean) / sqrt(var + eps) ⊙ w + b.  x: (..., C)  w: (C)  b: (C) or undefined
// Read first: the plain loops of reference::layernorm (engine/reference_ops.cpp).
Tensor layernorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
    const int64_t C = x.ndim() ? x.shape().back() : 0;
    ENGINE_CHECK(C > 0 && w.ndim() == 1 && w.size(0) == C && (!b.defined() || b.shape() == w.shape()), ShapeError,
                 "layernorm: x {}, w {} and b {} do not match (w and b must be [{}], the last dim of x)",
                 x.shape().str(), w.shape().str(), b.defined() ? b.shape().str() : "none", C);
    ENGINE_CHECK(eps > 0, ValueError, "layernorm: eps must be positive, got {}", eps);
    if (reference_ops()) return reference::layernorm(x, w, b, eps);
    const int64_t rows = x.numel() / C;

    Tensor y = Tensor::empty(x.shape()), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
    const Tensor bias = b.defined() ? b : Tensor::zeros({C});   // no bias: add zeros
    const float *xp = x.data(), *wp = w.data(), *bp = bias.data();
    float *yp = y.data(), *mp = mean.data(), *rp = rstd.data();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float* xr = xp + r * C;
        float* yr = yp + r * C;
        // Two passes, sums in double: the mean, then the variance of the centred row (held in y),
        // which avoids the cancellation of E[x²] − E[x]² when the mean is large.
        const float m = float(row_sum(xr, C) / double(C));
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yr[c] = xr[c] - m;
        const float rs = float(1.0 / std::sqrt(row_dot(yr, yr, C) / double(C) + eps));   // constant row: eps^-½
        mp[r] = m;
        rp[r] = rs;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yr[c] = yr[c] * rs * wp[c] + bp[c];
    }

    // Every gradient needs xhat, so x is kept if any is computed; w only for dx.
    const bool any = needs_grad(x) || needs_grad(w) || needs_grad(b);
    Saved xs = any ? save(x) : Saved(), ws = needs_grad(x) ? save(w) : Saved();
    Saved ms = any ? save(mean) : Saved(), rss = any ? save(rstd) : Saved();
    record(y, "layernorm", {x, w, b}, [xs, ws, ms, rss, rows, C](const Tensor& dy, Grads& g) {
        // forward: xhat = (x - mean) · rstd,  y = xhat ⊙ w + b,  mean and rstd functions of the row x.
        const float *xp = xs.data(), *mp = ms.data(), *rp = rss.data(), *dyp = dy.data();
        if (g.needs(0)) {
            // d xhat = dy ⊙ w. Through mean and rstd (d mean/dx_c = 1/C, d rstd/dx_c = -rstd³ (x_c - mean)/C):
            //   dx = rstd · (dxhat − mean_c(dxhat) − xhat · mean_c(dxhat ⊙ xhat))
            GradBuf dx = g.buf(0);
            const float* wp = ws.data();
#pragma omp parallel
            {
                // per thread, the current row's dxhat and xhat
                std::vector<float> dxhat(static_cast<size_t>(C)), xhat(static_cast<size_t>(C));
#pragma omp for schedule(static)
                for (int64_t r = 0; r < rows; r++) {
                    const float *xr = xp + r * C, *dyr = dyp + r * C;
                    const float m = mp[r], rs = rp[r];
#pragma omp simd
                    for (int64_t c = 0; c < C; c++) {
                        dxhat[c] = dyr[c] * wp[c];
                        xhat[c] = (xr[c] - m) * rs;
                    }
                    const float m1 = float(row_sum(dxhat.data(), C) / double(C));
                    const float m2 = float(row_dot(dxhat.data(), xhat.data(), C) / double(C));
#pragma omp simd
                    for (int64_t c = 0; c < C; c++) dx.acc(r * C + c, rs * (dxhat[c] - m1 - xhat[c] * m2));
                }
            }
        }
        // dw = Σ_rows dy ⊙ xhat,  db = Σ_rows dy: sums across rows, so split over column blocks.
        // Each block sums 16 rows at a time in float, then adds those partial sums into double:
        // twice the lanes per vector and no conversions in the inner loop, while the long sum
        // over all rows stays in double (about 3× faster than summing every row in double, at
        // 1024 × 128). The row groups are fixed, so the result does not depend on the threads.
        const bool need_w = g.needs(1), need_b = g.needs(2);
        if (!need_w && !need_b) return;
        GradBuf dw = need_w ? g.buf(1) : GradBuf(), db = need_b ? g.buf(2) : GradBuf();
        constexpr int64_t kBlock = 32, kRows = 16;
#pragma omp parallel for schedule(static)
        for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
            const int64_t width = std::min(C - c0, kBlock);
            double sw[kBlock] = {0}, sb[kBlock] = {0};
            for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
                float fw[kBlock] = {0}, fb[kBlock] = {0};
                for (int64_t r = r0; r < std::min(rows, r0 + kRows); r++) {
                    const float *xr = xp + r * C + c0, *dyr = dyp + r * C + c0;
                    const float m = mp[r], rs = rp[r];
#pragma omp simd
                    for (int64_t c = 0; c < width; c++) {
                        fw[c] += dyr[c] * ((xr[c] - m) * rs);
                        fb[c] += dyr[c];
                    }
                }
                for (int64_t c = 0; c < width; c++) {
                    sw[c] += fw[c];
                    sb[c] += fb[c];
                }
            }
            for (int64_t c = 0; c < width; c++) {
                if (need_w) dw.acc(c0 + c, float(sw[c]));
                if (need_b) db.acc(c0 + c, float(sb[c]));
            }
        }
    });
    return y;
}

// Over the last dim: y_j = exp(x_j − max) / Σ_k exp(x_k − max). The running max starts at −inf,
// so any finite logits work (±1e30 included). A row that is entirely −inf gives zeros, not NaN.
Tensor softmax(const Tensor& x) {
    ENGINE_CHECK(x.ndim() >= 1 && x.shape().back() > 0, ShapeError,
                 "softmax: x {} needs at least one dimension and a non-empty last dimension", x.shape().str());
    const int64_t C = x.shape().back(), rows = x.numel() / C;
    Tensor y = Tensor::empty(x.shape());
    const float* xp = x.data();
    float* yp = y.data();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float* xr = xp + r * C;
        float* yr = yp + r * C;
        const float m = row_max(xr, C);
        if (m == -INFINITY) { std::fill(yr, yr + C, 0.f); continue; }
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yr[c] = exp_nonpos(xr[c] - m);
        const float inv = float(1.0 / row_sum(yr, C));   // the sum is ≥ 1: the max term is e^0
#pragma omp simd
        for (int64_t c = 0; c < C; c++) yr[c] *= inv;
    }

    Saved ys = needs_grad(x) ? save(y) : Saved();   // the backward needs only the output
    record(y, "softmax", {x}, [ys, rows, C](const Tensor& dy, Grads& g) {
        // forward: y_j = e^{x_j} / Σ_k e^{x_k}, so dy_j/dx_i = y_j (δ_ij − y_i) and
        //   dx_i = Σ_j dy_j y_j (δ_ij − y_i) = y_i (dy_i − Σ_j dy_j y_j)
        GradBuf dx = g.buf(0);
        const float *yp = ys.data(), *dyp = dy.data();
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const float *yr = yp + r * C, *dyr = dyp + r * C;
            const float dot = float(row_dot(dyr, yr, C));
#pragma omp simd
            for (int64_t c = 0; c < C; c++) dx.acc(r * C + c, yr[c] * (dyr[c] - dot));
        }
    });
    return y;
}
