// peft/ia3.cpp — IA³: learned vectors that rescale the activations of frozen target Linears.
//
//   output scaling (default k_proj, v_proj):  y = l ⊙ (x Wᵀ + b),  l: one number per output
//   input scaling  (feedforward_modules, default mlp.fc_out, i.e. the GELU output):
//                                             y = (x ⊙ l) Wᵀ + b,  l: one number per input
// (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
// In-Context Learning"). With the defaults, C + C + 4C = 6C numbers per layer. Init l = 1, as
// HF PEFT: multiplying by 1.0 is exact in floating point, so at init the adapted model is
// bitwise the base model.
//
// Built from engine ops: linear (W is frozen, so it computes no dW and keeps no x for it) and
// mul_row_vector (which keeps what dl needs, the base output or x). Saved as HF PEFT does, under
// "base_model.model.<module>.ia3_l" with shape [out, 1] (output scaling) or [1, in] (input
// scaling); the parameters keep those shapes and a reshape op views them as vectors.
//
// Merge as HF: output scaling scales the rows of W and the bias, W[o,:] ← l[o]·W[o,:],
// b[o] ← l[o]·b[o]; input scaling the columns of W, W[:,i] ← l[i]·W[:,i]. Deviation from HF:
// HF unmerges by dividing by l + 1e-8, which is inexact (and useless where l ≈ 0); here unmerge
// restores copies of W and b taken at merge time, bit for bit (MergeableMethod, peft.h).
#include <algorithm>
#include "engine/kernels.h"
#include "methods.h"
#include "targets.h"

// ---- config

struct Ia3Config {
    Targeting targets;   // target_modules (default ["k_proj", "v_proj", "fc_out"]), exclude_modules (targets.h)
    std::vector<std::string> feedforward_modules{"fc_out"};   // input-scaled targets, e.g. ["fc_out"]
    bool fan_in_fan_out = false;   // true on a gpt2 base (HF's Conv1D layout)
    std::string task_type = "CAUSAL_LM";

    // HF field names; null keeps the default, an unknown key is a warning, and every bad value is
    // reported in one ValueError (ConfigReader, peft.h).
    // HF's defaults on gpt2: target_modules ["c_attn", "mlp.c_proj"], feedforward_modules ["mlp.c_proj"].
    static Ia3Config from_json(const json& j, const GPTConfig& model) {
        Ia3Config c;
        std::vector<std::string> default_targets = {"k_proj", "v_proj", "fc_out"};
        if (model.model_type == "gpt2") default_targets = {"c_attn", "mlp.c_proj"}, c.feedforward_modules = {"mlp.c_proj"};
        ConfigReader f(j, "IA3");
        c.fan_in_fan_out = f.fan_in_fan_out(model);
        c.targets = Targeting::read(f, default_targets, {false, false, false});
        const char* should = "a list of module names (e.g. [\"fc_out\"])";
        c.feedforward_modules = f.names("feedforward_modules", c.feedforward_modules, true, should);
        // HF's rule: feedforward_modules ⊆ target_modules (checked where both are lists)
        const json& tm = c.targets.target_modules();
        std::vector<std::string> outside;
        for (const std::string& m : c.feedforward_modules)
            if (tm.is_array() && std::find(tm.begin(), tm.end(), m) == tm.end()) outside.push_back(m);
        f.check(outside.empty(),
                fmt::format("`feedforward_modules` should be a subset of `target_modules`: [{}] not in {}",
                            fmt::join(outside, ", "), tm.is_array() ? fmt::format("[{}]", fmt::join(tm, ", ")) : tm.dump()));
        f.only("task_type", "CAUSAL_LM", "the models here are \"CAUSAL_LM\"");
        // HF options that would change the computation: refuse them rather than silently ignore them.
        f.done();
        return c;
    }
    json to_json() const {   // what adapter_config.json holds (save_adapter adds peft_type)
        json j = {{"feedforward_modules", feedforward_modules}, {"fan_in_fan_out", fan_in_fan_out},
                  {"task_type", task_type}, {"inference_mode", true}};
        targets.write(j);
        return j;
    }
};

// ---- the method

class Ia3 : public MergeableMethod {
public:
    Ia3(const Ia3Config& c, GPT& model) : MergeableMethod(model), cfg_(c) {
        auto matched = resolve_targets(c.targets, model);   // first: a bad name changes nothing
        model.params.freeze_all();
        for (auto& [name, lin] : matched) {
            const bool ff = target_matches(name, c.feedforward_modules);
            Target t{ff, Tensor::full(ff ? Shape{1, lin->in} : Shape{lin->out, 1}, 1.f)};
            params.add("base_model.model." + name + ".ia3_l", t.l);
            targets_.push_back(t);
            add_target(lin);
        }
        saved_.attach(c.targets, model, {}, params);   // modules_to_save (saved_modules.h)
    }

    std::string peft_type() const override { return "IA3"; }
    json config_json() const override { return cfg_.to_json(); }

    // One number per output (or, for feed-forward targets, per input) of every target.
    // Defaults: C + C + 4C per layer.
    int64_t expected_params(const GPTConfig& g) const override {
        return targeted_count(cfg_.targets, g, [this](const LinearShape& l) {
            return target_matches(l.name, cfg_.feedforward_modules) ? l.in : l.out;
        });
    }

private:
    struct Target {
        bool ff;    // input scaling (feed-forward) or output scaling
        Tensor l;   // [1, in] or [out, 1], as saved
    };
    // The seam: the target Linear scales its input or its output by l.
    struct Wrap : LinearWrap {
        const Target& t;
        explicit Wrap(const Target& t) : t(t) {}
        Tensor forward(const Linear& base, const Tensor& x) override {
            if (t.ff) return base.base_forward(mul_row_vector(x, reshape(t.l, {base.in})));
            return mul_row_vector(base.base_forward(x), reshape(t.l, {base.out}));
        }
    };
    std::shared_ptr<LinearWrap> make_wrap(size_t i) const override { return std::make_shared<Wrap>(targets_[i]); }

    // Input scaling: the columns, W[o, i] · l[i]. Output scaling: the rows, W[o, i] · l[o], and b[o] · l[o].
    void merge_into(size_t i, Linear& lin) const override {
        const Target& t = targets_[i];
        const float *w = lin.weight.data(), *l = t.l.data();
        const int64_t in = lin.in;
        if (t.ff) {
            map_rows(lin.weight.data(), lin.out, in, [w, l](int64_t k, int64_t c) { return w[k] * l[c]; });
            return;
        }
        map_rows(lin.weight.data(), lin.out, in, [w, l, in](int64_t k, int64_t) { return w[k] * l[k / in]; });
        if (lin.bias.defined()) {
            const float* b = lin.bias.data();
            map_n(lin.bias.data(), lin.out, [b, l](int64_t o) { return b[o] * l[o]; });
        }
    }

    Ia3Config cfg_;
    std::vector<Target> targets_;
};

std::unique_ptr<Method> make_ia3(const json& config, GPT& model, Rng& /*rng: l starts at 1, nothing is random*/) {
    return std::make_unique<Ia3>(Ia3Config::from_json(config, model.config), model);
}
