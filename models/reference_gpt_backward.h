// models/reference_gpt_backward.h — the GPT's backward pass as plain loops in double precision.
//
// Read it after models/reference_gpt.h: the same forward, now keeping what the backward needs
// (each LayerNorm's input, q, k, v, the attention probabilities, the MLP's pre-activation), then
// the chain rule walked from the loss back to every parameter, one layer kind at a time:
//
//   cross-entropy   dlogits[t] = (softmax(logits[t]) − onehot(target[t])) / n_targets
//   linear          y = x Wᵀ + b:   dx = dy W,   dW += dyᵀ x,   db += Σ_t dy[t]
//   LayerNorm       x̂ = (x − μ)·r (r = 1/σ):   dw += dy·x̂,  db += dy,
//                   dx = r·(g − mean(g) − x̂·mean(g·x̂))  with g = dy·w
//   GELU (tanh)     dx = dy · (½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²)),
//                   u = √(2/π)(x + 0.044715x³)
//   attention       p = softmax(q·kᵀ/√D) over keys j ≤ i,  y_i = Σ_j p_ij v_j:
//                   dv_j += p_ij dy_i,  dp_ij = dy_i·v_j,  ds_ij = p_ij (dp_ij − Σ_j' p_ij' dp_ij'),
//                   dq_i += ds_ij k_j / √D,  dk_j += ds_ij q_i / √D
//   residual        the gradient flows into both branches unchanged
//   embeddings      dwte[id_t] += dx[t],  dwpe[t] += dx[t]; the LM head is wte (tied), so its
//                   gradient adds to the same rows
//
// The engine computes the same gradients with GEMMs, fused ops and recomputation
// (engine/ops_*.cpp); tests/test_gpt.cpp checks every parameter's gradient against this file.
// Dropout is left out (a model with dropout 0), as are prefix rows.
#pragma once
#include "models/reference_gpt.h"

namespace naive {

using Grads = std::map<std::string, Mat>;   // parameter name -> dLoss/dparameter, its shape

inline void add_to(Mat& g, const Mat& like) {
    if (g.v.empty()) g = Mat{like.rows, like.cols, Vec(like.v.size(), 0.0)};
}

// dx of y = x Wᵀ + b; accumulates dW and db.
inline std::vector<Vec> lin_back(const std::vector<Vec>& x, const Mat& W, const std::vector<Vec>& dy, Mat& dW, Mat* db) {
    std::vector<Vec> dx(x.size(), Vec(size_t(W.cols), 0.0));
    add_to(dW, W);
    if (db) add_to(*db, Mat{1, W.rows, Vec(size_t(W.rows))});
    for (size_t t = 0; t < x.size(); t++)
        for (int64_t o = 0; o < W.rows; o++) {
            const double g = dy[t][size_t(o)];
            if (db) db->v[size_t(o)] += g;
            for (int64_t i = 0; i < W.cols; i++) {
                dx[t][size_t(i)] += g * W.at(o, i);
                dW.v[size_t(o * W.cols + i)] += g * x[t][size_t(i)];
            }
        }
    return dx;
}

// dx of y = LayerNorm(x)·w + b; accumulates dw and db.
inline std::vector<Vec> ln_back(const std::vector<Vec>& x, const Mat& w, const std::vector<Vec>& dy, Mat& dw, Mat& db,
                                double eps) {
    add_to(dw, w);
    add_to(db, w);
    std::vector<Vec> dx = x;
    for (size_t t = 0; t < x.size(); t++) {
        const double n = double(x[t].size());
        double mu = 0, var = 0;
        for (double v : x[t]) mu += v;
        mu /= n;
        for (double v : x[t]) var += (v - mu) * (v - mu);
        const double r = 1 / std::sqrt(var / n + eps);
        double mean_g = 0, mean_gx = 0;
        for (size_t c = 0; c < x[t].size(); c++) {
            const double xh = (x[t][c] - mu) * r, g = dy[t][c] * w.v[c];
            dw.v[c] += dy[t][c] * xh;
            db.v[c] += dy[t][c];
            mean_g += g / n;
            mean_gx += g * xh / n;
        }
        for (size_t c = 0; c < x[t].size(); c++) {
            const double xh = (x[t][c] - mu) * r;
            dx[t][c] = r * (dy[t][c] * w.v[c] - mean_g - xh * mean_gx);
        }
    }
    return dx;
}

inline double gelu_grad(double x) {
    const double k = std::sqrt(2 / M_PI), th = std::tanh(k * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * k * (1 + 3 * 0.044715 * x * x);
}

inline void add_rows(std::vector<Vec>& a, const std::vector<Vec>& b) {
    for (size_t t = 0; t < a.size(); t++) for (size_t i = 0; i < a[t].size(); i++) a[t][i] += b[t][i];
}

// What one block's forward keeps for its backward.
struct BlockCache {
    std::vector<Vec> x_in, a, q, k, v, y, x_mid, a2, h, g;
    std::vector<std::vector<Vec>> p;   // p[head][i][j], j ≤ i
};

// The gradient of the mean cross-entropy of one sequence (targets −1 ignored) for every parameter.
inline Grads gradients(GPT& m, const std::vector<int32_t>& ids, const std::vector<int32_t>& targets) {
    const GPTConfig& c = m.config;
    const int64_t T = int64_t(ids.size()), C = c.n_embd, H = c.n_head, D = C / H;
    const double eps = c.layer_norm_epsilon, sc = 1 / std::sqrt(double(D));
    const bool gpt2 = c.model_type == "gpt2";
    auto name = [&](int64_t l, const std::string& n) { return "transformer.h." + std::to_string(l) + "." + n; };
    // A parameter of block l by its role, in either layout.
    auto pname = [&](int64_t l, const std::string& role, const char* kind) {
        static const std::map<std::string, std::pair<std::string, std::string>> kNames = {
            {"q", {"attn.q_proj", ""}}, {"k", {"attn.k_proj", ""}}, {"v", {"attn.v_proj", ""}},
            {"o", {"attn.o_proj", "attn.c_proj"}}, {"fc", {"mlp.fc_in", "mlp.c_fc"}}, {"proj", {"mlp.fc_out", "mlp.c_proj"}},
            {"ln_1", {"ln_1", "ln_1"}}, {"ln_2", {"ln_2", "ln_2"}}};
        const auto& [ours, hf] = kNames.at(role);
        return name(l, (gpt2 ? hf : ours) + "." + kind);
    };
    // Its values (q, k, v are row blocks of GPT-2's fused c_attn).
    auto weight = [&](int64_t l, const std::string& role, const char* kind) {
        if (gpt2 && (role == "q" || role == "k" || role == "v"))
            return rows(param(m, name(l, std::string("attn.c_attn.") + kind)), (role == "q" ? 0 : role == "k" ? 1 : 2) * C, C);
        return param(m, pname(l, role, kind));
    };

    // ---- forward, keeping each block's activations
    Mat wte = param(m, "transformer.wte.weight"), wpe = param(m, "transformer.wpe.weight");
    std::vector<Vec> x(static_cast<size_t>(T), Vec(static_cast<size_t>(C)));
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < C; i++) x[size_t(t)][size_t(i)] = wte.at(ids[size_t(t)], i) + wpe.at(t, i);
    std::vector<BlockCache> blocks(size_t(c.n_layer));
    for (int64_t l = 0; l < c.n_layer; l++) {
        BlockCache& b = blocks[size_t(l)];
        b.x_in = x;
        b.a = ln(x, weight(l, "ln_1", "weight"), weight(l, "ln_1", "bias"), eps);
        Mat bq = weight(l, "q", "bias"), bk = weight(l, "k", "bias"), bv = weight(l, "v", "bias");
        b.q = lin(b.a, weight(l, "q", "weight"), &bq);
        b.k = lin(b.a, weight(l, "k", "weight"), &bk);
        b.v = lin(b.a, weight(l, "v", "weight"), &bv);
        b.y.assign(size_t(T), Vec(size_t(C), 0.0));
        b.p.assign(size_t(H), std::vector<Vec>(size_t(T)));
        for (int64_t hh = 0; hh < H; hh++)
            for (int64_t i = 0; i < T; i++) {
                Vec& p = b.p[size_t(hh)][size_t(i)];
                double mx = -INFINITY, z = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < D; e++) d += b.q[size_t(i)][size_t(hh * D + e)] * b.k[size_t(j)][size_t(hh * D + e)];
                    p.push_back(d * sc);
                    mx = std::max(mx, p.back());
                }
                for (double& e : p) z += (e = std::exp(e - mx));
                for (double& e : p) e /= z;
                for (int64_t j = 0; j <= i; j++)
                    for (int64_t e = 0; e < D; e++) b.y[size_t(i)][size_t(hh * D + e)] += p[size_t(j)] * b.v[size_t(j)][size_t(hh * D + e)];
            }
        Mat bo = weight(l, "o", "bias"), b1 = weight(l, "fc", "bias"), b2 = weight(l, "proj", "bias");
        add_rows(x, lin(b.y, weight(l, "o", "weight"), &bo));
        b.x_mid = x;
        b.a2 = ln(x, weight(l, "ln_2", "weight"), weight(l, "ln_2", "bias"), eps);
        b.h = lin(b.a2, weight(l, "fc", "weight"), &b1);
        b.g = b.h;
        for (auto& r : b.g) for (double& e : r) e = gelu(e);
        add_rows(x, lin(b.g, weight(l, "proj", "weight"), &b2));
    }
    const Mat lnf_w = param(m, "transformer.ln_f.weight"), lnf_b = param(m, "transformer.ln_f.bias");
    const std::vector<Vec> xf = ln(x, lnf_w, lnf_b, eps), logits = lin(xf, wte, nullptr);

    // ---- backward: the loss, the head, then the blocks last to first, then the embeddings
    Grads G;
    int n = 0;
    for (int32_t t : targets) n += t >= 0;
    std::vector<Vec> dlogits(size_t(T), Vec(size_t(c.vocab_size), 0.0));
    for (int64_t t = 0; t < T; t++) {
        if (targets[size_t(t)] < 0) continue;
        double mx = -INFINITY, z = 0;
        for (double v : logits[size_t(t)]) mx = std::max(mx, v);
        for (double v : logits[size_t(t)]) z += std::exp(v - mx);
        for (int64_t v = 0; v < c.vocab_size; v++)
            dlogits[size_t(t)][size_t(v)] = (std::exp(logits[size_t(t)][size_t(v)] - mx) / z - (v == targets[size_t(t)])) / n;
    }
    Mat& dwte = G["transformer.wte.weight"];
    std::vector<Vec> dx = lin_back(xf, wte, dlogits, dwte, nullptr);   // the tied LM head
    dx = ln_back(x, lnf_w, dx, G["transformer.ln_f.weight"], G["transformer.ln_f.bias"], eps);
    for (int64_t l = c.n_layer - 1; l >= 0; l--) {
        const BlockCache& b = blocks[size_t(l)];
        auto grad = [&](const std::string& role, const char* kind) -> Mat& { return G[pname(l, role, kind)]; };
        // MLP branch: x_out = x_mid + proj(gelu(fc(ln_2(x_mid))))
        Mat dWq, dWk, dWv, dbq, dbk, dbv;
        std::vector<Vec> dg = lin_back(b.g, weight(l, "proj", "weight"), dx, grad("proj", "weight"), &grad("proj", "bias"));
        for (size_t t = 0; t < dg.size(); t++) for (size_t i = 0; i < dg[t].size(); i++) dg[t][i] *= gelu_grad(b.h[t][i]);
        std::vector<Vec> da2 = lin_back(b.a2, weight(l, "fc", "weight"), dg, grad("fc", "weight"), &grad("fc", "bias"));
        add_rows(dx, ln_back(b.x_mid, weight(l, "ln_2", "weight"), da2, grad("ln_2", "weight"), grad("ln_2", "bias"), eps));
        // attention branch: x_mid = x_in + o(attention(q, k, v)), q, k, v = linear(ln_1(x_in))
        std::vector<Vec> dy = lin_back(b.y, weight(l, "o", "weight"), dx, grad("o", "weight"), &grad("o", "bias"));
        std::vector<Vec> dq(size_t(T), Vec(size_t(C), 0.0)), dk = dq, dv = dq;
        for (int64_t hh = 0; hh < H; hh++)
            for (int64_t i = 0; i < T; i++) {
                const Vec& p = b.p[size_t(hh)][size_t(i)];
                Vec dp(p.size(), 0.0);
                double dot = 0;
                for (int64_t j = 0; j <= i; j++) {
                    for (int64_t e = 0; e < D; e++) {
                        const size_t he = size_t(hh * D + e);
                        dp[size_t(j)] += dy[size_t(i)][he] * b.v[size_t(j)][he];
                        dv[size_t(j)][he] += p[size_t(j)] * dy[size_t(i)][he];
                    }
                    dot += p[size_t(j)] * dp[size_t(j)];
                }
                for (int64_t j = 0; j <= i; j++) {
                    const double ds = p[size_t(j)] * (dp[size_t(j)] - dot) * sc;
                    for (int64_t e = 0; e < D; e++) {
                        const size_t he = size_t(hh * D + e);
                        dq[size_t(i)][he] += ds * b.k[size_t(j)][he];
                        dk[size_t(j)][he] += ds * b.q[size_t(i)][he];
                    }
                }
            }
        std::vector<Vec> da = lin_back(b.a, weight(l, "q", "weight"), dq, dWq, &dbq);
        add_rows(da, lin_back(b.a, weight(l, "k", "weight"), dk, dWk, &dbk));
        add_rows(da, lin_back(b.a, weight(l, "v", "weight"), dv, dWv, &dbv));
        if (gpt2) {   // the fused c_attn's gradient: q, k, v's row blocks one after another
            Mat& W = G[name(l, "attn.c_attn.weight")];
            Mat& B = G[name(l, "attn.c_attn.bias")];
            W = Mat{3 * C, C, {}};
            B = Mat{1, 3 * C, {}};
            for (const Mat* g : {&dWq, &dWk, &dWv}) W.v.insert(W.v.end(), g->v.begin(), g->v.end());
            for (const Mat* g : {&dbq, &dbk, &dbv}) B.v.insert(B.v.end(), g->v.begin(), g->v.end());
        } else {
            grad("q", "weight") = dWq, grad("k", "weight") = dWk, grad("v", "weight") = dWv;
            grad("q", "bias") = dbq, grad("k", "bias") = dbk, grad("v", "bias") = dbv;
        }
        add_rows(dx, ln_back(b.x_in, weight(l, "ln_1", "weight"), da, grad("ln_1", "weight"), grad("ln_1", "bias"), eps));
    }
    Mat& dwpe = G["transformer.wpe.weight"];
    add_to(dwpe, wpe);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < C; i++) {
            dwte.v[size_t(ids[size_t(t)] * C + i)] += dx[size_t(t)][size_t(i)];
            dwpe.v[size_t(t * C + i)] += dx[size_t(t)][size_t(i)];
        }
    return G;
}

}  // namespace naive
