// peft/targets.cpp — reading and resolving HF PEFT's targeting fields (see targets.h).
#include "targets.h"
#include <algorithm>
#include <set>
#include "peft.h"

using nlohmann::json;

// ---- matching, as HF's check_target_module_exists and get_pattern_key do
// (a list entry matches a name or its dotted suffix: target_matches, method.h)

bool Targeting::NameSet::matches(const std::string& name) const {
    if (all_linear) return true;
    if (re) return std::regex_match(name, *re);
    return target_matches(name, names);
}

int64_t Targeting::layer_of(const std::string& name) const {
    // HF: re.match(r".*\.[^.]*\.(\d+)\.", key), or r".*\.{pattern}\.(\d+)\." for each layers_pattern
    std::vector<std::string> res;
    if (layers_pattern_.empty()) res.push_back(R"(^.*\.[^.]*\.(\d+)\.)");
    for (const std::string& p : layers_pattern_) res.push_back(R"(^.*\.)" + p + R"(\.(\d+)\.)");
    for (const std::string& r : res) {
        std::smatch m;
        if (std::regex_search(name, m, std::regex(r))) return std::stoll(m[1].str());
    }
    return -1;
}

bool Targeting::selects(const std::string& name) const {
    if ((exclude_.re || !exclude_.names.empty()) && exclude_.matches(name)) return false;
    if (!targets_.matches(name)) return false;
    if (targets_.re || targets_.all_linear || layers_.empty() || std::find(targets_.names.begin(), targets_.names.end(), name) != targets_.names.end())
        return true;   // HF filters by layer only a list's suffix matches
    const int64_t l = layer_of(name);
    return l >= 0 && std::find(layers_.begin(), layers_.end(), l) != layers_.end();
}

template <class V>
V Targeting::lookup(const std::vector<Pattern<V>>& ps, const std::string& name, V def) {
    for (const Pattern<V>& p : ps)   // ambiguity was refused in resolve_targets: the first match is the one
        if (std::regex_match(name, *p.re)) return p.value;
    return def;
}
int64_t Targeting::rank(const std::string& name, int64_t def) const { return lookup(rank_, name, def); }
double Targeting::alpha(const std::string& name, double def) const { return lookup(alpha_, name, def); }

// ---- reading

// A regex as Python's re reads these simple patterns (ECMAScript syntax is the closest std::regex has).
static std::shared_ptr<std::regex> compile(ConfigReader& f, const char* key, const std::string& text) {
    try {
        return std::make_shared<std::regex>(text, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
        f.check(false, fmt::format("`{}` = \"{}\" is not a regular expression that compiles ({})", key, text, e.what()));
        return nullptr;
    }
}

// target_modules / exclude_modules: a list of names or one regex string.
static bool read_names(ConfigReader& f, const char* key, json& raw, std::vector<std::string>& names,
                       std::shared_ptr<std::regex>& re, bool& all_linear, bool may_be_empty) {
    const json* v = f.field(key);
    if (!v) return false;
    if (v->is_string() && !v->get<std::string>().empty()) {
        raw = *v;
        std::string s = v->get<std::string>();
        std::string lower = s;
        std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return char(std::tolower(c)); });
        if (lower == "all-linear") all_linear = true;
        else re = compile(f, key, s);
        return true;
    }
    bool ok = v->is_array() && (may_be_empty || !v->empty());
    for (const json& e : ok ? *v : json::array()) ok = ok && e.is_string() && !e.get<std::string>().empty();
    if (!ok) {
        f.reject(key, fmt::format("a {}list of module names (e.g. [\"q_proj\", \"v_proj\"]) or one regular expression string",
                                  may_be_empty ? "" : "non-empty "));
        return false;
    }
    raw = *v;
    names = v->get<std::vector<std::string>>();
    return true;
}

Targeting Targeting::read(ConfigReader& f, const std::vector<std::string>& default_targets, Fields fields) {
    Targeting t;
    if (!read_names(f, "target_modules", t.targets_json_, t.targets_.names, t.targets_.re, t.targets_.all_linear, false)) {
        t.targets_.names = default_targets;   // HF writes the default out, so write() does too
        t.targets_json_ = default_targets;
    }
    bool unused = false;
    read_names(f, "exclude_modules", t.exclude_json_, t.exclude_.names, t.exclude_.re, unused, true);
    f.check(!unused, "`exclude_modules` = \"all-linear\" would exclude every module");

    if (fields.layers) {
        if (const json* v = f.field("layers_to_transform")) {
            bool ok = v->is_number_integer() || v->is_array();
            for (const json& e : v->is_array() ? *v : json::array({*v})) {
                ok = ok && e.is_number_integer() && e.get<int64_t>() >= 0;
                if (ok) t.layers_.push_back(e.get<int64_t>());
            }
            if (ok) t.layers_json_ = *v;
            else { f.reject("layers_to_transform", "a non-negative layer index or a list of them"); t.layers_.clear(); }
        }
        if (const json* v = f.field("layers_pattern")) {
            bool ok = v->is_string() || v->is_array();
            for (const json& e : v->is_array() ? *v : json::array({*v})) ok = ok && e.is_string();
            if (ok) {
                t.layers_pattern_json_ = *v;
                for (const json& e : v->is_array() ? *v : json::array({*v}))
                    if (!e.get<std::string>().empty()) t.layers_pattern_.push_back(e.get<std::string>());
                f.check(t.layers_pattern_.empty() || !t.layers_.empty(),
                        "`layers_pattern` is set but `layers_to_transform` is not: it only says where the layer index is");
            } else {
                f.reject("layers_pattern", "a name (e.g. \"h\") or a list of names");
            }
        }
    }
    if (fields.patterns) {
        auto read_map = [&f](const char* key, json& raw, auto& out, bool integer) {
            const json* v = f.field(key);
            if (!v) return;
            if (!v->is_object()) { f.reject(key, "an object from module name or regex to a value"); return; }
            raw = *v;
            for (const auto& [k, val] : v->items()) {
                const json& x = val;
                const bool ok = integer ? x.is_number_integer() && x.template get<int64_t>() >= 1 && x.template get<int64_t>() <= 65536
                                        : x.is_number() && x.template get<double>() > 0;
                if (!ok) {
                    f.check(false, fmt::format("`{}` entry \"{}\" should be {} but the value passed is {}", key, k,
                                               integer ? "a positive integer rank" : "a positive number", val.dump()));
                    continue;
                }
                auto re = compile(f, key, "(.*\\.)?(" + k + ")");
                using V = std::decay_t<decltype(out.front().value)>;
                if (re) out.push_back({k, re, val.template get<V>()});
            }
        };
        read_map("rank_pattern", t.rank_json_, t.rank_, true);
        read_map("alpha_pattern", t.alpha_json_, t.alpha_, false);
    }
    bool dummy = false;
    std::shared_ptr<std::regex> no_re;
    if (read_names(f, "modules_to_save", t.save_json_, t.save_, no_re, dummy, true) && (no_re || dummy))
        f.reject("modules_to_save", "a list of module names (e.g. [\"ln_f\"])");
    if (fields.bias) {
        t.bias_present_ = f.field("bias") != nullptr;
        const std::string should = fmt::format("one of \"none\", \"all\", \"{}\"", fields.own_bias);
        t.bias_ = f.choice("bias", "none", {"none", "all", fields.own_bias}, should.c_str());
    }
    return t;
}

void Targeting::write(json& cfg) const {
    cfg["target_modules"] = targets_json_;
    auto put = [&cfg](const char* key, const json& v) { if (!v.is_null()) cfg[key] = v; };
    put("exclude_modules", exclude_json_);
    put("layers_to_transform", layers_json_);
    put("layers_pattern", layers_pattern_json_);
    put("rank_pattern", rank_json_);
    put("alpha_pattern", alpha_json_);
    put("modules_to_save", save_json_);
    if (bias_present_ || bias_ != "none") cfg["bias"] = bias_;
}

// ---- resolving against the model

int64_t targeted_count(const Targeting& t, const GPTConfig& g, const std::function<int64_t(const LinearShape&)>& per_target) {
    int64_t n = 0;
    std::vector<std::string> adapted;
    for (const LinearShape& l : linear_shapes(g))
        if (t.selects(l.name)) {
            n += per_target(l);
            adapted.push_back(l.name);
        }
    return n + saved_modules_count(t, g, adapted);
}

std::vector<std::string> default_targets(const GPTConfig& model) {
    if (model.model_type == "gpt2") return {"c_attn"};
    return {"q_proj", "v_proj"};
}

std::vector<std::pair<std::string, Linear*>> resolve_targets(const Targeting& t, GPT& model) {
    const auto all = model.linears();
    std::vector<std::string> problems;
    std::vector<std::string> lasts;   // "q_proj, k_proj, ... (e.g. transformer.h.0.attn.q_proj)"
    for (const auto& [name, lin] : all) {
        const std::string last = name.substr(name.rfind('.') + 1);
        if (std::find(lasts.begin(), lasts.end(), last) == lasts.end()) lasts.push_back(last);
    }
    const std::string example = fmt::format("{} (e.g. {})", fmt::join(lasts, ", "), all.empty() ? "" : all.front().first);
    auto any = [&](auto pred) { return std::any_of(all.begin(), all.end(), [&](auto& p) { return pred(p.first); }); };

    // Every name of a list and every regex must match some Linear (a typo changes nothing silently).
    const Targeting::NameSet& tg = t.targets_;
    if (tg.re && !any([&](const std::string& n) { return std::regex_match(n, *tg.re); }))
        problems.push_back(fmt::format("`target_modules` = {} (a regular expression over whole module names) matches no "
                                       "module; its Linear modules are {}", t.targets_json_.dump(), example));
    std::vector<std::string> unmatched;
    for (const std::string& e : tg.names)
        if (!any([&](const std::string& n) { return target_matches(n, e); })) unmatched.push_back(e);
    if (!unmatched.empty())
        problems.push_back(fmt::format("Target modules [{}] not found in the base model; its Linear modules are {}",
                                       fmt::join(unmatched, ", "), example));
    const Targeting::NameSet& ex = t.exclude_;
    if (ex.re && !any([&](const std::string& n) { return std::regex_match(n, *ex.re); }))
        problems.push_back(fmt::format("`exclude_modules` = {} (a regular expression over whole module names) matches no module",
                                       t.exclude_json_.dump()));
    const int64_t L = int64_t(model.h.size());
    for (int64_t l : t.layers_)
        if (l >= L)
            problems.push_back(fmt::format("`layers_to_transform` = {} is outside the model: its layers are 0..{}",
                                           t.layers_json_.dump(), L - 1));
    bool pattern_found = t.layers_pattern_.empty();   // HF tries each entry: one that names a block list suffices
    for (const std::string& p : t.layers_pattern_)
        pattern_found = pattern_found || any([&](const std::string& n) { return std::regex_search(n, std::regex(R"(^.*\.)" + p + R"(\.(\d+)\.)")); });
    if (!pattern_found)
        problems.push_back(fmt::format("`layers_pattern` = {} names no block list (here: \"h\", as in transformer.h.0)",
                                       t.layers_pattern_json_.dump()));
    if (!problems.empty()) throw ValueError(fmt::format("{}", fmt::join(problems, "; ")));

    std::vector<std::pair<std::string, Linear*>> out;
    for (const auto& [name, lin] : all) {
        if (!t.selects(name)) continue;
        bool saved = false;   // HF: (^|.*\.)m($|\..*) for each modules_to_save entry m
        for (const std::string& m : t.save_) saved = saved || target_matches(name, m);
        if (!saved) out.push_back({name, lin});
    }
    if (out.empty())
        throw ValueError(fmt::format("no module is left to adapt: `target_modules` = {}{}{} selects none", t.targets_json_.dump(),
                                     t.exclude_json_.is_null() ? "" : " minus `exclude_modules` = " + t.exclude_json_.dump(),
                                     t.layers_json_.is_null() ? "" : " in `layers_to_transform` = " + t.layers_json_.dump()));
    // rank_pattern / alpha_pattern: refuse a module two keys with different values match (see targets.h).
    auto ambiguous = [&](const char* field, const auto& ps) {
        for (const auto& [name, lin] : out) {
            const auto* first = static_cast<decltype(&ps[0])>(nullptr);
            for (const auto& p : ps)
                if (std::regex_match(name, *p.re)) {
                    if (!first) first = &p;
                    else if (first->value != p.value)
                        throw ValueError(fmt::format("`{}`: keys \"{}\" and \"{}\" both match {} with different values; HF "
                                                     "takes the first in the file's order, which is lost here: make the keys disjoint",
                                                     field, first->key, p.key, name));
                }
        }
    };
    ambiguous("rank_pattern", t.rank_);
    ambiguous("alpha_pattern", t.alpha_);
    return out;
}
