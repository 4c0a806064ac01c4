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
#include "ops.h"
#include "row_kernels.h"

// "[b, t]" for (B,T) targets, "[r]" for (N) ones: where a bad target sits, for the error message.
static std::string position(const Tensor& targets, int64_t r) {
    if (targets.ndim() == 2) return fmt::format("[{}, {}]", r / targets.size(1), r % targets.size(1));
    return fmt::format("[{}]", r);
}

// Mean over the non-ignored rows of logsumexp(logits_r) − logits_r[target_r].  -> (1)
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
    int64_t n_valid = 0;
    for (int64_t r = 0; r < N; r++) {   // validate before the parallel loop (no throwing inside it)
        if (tp[r] == ignore_index) continue;
        ENGINE_CHECK(tp[r] >= 0 && tp[r] < V, ValueError,
                     "cross_entropy: target {} at position {} of targets {} is outside [0, {}) and is not the "
                     "ignore_index {}", tp[r], position(targets, r), targets.shape().str(), V, ignore_index);
        n_valid++;
    }

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
