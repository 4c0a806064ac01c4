// models/reference_gpt.h — the GPT forward of models/gpt.cpp as plain loops in double precision.
//
// Read it beside models/gpt.cpp: the same model (embeddings, pre-LayerNorm blocks of causal
// attention and a GELU MLP, final LayerNorm, LM head tied to the token embedding), written out
// with no engine at all: no ops, no GEMM, no autograd, only the parameter values. Tests check
// the engine's logits and loss against it (tests/test_gpt.cpp), and a LoRA merge and prefix
// rows (tests/test_adapter.cpp, tests/test_prefix_tuning.cpp).
// Its backward, as plain as this, is models/reference_gpt_backward.h (tests/test_gpt.cpp checks
// every parameter's gradient against it). Every fast op also has a plain twin the engine can run
// (engine/reference_ops.cpp, Note [Reference ops]); tests/test_reference_ops.cpp trains the
// model on those and gets the fast ops' results.
#pragma once
#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>
#include "models/gpt.h"

namespace naive {

using Vec = std::vector<double>;
struct Mat { int64_t rows = 0, cols = 0; Vec v; double at(int64_t r, int64_t c) const { return v[size_t(r * cols + c)]; } };

inline Mat param(GPT& m, const std::string& name) {
    Tensor t = m.params.get(name);
    Mat out{t.ndim() == 2 ? t.size(0) : 1, t.shape().back(), {}};
    for (int64_t i = 0; i < t.numel(); i++) out.v.push_back(t.data()[i]);
    return out;
}

// y[t] = x[t] Wᵀ + b
inline std::vector<Vec> lin(const std::vector<Vec>& x, const Mat& W, const Mat* b) {
    std::vector<Vec> y(x.size(), Vec(size_t(W.rows), 0.0));
    for (size_t t = 0; t < x.size(); t++)
        for (int64_t o = 0; o < W.rows; o++) {
            double s = b ? b->v[size_t(o)] : 0.0;
            for (int64_t i = 0; i < W.cols; i++) s += x[t][size_t(i)] * W.at(o, i);
            y[t][size_t(o)] = s;
        }
    return y;
}

inline std::vector<Vec> ln(const std::vector<Vec>& x, const Mat& w, const Mat& b, double eps = 1e-5) {
    std::vector<Vec> y = x;
    for (size_t t = 0; t < x.size(); t++) {
        double mu = 0, var = 0;
        for (double v : x[t]) mu += v;
        mu /= double(x[t].size());
        for (double v : x[t]) var += (v - mu) * (v - mu);
        var /= double(x[t].size());
        for (size_t c = 0; c < x[t].size(); c++) y[t][c] = (x[t][c] - mu) / std::sqrt(var + eps) * w.v[c] + b.v[c];
    }
    return y;
}

inline double gelu(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

// Rows [r0, r0 + n) of M (a weight) or entries of a bias.
inline Mat rows(const Mat& M, int64_t r0, int64_t n) {
    if (M.rows == 1) return Mat{1, n, Vec(M.v.begin() + r0, M.v.begin() + r0 + n)};
    return Mat{n, M.cols, Vec(M.v.begin() + r0 * M.cols, M.v.begin() + (r0 + n) * M.cols)};
}

// Optional per-layer prefix keys/values: prefix[l] = {K rows, V rows}, each P rows of width C.
using Prefix = std::map<int64_t, std::pair<std::vector<Vec>, std::vector<Vec>>>;

// Logits (T, V) for one sequence. Position of token t is pos0 + t.
inline std::vector<Vec> forward(GPT& m, const std::vector<int32_t>& ids, const Prefix& prefix = {}, int64_t pos0 = 0) {
    const GPTConfig& c = m.config;
    const int64_t T = int64_t(ids.size()), C = c.n_embd, H = c.n_head, D = C / H;
    Mat wte = param(m, "transformer.wte.weight"), wpe = param(m, "transformer.wpe.weight");
    std::vector<Vec> x(static_cast<size_t>(T), Vec(static_cast<size_t>(C)));
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < C; i++) x[size_t(t)][size_t(i)] = wte.at(ids[size_t(t)], i) + wpe.at(pos0 + t, i);
    for (int64_t l = 0; l < c.n_layer; l++) {
        const std::string p = "transformer.h." + std::to_string(l) + ".";
        auto W = [&](const std::string& n) { return param(m, p + n + ".weight"); };
        auto Bp = [&](const std::string& n) { return param(m, p + n + ".bias"); };
        const bool gpt2 = c.model_type == "gpt2";   // q, k, v are row blocks of the fused c_attn
        auto qkv = [&](int i, const Mat& M) { return rows(M, i * C, C); };
        Mat Wq = gpt2 ? qkv(0, W("attn.c_attn")) : W("attn.q_proj"), Wk = gpt2 ? qkv(1, W("attn.c_attn")) : W("attn.k_proj"),
            Wv = gpt2 ? qkv(2, W("attn.c_attn")) : W("attn.v_proj"), Wo = W(gpt2 ? "attn.c_proj" : "attn.o_proj");
        Mat bq = gpt2 ? qkv(0, Bp("attn.c_attn")) : Bp("attn.q_proj"), bk = gpt2 ? qkv(1, Bp("attn.c_attn")) : Bp("attn.k_proj"),
            bv = gpt2 ? qkv(2, Bp("attn.c_attn")) : Bp("attn.v_proj"), bo = Bp(gpt2 ? "attn.c_proj" : "attn.o_proj");
        const double eps = c.layer_norm_epsilon;
        std::vector<Vec> a = ln(x, W("ln_1"), Bp("ln_1"), eps);
        std::vector<Vec> q = lin(a, Wq, &bq), k = lin(a, Wk, &bk), v = lin(a, Wv, &bv);
        std::vector<Vec> pk, pv;
        if (prefix.count(l)) { pk = prefix.at(l).first; pv = prefix.at(l).second; }
        const int64_t P = int64_t(pk.size());
        std::vector<Vec> y(static_cast<size_t>(T), Vec(static_cast<size_t>(C), 0.0));
        for (int64_t hh = 0; hh < H; hh++)
            for (int64_t i = 0; i < T; i++) {
                // keys: P prefix rows, then real keys 0..i
                std::vector<double> s;
                auto key = [&](int64_t j) -> const Vec& { return j < P ? pk[size_t(j)] : k[size_t(j - P)]; };
                auto val = [&](int64_t j) -> const Vec& { return j < P ? pv[size_t(j)] : v[size_t(j - P)]; };
                double mx = -INFINITY;
                for (int64_t j = 0; j < P + i + 1; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < D; e++) d += q[size_t(i)][size_t(hh * D + e)] * key(j)[size_t(hh * D + e)];
                    s.push_back(d / std::sqrt(double(D)));
                    mx = std::max(mx, s.back());
                }
                double z = 0;
                for (double& e : s) z += (e = std::exp(e - mx));
                for (int64_t j = 0; j < P + i + 1; j++)
                    for (int64_t e = 0; e < D; e++) y[size_t(i)][size_t(hh * D + e)] += s[size_t(j)] / z * val(j)[size_t(hh * D + e)];
            }
        std::vector<Vec> o = lin(y, Wo, &bo);
        for (int64_t t = 0; t < T; t++) for (int64_t i = 0; i < C; i++) x[size_t(t)][size_t(i)] += o[size_t(t)][size_t(i)];
        const char *fc = gpt2 ? "mlp.c_fc" : "mlp.fc_in", *proj = gpt2 ? "mlp.c_proj" : "mlp.fc_out";
        Mat b1 = Bp(fc), b2 = Bp(proj);
        std::vector<Vec> hdn = lin(ln(x, W("ln_2"), Bp("ln_2"), eps), W(fc), &b1);
        for (auto& r : hdn) for (double& e : r) e = gelu(e);
        std::vector<Vec> f = lin(hdn, W(proj), &b2);
        for (int64_t t = 0; t < T; t++) for (int64_t i = 0; i < C; i++) x[size_t(t)][size_t(i)] += f[size_t(t)][size_t(i)];
    }
    x = ln(x, param(m, "transformer.ln_f.weight"), param(m, "transformer.ln_f.bias"), c.layer_norm_epsilon);
    return lin(x, wte, nullptr);
}

// Mean cross-entropy over targets != -1.
inline double loss(const std::vector<Vec>& logits, const std::vector<int32_t>& targets) {
    double total = 0;
    int n = 0;
    for (size_t t = 0; t < logits.size(); t++) {
        if (targets[t] < 0) continue;
        double mx = -INFINITY, z = 0;
        for (double v : logits[t]) mx = std::max(mx, v);
        for (double v : logits[t]) z += std::exp(v - mx);
        total += mx + std::log(z) - logits[t][size_t(targets[t])];
        n++;
    }
    return n ? total / n : 0.0;
}

}  // namespace naive
