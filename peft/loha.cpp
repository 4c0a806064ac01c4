// peft/loha.cpp — LoHa: the update is the Hadamard (elementwise) product of two low-rank products,
//     ΔW = s · (W1a W1b) ⊙ (W2a W2b),   W1a, W2a: (out, r),  W1b, W2b: (r, in),  s = alpha / r
// (Hyeon-Woo et al. 2022, "FedPara: Low-Rank Hadamard Product for Communication-Efficient
// Federated Learning"; in LyCORIS for diffusion models). Each product has rank ≤ r, but their
// elementwise product can reach rank r²: a higher-rank update for 2·r·(in + out) numbers, twice
// LoRA's count at the same r.
//
// Init as HF PEFT (init_weights true): W1a, W1b, W2a ~ kaiming-uniform(a = √5), i.e.
// U(−1/√fan_in, 1/√fan_in) with fan_in the tensor's second size, and W2b = 0, so ΔW = 0 and the
// model starts as the base, bit for bit (x·0 = 0, y + 0 = y). init_weights false draws W2b as well.
//
// Forward, merge and dropouts are lycoris.h's: y = x Wᵀ + b + x ΔWᵀ, ΔW built with engine ops
// (matmul, mul, scale), so autograd carries its gradient back into the four factors.
// Saved as HF: "base_model.model.<module>.hada_w1_a" [out, r], "hada_w1_b" [r, in], "hada_w2_a"
// [out, r], "hada_w2_b" [r, in] (HF's ParameterDict keys have no ".weight").
#include <cmath>
#include "lycoris.h"

struct LohaConfig : LycorisConfig {   // r, alpha, rank_dropout, module_dropout, targeting (lycoris.h)
    bool init_weights = true;   // W2b = 0 (identity at init), e.g. true

    static LohaConfig from_json(const json& j, const GPTConfig& model) {
        LohaConfig c;
        ConfigReader f(j, "LOHA");
        c.read(f, model);
        c.init_weights = f.boolean("init_weights", c.init_weights);
        f.done();
        return c;
    }
    json to_json() const {
        json j = {{"init_weights", init_weights}};
        write(j);
        return j;
    }
};

class Loha : public DeltaWeightMethod {
public:
    Loha(const LohaConfig& c, GPT& model, Rng& rng)
        : DeltaWeightMethod(model, {c.rank_dropout, c.module_dropout, true}), cfg_(c) {
        auto matched = resolve_targets(c.targets, model);   // first: a bad name changes nothing
        model.params.freeze_all();
        auto kaiming = [&rng](const Shape& s) {   // U(−1/√fan_in, 1/√fan_in), fan_in = s[1]
            const float bound = 1.f / std::sqrt(float(s[1]));
            return Tensor::uniform(s, rng, -bound, bound);
        };
        std::vector<std::string> names;
        for (auto& [name, lin] : matched) {
            const int64_t r = c.rank(name);
            Factors t{kaiming({lin->out, r}), kaiming({r, lin->in}), kaiming({lin->out, r}),
                      c.init_weights ? Tensor::zeros({r, lin->in}) : kaiming({r, lin->in}), c.scaling(name)};
            const std::string key = "base_model.model." + name;
            params.add(key + ".hada_w1_a", t.w1a);
            params.add(key + ".hada_w1_b", t.w1b);
            params.add(key + ".hada_w2_a", t.w2a);
            params.add(key + ".hada_w2_b", t.w2b);
            targets_.push_back(t);
            names.push_back(name);
            add_target(lin);
        }
        saved_.attach(c.targets, model, names, params);   // modules_to_save (saved_modules.h)
    }
    std::string peft_type() const override { return "LOHA"; }
    json config_json() const override { return cfg_.to_json(); }
    // 2·r·(in + out) per target (r from rank_pattern where a key matches).
    int64_t expected_params(const GPTConfig& g) const override {
        return targeted_count(cfg_.targets, g, [this](const LinearShape& l) { return 2 * cfg_.rank(l.name) * (l.in + l.out); });
    }

private:
    struct Factors {
        Tensor w1a, w1b, w2a, w2b;
        float s;   // alpha / r of this module
    };
    // ΔW = ((W1a W1b) ⊙ (W2a W2b)) · alpha / r, in HF's order.
    Tensor delta_weight(size_t i) const override {
        const Factors& t = targets_[i];
        return scale(mul(matmul(t.w1a, t.w1b), matmul(t.w2a, t.w2b)), t.s);
    }
    LohaConfig cfg_;
    std::vector<Factors> targets_;
};

std::unique_ptr<Method> make_loha(const json& config, GPT& model, Rng& rng) {
    return std::make_unique<Loha>(LohaConfig::from_json(config, model.config), model, rng);
}
