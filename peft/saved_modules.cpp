// peft/saved_modules.cpp — modules_to_save and bias (see saved_modules.h).
#include "saved_modules.h"
#include <algorithm>
#include <cstring>
#include "method.h"
#include "targets.h"

namespace {

struct ParamSlot {
    std::string module, param;   // "transformer.ln_f", "weight"
    Tensor* field;
    Linear* lin = nullptr;       // a block Linear's weight: its Linear (which may be quantised)
};

// Every parameter of the GPT with the member that holds it, by module.
std::vector<ParamSlot> param_slots(GPT& m) {
    std::vector<ParamSlot> out;
    auto ln = [&out](const std::string& name, LayerNorm& l) {
        out.push_back({name, "weight", &l.weight});
        if (l.bias.defined()) out.push_back({name, "bias", &l.bias});
    };
    out.push_back({"transformer.wte", "weight", &m.wte.weight});
    out.push_back({"transformer.wpe", "weight", &m.wpe.weight});
    for (size_t l = 0; l < m.h.size(); l++) {
        ln(fmt::format("transformer.h.{}.ln_1", l), m.h[l].ln_1);
        ln(fmt::format("transformer.h.{}.ln_2", l), m.h[l].ln_2);
    }
    for (auto& [name, lin] : m.linears()) {
        out.push_back({name, "weight", &lin->weight, lin});
        if (lin->bias.defined()) out.push_back({name, "bias", &lin->bias});
    }
    ln("transformer.ln_f", m.ln_f);
    return out;
}


// Which (module, param) pairs train: the named modules whole, then the biases bias= asks for.
template <class S>
std::vector<S> chosen(const std::vector<S>& all, const Targeting& t, const std::vector<std::string>& adapted) {
    std::vector<S> out;
    auto add = [&out](const S& s) {
        for (const S& o : out)
            if (o.module == s.module && o.param == s.param) return;
        out.push_back(s);
    };
    for (const std::string& e : t.modules_to_save()) {
        ENGINE_CHECK(!target_matches("transformer.wte", e), ValueError,
                     "`modules_to_save` = \"{}\": the token embedding is also the LM head here (tied); a copy "
                     "trained for one side only, as HF would, is not supported", e);
        bool any = false;
        for (const S& s : all)
            if (target_matches(s.module, e)) { add(s); any = true; }
        ENGINE_CHECK(any, ValueError, "`modules_to_save` = \"{}\" names no module of the model (e.g. ln_f, h.0.ln_1, mlp.fc_out)", e);
    }
    for (const S& s : all)
        if (s.param == "bias" && (t.bias() == "all" || (t.bias_adapted_only() &&
                                  std::find(adapted.begin(), adapted.end(), s.module) != adapted.end())))
            add(s);
    return out;
}

struct Shaped {
    std::string module, param;
    int64_t numel;
};

}  // namespace

void SavedModules::attach(const Targeting& t, GPT& model, const std::vector<std::string>& adapted, ParamList& params) {
    for (const ParamSlot& s : chosen(param_slots(model), t, adapted)) {
        // A quantised weight trains as a float32 copy of its dequantised values, and the module
        // keeps that float32 original beside it (for unmerge, and as the inactive weight).
        if (s.lin) s.lin->dequantize();
        Tensor copy = s.field->clone(Mem::Params);
        params.add(fmt::format("base_model.model.{}.{}", s.module, s.param), copy);
        slots_.push_back({s.field, *s.field, copy, Tensor()});
    }
}

void SavedModules::install(bool on) {
    for (Slot& s : slots_)   // (only ours: a field another adapter set is left alone)
        if (on) *s.field = s.copy;
        else if (s.field->impl_ptr() == s.copy.impl_ptr()) *s.field = s.original;
}

void SavedModules::merge() {
    install(false);
    for (Slot& s : slots_) {
        s.backup = s.original.clone(Mem::Params);
        std::memcpy(s.original.data(), s.copy.data(), s.copy.nbytes());
    }
}

void SavedModules::unmerge() {
    for (Slot& s : slots_) {
        std::memcpy(s.original.data(), s.backup.data(), s.backup.nbytes());
        s.backup = Tensor();
    }
}

int64_t saved_modules_count(const Targeting& t, const GPTConfig& cfg, const std::vector<std::string>& adapted) {
    const int64_t C = cfg.n_embd;
    std::vector<Shaped> all = {{"transformer.wte", "weight", cfg.vocab_size * C}, {"transformer.wpe", "weight", cfg.block_size * C}};
    auto ln = [&](const std::string& name) {
        all.push_back({name, "weight", C});
        if (cfg.bias) all.push_back({name, "bias", C});
    };
    for (int64_t l = 0; l < cfg.n_layer; l++) {
        ln(fmt::format("transformer.h.{}.ln_1", l));
        ln(fmt::format("transformer.h.{}.ln_2", l));
    }
    for (const LinearShape& l : linear_shapes(cfg)) {
        all.push_back({l.name, "weight", l.in * l.out});
        if (cfg.bias) all.push_back({l.name, "bias", l.out});
    }
    ln("transformer.ln_f");
    int64_t n = 0;
    for (const Shaped& s : chosen(all, t, adapted)) n += s.numel;
    return n;
}
