// peft/vera.cpp — VeRA: one pair of random, frozen matrices shared by every layer; each layer
// trains only two scaling vectors,
//     y = x Wᵀ + b + λ_b ⊙ ((λ_d ⊙ (drop(x) Aᵀ)) Bᵀ),   i.e. ΔW = diag(λ_b) B diag(λ_d) A
// (Kopiczko et al. 2024, "VeRA: Vector-based Random Matrix Adaptation"). A (r, max_in) and
// B (max_out, r) are drawn once for the whole model; a layer with `in` inputs and `out` outputs
// uses the slices A[:, :in] and B[:out, :]. Trainable per target: λ_b (out) and λ_d (r), so a
// large r costs almost nothing (out + r numbers; HF's default r is 256).
//
// Init as HF PEFT: λ_b = 0 (so ΔW = 0: the base model, bit for bit), λ_d = d_initial (0.1);
// A and B kaiming-uniform with gain √2: U(−√6/√fan_in, √6/√fan_in), fan_in = their second size
// (max_in for A, r for B), A drawn first, then B.
//
// The generator: HF seeds torch's CPU generator with `projection_prng_key`; torch's stream is
// not reproducible outside torch, so here A and B come from this project's generator
// (engine/rng.h, xoshiro256** seeded with projection_prng_key through splitmix64), the same
// numbers on every machine and every load. That is why `save_projection` (default true, as
// HF) matters for portability: the file then also holds "base_model.vera_A" and
// "base_model.vera_B", and loading uses them instead of regenerating; HF-made files load here
// the same way. Loaded or regenerated, their shapes must be (r, max_in) and (max_out, r).
//
// Saved as HF: "base_model.model.<module>.vera_lambda_b" [out], "…vera_lambda_d" [r].
// Merge: W ← W + λ_b[:, None] · ((B ⊙ λ_d) A), as HF's get_delta_weight.
#include <cmath>
#include <cstring>
#include "engine/blas.h"
#include "methods.h"
#include "targets.h"

struct VeraConfig {
    int64_t r = 256;                 // rows of A / columns of B, shared: e.g. 256
    uint64_t projection_prng_key = 0;   // seed of A and B, e.g. 0
    bool save_projection = true;     // store A and B in the file, e.g. true
    double vera_dropout = 0;         // dropout on the branch input while training, e.g. 0.1
    double d_initial = 0.1;          // initial λ_d, e.g. 0.1
    bool fan_in_fan_out = false;     // true on a gpt2 base (HF's Conv1D layout)
    Targeting targets;               // target_modules, exclude_modules, layers_to_transform, modules_to_save,
                                     // bias (targets.h); no rank_pattern: one r is shared by all layers

    static VeraConfig from_json(const json& j, const GPTConfig& model) {
        VeraConfig c;
        ConfigReader f(j, "VERA");
        c.r = f.integer("r", c.r, 1, 65536);
        if (const json* v = f.field("projection_prng_key")) {
            if (v->is_number_unsigned() || (v->is_number_integer() && v->get<int64_t>() >= 0)) c.projection_prng_key = v->get<uint64_t>();
            else f.reject("projection_prng_key", "a non-negative integer");
        }
        c.save_projection = f.boolean("save_projection", c.save_projection);
        c.vera_dropout = f.probability("vera_dropout", c.vera_dropout);
        if (const json* v = f.field("d_initial")) {
            if (v->is_number() && std::isfinite(v->get<double>()) && std::fabs(v->get<double>()) < 1e30) c.d_initial = v->get<double>();
            else f.reject("d_initial", "a finite number");
        }
        c.fan_in_fan_out = f.fan_in_fan_out(model);
        c.targets = Targeting::read(f, default_targets(model), {true, false, true, "vera_only"});
        f.only("init_weights", true, "only true (λ_b = 0, λ_d = d_initial)");
        f.only("task_type", "CAUSAL_LM", "the models here are \"CAUSAL_LM\"");
        f.done();
        return c;
    }
    json to_json() const {
        json j = {{"r", r}, {"projection_prng_key", projection_prng_key}, {"save_projection", save_projection},
                  {"vera_dropout", vera_dropout}, {"d_initial", d_initial}, {"fan_in_fan_out", fan_in_fan_out},
                  {"bias", "none"}, {"init_weights", true}, {"task_type", "CAUSAL_LM"}, {"inference_mode", true}};
        targets.write(j);
        return j;
    }
};

// A (r, max_in) then B (max_out, r), each U(−√6/√fan_in, √6/√fan_in), from Rng(key).
static std::pair<Tensor, Tensor> vera_projections(uint64_t key, int64_t r, int64_t max_in, int64_t max_out) {
    Rng rng(key);
    const float ba = std::sqrt(6.f / float(max_in)), bb = std::sqrt(6.f / float(r));
    Tensor A = Tensor::uniform({r, max_in}, rng, -ba, ba, Mem::Params);
    Tensor B = Tensor::uniform({max_out, r}, rng, -bb, bb, Mem::Params);
    return {A, B};
}

class Vera : public MergeableMethod {
public:
    Vera(const VeraConfig& c, GPT& model) : MergeableMethod(model), cfg_(c), dropout_rng_(&model.dropout_rng) {
        auto matched = resolve_targets(c.targets, model);   // first: a bad name changes nothing
        model.params.freeze_all();
        for (auto& [name, lin] : matched) max_in_ = std::max(max_in_, lin->in), max_out_ = std::max(max_out_, lin->out);
        std::tie(A_, B_) = vera_projections(c.projection_prng_key, c.r, max_in_, max_out_);
        std::vector<std::string> names;
        for (auto& [name, lin] : matched) {
            Target t{lin->in, lin->out, Tensor::zeros({lin->out}), Tensor::full({c.r}, float(c.d_initial)), Tensor(), Tensor()};
            params.add("base_model.model." + name + ".vera_lambda_b", t.lambda_b);
            params.add("base_model.model." + name + ".vera_lambda_d", t.lambda_d);
            targets_.push_back(t);
            names.push_back(name);
            add_target(lin);
        }
        saved_.attach(c.targets, model, names, params);   // modules_to_save, bias (saved_modules.h)
        slice();
    }
    std::string peft_type() const override { return "VERA"; }
    json config_json() const override { return cfg_.to_json(); }
    // out + r per target (A and B are frozen and shared).
    int64_t expected_params(const GPTConfig& g) const override {
        return targeted_count(cfg_.targets, g, [this](const LinearShape& l) { return l.out + cfg_.r; });
    }
    NamedTensors state() const override {
        NamedTensors s = Method::state();
        if (cfg_.save_projection) s.push_back({"base_model.vera_A", A_}), s.push_back({"base_model.vera_B", B_});
        return s;
    }
    // The projections are checked with the rest before anything is copied (all or nothing).
    void load_state(const std::map<std::string, Tensor>& tensors, const std::string& file) override {
        std::map<std::string, Tensor> rest = tensors;
        std::vector<std::pair<const char*, Tensor*>> proj = {{"base_model.vera_A", &A_}, {"base_model.vera_B", &B_}};
        for (auto& [key, t] : proj) {
            auto it = rest.find(key);
            ENGINE_CHECK(it != rest.end() || !cfg_.save_projection, ValueError,
                         "{}: missing tensor '{}' (the config says save_projection: true)", file, key);
            if (it == rest.end()) continue;
            ENGINE_CHECK(it->second.shape() == t->shape() && it->second.dtype() == DType::F32, ValueError,
                         "{}: tensor '{}' has shape {} but r = {} and this model's targets need {} (r, max_in) / (max_out, r)",
                         file, key, describe(it->second), cfg_.r, describe(*t));
        }
        std::map<std::string, Tensor> found;
        for (auto& [key, t] : proj)
            if (rest.count(key)) found[key] = rest.at(key), rest.erase(key);
        MergeableMethod::load_state(rest, file);
        for (auto& [key, t] : proj)
            if (found.count(key)) std::memcpy(t->data(), found.at(key).data(), t->nbytes());
        slice();
    }

private:
    struct Target {
        int64_t in, out;
        Tensor lambda_b, lambda_d;
        Tensor A, B;   // the slices A[:, :in] (r, in) and B[:out, :] (out, r), shared by equal shapes
    };
    // Contiguous copies of the slices, one per distinct in / out (frozen: no gradient).
    void slice() {
        std::map<int64_t, Tensor> as, bs;
        for (Target& t : targets_) {
            if (!as.count(t.in)) {
                Tensor a = Tensor::empty({cfg_.r, t.in}, DType::F32, Mem::Params);
                for (int64_t k = 0; k < cfg_.r; k++) std::memcpy(a.data() + k * t.in, A_.data() + k * max_in_, size_t(t.in) * 4);
                as[t.in] = a;
            }
            if (!bs.count(t.out)) bs[t.out] = Tensor::from(std::vector<float>(B_.data(), B_.data() + t.out * cfg_.r), {t.out, cfg_.r});
            t.A = as[t.in], t.B = bs[t.out];
        }
    }
    struct Wrap : LinearWrap {
        const Vera& m;
        const Target& t;
        Wrap(const Vera& m, const Target& t) : m(m), t(t) {}
        Tensor forward(const Linear& base, const Tensor& x) override {
            Tensor h = mul_row_vector(linear(dropout(x, float(m.cfg_.vera_dropout), m.training, *m.dropout_rng_), t.A), t.lambda_d);
            return add(base.base_forward(x), mul_row_vector(linear(h, t.B), t.lambda_b));
        }
    };
    std::shared_ptr<LinearWrap> make_wrap(size_t i) const override { return std::make_shared<Wrap>(*this, targets_[i]); }
    // W += λ_b[:, None] · ((B ⊙ λ_d[None, :]) A)
    void merge_into(size_t i, Linear& lin) const override {
        const Target& t = targets_[i];
        const int64_t r = cfg_.r;
        Tensor Bd = t.B.clone();
        for (int64_t o = 0; o < t.out; o++)
            for (int64_t k = 0; k < r; k++) Bd.data()[o * r + k] *= t.lambda_d.data()[k];
        Tensor D = Tensor::empty({t.out, t.in});
        gemm(Trans::N, Trans::N, t.out, t.in, r, 1.f, Bd.data(), t.A.data(), 0.f, D.data());
        for (int64_t o = 0; o < t.out; o++)
            for (int64_t k = 0; k < t.in; k++) lin.weight.data()[o * t.in + k] += t.lambda_b.data()[o] * D.data()[o * t.in + k];
    }

    VeraConfig cfg_;
    Rng* dropout_rng_;
    int64_t max_in_ = 0, max_out_ = 0;
    Tensor A_, B_;   // (r, max_in), (max_out, r): frozen, shared, regenerated from the key or loaded
    std::vector<Target> targets_;
};

std::unique_ptr<Method> make_vera(const json& config, GPT& model, Rng& /*rng: A, B come from projection_prng_key*/) {
    return std::make_unique<Vera>(VeraConfig::from_json(config, model.config), model);
}
