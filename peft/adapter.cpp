// peft/adapter.cpp — bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer
// Learning for NLP"; Pfeiffer et al. 2020, "AdapterFusion"), with AdapterHub's semantics.
//
// A small residual MLP is inserted after a sub-layer. For a sub-layer with output f (B,T,C),
// before the model's own residual add (models/gpt.cpp, Hooks::block_output):
//     x ← x + f + g(f),     g(f) = up(act(down(f)))
//     down: Linear C → m with bias,   up: Linear m → C with bias,   m ≪ C (the bottleneck)
// Placement "houlsby": after the attention sub-layer (o_proj) and after the MLP (fc_out);
// "pfeiffer": after the MLP only. act: relu, gelu (tanh approximation, as the model's MLP) or
// silu ("swish" is accepted as AdapterHub's name for it). When not given it is AdapterHub's
// default for the placement: swish for Houlsby, relu for Pfeiffer.
// m = bottleneck_size, or n_embd / reduction_factor (default 16) when it is not given.
//
// Init: down.weight ~ N(0, 0.02) (the model's own Linear init), down.bias = 0;
// up.weight = 0 and up.bias = 0, so the adapted model is the base model exactly at init
// (see Note [Why identity at init is exact]). Houlsby et al. start near the identity
// instead (small random up); zeroing up makes the start exact at no cost in trainability.
//
// Trainable per insertion: 2·C·m + m + C; Houlsby has 2 insertions per layer, Pfeiffer 1.
// Saved keys (this project's names, AdapterHub has no HF PEFT counterpart):
//   base_model.model.transformer.h.{i}.attn_adapter.down.weight [m, C]  .down.bias [m]
//   base_model.model.transformer.h.{i}.attn_adapter.up.weight   [C, m]  .up.bias   [C]
//   ... and mlp_adapter likewise.
//
// Note [Why identity at init is exact]
// up's linear writes y = up.bias = 0, then adds Σ_k a_k · 0 over the bottleneck: each product
// of a finite a_k and +0 is ±0 and a sum of zeros is 0, so g(f) is exactly zero and
// f + g(f) == f bit for bit. The gradient at init reaches up.weight (dyᵀ · act(down f) ≠ 0)
// but not down: its gradient flows through up.weight = 0 and is exactly zero, so the first
// optimizer step moves up, and down starts learning from the second step on.
#include <algorithm>
#include "methods.h"

namespace {

struct BottleneckConfig {
    std::string placement = "houlsby";    // "houlsby" (after attention and MLP) or "pfeiffer" (MLP only)
    int64_t bottleneck_size = 0;          // m, e.g. 8; 0 = not given: m = n_embd / reduction_factor
    double reduction_factor = 16;         // e.g. 16: with n_embd 128, m = 8
    std::string non_linearity;            // "relu", "gelu" or "silu"; default: by placement

    int64_t size(int64_t C) const {   // m (capped so a tiny reduction_factor cannot overflow)
        return bottleneck_size > 0 ? bottleneck_size : int64_t(std::min(double(C) / reduction_factor, 1e12));
    }
    bool houlsby() const { return placement == "houlsby"; }

    // Reads the HF-style fields (ConfigReader, peft.h). C = n_embd, to check that m >= 1.
    static BottleneckConfig from_json(const json& j, int64_t C) {
        BottleneckConfig c;
        ConfigReader f(j, "BOTTLENECK");
        c.placement = f.choice("placement", c.placement, {"houlsby", "pfeiffer"}, "\"houlsby\" or \"pfeiffer\"");
        c.bottleneck_size = f.integer("bottleneck_size", c.bottleneck_size, 1, kMaxSize);
        c.reduction_factor = f.positive_number("reduction_factor", c.reduction_factor);
        c.non_linearity = f.choice("non_linearity", c.houlsby() ? "silu" : "relu", {"relu", "gelu", "silu", "swish"},
                                   "one of relu, gelu, silu (or swish)");
        if (c.non_linearity == "swish") c.non_linearity = "silu";
        f.check(c.size(C) >= 1, fmt::format("the bottleneck size n_embd / `reduction_factor` = {} / {} rounds down to "
                                            "0; use a smaller `reduction_factor` or set `bottleneck_size`",
                                            C, c.reduction_factor));
        f.check(c.size(C) <= kMaxSize,
                fmt::format("`bottleneck_size` {} is larger than the limit {}", c.size(C), kMaxSize));
        f.done();
        return c;
    }
};

// One insertion: g(f) = up(act(down(f))).
struct Bottleneck {
    Linear down, up;
};

// A Linear whose weight and bias are zero: the up-projection at init.
Linear zero_linear(int64_t in, int64_t out) {
    Linear lin;
    lin.in = in;
    lin.out = out;
    lin.weight = Tensor::zeros({out, in});
    lin.bias = Tensor::zeros({out});
    return lin;
}

class BottleneckAdapter : public Method {
public:
    BottleneckAdapter(const BottleneckConfig& cfg, GPT& model, Rng& rng)
        : cfg_(cfg), L_(model.config.n_layer), C_(model.config.n_embd), m_(cfg.size(C_)) {
        model.params.freeze_all();
        act_ = cfg.non_linearity == "gelu" ? gelu : cfg.non_linearity == "silu" ? silu : relu;
        auto make = [&](int64_t l, const char* site) {
            Bottleneck b{Linear(C_, m_, true, rng, 0.02f), zero_linear(m_, C_)};
            const std::string p = fmt::format("base_model.model.transformer.h.{}.{}.", l, site);
            b.down.register_params(params, p + "down");
            b.up.register_params(params, p + "up");
            return b;
        };
        for (int64_t l = 0; l < L_; l++) {
            if (cfg.houlsby()) attn_.push_back(make(l, "attn_adapter"));
            mlp_.push_back(make(l, "mlp_adapter"));
        }
    }

    std::string peft_type() const override { return "BOTTLENECK"; }
    json config_json() const override {
        return {{"placement", cfg_.placement}, {"bottleneck_size", m_}, {"reduction_factor", cfg_.reduction_factor},
                {"non_linearity", cfg_.non_linearity}, {"task_type", "CAUSAL_LM"}};
    }
    int64_t expected_params(const GPTConfig& c) const override {
        const int64_t m = cfg_.size(c.n_embd), per_insertion = 2 * c.n_embd * m + m + c.n_embd;
        return (cfg_.houlsby() ? 2 : 1) * c.n_layer * per_insertion;
    }

    void activate(GPT& model) override {
        ENGINE_CHECK(model.config.n_layer == L_ && model.config.n_embd == C_, ValueError,
                     "bottleneck adapter built for n_layer {} n_embd {} cannot attach to a model with n_layer {} "
                     "n_embd {}", L_, C_, model.config.n_layer, model.config.n_embd);
        model.hooks = this;
    }
    void deactivate(GPT& model) override {
        if (model.hooks == this) model.hooks = nullptr;
    }

    // f: (B,T,C) -> f + up(act(down(f))): (B,T,C). Pfeiffer has no attention adapters.
    Tensor block_output(Site site, int64_t layer, const Tensor& f) override {
        const std::vector<Bottleneck>& at = site == Site::Attn ? attn_ : mlp_;
        if (at.empty()) return f;
        const Bottleneck& b = at[size_t(layer)];
        return add(f, b.up(act_(b.down(f))));
    }

private:
    BottleneckConfig cfg_;
    int64_t L_, C_, m_;
    Tensor (*act_)(const Tensor&) = relu;
    std::vector<Bottleneck> attn_, mlp_;   // one per layer (attn_ empty for Pfeiffer)
};

}  // namespace

std::unique_ptr<Method> make_bottleneck(const json& config, GPT& model, Rng& rng) {
    return std::make_unique<BottleneckAdapter>(BottleneckConfig::from_json(config, model.config.n_embd), model, rng);
}
