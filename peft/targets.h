// peft/targets.h — where a Linear-wrapping adapter goes (LoRA, IA³ and every method built on
// MergeableMethod): HF PEFT's targeting fields, read from adapter_config.json once and resolved
// against the model's dotted module names ("transformer.h.0.attn.q_proj") when the method attaches.
//
//   target_modules       ["q_proj", "v_proj"] — a list: a module is selected when its name equals
//                        an entry or ends with "." + entry (so "attn.q_proj" works too).
//                        "transformer\\.h\\.[23]\\.attn\\.(q|v)_proj" — ONE string is a regular
//                        expression that must match the WHOLE name (Python's re.fullmatch).
//                        "all-linear" — every Linear (HF leaves out the output head; here the LM
//                        head is the tied embedding, not a Linear, so nothing is left out).
//   exclude_modules      the same two forms; an excluded module is never a target.
//   layers_to_transform  3 or [2, 3] — only modules inside these blocks. The block index is the
//                        number after a `layers_pattern` entry ("h" → "….h.3.…") or, without
//                        one, the first "<word>.<digits>." after a dot. As in HF it filters only
//                        a list of target_modules (a regex says which layers itself).
//   rank_pattern         {"o_proj": 4, "h\\.0\\..*": 16} — per-module rank / alpha. Each key is a
//   alpha_pattern        regex matched against the name with any dotted prefix: (.*\.)?(key)$.
//                        HF takes the first key in the file's order that matches. This reader
//                        sees JSON objects without their order, so a module that two keys with
//                        different values match is refused as ambiguous (make the keys disjoint).
//   modules_to_save      ["ln_f"] — whole modules trained beside the adapter (peft/saved_modules.h).
//   bias                 "none" | "all" | "lora_only" (peft/saved_modules.h).
//
// Every bad value is one problem noted in the ConfigReader, naming the field and the value:
// a regex that does not compile; and, against the model, a regex or name that matches nothing,
// a layer outside the model, a layers_pattern no module has.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <utility>
#include <vector>
#include "models/gpt.h"

class ConfigReader;
struct LinearShape;

class Targeting {
public:
    // Which optional fields a method reads (IA³ has no layers or patterns; LoRA has all).
    struct Fields {
        bool layers = true, patterns = true, bias = true;
        const char* own_bias = "lora_only";   // the method's name for "the adapted Linears' biases only"
    };
    // Reads the fields through `f`; `default_targets` stands when target_modules is absent.
    static Targeting read(ConfigReader& f, const std::vector<std::string>& default_targets, Fields fields);
    // Writes the fields back as they were read (a list stays a list, a regex a string), and only
    // those that were present or have a non-default value: a folder loads and saves unchanged.
    void write(nlohmann::json& cfg) const;

    // HF's check_target_module_exists: is the module named `name` a target?
    bool selects(const std::string& name) const;
    // HF's get_pattern_key: the rank / alpha of module `name`, or `def` when no key matches.
    int64_t rank(const std::string& name, int64_t def) const;
    double alpha(const std::string& name, double def) const;
    // The block index in a module name, or -1 (layers_pattern as above).
    int64_t layer_of(const std::string& name) const;

    const std::vector<std::string>& modules_to_save() const { return save_; }
    const std::string& bias() const { return bias_; }
    bool bias_adapted_only() const { return bias_ != "none" && bias_ != "all"; }   // "lora_only", "oft_only", ...
    const nlohmann::json& target_modules() const { return targets_json_; }

private:
    struct NameSet {   // a list of names (suffix match) or one full-match regex
        std::vector<std::string> names;
        std::shared_ptr<std::regex> re;
        bool all_linear = false;
        bool matches(const std::string& name) const;
    };
    template <class V>
    struct Pattern {   // one rank_pattern / alpha_pattern entry
        std::string key;
        std::shared_ptr<std::regex> re;
        V value;
    };
    template <class V>
    static V lookup(const std::vector<Pattern<V>>& ps, const std::string& name, V def);

    NameSet targets_, exclude_;
    std::vector<int64_t> layers_;   // empty: every layer
    std::vector<std::string> layers_pattern_;
    std::vector<Pattern<int64_t>> rank_;
    std::vector<Pattern<double>> alpha_;
    std::vector<std::string> save_;
    std::string bias_ = "none";
    // the JSON as read, for write()
    nlohmann::json targets_json_, exclude_json_, layers_json_, layers_pattern_json_, rank_json_, alpha_json_,
        save_json_;
    bool bias_present_ = false;
    friend std::vector<std::pair<std::string, Linear*>> resolve_targets(const Targeting&, GPT&);
};

// HF's default target_modules of the Linear-wrapping methods: ["c_attn"] on a gpt2 base, else
// ["q_proj", "v_proj"].
std::vector<std::string> default_targets(const GPTConfig& model);

// A Linear-wrapping adapter's trainable count in closed form (for expected_params):
// per_target(l) summed over the Linears of a model of config `g` that `t` selects, plus what
// modules_to_save and bias add (saved_modules_count).
int64_t targeted_count(const Targeting& t, const GPTConfig& g, const std::function<int64_t(const LinearShape&)>& per_target);

// The Linears a Targeting selects, in model order, minus the modules_to_save (HF never puts an
// adapter on a module it saves whole). Throws one ValueError naming the field and value when a
// name or regex matches nothing, a layer is outside the model, or no module is left.
std::vector<std::pair<std::string, Linear*>> resolve_targets(const Targeting& t, GPT& model);
