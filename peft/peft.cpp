// peft/peft.cpp — target matching, config reading, merging bookkeeping, the method factory,
// multi-adapter use, adapter files.
#include "peft.h"
#include <sys/stat.h>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
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

bool target_matches(const std::string& module_name, const std::vector<std::string>& targets) {
    for (const std::string& t : targets)
        if (target_matches(module_name, t)) return true;
    return false;
}

std::vector<LinearShape> linear_shapes(const GPTConfig& cfg) {
    const int64_t C = cfg.n_embd;
    const LinearShape block[] = {{"attn.q_proj", C, C}, {"attn.k_proj", C, C},    {"attn.v_proj", C, C},
                                 {"attn.o_proj", C, C}, {"mlp.fc_in", C, 4 * C}, {"mlp.fc_out", 4 * C, C}};
    std::vector<LinearShape> out;
    for (int64_t l = 0; l < cfg.n_layer; l++)
        for (const LinearShape& k : block) out.push_back({fmt::format("transformer.h.{}.{}", l, k.name), k.in, k.out});
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

Linear torch_linear(int64_t in, int64_t out, Rng& rng) {
    const float k = 1.f / std::sqrt(float(in));
    Linear lin;
    lin.in = in;
    lin.out = out;
    lin.weight = Tensor::uniform({out, in}, rng, -k, k);
    lin.bias = Tensor::uniform({out}, rng, -k, k);
    return lin;
}

// ---- reading adapter_config.json

ConfigReader::ConfigReader(const json& config, std::string peft_type) : j_(config), peft_type_(std::move(peft_type)) {
    ENGINE_CHECK(j_.is_object(), ValueError, "{} config must be a JSON object", peft_type_);
    if (const json* v = field("peft_type"); v && *v != peft_type_)
        bad_.push_back(fmt::format("`peft_type` is {}, not \"{}\"", v->dump(), peft_type_));
}

const json* ConfigReader::field(const char* key) const {
    read_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
}

void ConfigReader::reject(const char* key, const std::string& should) {
    bad_.push_back(fmt::format("`{}` should be {} but the value passed is {}", key, should, field(key)->dump()));
}

int64_t ConfigReader::integer(const char* key, int64_t def, int64_t lo, int64_t hi) {
    const json* v = field(key);
    if (!v) return def;
    if (!v->is_number_integer() || v->get<int64_t>() < lo)
        reject(key, lo == 0 ? "a non-negative integer value" : lo == 1 ? "a positive integer value"
                                                                     : fmt::format("an integer value >= {}", lo));
    else if (v->get<int64_t>() > hi)
        bad_.push_back(fmt::format("`{}` = {} is larger than the limit {}", key, v->dump(), hi));
    else return v->get<int64_t>();
    return def;
}

double ConfigReader::positive_number(const char* key, double def) {
    const json* v = field(key);
    if (!v) return def;
    const double x = v->is_number() ? v->get<double>() : 0;
    if (x > 0 && x <= std::numeric_limits<float>::max()) return x;   // 1e39 is no float
    reject(key, "a positive number");
    return def;
}

double ConfigReader::probability(const char* key, double def) {
    const json* v = field(key);
    if (!v) return def;
    const double p = v->is_number() ? v->get<double>() : -1;
    if (p >= 0 && p < 1 && float(p) < 1.f) return p;   // 0.99999999999 rounds to 1.0f
    reject(key, "in [0, 1)");
    return def;
}

bool ConfigReader::boolean(const char* key, bool def) {
    const json* v = field(key);
    if (!v) return def;
    if (v->is_boolean()) return v->get<bool>();
    reject(key, "true or false");
    return def;
}

std::string ConfigReader::text(const char* key, std::string def) {
    const json* v = field(key);
    if (!v) return def;
    if (v->is_string()) return v->get<std::string>();
    reject(key, "a string");
    return def;
}

std::string ConfigReader::choice(const char* key, std::string def, const std::vector<std::string>& choices,
                                 const char* should) {
    const json* v = field(key);
    if (!v) return def;
    if (v->is_string() && std::find(choices.begin(), choices.end(), v->get<std::string>()) != choices.end())
        return v->get<std::string>();
    reject(key, should ? should : fmt::format("one of {}", fmt::join(choices, ", ")));
    return def;
}

std::vector<std::string> ConfigReader::names(const char* key, std::vector<std::string> def, bool may_be_empty,
                                             const char* should) {
    const json* v = field(key);
    if (!v) return def;
    bool ok = v->is_array() && (may_be_empty || !v->empty());
    for (const json& e : ok ? *v : json::array()) ok = ok && e.is_string() && !e.get<std::string>().empty();
    if (ok) return v->get<std::vector<std::string>>();
    reject(key, should ? should
                       : fmt::format("{} of module names (e.g. [\"q_proj\", \"v_proj\"])",
                                     may_be_empty ? "a list" : "a non-empty list"));
    return def;
}

void ConfigReader::check(bool ok, const std::string& problem) {
    if (!ok) bad_.push_back(problem);
}

void ConfigReader::only(const char* key, const json& value, const char* why) {
    if (const json* v = field(key); v && *v != value)
        bad_.push_back(fmt::format("`{}` = {} is not supported: {}", key, v->dump(), why));
}

void ConfigReader::same_as_model(const char* key, const char* what, int64_t want) {
    if (const json* v = field(key); v && *v != want)
        bad_.push_back(fmt::format("`{}` is {} but the model's {} is {}", key, v->dump(), what, want));
}

// false, [] and {} say "not used" as well as null does
static bool asks_nothing(const json& v) { return v.is_null() || v == false || (v.is_structured() && v.empty()); }

void ConfigReader::refuse(std::initializer_list<const char*> keys) {
    for (const char* key : keys)
        if (const json* v = field(key); v && !asks_nothing(*v))
            bad_.push_back(fmt::format("`{}` = {} is not supported here", key, v->dump()));
}

// Keys HF PEFT writes that change nothing in what is built or loaded here.
static const std::set<std::string> kHfBookkeeping = {
    "base_model_name_or_path", "revision", "task_type", "inference_mode", "auto_mapping", "peft_version",
    "init_lora_weights", "init_ia3_weights", "megatron_core", "num_transformer_submodules", "num_layers",
    "num_attention_heads", "tokenizer_name_or_path"};

void ConfigReader::done() const {
    if (!bad_.empty()) throw ValueError(fmt::format("invalid {} config: {}", peft_type_, fmt::join(bad_, "; ")));
    std::vector<std::string> unknown;
    for (const auto& [key, value] : j_.items())
        if (!read_.count(key) && !kHfBookkeeping.count(key) && !asks_nothing(value)) unknown.push_back('"' + key + '"');
    if (!unknown.empty())
        warn(fmt::format("{} config: ignoring unknown key{} {}", peft_type_, unknown.size() > 1 ? "s" : "",
                         fmt::join(unknown, ", ")));
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
    merged_ = false;
    if (active_) install(true);
}

void MergeableMethod::load_state(const std::map<std::string, Tensor>& tensors, const std::string& file) {
    ENGINE_CHECK(!merged_, ValueError, "{}: cannot load {} tensors while merged (unmerge first)", file, peft_type());
    Method::load_state(tensors, file);
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
        WarnContext in_file(cfg_path);
        m = make_method(cfg, model, rng);
    } catch (const ValueError& e) {
        throw ValueError(fmt::format("{}: {}", cfg_path, e.what()));
    }
    m->load_state(st.tensors, weights);
    return m;
}
