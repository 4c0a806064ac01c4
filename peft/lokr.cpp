// peft/lokr.cpp — LoKr: the update is a Kronecker product of a small and a low-rank matrix,
//     ΔW = s · W1 ⊗ W2,   W1: (out_l, in_m),  W2: (out_k, in_n),  out = out_l·out_k,  in = in_m·in_n
// (Yeh et al. 2024, "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to Model
// Evaluation"; Edalati et al. 2022, "KronA"). (W1 ⊗ W2)[i·out_k + k, j·in_n + l] = W1[i,j]·W2[k,l]:
// every block of ΔW is W2 scaled by one entry of W1. Its rank is rank(W1)·rank(W2), so a few
// hundred numbers can make a full-rank update. s = alpha / r.
//
// The shapes, as HF PEFT (from LyCORIS): (in_m, in_n) = factorization(in, decompose_factor),
// (out_l, out_k) = factorization(out, decompose_factor) (lycoris.h). W2 is itself low rank,
// W2 = W2a W2b with W2a (out_k, r), W2b (r, in_n), when r < max(out_k, in_n) / 2, else a full
// "lokr_w2"; with decompose_both, W1 likewise (W1a W1b when r < max(out_l, in_m) / 2).
//
// Init as HF (init_weights true): W1 (or W1a) = 0, the rest kaiming-uniform(a = √5) =
// U(−1/√fan_in, 1/√fan_in) with fan_in the tensor's second size: ΔW = 0, the base bit for bit.
// "lycoris" zeroes W2 (or W2b) instead; false draws everything.
//
// Forward, merge, dropouts: lycoris.h (y = x Wᵀ + b + x ΔWᵀ). The Kronecker product is an op of
// its own below. Saved as HF: "base_model.model.<module>.lokr_w1" or "lokr_w1_a"/"lokr_w1_b",
// and "lokr_w2" or "lokr_w2_a"/"lokr_w2_b".
#include <cmath>
#include "engine/kernels.h"
#include "lycoris.h"

// y = a ⊗ b: a (p, q), b (m, n) -> (p·m, q·n), y[i·m + k, j·n + l] = a[i,j] · b[k,l].
// Backward: da[i,j] = Σ_kl dy[i·m+k, j·n+l] b[k,l],  db[k,l] = Σ_ij dy[i·m+k, j·n+l] a[i,j].
Tensor kron(const Tensor& a, const Tensor& b) {
    ENGINE_CHECK(a.ndim() == 2 && b.ndim() == 2, ShapeError, "kron: needs two matrices, got {} and {}", a.shape().str(),
                 b.shape().str());
    const int64_t p = a.size(0), q = a.size(1), m = b.size(0), n = b.size(1), N = q * n;
    Tensor y = Tensor::empty({p * m, q * n});
    const float *ap = a.data(), *bp = b.data();
    map_rows(y.data(), p * m, N, [ap, bp, q, m, n, N](int64_t idx, int64_t col) {
        const int64_t row = idx / N;
        return ap[(row / m) * q + col / n] * bp[(row % m) * n + col % n];
    });
    Saved as = needs_grad(b) ? save(a) : Saved(), bs = needs_grad(a) ? save(b) : Saved();
    record(y, "kron", {a, b}, [as, bs, p, q, m, n, N](const Tensor& dy, Grads& g) {
        const float* d = dy.data();
        if (g.needs(0)) {
            GradBuf da = g.buf(0);
            for (int64_t i = 0; i < p; i++)
                for (int64_t j = 0; j < q; j++) {
                    double acc = 0;
                    for (int64_t k = 0; k < m; k++)
                        for (int64_t l = 0; l < n; l++) acc += double(d[(i * m + k) * N + j * n + l]) * bs.data()[k * n + l];
                    da.acc(i * q + j, float(acc));
                }
        }
        if (g.needs(1)) {
            GradBuf db = g.buf(1);
            for (int64_t k = 0; k < m; k++)
                for (int64_t l = 0; l < n; l++) {
                    double acc = 0;
                    for (int64_t i = 0; i < p; i++)
                        for (int64_t j = 0; j < q; j++) acc += double(d[(i * m + k) * N + j * n + l]) * as.data()[i * q + j];
                    db.acc(k * n + l, float(acc));
                }
        }
    });
    return y;
}

struct LokrConfig : LycorisConfig {   // r, alpha, rank_dropout, module_dropout, targeting (lycoris.h)
    bool rank_dropout_scale = false;   // rescale kept rows by 1 / kept fraction
    bool decompose_both = false;       // W1 low rank too, e.g. true
    int64_t decompose_factor = -1;     // factorization's limit, −1 = near √dim, e.g. 4
    json init_weights = true;          // true, false or "lycoris"

    static LokrConfig from_json(const json& j, const GPTConfig& model) {
        LokrConfig c;
        ConfigReader f(j, "LOKR");
        c.read(f, model);
        c.rank_dropout_scale = f.boolean("rank_dropout_scale", c.rank_dropout_scale);
        c.decompose_both = f.boolean("decompose_both", c.decompose_both);
        if (const json* v = f.field("decompose_factor")) {
            if (v->is_number_integer() && (v->get<int64_t>() == -1 || (v->get<int64_t>() >= 1 && v->get<int64_t>() <= kMaxSize)))
                c.decompose_factor = v->get<int64_t>();
            else f.reject("decompose_factor", "-1 or a positive integer");
        }
        if (const json* v = f.field("init_weights")) {
            if (v->is_boolean() || *v == "lycoris") c.init_weights = *v;
            else f.reject("init_weights", "true, false or \"lycoris\"");
        }
        f.done();
        return c;
    }
    json to_json() const {
        json j = {{"rank_dropout_scale", rank_dropout_scale}, {"decompose_both", decompose_both},
                  {"decompose_factor", decompose_factor}, {"init_weights", init_weights}};
        write(j);
        return j;
    }
};

// The factor shapes of one Linear, as HF's update_layer decides them.
struct LokrShapes {
    int64_t out_l, out_k, in_m, in_n;
    bool full_w1, full_w2;   // HF's use_w1, use_w2
    LokrShapes(const LokrConfig& c, int64_t r, int64_t in, int64_t out) {
        std::tie(in_m, in_n) = lokr_factorization(in, c.decompose_factor);
        std::tie(out_l, out_k) = lokr_factorization(out, c.decompose_factor);
        full_w1 = !(c.decompose_both && double(r) < double(std::max(out_l, in_m)) / 2);
        full_w2 = !(double(r) < double(std::max(out_k, in_n)) / 2);
    }
    int64_t count(int64_t r) const {
        return (full_w1 ? out_l * in_m : r * (out_l + in_m)) + (full_w2 ? out_k * in_n : r * (out_k + in_n));
    }
};

class Lokr : public DeltaWeightMethod {
public:
    Lokr(const LokrConfig& c, GPT& model, Rng& rng)
        : DeltaWeightMethod(model, {c.rank_dropout, c.module_dropout, c.rank_dropout_scale}), cfg_(c) {
        auto matched = resolve_targets(c.targets, model);   // first: a bad name changes nothing
        model.params.freeze_all();
        const bool lycoris = c.init_weights == "lycoris", random = c.init_weights == false;
        auto init = [&rng](const Shape& s, bool zero) {   // zeros, or U(−1/√fan_in, 1/√fan_in)
            const float bound = 1.f / std::sqrt(float(s[1]));
            return zero ? Tensor::zeros(s) : Tensor::uniform(s, rng, -bound, bound);
        };
        std::vector<std::string> names;
        for (auto& [name, lin] : matched) {
            const int64_t r = c.rank(name);
            const LokrShapes sh(c, r, lin->in, lin->out);
            const std::string key = "base_model.model." + name;
            Factors t;
            t.s = c.scaling(name);
            const bool zero_w1 = !lycoris && !random, zero_w2 = lycoris;
            if (sh.full_w1) params.add(key + ".lokr_w1", t.w1 = init({sh.out_l, sh.in_m}, zero_w1));
            else {
                params.add(key + ".lokr_w1_a", t.w1a = init({sh.out_l, r}, zero_w1));
                params.add(key + ".lokr_w1_b", t.w1b = init({r, sh.in_m}, false));
            }
            if (sh.full_w2) params.add(key + ".lokr_w2", t.w2 = init({sh.out_k, sh.in_n}, zero_w2));
            else {
                params.add(key + ".lokr_w2_a", t.w2a = init({sh.out_k, r}, false));
                params.add(key + ".lokr_w2_b", t.w2b = init({r, sh.in_n}, zero_w2));
            }
            targets_.push_back(t);
            names.push_back(name);
            add_target(lin);
        }
        saved_.attach(c.targets, model, names, params);   // modules_to_save (saved_modules.h)
    }
    std::string peft_type() const override { return "LOKR"; }
    json config_json() const override { return cfg_.to_json(); }
    // Per target: W1's numbers (out_l·in_m, or r·(out_l + in_m)) plus W2's (out_k·in_n, or r·(out_k + in_n)).
    int64_t expected_params(const GPTConfig& g) const override {
        return targeted_count(cfg_.targets, g, [this](const LinearShape& l) {
            const int64_t r = cfg_.rank(l.name);
            return LokrShapes(cfg_, r, l.in, l.out).count(r);
        });
    }

private:
    struct Factors {
        Tensor w1, w1a, w1b, w2, w2a, w2b;   // w1 or (w1a, w1b); w2 or (w2a, w2b)
        float s = 1;                         // alpha / r of this module
    };
    // ΔW = kron(W1, W2) · alpha / r, as HF's make_kron.
    Tensor delta_weight(size_t i) const override {
        const Factors& t = targets_[i];
        Tensor w1 = t.w1.defined() ? t.w1 : matmul(t.w1a, t.w1b), w2 = t.w2.defined() ? t.w2 : matmul(t.w2a, t.w2b);
        return scale(kron(w1, w2), t.s);
    }
    LokrConfig cfg_;
    std::vector<Factors> targets_;
};

std::unique_ptr<Method> make_lokr(const json& config, GPT& model, Rng& rng) {
    return std::make_unique<Lokr>(LokrConfig::from_json(config, model.config), model, rng);
}
