// engine/reference_ops.cpp — attention, layernorm and cross-entropy as plain loops (Note
// [Reference ops] in reference_ops.h). One thread, sums in double, every intermediate a
// vector of its own: the math of each op with nothing else in the way.
#include "reference_ops.h"
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

static int g_reference_ops = -1;   // -1: not decided yet (read the environment on first use)

bool reference_ops() {
    if (g_reference_ops < 0) {
        const char* e = std::getenv("PEFT_REFERENCE_OPS");
        g_reference_ops = e && std::strcmp(e, "") != 0 && std::strcmp(e, "0") != 0;
    }
    return g_reference_ops == 1;
}
void set_reference_ops(bool on) { g_reference_ops = on ? 1 : 0; }

namespace reference {

using Vec = std::vector<double>;

// ---- attention
//
// For each batch b and head h (columns h·D .. h·D+D-1 of q, k, v), each query row i:
//     s_j = scale · q_i · k_j      for the keys j it may see: all P prefix rows and P..P+i
//     a_j = exp(s_j − max s) / Σ exp(s_j' − max s)          (softmax over those keys)
//     y_i = Σ_j a_j v_j
// The probabilities a are kept for backward: (B, H, T, P+T), zero where the mask hides a key.
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_head, int64_t n_prefix,
                        float scale) {
    const int64_t B = q.size(0), T = q.size(1), C = q.size(2), H = n_head, D = C / H, P = n_prefix, Tk = P + T;
    Tensor y = Tensor::zeros(q.shape()), A = Tensor::zeros({B, H, T, Tk});
    const float *Q = q.data(), *K = k.data(), *V = v.data();
    float *Y = y.data(), *Ap = A.data();
    auto qi = [=](int64_t b, int64_t i, int64_t h) { return (b * T + i) * C + h * D; };    // q, y: row i
    auto kj = [=](int64_t b, int64_t j, int64_t h) { return (b * Tk + j) * C + h * D; };   // k, v: row j
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++) {
                const int64_t n = P + i + 1;   // visible keys
                Vec s(static_cast<size_t>(n));
                double mx = -INFINITY;
                for (int64_t j = 0; j < n; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < D; e++) d += double(Q[qi(b, i, h) + e]) * K[kj(b, j, h) + e];
                    s[size_t(j)] = scale * d;
                    mx = std::max(mx, s[size_t(j)]);
                }
                double z = 0;
                for (double& e : s) z += (e = std::exp(e - mx));
                float* a = Ap + ((b * H + h) * T + i) * Tk;
                for (int64_t j = 0; j < n; j++) a[j] = float(s[size_t(j)] / z);
                for (int64_t e = 0; e < D; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < n; j++) acc += double(a[j]) * V[kj(b, j, h) + e];
                    Y[qi(b, i, h) + e] = float(acc);
                }
            }
    Saved qs = save(q), ks = save(k), vs = save(v), as = save(A);
    record(y, "reference_causal_attention", {q, k, v}, [qs, ks, vs, as, B, T, H, D, P, Tk, scale, qi, kj](const Tensor& dy, Grads& g) {
        // y_i = Σ_j a_ij v_j                      ->  dv_j += a_ij dy_i,   da_ij = dy_i · v_j
        // a_i = softmax(s_i)                      ->  ds_ij = a_ij (da_ij − Σ_j' a_ij' da_ij')
        // s_ij = scale q_i · k_j                  ->  dq_i += scale ds_ij k_j,   dk_j += scale ds_ij q_i
        const float *Q = qs.data(), *K = ks.data(), *V = vs.data(), *Ap = as.data(), *dY = dy.data();
        Vec dq(static_cast<size_t>(qs->numel()), 0.0), dk(static_cast<size_t>(ks->numel()), 0.0);
        Vec dv(static_cast<size_t>(vs->numel()), 0.0);
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < T; i++) {
                    const int64_t n = P + i + 1;
                    const float* a = Ap + ((b * H + h) * T + i) * Tk;
                    const float* dyi = dY + qi(b, i, h);
                    Vec da(static_cast<size_t>(n));
                    double dot = 0;   // Σ_j a_ij da_ij
                    for (int64_t j = 0; j < n; j++) {
                        double d = 0;
                        for (int64_t e = 0; e < D; e++) {
                            d += double(dyi[e]) * V[kj(b, j, h) + e];
                            dv[size_t(kj(b, j, h) + e)] += double(a[j]) * dyi[e];
                        }
                        da[size_t(j)] = d;
                        dot += a[j] * d;
                    }
                    for (int64_t j = 0; j < n; j++) {
                        const double ds = a[j] * (da[size_t(j)] - dot);
                        for (int64_t e = 0; e < D; e++) {
                            dq[size_t(qi(b, i, h) + e)] += scale * ds * K[kj(b, j, h) + e];
                            dk[size_t(kj(b, j, h) + e)] += scale * ds * Q[qi(b, i, h) + e];
                        }
                    }
                }
        const Vec* grads[3] = {&dq, &dk, &dv};
        for (int in = 0; in < 3; in++)
            if (g.needs(in)) {
                GradBuf buf = g.buf(in);
                for (size_t e = 0; e < grads[in]->size(); e++) buf.acc(int64_t(e), float((*grads[in])[e]));
            }
    });
    return y;
}

// ---- layernorm
//
// For each row x of C values:  mean = Σ x / C,  var = Σ (x − mean)² / C,  rstd = 1 / √(var + eps),
//     xhat = (x − mean) · rstd,   y = xhat ⊙ w + b.
Tensor layernorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
    const int64_t C = x.shape().back(), rows = x.numel() / C;
    Tensor y = Tensor::empty(x.shape()), xhat = Tensor::empty(x.shape()), rstd = Tensor::empty({rows});
    for (int64_t r = 0; r < rows; r++) {
        const float* xr = x.data() + r * C;
        double mean = 0, var = 0;
        for (int64_t c = 0; c < C; c++) mean += xr[c];
        mean /= double(C);
        for (int64_t c = 0; c < C; c++) var += (xr[c] - mean) * (xr[c] - mean);
        var /= double(C);
        const double rs = 1.0 / std::sqrt(var + eps);
        rstd.data()[r] = float(rs);
        for (int64_t c = 0; c < C; c++) {
            xhat.data()[r * C + c] = float((xr[c] - mean) * rs);
            y.data()[r * C + c] = float((xr[c] - mean) * rs * w.data()[c] + (b.defined() ? b.data()[c] : 0.f));
        }
    }
    Saved xh = save(xhat), rss = save(rstd), ws = save(w);
    record(y, "reference_layernorm", {x, w, b}, [xh, rss, ws, rows, C](const Tensor& dy, Grads& g) {
        // dw = Σ_rows dy ⊙ xhat,  db = Σ_rows dy,  and with dxhat = dy ⊙ w, through mean and rstd:
        //   dx = rstd · (dxhat − mean_c(dxhat) − xhat · mean_c(dxhat ⊙ xhat))
        const float *XH = xh.data(), *dY = dy.data(), *W = ws.data();
        Vec dw(static_cast<size_t>(C), 0.0), db(static_cast<size_t>(C), 0.0);
        GradBuf dx = g.needs(0) ? g.buf(0) : GradBuf();
        for (int64_t r = 0; r < rows; r++) {
            double m1 = 0, m2 = 0;   // mean_c(dxhat), mean_c(dxhat ⊙ xhat)
            for (int64_t c = 0; c < C; c++) {
                const double dxhat = double(dY[r * C + c]) * W[c];
                m1 += dxhat;
                m2 += dxhat * XH[r * C + c];
                dw[size_t(c)] += double(dY[r * C + c]) * XH[r * C + c];
                db[size_t(c)] += dY[r * C + c];
            }
            m1 /= double(C);
            m2 /= double(C);
            for (int64_t c = 0; dx.p && c < C; c++) {
                const double dxhat = double(dY[r * C + c]) * W[c];
                dx.acc(r * C + c, float(rss.data()[r] * (dxhat - m1 - XH[r * C + c] * m2)));
            }
        }
        const Vec* sums[3] = {nullptr, &dw, &db};
        for (int in = 1; in < 3; in++)
            if (g.needs(in)) {
                GradBuf buf = g.buf(in);
                for (int64_t c = 0; c < C; c++) buf.acc(c, float((*sums[in])[size_t(c)]));
            }
    });
    return y;
}

// ---- cross-entropy
//
// For each row z of V logits with target t (rows whose target is ignore_index are skipped):
//     loss_r = log Σ_j exp(z_j) − z_t,   computed as m + log Σ_j exp(z_j − m), m = max z (no overflow);
//     the loss is the mean over the n rows kept, and its gradient dz_r = (softmax(z_r) − onehot(t)) / n.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index) {
    const int64_t V = logits.shape().back(), N = targets.numel();
    const int32_t* tgt = targets.idata();
    Tensor probs = Tensor::zeros({N, V});   // softmax of each kept row, for backward
    double total = 0;
    int64_t n = 0;
    for (int64_t r = 0; r < N; r++) {
        if (tgt[r] == ignore_index) continue;
        const float* z = logits.data() + r * V;
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j < V; j++) m = std::max(m, double(z[j]));
        for (int64_t j = 0; j < V; j++) sum += std::exp(z[j] - m);
        for (int64_t j = 0; j < V; j++) probs.data()[r * V + j] = float(std::exp(z[j] - m) / sum);
        total += std::log(sum) - (z[tgt[r]] - m);
        n++;
    }
    Tensor loss = Tensor::full({1}, n ? float(total / double(n)) : 0.f);
    Saved ps = save(probs), ts = save(targets);
    record(loss, "reference_cross_entropy", {logits}, [ps, ts, N, V, n, ignore_index](const Tensor& dy, Grads& g) {
        GradBuf dz = g.buf(0);
        const int32_t* tgt = ts->idata();
        const double k = n ? dy.data()[0] / double(n) : 0.0;
        for (int64_t r = 0; r < N; r++)
            for (int64_t j = 0; j < V; j++) {
                const bool kept = tgt[r] != ignore_index;
                const double onehot = kept && j == tgt[r] ? 1.0 : 0.0;
                dz.acc(r * V + j, kept ? float(k * (ps.data()[r * V + j] - onehot)) : 0.f);
            }
    });
    return loss;
}

Tensor linear_cross_entropy(const Tensor& x, const Tensor& W, const Tensor& targets, int32_t ignore_index) {
    return reference::cross_entropy(linear(x, W), targets, ignore_index);
}

}  // namespace reference
