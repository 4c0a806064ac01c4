// peft/oft.cpp — OFT: a multiplicative update that rotates each target Linear's input,
//     y = (x R) Wᵀ + b,   i.e. W' = W Rᵀ,   R = diag(R₁, …, R_n) block-diagonal, each Rᵢ (b, b) orthogonal
// (Qiu et al. 2023, "Controlling Text-to-Image Diffusion by Orthogonal Finetuning"; Liu et al.
// 2024, "Parameter-Efficient Orthogonal Finetuning via Butterfly Factorization"; HF PEFT's
// current OFT, from 0.15 on). An orthogonal R keeps the angles between W's input directions —
// the "hyperspherical energy" the paper argues pretrained weights keep their knowledge in.
//
// HF's current parameterisation, followed here: give either `oft_block_size` b (default 32) or
// `r`, the number of blocks (default 0), never both; in = r·b. Each block trains the upper
// triangle of a skew-symmetric Q (Qᵀ = −Q), b(b−1)/2 numbers, saved as one row of
// "base_model.model.<module>.oft_R.weight" [r, b(b−1)/2] (torch.triu_indices order, row-major);
// with `block_share` one row serves every block. R comes from Q by the Cayley transform:
//   use_cayley_neumann: true (HF's default)  R = I + 2Q + 2Q² + … + 2Q^(k−2) + Q^(k−1), k =
//       num_cayley_neumann_terms (5): the Neumann series of (I + Q)(I − Q)⁻¹ truncated as HF
//       truncates it (k = 2: I + 2Q; k = 3 and 4 both stop at Q³). Only approximately
//       orthogonal (error O(‖Q‖ᵏ)), cheaper, and what HF trains by default.
//   use_cayley_neumann: false                 R = (I − Q)(I + Q)⁻¹ exactly (LAPACK solve),
//       orthogonal to rounding. Note the direction: for the same Q this is the inverse of the
//       Neumann variant's limit, as in HF; a saved adapter says which one it used.
// Init as HF: Q = 0, so R = I exactly and the model is the base, bit for bit (x·1 + 0·… = x);
// init_weights false draws Q ~ N(0, 0.1²).
//
// Deviation from HF: a block size (or r) that does not divide a target's input width is an
// error naming the width and the nearest divisor (HF silently adjusts it with a warning).
// `coft` (constrained OFT) rescales each block's Q to Frobenius norm ≤ eps/√(rows) before every
// forward, as HF does; `module_dropout` replaces int(p·r) random blocks by I while training.
//
// Merge: W ← W Rᵀ (W'[o, j] = Σᵢ W[o, i] R[j, i]), HF's (R Wᵀ)ᵀ; unmerge restores the copy.
#include <cmath>
#include "engine/blas.h"
#include "engine/linalg.h"
#include "oft.h"
#include "methods.h"
#include "targets.h"

// ---- the ops

// HF's truncation of the Cayley–Neumann series as coefficients c_p of Q^p.
static std::vector<float> neumann_coefficients(int64_t terms) {
    std::vector<float> c{1.f};
    if (terms > 1) c.push_back(2.f);
    if (terms > 2) {
        c.push_back(2.f);
        for (int64_t i = 3; i < terms - 1; i++) c.push_back(2.f);
        c.push_back(1.f);
    }
    return c;
}

// C (b, b) = op(A) op(B) for small row-major square matrices.
static void small_mm(int64_t b, const float* A, bool ta, const float* B, bool tb, float* C, float beta = 0.f) {
    gemm(ta ? Trans::T : Trans::N, tb ? Trans::T : Trans::N, b, b, b, 1.f, A, B, beta, C);
}

// R (n, b, b) from the upper triangles `w` (n, b(b−1)/2); terms ≤ 0 means the exact Cayley transform.
Tensor oft_rotation(const Tensor& w, int64_t b, int64_t terms) {
    const int64_t n = w.size(0), ne = b * (b - 1) / 2, bb = b * b;
    ENGINE_CHECK(w.ndim() == 2 && w.size(1) == ne, ShapeError, "oft_rotation: weight {} must be (n, {}) for block size {}",
                 w.shape().str(), ne, b);
    Tensor Q = Tensor::zeros({n, b, b}), R = Tensor::zeros({n, b, b});
    Tensor M = terms <= 0 ? Tensor::empty({n, b, b}) : Tensor();   // (I + Q)⁻¹ for the exact transform
    const std::vector<float> c = neumann_coefficients(terms);
    for (int64_t k = 0; k < n; k++) {
        float *q = Q.data() + k * bb, *r = R.data() + k * bb;
        for (int64_t i = 0, t = 0; i < b; i++)
            for (int64_t j = i + 1; j < b; j++, t++) q[i * b + j] = w.data()[k * ne + t], q[j * b + i] = -w.data()[k * ne + t];
        if (terms > 0) {   // R = Σ c_p Q^p
            std::vector<float> P(static_cast<size_t>(bb), 0.f), next(static_cast<size_t>(bb));
            for (int64_t i = 0; i < b; i++) P[size_t(i * b + i)] = 1.f;
            for (size_t p = 0; p < c.size(); p++) {
                for (int64_t e = 0; e < bb; e++) r[e] += c[p] * P[size_t(e)];
                if (p + 1 < c.size()) small_mm(b, P.data(), false, q, false, next.data()), P.swap(next);
            }
        } else {            // R = (I − Q)(I + Q)⁻¹
            Tensor IpQ = Tensor::empty({b, b}), I = Tensor::zeros({b, b});
            for (int64_t e = 0; e < bb; e++) IpQ.data()[e] = q[e] + (e % (b + 1) == 0 ? 1.f : 0.f);
            for (int64_t i = 0; i < b; i++) I.data()[i * b + i] = 1.f;
            Tensor inv = solve(IpQ, I);
            std::copy(inv.data(), inv.data() + bb, M.data() + k * bb);
            std::vector<float> ImQ(static_cast<size_t>(bb));
            for (int64_t e = 0; e < bb; e++) ImQ[size_t(e)] = (e % (b + 1) == 0 ? 1.f : 0.f) - q[e];
            small_mm(b, ImQ.data(), false, inv.data(), false, r);
        }
    }
    Saved Qs = save(Q), Rs = terms <= 0 ? save(R) : Saved(), Ms = terms <= 0 ? save(M) : Saved();
    record(R, "oft_rotation", {w}, [Qs, Rs, Ms, c, n, b, ne, bb, terms](const Tensor& dR, Grads& g) {
        // dQ from dR, then dw[t] = dQ[i, j] − dQ[j, i] for the t-th upper-triangle entry (i, j).
        GradBuf dw = g.buf(0);
        std::vector<float> dQ(static_cast<size_t>(bb)), T1(static_cast<size_t>(bb)), T2(static_cast<size_t>(bb));
        for (int64_t k = 0; k < n; k++) {
            const float *q = Qs.data() + k * bb, *dr = dR.data() + k * bb;
            std::fill(dQ.begin(), dQ.end(), 0.f);
            if (terms > 0) {
                // R = Σ c_p Q^p  ⇒  dQ = Σ_p c_p Σ_{i<p} (Q^i)ᵀ dR (Q^(p−1−i))ᵀ
                std::vector<std::vector<float>> pw(c.size(), std::vector<float>(size_t(bb), 0.f));
                for (int64_t i = 0; i < b; i++) pw[0][size_t(i * b + i)] = 1.f;
                for (size_t p = 1; p < c.size(); p++) small_mm(b, pw[p - 1].data(), false, q, false, pw[p].data());
                for (size_t p = 1; p < c.size(); p++)
                    for (size_t i = 0; i < p; i++) {
                        small_mm(b, pw[i].data(), true, dr, false, T1.data());
                        small_mm(b, T1.data(), false, pw[p - 1 - i].data(), true, T2.data());
                        for (int64_t e = 0; e < bb; e++) dQ[size_t(e)] += c[p] * T2[size_t(e)];
                    }
            } else {
                // R = (I − Q) M, M = (I + Q)⁻¹  ⇒  dQ = −(I + Rᵀ) dR Mᵀ
                const float *r = Rs.data() + k * bb, *m = Ms.data() + k * bb;
                small_mm(b, dr, false, m, true, T1.data());   // dR Mᵀ
                small_mm(b, r, true, T1.data(), false, T2.data());   // Rᵀ dR Mᵀ
                for (int64_t e = 0; e < bb; e++) dQ[size_t(e)] = -(T1[size_t(e)] + T2[size_t(e)]);
            }
            for (int64_t i = 0, t = 0; i < b; i++)
                for (int64_t j = i + 1; j < b; j++, t++) dw.acc(k * ne + t, dQ[size_t(i * b + j)] - dQ[size_t(j * b + i)]);
        }
    });
    return R;
}

// x (..., n·b) -> y with y[..., blk·b + j] = Σ_i x[..., blk·b + i] R[blk', i, j]; blk' = blk, or 0
// when R holds one shared block. dx = dy Rᵀ per block; dR = xᵀ dy per block (summed when shared).
Tensor block_rotate(const Tensor& x, const Tensor& R) {
    const int64_t b = R.size(1), in = x.shape().back(), rows = x.numel() / in, n = in / b, nR = R.size(0);
    ENGINE_CHECK(R.ndim() == 3 && R.size(2) == b && in % b == 0 && (nR == n || nR == 1), ShapeError,
                 "block_rotate: x {} and R {} do not fit (R must be (in / b or 1, b, b))", x.shape().str(), R.shape().str());
    Tensor y = Tensor::empty(x.shape());
    for (int64_t k = 0; k < n; k++)
        gemm_ld(Trans::N, Trans::N, rows, b, b, 1.f, x.data() + k * b, in, R.data() + (nR == 1 ? 0 : k) * b * b, b, 0.f,
                y.data() + k * b, in);
    Saved xs = needs_grad(R) ? save(x) : Saved(), Rs = needs_grad(x) ? save(R) : Saved();
    record(y, "block_rotate", {x, R}, [xs, Rs, b, in, rows, n, nR](const Tensor& dy, Grads& g) {
        if (g.needs(0)) {
            GradBuf dx = g.buf(0);
            for (int64_t k = 0; k < n; k++)
                gemm_ld(Trans::N, Trans::T, rows, b, b, 1.f, dy.data() + k * b, in, Rs.data() + (nR == 1 ? 0 : k) * b * b, b,
                        dx.beta, dx.p + k * b, in);
        }
        if (g.needs(1)) {
            GradBuf dR = g.buf(1);
            for (int64_t k = 0; k < n; k++) {
                const float beta = (nR == 1 && k > 0) ? 1.f : dR.beta;
                gemm_ld(Trans::T, Trans::N, b, b, rows, 1.f, xs.data() + k * b, in, dy.data() + k * b, in, beta,
                        dR.p + (nR == 1 ? 0 : k) * b * b, b);
            }
        }
    });
    return y;
}

// ---- config

struct OftConfig {
    int64_t r = 0;                    // number of blocks per target (or give oft_block_size), e.g. 4
    int64_t oft_block_size = 32;      // block size b (or give r), e.g. 32
    double module_dropout = 0;        // blocks replaced by I while training, e.g. 0.1
    bool coft = false;                // constrained OFT: ‖Q‖ ≤ eps, e.g. true
    double eps = 6e-5;                // COFT's radius, e.g. 6e-5
    bool block_share = false;         // one Q for every block, e.g. true
    bool use_cayley_neumann = true;   // truncated series (true) or the exact transform
    int64_t num_cayley_neumann_terms = 5;
    bool init_weights = true;         // Q = 0 (identity at init)
    bool fan_in_fan_out = false;      // true on a gpt2 base (HF's Conv1D layout)
    Targeting targets;                // target_modules, exclude_modules, layers_to_transform, modules_to_save,
                                      // bias (targets.h)

    static OftConfig from_json(const json& j, const GPTConfig& model) {
        OftConfig c;
        ConfigReader f(j, "OFT");
        c.r = f.integer("r", c.r, 0, kMaxSize);
        c.oft_block_size = f.integer("oft_block_size", f.field("r") && c.r > 0 && !f.field("oft_block_size") ? 0 : c.oft_block_size, 0, kMaxSize);
        f.check(c.r == 0 || c.oft_block_size == 0,
                fmt::format("You can only specify either `r` ({}) or `oft_block_size` ({}), but not both, because "
                            "r × oft_block_size == in_features", c.r, c.oft_block_size));
        f.check(c.r != 0 || c.oft_block_size != 0, "Either `r` or `oft_block_size` must be non-zero");
        f.check(c.oft_block_size != 1, "`oft_block_size` = 1 has no rotation to learn (b(b−1)/2 = 0)");
        c.module_dropout = f.probability("module_dropout", c.module_dropout);
        c.coft = f.boolean("coft", c.coft);
        c.eps = f.positive_number("eps", c.eps);
        c.block_share = f.boolean("block_share", c.block_share);
        c.use_cayley_neumann = f.boolean("use_cayley_neumann", c.use_cayley_neumann);
        c.num_cayley_neumann_terms = f.integer("num_cayley_neumann_terms", c.num_cayley_neumann_terms, 1, 64);
        c.init_weights = f.boolean("init_weights", c.init_weights);
        c.fan_in_fan_out = f.fan_in_fan_out(model);
        c.targets = Targeting::read(f, default_targets(model), {true, false, true, "oft_only"});
        f.only("task_type", "CAUSAL_LM", "the models here are \"CAUSAL_LM\"");
        f.done();
        return c;
    }
    json to_json() const {
        json j = {{"r", r}, {"oft_block_size", oft_block_size}, {"module_dropout", module_dropout}, {"coft", coft},
                  {"eps", eps}, {"block_share", block_share}, {"use_cayley_neumann", use_cayley_neumann},
                  {"num_cayley_neumann_terms", num_cayley_neumann_terms}, {"init_weights", init_weights},
                  {"fan_in_fan_out", fan_in_fan_out}, {"bias", "none"}, {"task_type", "CAUSAL_LM"}, {"inference_mode", true}};
        targets.write(j);
        return j;
    }
    // The block size for a target with `in` inputs; ValueError naming the field when it does not divide.
    int64_t block_size(int64_t in, const std::string& module) const {
        const int64_t want = oft_block_size ? oft_block_size : r;
        if (want <= in && in % want == 0) return oft_block_size ? oft_block_size : in / r;
        int64_t lo = std::min(want, in), hi = want;
        while (lo > 1 && in % lo != 0) lo--;
        while (hi < in && in % hi != 0) hi++;
        const int64_t nearest = want >= in ? in : (want - lo <= hi - want ? lo : hi);
        throw ValueError(fmt::format("{}: `{}` = {} does not divide its input width {} (the nearest that does: {})", module,
                                     oft_block_size ? "oft_block_size" : "r", want, in, nearest));
    }
};

// ---- the method

class Oft : public MergeableMethod {
public:
    Oft(const OftConfig& c, GPT& model, Rng& rng) : MergeableMethod(model), cfg_(c), dropout_rng_(&model.dropout_rng) {
        auto matched = resolve_targets(c.targets, model);   // first: a bad name changes nothing
        std::vector<int64_t> sizes;
        for (auto& [name, lin] : matched) sizes.push_back(c.block_size(lin->in, name));   // all checked first
        model.params.freeze_all();
        std::vector<std::string> names;
        for (size_t k = 0; k < matched.size(); k++) {
            const auto& [name, lin] = matched[k];
            const int64_t b = sizes[k], rows = c.block_share ? 1 : lin->in / b;
            Target t{b, c.init_weights ? Tensor::zeros({rows, b * (b - 1) / 2}) : Tensor::randn({rows, b * (b - 1) / 2}, rng, 0.1f)};
            params.add("base_model.model." + name + ".oft_R.weight", t.weight);
            targets_.push_back(t);
            names.push_back(name);
            add_target(lin);
        }
        saved_.attach(c.targets, model, names, params);   // modules_to_save, bias (saved_modules.h)
    }
    std::string peft_type() const override { return "OFT"; }
    json config_json() const override { return cfg_.to_json(); }
    // Per target: (in / b, or 1 with block_share) · b(b−1)/2.
    int64_t expected_params(const GPTConfig& g) const override {
        return targeted_count(cfg_.targets, g, [this](const LinearShape& l) {
            const int64_t b = cfg_.block_size(l.in, l.name);
            return (cfg_.block_share ? 1 : l.in / b) * b * (b - 1) / 2;
        });
    }
    // R of target i (n, b, b), with COFT's projection and module dropout applied as HF does.
    Tensor rotation(size_t i) const {
        const Target& t = targets_[i];
        if (cfg_.coft) {   // HF: Q ← eps'·Q/‖Q‖ where ‖Q‖_F = √2·‖row‖ > eps' = eps/√rows, in place, no gradient
            const int64_t rows = t.weight.size(0), ne = t.weight.size(1);
            const double e = cfg_.eps / std::sqrt(double(rows));
            for (int64_t k = 0; k < rows; k++) {
                float* w = t.weight.data() + k * ne;
                double ss = 0;
                for (int64_t j = 0; j < ne; j++) ss += 2.0 * w[j] * w[j];
                if (std::sqrt(ss) > e)
                    for (int64_t j = 0; j < ne; j++) w[j] = float(w[j] * e / std::sqrt(ss));
            }
        }
        Tensor R = oft_rotation(t.weight, t.b, cfg_.use_cayley_neumann ? cfg_.num_cayley_neumann_terms : 0);
        const int64_t n = R.size(0), bb = t.b * t.b;
        if (training && cfg_.module_dropout > 0 && n > 1) {   // int(p·n) random blocks become I
            std::vector<int64_t> order(static_cast<size_t>(n));
            for (int64_t k = 0; k < n; k++) order[size_t(k)] = k;
            for (int64_t k = n - 1; k > 0; k--) std::swap(order[size_t(k)], order[dropout_rng_->below(uint64_t(k + 1))]);
            Tensor keep = Tensor::full(R.shape(), 1.f), eye = Tensor::zeros(R.shape());
            for (int64_t d = 0; d < int64_t(cfg_.module_dropout * double(n)); d++) {
                const int64_t k = order[size_t(d)];
                for (int64_t e = 0; e < bb; e++) keep.data()[k * bb + e] = 0.f;
                for (int64_t j = 0; j < t.b; j++) eye.data()[k * bb + j * t.b + j] = 1.f;
            }
            R = add(mul(R, keep), eye);
        }
        return R;
    }

private:
    struct Target {
        int64_t b;
        Tensor weight;   // (in / b or 1, b(b−1)/2): the upper triangles of Q
    };
    struct Wrap : LinearWrap {
        const Oft& m;
        size_t i;
        Wrap(const Oft& m, size_t i) : m(m), i(i) {}
        Tensor forward(const Linear& base, const Tensor& x) override { return base.base_forward(block_rotate(x, m.rotation(i))); }
    };
    std::shared_ptr<LinearWrap> make_wrap(size_t i) const override { return std::make_shared<Wrap>(*this, i); }
    // W ← W Rᵀ: W'[o, blk·b + j] = Σ_i W[o, blk·b + i] R_blk[j, i]
    void merge_into(size_t i, Linear& lin) const override {
        NoGradGuard no_graph;
        const Tensor R = rotation(i);
        const int64_t b = targets_[i].b, n = lin.in / b, nR = R.size(0);
        const Tensor W = lin.weight.clone();
        for (int64_t k = 0; k < n; k++)
            gemm_ld(Trans::N, Trans::T, lin.out, b, b, 1.f, W.data() + k * b, lin.in, R.data() + (nR == 1 ? 0 : k) * b * b, b,
                    0.f, lin.weight.data() + k * b, lin.in);
    }
    OftConfig cfg_;
    Rng* dropout_rng_;
    std::vector<Target> targets_;
};

std::unique_ptr<Method> make_oft(const json& config, GPT& model, Rng& rng) {
    return std::make_unique<Oft>(OftConfig::from_json(config, model.config), model, rng);
}
