// peft/config_reader.cpp — typed reads of adapter_config.json fields, noting each bad value in HF's words.
#include "config_reader.h"
#include <algorithm>
#include <limits>

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

bool ConfigReader::fan_in_fan_out(const GPTConfig& model) {
    const bool conv1d = model.model_type == "gpt2";
    const bool asked = boolean("fan_in_fan_out", conv1d);
    check(conv1d || !asked, "`fan_in_fan_out` = true is for Conv1D layers (a \"gpt2\" base); this model's Linears "
                            "store their weights as (out, in)");
    return conv1d;
}

void ConfigReader::done() const {
    if (!bad_.empty()) throw ValueError(fmt::format("invalid {} config: {}", peft_type_, fmt::join(bad_, "; ")));
    std::vector<std::string> unknown;
    for (const auto& [key, value] : j_.items())
        if (!read_.count(key) && !kHfBookkeeping.count(key) && !asks_nothing(value)) unknown.push_back('"' + key + '"');
    if (!unknown.empty())
        warn(fmt::format("{} config: ignoring unknown key{} {}", peft_type_, unknown.size() > 1 ? "s" : "",
                         fmt::join(unknown, ", ")));
}
