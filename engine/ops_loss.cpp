// engine/ops_loss.cpp — mean cross-entropy from logits, with an ignore index.
//
// Per row r with target t: loss_r = logsumexp(z_r) − z_r[t], computed as m + log Σ exp(z − m)
// with m the row max (started at −inf), never as −log(softmax): that would overflow to +inf as
// soon as a probability underflows. The backward recomputes the softmax from the saved logits
// and the saved per-row (m, log Σ) instead of keeping a second (N, V) matrix of probabilities.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>
#include "blas.h"
#include "ops.h"
#include "reference_ops.h"
#include "row_kernels.h"

// "[b, t]" for (B,T) targets, "[r]" for (N) ones: where a bad target sits, for the error message.
static std::string position(const Tensor& targets, int64_t r) {
    if (targets.ndim() == 2) return fmt::format("[{}, {}]", r / targets.size(1), r % targets.size(1));
    return fmt::format("[{}]", r);
}

// Checks every target is in [0, V) or the ignore_index; returns how many are not ignored.
static int64_t count_targets(const char* op, const Tensor& targets, int64_t V, int32_t ignore_index) {
    const int32_t* tp = targets.idata();
    int64_t n_valid = 0;
    for (int64_t r = 0; r < targets.numel(); r++) {   // validate before the parallel loop (no throwing inside it)
        if (tp[r] == ignore_index) continue;
        ENGINE_CHECK(tp[r] >= 0 && tp[r] < V, ValueError,
                     "{}: target {} at position {} of targets {} is outside [0, {}) and is not the "
                     "ignore_index {}", op, tp[r], position(targets, r), targets.shape().str(), V, ignore_index);
        n_valid++;
    }
    return n_valid;
}

// Mean over the non-ignored rows of logsumexp(logits_r) − logits_r[target_r].  -> (1)
// Read first: the plain loops of reference::cross_entropy (engine/reference_ops.cpp).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index) {
    Shape rows_shape = logits.shape();   // what targets must be: the logits' shape without V
    if (rows_shape.ndim > 0) rows_shape.ndim--;
    ENGINE_CHECK((logits.ndim() == 2 || logits.ndim() == 3) && targets.shape() == rows_shape &&
                     logits.shape().back() > 0,
                 ShapeError,
                 "cross_entropy: logits {} and targets {} do not match (need (N,V) with (N), or (B,T,V) with (B,T))",
                 logits.shape().str(), targets.shape().str());
    ENGINE_CHECK(logits.dtype() == DType::F32 && targets.dtype() == DType::I32, ValueError,
                 "cross_entropy: logits must be float32 and targets int32, got {} and {}", describe(logits),
                 describe(targets));
    const int64_t V = logits.shape().back(), N = targets.numel();
    const int32_t* tp = targets.idata();
    const int64_t n_valid = count_targets("cross_entropy", targets, V, ignore_index);
    if (reference_ops()) return reference::cross_entropy(logits, targets, ignore_index);

    // stats[r] = (row max, log Σ exp(z − max)): logsumexp = their sum, kept apart so a huge max
    // does not swallow the small log term when the backward recomputes exp(z − max − log Σ).
    Tensor stats = Tensor::empty({N, 2});
    float* sp = stats.data();
    const float* zp = logits.data();
    std::vector<double> row_loss(size_t(N), 0.0);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < N; r++) {
        if (tp[r] == ignore_index) { sp[2 * r] = sp[2 * r + 1] = 0.f; continue; }
        const float* z = zp + r * V;
        const float m = row_max(z, V);
        const double log_s = std::log(row_sum_exp(z, V, m));
        sp[2 * r] = m;
        sp[2 * r + 1] = float(log_s);
        row_loss[size_t(r)] = log_s - (double(z[tp[r]]) - double(m));   // not (m + log_s) − z: m may swallow log_s
    }
    double total = 0;   // summed in row order, by one thread: the same for any thread count
    for (int64_t r = 0; r < N; r++) total += row_loss[size_t(r)];
    Tensor loss = Tensor::full({1}, n_valid ? float(total / double(n_valid)) : 0.f);

    const bool need = needs_grad(logits);
    Saved zs = need ? save(logits) : Saved(), ts = need ? save(targets) : Saved(), ss = need ? save(stats) : Saved();
    record(loss, "cross_entropy", {logits}, [zs, ts, ss, N, V, n_valid, ignore_index](const Tensor& dy, Grads& g) {
        // forward: L = (1/n) Σ_r [logsumexp(z_r) − z_r[t_r]], and d logsumexp(z)/dz_j = softmax(z)_j, so
        //   dz_r = dy · (softmax(z_r) − onehot(t_r)) / n for kept rows, 0 for ignored ones.
        GradBuf dz = g.buf(0);
        const float *zp = zs.data(), *sp = ss.data();
        const int32_t* tp = ts->idata();
        const float k = n_valid ? dy.data()[0] / float(n_valid) : 0.f;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < N; r++) {
            const float* z = zp + r * V;
            const int32_t t = tp[r];
            if (t == ignore_index) {   // no gradient: write zeros into a fresh buffer, leave an accumulating one
                if (dz.beta == 0.f) std::fill(dz.p + r * V, dz.p + (r + 1) * V, 0.f);
                continue;
            }
            const float m = sp[2 * r], log_s = sp[2 * r + 1];
#pragma omp simd
            for (int64_t j = 0; j < V; j++) dz.acc(r * V + j, k * exp_nonpos((z[j] - m) - log_s));
            dz.p[r * V + t] -= k;
        }
    });
    return loss;
}

// Note [The LM head and its loss, fused and chunked]
// With a vocabulary of 50k the logits are the largest activation of a step (N × V floats: 196 MiB
// at 1024 tokens), and cross_entropy(linear(x, W)) keeps them for its backward, which then writes a
// second N × V matrix dz. But the gradient needs neither for long: with the scalar dy (1 in
// training) factored out, dz_r = (softmax(z_r) − onehot(t_r)) / n depends on row r alone, and
//     dx = dy · dz W,   dW = dy · dzᵀ x = dy · Σ_chunks dz_cᵀ x_c.
// So the forward takes the rows a chunk at a time: z_c = x_c Wᵀ into one reused buffer, each row's
// loss, z_c turned in place into dz_c, then dz_c W into the rows of a saved dx and dz_cᵀ x_c added
// into a saved dW. No (N, V) buffer ever exists; the backward only scales the two by dy. The GEMM
// work is the same as unfused (the gradient GEMMs just run early), so a forward whose backward
// never comes (evaluation runs without grad mode) pays none of it. Values equal
// cross_entropy(linear(x, W), targets), the plain version, to float rounding (Liger-Kernel's
// fused linear cross-entropy does the same on GPUs).
// The chunk size trades memory for time: every chunk reads all of W (154 MB for GPT-2) twice, once
// for its logits and once for its dx, so chunks of 83 rows made the head memory-bound; 333 rows
// read W 8 times a step instead of 26.
static constexpr int64_t kChunkFloats = int64_t(1) << 24;   // 64 MiB of logits: 333 rows at V = 50257

// Read first: reference::linear_cross_entropy (engine/reference_ops.cpp), the unfused
// composition cross_entropy(linear(x, W), targets).
// x: (..., C)  W: (V, C)  targets: x's shape without C  ->  (1)
Tensor linear_cross_entropy(const Tensor& x, const Tensor& W, const Tensor& targets, int32_t ignore_index,
                            int64_t chunk_rows) {
    Shape rows_shape = x.shape();   // what targets must be: x's shape without C
    if (rows_shape.ndim > 0) rows_shape.ndim--;
    ENGINE_CHECK(W.ndim() == 2 && x.ndim() >= 2 && x.shape().back() == W.size(1) && W.size(0) > 0 &&
                     targets.shape() == rows_shape,
                 ShapeError,
                 "linear_cross_entropy: x {}, W {} and targets {} do not match (need x (..., C), W (V, C) and "
                 "targets shaped like x without C)", x.shape().str(), W.shape().str(), targets.shape().str());
    ENGINE_CHECK(targets.dtype() == DType::I32, ValueError, "linear_cross_entropy: targets must be int32, got {}",
                 describe(targets));
    const int64_t V = W.size(0), C = W.size(1), N = targets.numel();
    const int32_t* tp = targets.idata();
    const int64_t n_valid = count_targets("linear_cross_entropy", targets, V, ignore_index);
    if (reference_ops()) return reference::linear_cross_entropy(x, W, targets, ignore_index);
    const bool need_x = needs_grad(x), need_W = needs_grad(W), need = need_x || need_W;

    const int64_t R = std::max<int64_t>(1, std::min(N, chunk_rows > 0 ? chunk_rows : kChunkFloats / V));   // per chunk
    Tensor Z = Tensor::empty({R, V});   // one chunk of logits; with a backward to come, then (softmax − onehot) / n
    Tensor dx = need_x ? Tensor::empty(x.shape()) : Tensor(), dW = need_W ? Tensor::empty(W.shape()) : Tensor();
    float* zp = Z.data();
    const float inv_n = n_valid ? 1.f / float(n_valid) : 0.f;
    std::vector<double> row_loss(size_t(N), 0.0);
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        const int64_t r1 = std::min(N, r0 + R);
        gemm(Trans::N, Trans::T, r1 - r0, V, C, 1.f, x.data() + r0 * C, W.data(), 0.f, zp);
#pragma omp parallel for schedule(static)
        for (int64_t r = r0; r < r1; r++) {
            float* z = zp + (r - r0) * V;
            const int32_t t = tp[r];
            if (t == ignore_index) {   // no loss and no gradient
                if (need) std::fill(z, z + V, 0.f);
                continue;
            }
            const float m = row_max(z, V), zt = z[t];
            const double s = need ? row_exp_in_place(z, V, m) : row_sum_exp(z, V, m);
            row_loss[size_t(r)] = std::log(s) - (double(zt) - double(m));
            if (!need) continue;
            const float k = float(1.0 / s) * inv_n;
#pragma omp simd
            for (int64_t j = 0; j < V; j++) z[j] *= k;
            z[t] -= inv_n;
        }
        if (need_x)   // dx[r0:r1] = dz_c W
            gemm(Trans::N, Trans::N, r1 - r0, C, V, 1.f, zp, W.data(), 0.f, dx.data() + r0 * C);
        if (need_W)   // dW += dz_cᵀ x[r0:r1]
            gemm(Trans::T, Trans::N, V, C, r1 - r0, 1.f, zp, x.data() + r0 * C, r0 == 0 ? 0.f : 1.f, dW.data());
    }
    if (need_W && N == 0) std::fill(dW.data(), dW.data() + dW.numel(), 0.f);   // no rows, no chunk wrote it
    double total = 0;   // in row order, by one thread: the same for any thread count
    for (int64_t r = 0; r < N; r++) total += row_loss[size_t(r)];
    Tensor loss = Tensor::full({1}, n_valid ? float(total / double(n_valid)) : 0.f);

    Saved dxs = need_x ? save(dx) : Saved(), dWs = need_W ? save(dW) : Saved();
    record(loss, "linear_cross_entropy", {x, W}, [dxs, dWs](const Tensor& dy, Grads& g) {
        // forward: z = x Wᵀ, L = cross_entropy(z); dxs and dWs hold dL/dx and dL/dW for dy = 1.
        const float k = dy.data()[0];
        for (int i = 0; i < 2; i++) {
            if (!g.needs(i)) continue;
            GradBuf d = g.buf(i);
            const Saved& s = i == 0 ? dxs : dWs;
            const float* sp = s.data();
            const int64_t n = s->numel();
#pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < n; j++) d.acc(j, k * sp[j]);
        }
    });
    return loss;
}
