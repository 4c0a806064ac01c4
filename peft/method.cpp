// peft/method.cpp — what all methods share: their state, target matching, and the merge
// bookkeeping of the methods that wrap target Linears (LoRA, IA³).
#include "method.h"
#include <cmath>
#include <cstring>

// ---- defaults shared by all methods

NamedTensors Method::state() const {
    NamedTensors out;
    for (const Param& p : params.all()) out.push_back({p.name, p.tensor});
    return out;
}

void Method::load_state(const std::map<std::string, Tensor>& tensors, const std::string& file) {
    // Validate everything first (all-or-nothing), then copy.
    std::vector<std::string> problems;
    for (const Param& p : params.all()) {
        auto it = tensors.find(p.name);
        if (it == tensors.end()) problems.push_back(fmt::format("missing tensor '{}'", p.name));
        else if (it->second.shape() != p.tensor.shape() || it->second.dtype() != DType::F32)
            problems.push_back(fmt::format("tensor '{}' is {} but the config on this base model gives {}", p.name,
                                           describe(it->second), describe(p.tensor)));
    }
    for (const auto& [name, t] : tensors)
        if (!const_cast<ParamList&>(params).find(name)) problems.push_back(fmt::format("unexpected tensor '{}'", name));
    if (!problems.empty()) {
        std::string msg = fmt::format("{}: the tensors do not match adapter_config.json ({} as built on this base model):",
                                      file, peft_type());
        for (auto& p : problems) msg += "\n  " + p;
        throw ValueError(msg);
    }
    for (const Param& p : params.all())
        std::memcpy(p.tensor.data(), tensors.at(p.name).data(), p.tensor.nbytes());
}

void Method::merge(GPT&) {
    throw ValueError(fmt::format("{} cannot be merged into the base weights (LORA, IA3, LOHA, LOKR, VERA and OFT can)", peft_type()));
}
void Method::unmerge(GPT& model) { merge(model); }

// ---- target modules

bool target_matches(const std::string& module_name, const std::string& target) {
    if (module_name == target) return true;
    return module_name.size() > target.size() + 1 &&
           module_name.compare(module_name.size() - target.size(), target.size(), target) == 0 &&
           module_name[module_name.size() - target.size() - 1] == '.';
}

bool target_matches(const std::string& module_name, const std::vector<std::string>& targets) {
    for (const std::string& t : targets)
        if (target_matches(module_name, t)) return true;
    return false;
}

std::vector<LinearShape> linear_shapes(const GPTConfig& cfg) {
    std::vector<LinearShape> out;
    for (int64_t l = 0; l < cfg.n_layer; l++)
        for (const BlockLinear& k : block_linears(cfg))
            out.push_back({fmt::format("transformer.h.{}.{}", l, k.name), k.in, k.out});
    return out;
}

std::vector<std::pair<std::string, Linear*>> match_targets(GPT& model, const std::vector<std::string>& targets) {
    ENGINE_CHECK(!targets.empty(), ValueError, "target_modules is empty");
    std::vector<std::pair<std::string, Linear*>> out;
    std::vector<std::string> unmatched;
    auto all = model.linears();
    for (const std::string& t : targets) {
        bool any = false;
        for (auto& [name, lin] : all) any = any || target_matches(name, t);
        if (!any) unmatched.push_back(t);
    }
    if (!unmatched.empty()) {
        std::string names;
        const std::vector<BlockLinear> block = block_linears(model.config);
        for (const BlockLinear& b : block) {   // the last part of each name, once: q_proj, ... or c_attn, c_proj, c_fc
            const std::string n = b.name.substr(b.name.rfind('.') + 1);
            if ((", " + names + ", ").find(", " + n + ", ") == std::string::npos) names += (names.empty() ? "" : ", ") + n;
        }
        throw ValueError(fmt::format("Target modules [{}] not found in the base model; its Linear modules are "
                                     "{} (e.g. transformer.h.0.{})",
                                     fmt::join(unmatched, ", "), names, block[0].name));
    }
    for (auto& [name, lin] : all)
        for (const std::string& t : targets)
            if (target_matches(name, t)) { out.push_back({name, lin}); break; }
    return out;
}

Linear torch_linear(int64_t in, int64_t out, Rng& rng) {
    const float k = 1.f / std::sqrt(float(in));
    Linear lin;
    lin.in = in;
    lin.out = out;
    lin.weight = Tensor::uniform({out, in}, rng, -k, k);
    lin.bias = Tensor::uniform({out}, rng, -k, k);
    return lin;
}

// ---- methods that wrap target Linears

void MergeableMethod::add_target(Linear* lin) { targets_.push_back({lin, Tensor(), Tensor(), nullptr}); }

void MergeableMethod::check_model(const GPT& model) const {
    ENGINE_CHECK(&model == model_, ValueError, "{}: this adapter was attached to another model", peft_type());
}

void MergeableMethod::install(bool on) {
    for (size_t i = 0; i < targets_.size(); i++) {
        Target& t = targets_[i];
        if (on) t.lin->wrap = t.wrap = make_wrap(i);
        else if (t.lin->wrap == t.wrap) t.lin->wrap = nullptr;
    }
    saved_.install(on);
}

std::vector<std::pair<Linear*, std::shared_ptr<LinearWrap>>> MergeableMethod::seams() const {
    std::vector<std::pair<Linear*, std::shared_ptr<LinearWrap>>> out;
    for (size_t i = 0; i < targets_.size(); i++) out.push_back({targets_[i].lin, make_wrap(i)});
    return out;
}

void MergeableMethod::activate(GPT& model) {
    check_model(model);
    active_ = true;
    model.hooks = this;   // only to hear set_training; the Linear wraps do the work
    if (!merged_) install(true);
}

void MergeableMethod::deactivate(GPT& model) {
    check_model(model);
    active_ = false;
    if (merged_) unmerge(model);
    install(false);
    if (model.hooks == this) model.hooks = nullptr;
}

void MergeableMethod::merge(GPT& model) {
    check_model(model);
    ENGINE_CHECK(!merged_, ValueError, "{}: the adapter is already merged into the base weights (unmerge it first)",
                 peft_type());
    saved_.merge();   // modules_to_save / bias copies into the base tensors first (saved_modules.h)
    int quantized = 0;
    for (Target& t : targets_)   // a quantised target: W becomes float32 (its dequantised values) first
        if (t.lin->quantized()) {
            if (quantized++ == 0)
                warn(fmt::format("merging {} into a {} base: its target weights are dequantised to float32 first, "
                                 "and stay float32 (unmerge too)", peft_type(), qtype_name(t.lin->qweight->type)));
            t.lin->dequantize();
        }
    for (size_t i = 0; i < targets_.size(); i++) {
        Target& t = targets_[i];
        t.W_orig = t.lin->weight.clone(Mem::Params);
        if (t.lin->bias.defined()) t.b_orig = t.lin->bias.clone(Mem::Params);
        merge_into(i, *t.lin);
    }
    install(false);   // the forward is now the plain base forward on the merged weights
    merged_ = true;
}

void MergeableMethod::unmerge(GPT& model) {
    check_model(model);
    ENGINE_CHECK(merged_, ValueError, "{}: the adapter is not merged, so there is nothing to unmerge", peft_type());
    for (Target& t : targets_) {   // restore the copies: exact, unlike undoing the update
        std::memcpy(t.lin->weight.data(), t.W_orig.data(), t.W_orig.nbytes());
        if (t.b_orig.defined()) std::memcpy(t.lin->bias.data(), t.b_orig.data(), t.b_orig.nbytes());
        t.W_orig = t.b_orig = Tensor();
    }
    saved_.unmerge();
    merged_ = false;
    if (active_) install(true);
}

void MergeableMethod::load_state(const std::map<std::string, Tensor>& tensors, const std::string& file) {
    ENGINE_CHECK(!merged_, ValueError, "{}: cannot load {} tensors while merged (unmerge first)", file, peft_type());
    Method::load_state(tensors, file);
}
