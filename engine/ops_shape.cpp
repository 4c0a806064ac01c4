// engine/ops_shape.cpp — ops that move data without arithmetic (reshape, sequence concat and
// slice, batch repeat, embedding lookup) and the two full reductions.
// Every backward writes each input-gradient element from one thread (copies of rows of dy),
// except the sums over many rows (repeat_batch, embedding, sum), which run in a fixed order.
#include <algorithm>
#include <string>
#include "kernels.h"
#include "ops.h"

// y is x's storage under another shape (same numel): no copy.
Tensor reshape(const Tensor& x, const Shape& s) {
    ENGINE_CHECK(s.numel() == x.numel(), ShapeError, "reshape: x {} ({} elements) cannot become {} ({} elements)",
                 x.shape().str(), x.numel(), s.str(), s.numel());
    Tensor y = x.view_as(s);
    const int64_t n = x.numel();
    record(y, "reshape", {x}, [n](const Tensor& dy, Grads& g) {
        // forward: y holds x's numbers in the same order, so dx = dy
        const float* d = dy.data();
        acc_n(g.buf(0), n, [d](int64_t i) { return d[i]; });
    });
    return y;
}

// (B,T1,C), (B,T2,C) -> (B,T1+T2,C): a's rows, then b's, for every batch entry.
Tensor concat_seq(const Tensor& a, const Tensor& b) {
    ENGINE_CHECK(a.ndim() == 3 && b.ndim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(2), ShapeError,
                 "concat_seq: a {} and b {} must be (B, T1, C) and (B, T2, C)", a.shape().str(), b.shape().str());
    const int64_t B = a.size(0), T1 = a.size(1), T2 = b.size(1), C = a.size(2), T = T1 + T2;
    Tensor y = Tensor::empty({B, T, C});
    const float *ap = a.data(), *bp = b.data();
    float* yp = y.data();
#pragma omp parallel for schedule(static) if (B * T * C >= kParallelMin)
    for (int64_t r = 0; r < B * T; r++) {   // output row r = (batch i, time t)
        const int64_t i = r / T, t = r % T;
        const float* src = t < T1 ? ap + (i * T1 + t) * C : bp + (i * T2 + t - T1) * C;
        std::copy(src, src + C, yp + r * C);
    }
    record(y, "concat_seq", {a, b}, [B, T1, T2, C](const Tensor& dy, Grads& g) {
        // forward: y[i, t] = a[i, t] for t < T1, b[i, t - T1] after, so da and db are those rows of dy
        const float* d = dy.data();
        const int64_t T = T1 + T2;
        if (g.needs(0)) {
            GradBuf da = g.buf(0);
#pragma omp parallel for schedule(static) if (B * T1 * C >= kParallelMin)
            for (int64_t r = 0; r < B * T1; r++) acc_row(da, r * C, d + ((r / T1) * T + r % T1) * C, C);
        }
        if (g.needs(1)) {
            GradBuf db = g.buf(1);
#pragma omp parallel for schedule(static) if (B * T2 * C >= kParallelMin)
            for (int64_t r = 0; r < B * T2; r++) acc_row(db, r * C, d + ((r / T2) * T + T1 + r % T2) * C, C);
        }
    });
    return y;
}

// (B,T,C) -> (B,len,C): the time steps start .. start+len-1.
Tensor slice_seq(const Tensor& x, int64_t start, int64_t len) {
    ENGINE_CHECK(x.ndim() == 3, ShapeError, "slice_seq: x {} must be (B, T, C)", x.shape().str());
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
    ENGINE_CHECK(start >= 0 && len >= 0 && start + len <= T, ShapeError,
                 "slice_seq: time steps [{}, {}) (start {}, len {}) are outside x {} with T = {}", start,
                 start + len, start, len, x.shape().str(), T);
    Tensor y = Tensor::empty({B, len, C});
    const float* xp = x.data();
    float* yp = y.data();
#pragma omp parallel for schedule(static) if (B * len * C >= kParallelMin)
    for (int64_t r = 0; r < B * len; r++) {
        const float* src = xp + ((r / len) * T + start + r % len) * C;
        std::copy(src, src + C, yp + r * C);
    }
    record(y, "slice_seq", {x}, [B, T, C, start, len](const Tensor& dy, Grads& g) {
        // forward: y[i, t] = x[i, start + t], so dx[i, start + t] = dy[i, t] and the other rows of dx get 0
        const float* d = dy.data();
        GradBuf dx = g.buf(0);
#pragma omp parallel for schedule(static) if (B * T * C >= kParallelMin)
        for (int64_t r = 0; r < B * T; r++) {   // rows of dx
            const int64_t t = r % T;
            if (t >= start && t < start + len) acc_row(dx, r * C, d + ((r / T) * len + t - start) * C, C);
            else if (dx.beta == 0.f) std::fill(dx.p + r * C, dx.p + (r + 1) * C, 0.f);
        }
    });
    return y;
}

// (..., C) -> (..., len): the columns start .. start+len-1 of every row, e.g. q, k or v out of
// GPT-2's fused (B,T,3C) projection.
Tensor slice_last(const Tensor& x, int64_t start, int64_t len) {
    ENGINE_CHECK(x.ndim() >= 1, ShapeError, "slice_last: x {} has no last dim", x.shape().str());
    const int64_t C = x.shape().back(), rows = C ? x.numel() / C : 0;
    ENGINE_CHECK(start >= 0 && len >= 0 && start + len <= C, ShapeError,
                 "slice_last: columns [{}, {}) are outside x {} with {} columns", start, start + len, x.shape().str(), C);
    Tensor y = Tensor::empty(x.shape().with_back(len));
    const float* xp = x.data();
    map_rows(y.data(), rows, len, [xp, C, start, len](int64_t k, int64_t c) { return xp[(k / len) * C + start + c]; });
    record(y, "slice_last", {x}, [rows, C, start, len](const Tensor& dy, Grads& g) {
        // forward: y[r, c] = x[r, start + c], so dx[r, start + c] = dy[r, c] and the other columns of dx get 0
        const float* d = dy.data();
        GradBuf dx = g.buf(0);
#pragma omp parallel for schedule(static) if (rows * C >= kParallelMin)
        for (int64_t r = 0; r < rows; r++) {
            if (dx.beta == 0.f) {
                std::fill(dx.p + r * C, dx.p + r * C + start, 0.f);
                std::fill(dx.p + r * C + start + len, dx.p + (r + 1) * C, 0.f);
            }
            acc_row(dx, r * C + start, d + r * len, len);
        }
    });
    return y;
}

// (1, ...) -> (B, ...): B copies of x, e.g. one learned prompt for every sequence of a batch.
Tensor repeat_batch(const Tensor& x, int64_t B) {
    ENGINE_CHECK(x.ndim() >= 1 && x.size(0) == 1, ShapeError, "repeat_batch: x {} must have a leading dim of 1",
                 x.shape().str());
    ENGINE_CHECK(B >= 1, ValueError, "repeat_batch: B must be at least 1, got {}", B);
    const int64_t M = x.numel();
    Shape s = x.shape();
    s.dims[0] = B;
    Tensor y = Tensor::empty(s);
    const float* xp = x.data();
    map_rows(y.data(), B, M, [xp](int64_t, int64_t j) { return xp[j]; });
    record(y, "repeat_batch", {x}, [B, M](const Tensor& dy, Grads& g) {
        // forward: y[b] = x for every b, so dx = sum_b dy[b] (columns split over threads, b in order)
        add_column_sums(g.buf(0), dy.data(), B, M);
    });
    return y;
}

// ids: int32 (B,T) or (N), each in [0,V)   W: (V,C)  ->  (B,T,C) or (N,C): y[i] = W[ids[i]].
Tensor embedding(const Tensor& ids, const Tensor& W) {
    ENGINE_CHECK(ids.dtype() == DType::I32, ValueError, "embedding: ids must be int32, got {}", describe(ids));
    ENGINE_CHECK(W.ndim() == 2 && (ids.ndim() == 1 || ids.ndim() == 2), ShapeError,
                 "embedding: ids {} and W {} must be (B, T) or (N) ids and a (V, C) table", ids.shape().str(),
                 W.shape().str());
    const int64_t N = ids.numel(), V = W.size(0), C = W.size(1);
    const int32_t* id = ids.idata();
    for (int64_t i = 0; i < N; i++) {
        if (id[i] >= 0 && id[i] < V) continue;
        const std::string at = ids.ndim() == 2 ? fmt::format("[{}, {}]", i / ids.size(1), i % ids.size(1))
                                               : fmt::format("[{}]", i);
        throw ValueError(fmt::format("embedding: id {} at position {} of ids {} is outside the vocabulary [0, {})",
                                     id[i], at, ids.shape().str(), V));
    }
    Tensor y = Tensor::empty(ids.ndim() == 2 ? Shape{ids.size(0), ids.size(1), C} : Shape{N, C});
    const float* Wp = W.data();
    float* yp = y.data();
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
    for (int64_t i = 0; i < N; i++) std::copy(Wp + id[i] * C, Wp + (id[i] + 1) * C, yp + i * C);
    Saved is = needs_grad(W) ? save(ids) : Saved();
    record(y, "embedding", {ids, W}, [is, N, V, C](const Tensor& dy, Grads& g) {
        // forward: y[i] = W[ids[i]], so dW[v] = sum of dy[i] over the positions i with ids[i] = v.
        // Threads own blocks of 64 columns of dW (no two touch one element) and add the rows of
        // dy in order of i: the same sums in the same order for any thread count, no atomics.
        const float* d = dy.data();
        const int32_t* idv = is->idata();
        GradBuf dW = g.buf(1);
#pragma omp parallel for schedule(static) if ((N + V) * C >= kParallelMin)
        for (int64_t c0 = 0; c0 < C; c0 += 64) {
            const int64_t w = std::min<int64_t>(64, C - c0);
            if (dW.beta == 0.f)
                for (int64_t v = 0; v < V; v++) std::fill(dW.p + v * C + c0, dW.p + v * C + c0 + w, 0.f);
            for (int64_t i = 0; i < N; i++) {
                float* dst = dW.p + idv[i] * C + c0;
                const float* src = d + i * C + c0;
#pragma omp simd
                for (int64_t j = 0; j < w; j++) dst[j] += src[j];
            }
        }
    });
    return y;
}

// ---- full reductions, accumulated in double in index order -> shape (1)

Tensor sum(const Tensor& x) {
    const int64_t n = x.numel();
    const float* xp = x.data();
    double acc = 0;
    for (int64_t i = 0; i < n; i++) acc += xp[i];
    Tensor y = Tensor::full({1}, float(acc));
    record(y, "sum", {x}, [n](const Tensor& dy, Grads& g) {
        // forward: y = sum_i x[i], so dx[i] = dy
        const float d = dy.data()[0];
        acc_n(g.buf(0), n, [d](int64_t) { return d; });
    });
    return y;
}

Tensor mean(const Tensor& x) {
    const int64_t n = x.numel();
    ENGINE_CHECK(n > 0, ShapeError, "mean: x {} has no elements", x.shape().str());
    const float* xp = x.data();
    double acc = 0;
    for (int64_t i = 0; i < n; i++) acc += xp[i];
    Tensor y = Tensor::full({1}, float(acc / double(n)));
    record(y, "mean", {x}, [n](const Tensor& dy, Grads& g) {
        // forward: y = (1/n) sum_i x[i], so dx[i] = dy / n
        const float d = float(double(dy.data()[0]) / double(n));
        acc_n(g.buf(0), n, [d](int64_t) { return d; });
    });
    return y;
}
