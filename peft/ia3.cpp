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
// restores copies of W and b taken at merge time, bit for bit.
#include <algorithm>
#include <cstring>
#include "engine/kernels.h"
#include "methods.h"

// ---- config

static bool matches_any(const std::string& module, const std::vector<std::string>& names) {
    for (const std::string& n : names)
        if (target_matches(module, n)) return true;
    return false;
}

struct Ia3Config {
    std::vector<std::string> target_modules{"k_proj", "v_proj", "fc_out"};   // e.g. ["k_proj", "v_proj", "fc_out"]
    std::vector<std::string> feedforward_modules{"fc_out"};   // input-scaled targets, e.g. ["fc_out"]
    std::string task_type = "CAUSAL_LM";

    // HF field names; null means the default; unknown keys are ignored. Every bad value is
    // reported in one ValueError.
    static Ia3Config from_json(const json& j) {
        Ia3Config c;
        std::vector<std::string> bad;
        auto field = [&j](const char* key) -> const json* {
            auto it = j.find(key);
            return it == j.end() || it->is_null() ? nullptr : &*it;
        };
        auto names = [&](const char* key, std::vector<std::string>& out, bool may_be_empty) {
            const json* v = field(key);
            if (!v) return;
            bool ok = v->is_array() && (may_be_empty || !v->empty());
            for (const json& e : ok ? *v : json::array()) ok = ok && e.is_string() && !e.get<std::string>().empty();
            if (ok) out = v->get<std::vector<std::string>>();
            else bad.push_back(fmt::format("`{}` should be a list of module names (e.g. [\"k_proj\", \"v_proj\"]) "
                                           "but the value passed is {}", key, v->dump()));
        };
        if (const json* v = field("peft_type"); v && *v != "IA3")
            bad.push_back(fmt::format("`peft_type` is {}, not \"IA3\"", v->dump()));
        names("target_modules", c.target_modules, false);
        names("feedforward_modules", c.feedforward_modules, true);
        std::vector<std::string> outside;   // HF's rule: feedforward_modules ⊆ target_modules
        for (const std::string& f : c.feedforward_modules)
            if (std::find(c.target_modules.begin(), c.target_modules.end(), f) == c.target_modules.end())
                outside.push_back(f);
        if (!outside.empty())
            bad.push_back(fmt::format("`feedforward_modules` should be a subset of `target_modules`: [{}] not in [{}]",
                                      fmt::join(outside, ", "), fmt::join(c.target_modules, ", ")));
        if (const json* v = field("task_type"); v && *v != "CAUSAL_LM")
            bad.push_back(fmt::format("`task_type` = {} is not supported: the models here are \"CAUSAL_LM\"", v->dump()));
        // HF options that would change the computation: refuse them rather than silently ignore them.
        for (const char* key : {"fan_in_fan_out", "modules_to_save", "exclude_modules"})
            if (const json* v = field(key); v && *v != false && !(v->is_structured() && v->empty()))
                bad.push_back(fmt::format("`{}` = {} is not supported here", key, v->dump()));
        if (!bad.empty()) throw ValueError(fmt::format("invalid IA3 config: {}", fmt::join(bad, "; ")));
        return c;
    }
    json to_json() const {   // what adapter_config.json holds (save_adapter adds peft_type)
        return {{"target_modules", target_modules}, {"feedforward_modules", feedforward_modules},
                {"task_type", task_type}, {"inference_mode", true}};
    }
};

// ---- the method

class Ia3 : public Method {
public:
    Ia3(const Ia3Config& c, GPT& model) : cfg_(c), model_(&model) {
        auto matched = match_targets(model, c.target_modules);   // first: a bad name changes nothing
        model.params.freeze_all();
        for (auto& [name, lin] : matched) {
            const bool ff = matches_any(name, c.feedforward_modules);
            Target t{name, lin, ff, Tensor::full(ff ? Shape{1, lin->in} : Shape{lin->out, 1}, 1.f), Tensor(), Tensor(), nullptr};
            params.add("base_model.model." + name + ".ia3_l", t.l);
            targets_.push_back(std::move(t));
        }
    }

    std::string peft_type() const override { return "IA3"; }
    json config_json() const override { return cfg_.to_json(); }

    // One number per output (or, for feed-forward targets, per input) of every target:
    // q,k,v,o are C→C, fc_in C→4C, fc_out 4C→C. Defaults: C + C + 4C per layer.
    int64_t expected_params(const GPTConfig& g) const override {
        const int64_t C = g.n_embd;
        struct Kind { const char* name; int64_t in, out; };
        const Kind kinds[] = {{"attn.q_proj", C, C}, {"attn.k_proj", C, C},    {"attn.v_proj", C, C},
                              {"attn.o_proj", C, C}, {"mlp.fc_in", C, 4 * C}, {"mlp.fc_out", 4 * C, C}};
        int64_t n = 0;
        for (int64_t l = 0; l < g.n_layer; l++)
            for (const Kind& k : kinds) {
                const std::string name = fmt::format("transformer.h.{}.{}", l, k.name);
                if (matches_any(name, cfg_.target_modules)) n += matches_any(name, cfg_.feedforward_modules) ? k.in : k.out;
            }
        return n;
    }

    void activate(GPT& model) override {
        check_model(model);
        active_ = true;
        model.hooks = this;   // only to hear set_training; the Linear wraps do the work
        if (!merged_) install(true);
    }
    // Disabling gives exactly the base model back: a merged adapter is unmerged first.
    void deactivate(GPT& model) override {
        check_model(model);
        active_ = false;
        if (merged_) unmerge(model);
        install(false);
        if (model.hooks == this) model.hooks = nullptr;
    }

    bool can_merge() const override { return true; }
    void merge(GPT& model) override {
        check_model(model);
        ENGINE_CHECK(!merged_, ValueError, "IA3: the adapter is already merged into the base weights (unmerge it first)");
        for (Target& t : targets_) {
            Linear& lin = *t.lin;
            t.W_orig = lin.weight.clone(Mem::Params);
            const float *w = lin.weight.data(), *l = t.l.data();
            const int64_t in = lin.in;
            if (t.ff)   // the columns: W[o, i] · l[i]
                map_rows(lin.weight.data(), lin.out, in, [w, l](int64_t k, int64_t i) { return w[k] * l[i]; });
            else        // the rows: W[o, i] · l[o], and b[o] · l[o]
                map_rows(lin.weight.data(), lin.out, in, [w, l, in](int64_t k, int64_t) { return w[k] * l[k / in]; });
            if (!t.ff && lin.bias.defined()) {
                t.b_orig = lin.bias.clone(Mem::Params);
                const float* b = lin.bias.data();
                map_n(lin.bias.data(), lin.out, [b, l](int64_t o) { return b[o] * l[o]; });
            }
        }
        install(false);   // the forward is now the plain base forward on the merged W, b
        merged_ = true;
    }
    void unmerge(GPT& model) override {
        check_model(model);
        ENGINE_CHECK(merged_, ValueError, "IA3: the adapter is not merged, so there is nothing to unmerge");
        for (Target& t : targets_) {   // restore the copies: exact, unlike dividing by l
            std::memcpy(t.lin->weight.data(), t.W_orig.data(), t.W_orig.nbytes());
            if (t.b_orig.defined()) std::memcpy(t.lin->bias.data(), t.b_orig.data(), t.b_orig.nbytes());
            t.W_orig = t.b_orig = Tensor();
        }
        merged_ = false;
        if (active_) install(true);
    }

    void load_state(const std::map<std::string, Tensor>& tensors, const std::string& file) override {
        ENGINE_CHECK(!merged_, ValueError, "{}: cannot load IA3 vectors while merged (unmerge first)", file);
        Method::load_state(tensors, file);
    }

private:
    struct Target {
        std::string name;   // "transformer.h.0.attn.k_proj"
        Linear* lin;
        bool ff;            // input scaling (feed-forward) or output scaling
        Tensor l;           // [1, in] or [out, 1], as saved
        Tensor W_orig, b_orig;   // the base weights while merged
        std::shared_ptr<LinearWrap> wrap;   // the seam, while installed
    };
    // The seam: the target Linear scales its input or its output by l.
    struct Wrap : LinearWrap {
        const Target& t;
        explicit Wrap(const Target& t) : t(t) {}
        Tensor forward(const Linear& base, const Tensor& x) override {
            if (t.ff) return linear(mul_row_vector(x, reshape(t.l, {base.in})), base.weight, base.bias);
            return mul_row_vector(linear(x, base.weight, base.bias), reshape(t.l, {base.out}));
        }
    };
    // Puts this adapter's seams on its targets, or takes them off (only its own: never another's).
    void install(bool on) {
        for (Target& t : targets_) {
            if (on) t.lin->wrap = t.wrap = std::make_shared<Wrap>(t);
            else if (t.lin->wrap == t.wrap) t.lin->wrap = nullptr;
        }
    }
    void check_model(const GPT& model) const {
        ENGINE_CHECK(&model == model_, ValueError, "IA3: this adapter was attached to another model");
    }

    Ia3Config cfg_;
    GPT* model_;   // the model the targets belong to
    std::vector<Target> targets_;
    bool active_ = false, merged_ = false;
};

std::unique_ptr<Method> make_ia3(const json& config, GPT& model, Rng& /*rng: l starts at 1, nothing is random*/) {
    return std::make_unique<Ia3>(Ia3Config::from_json(config), model);
}
