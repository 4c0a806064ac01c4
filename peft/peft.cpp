// peft/peft.cpp — target matching, the method factory, multi-adapter use, adapter files.
#include "peft.h"
#include <sys/stat.h>
#include <cerrno>
#include <cmath>
#include <cstring>
#include "engine/fileio.h"
#include "engine/safetensors.h"
#include "methods.h"

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
            problems.push_back(fmt::format("tensor '{}' has shape {} but this model needs {}", p.name,
                                           describe(it->second), describe(p.tensor)));
    }
    for (const auto& [name, t] : tensors)
        if (!const_cast<ParamList&>(params).find(name)) problems.push_back(fmt::format("unexpected tensor '{}'", name));
    if (!problems.empty()) {
        std::string msg = fmt::format("{}: adapter does not fit this {} method (maybe another base model?):", file, peft_type());
        for (auto& p : problems) msg += "\n  " + p;
        throw ValueError(msg);
    }
    for (const Param& p : params.all())
        std::memcpy(p.tensor.data(), tensors.at(p.name).data(), p.tensor.nbytes());
}

void Method::merge(GPT&) {
    throw ValueError(fmt::format("{} cannot be merged into the base weights (only LORA and IA3 can)", peft_type()));
}
void Method::unmerge(GPT& model) { merge(model); }

// ---- target modules

bool target_matches(const std::string& module_name, const std::string& target) {
    if (module_name == target) return true;
    return module_name.size() > target.size() + 1 &&
           module_name.compare(module_name.size() - target.size(), target.size(), target) == 0 &&
           module_name[module_name.size() - target.size() - 1] == '.';
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
        for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out"}) names += std::string(names.empty() ? "" : ", ") + n;
        throw ValueError(fmt::format("Target modules [{}] not found in the base model; its Linear modules are "
                                     "{} (e.g. transformer.h.0.attn.q_proj)",
                                     fmt::join(unmatched, ", "), names));
    }
    for (auto& [name, lin] : all)
        for (const std::string& t : targets)
            if (target_matches(name, t)) { out.push_back({name, lin}); break; }
    return out;
}

// ---- factory

std::unique_ptr<Method> make_method(const json& config, GPT& model, Rng& rng) {
    ENGINE_CHECK(config.is_object(), ValueError, "adapter config must be a JSON object");
    ENGINE_CHECK(config.contains("peft_type") && config["peft_type"].is_string(), ValueError,
                 "adapter config has no 'peft_type' string");
    const std::string t = config["peft_type"].get<std::string>();
    if (t == "LORA") return make_lora(config, model, rng);
    if (t == "IA3") return make_ia3(config, model, rng);
    if (t == "BOTTLENECK") return make_bottleneck(config, model, rng);
    if (t == "PREFIX_TUNING") return make_prefix_tuning(config, model, rng);
    if (t == "PROMPT_TUNING") return make_prompt_tuning(config, model, rng);
    if (t == "P_TUNING") return make_p_tuning(config, model, rng);
    throw ValueError(fmt::format("unknown peft_type '{}'; supported: LORA, IA3, BOTTLENECK, PREFIX_TUNING, "
                                 "PROMPT_TUNING, P_TUNING", t));
}

// ---- several adapters on one base

void PeftModel::add(const std::string& name, std::unique_ptr<Method> m, bool make_active) {
    ENGINE_CHECK(!adapters_.count(name), ValueError, "an adapter named '{}' already exists", name);
    adapters_[name] = std::move(m);
    if (make_active || active_.empty()) set_active(name);
}

void PeftModel::set_active(const std::string& name) {
    Method& m = get(name);
    disable();
    m.activate(base_);
    active_ = name;
}

void PeftModel::disable() {
    if (Method* m = active()) m->deactivate(base_);
    active_.clear();
}

void PeftModel::remove(const std::string& name) {
    get(name);
    if (active_ == name) disable();
    adapters_.erase(name);
}

Method* PeftModel::active() { return active_.empty() ? nullptr : adapters_.at(active_).get(); }

Method& PeftModel::get(const std::string& name) {
    auto it = adapters_.find(name);
    if (it == adapters_.end())
        throw ValueError(fmt::format("no adapter named '{}'; loaded: [{}]", name, fmt::join(names(), ", ")));
    return *it->second;
}

std::vector<std::string> PeftModel::names() const {
    std::vector<std::string> out;
    for (auto& [n, m] : adapters_) out.push_back(n);
    return out;
}

std::string trainable_line(const GPT& model, const Method* m) {
    int64_t trainable = model.params.count(true), all = model.params.count();
    if (m) { trainable += m->params.count(true); all += m->params.count(); }
    return fmt::format("trainable params: {} || all params: {} || trainable%: {:.4f}", trainable, all,
                       all ? 100.0 * double(trainable) / double(all) : 0.0);
}

// ---- adapter folders

static const char* kConfigFile = "adapter_config.json";
static const char* kWeightsFile = "adapter_model.safetensors";

// The index of the first NaN or Inf in an F32 tensor, or -1.
static int64_t first_nonfinite(const Tensor& t) {
    if (t.dtype() != DType::F32) return -1;
    for (int64_t i = 0; i < t.numel(); i++)
        if (!std::isfinite(t.data()[i])) return i;
    return -1;
}

int64_t save_adapter(const std::string& dir, const Method& m, const GPT& model) {
    const NamedTensors state = m.state();
    for (const auto& [name, t] : state) {   // load_adapter would refuse the file
        const int64_t i = first_nonfinite(t);
        ENGINE_CHECK(i < 0, NumericError, "{}: not saved: tensor '{}' holds a non-finite value at index {}", dir, name, i);
    }
    make_dirs(dir);
    json cfg = m.config_json();
    cfg["peft_type"] = m.peft_type();
    const std::string weights = dir + "/" + kWeightsFile;
    save_safetensors(weights, state,
                     {{"format", "pt"}, {"peft_type", m.peft_type()}, {"base_model_config", model.config.to_json()}});
    atomic_write_file(dir + "/" + kConfigFile, cfg.dump(2) + "\n");
    struct stat st{};
    stat(weights.c_str(), &st);
    return int64_t(st.st_size);
}

std::unique_ptr<Method> load_adapter(const std::string& dir, GPT& model, Rng& rng) {
    const std::string cfg_path = dir + "/" + kConfigFile, weights = dir + "/" + kWeightsFile;
    json cfg = json::parse(read_file(cfg_path, 1 << 20), nullptr, false);
    ENGINE_CHECK(!cfg.is_discarded(), FileError, "{}: not valid JSON", cfg_path);
    ENGINE_CHECK(cfg.is_object(), FileError, "{}: must hold a JSON object", cfg_path);
    SafeTensors st = load_safetensors(weights);
    for (const auto& [name, t] : st.tensors) {
        const int64_t i = first_nonfinite(t);
        ENGINE_CHECK(i < 0, FileError, "{}: tensor '{}' holds a non-finite value at index {}", weights, name, i);
    }
    if (st.metadata.count("base_model_config")) {
        GPTConfig saved = GPTConfig::from_json(st.metadata.at("base_model_config"));
        const GPTConfig& c = model.config;
        std::vector<std::string> diff;
        auto cmp = [&](const char* what, int64_t a, int64_t b) { if (a != b) diff.push_back(fmt::format("{} {} (adapter) vs {} (model)", what, a, b)); };
        cmp("n_layer", saved.n_layer, c.n_layer);
        cmp("n_head", saved.n_head, c.n_head);
        cmp("n_embd", saved.n_embd, c.n_embd);
        cmp("vocab_size", saved.vocab_size, c.vocab_size);
        if (!diff.empty())
            throw ValueError(fmt::format("{}: adapter was trained on another base model: {}", weights, fmt::join(diff, ", ")));
    }
    std::unique_ptr<Method> m;
    try {
        m = make_method(cfg, model, rng);
    } catch (const ValueError& e) {
        throw ValueError(fmt::format("{}: {}", cfg_path, e.what()));
    }
    m->load_state(st.tensors, weights);
    return m;
}
