// peft/peft.h — what every PEFT method is, and the model that holds several of them.
//
// A Method attaches to a GPT built by models/: it freezes every base parameter, creates its
// own trainable tensors (registered in `params` under readable names) and, while active,
// changes the forward through the model's seams (models/gpt.h, Note [Seams]):
//   LoRA, IA³        -> Linear::wrap on the target Linears
//   Adapters         -> Hooks::block_output
//   Prefix tuning    -> Hooks::prefix_kv
//   Prompt, P-tuning -> Hooks::virtual_tokens
// Target modules are names in the config (HF PEFT's convention), resolved once, in attach().
// A target name matches a module whose dotted name equals it or ends with "." + name.
//
// Saved adapters follow HF PEFT: a folder with adapter_config.json (HF field names) and
// adapter_model.safetensors with only the method's tensors, keys like
// "base_model.model.transformer.h.0.attn.q_proj.lora_A.weight" or "prompt_embeddings".
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>
#include "models/gpt.h"

using json = nlohmann::json;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Method : public Hooks {
public:
    ParamList params;   // the method's trainable tensors (names are the saved keys where possible)

    virtual std::string peft_type() const = 0;            // "LORA", "IA3", "BOTTLENECK", ...
    virtual json config_json() const = 0;                  // the adapter_config.json object
    // Closed-form trainable-parameter count for this config on `cfg` (tests compare with params.count()).
    virtual int64_t expected_params(const GPTConfig& cfg) const = 0;
    // What adapter_model.safetensors holds (HF keys), and loading it back. load_state validates
    // every key and shape first (naming the tensor and both shapes) and changes nothing on error.
    virtual NamedTensors state() const;
    virtual void load_state(const std::map<std::string, Tensor>& tensors, const std::string& file);
    // Install / remove this method's seams on the model.
    virtual void activate(GPT& model) = 0;
    virtual void deactivate(GPT& model) = 0;
    // Merging into the base weights (LoRA, IA³); others throw ValueError saying they cannot.
    virtual bool can_merge() const { return false; }
    virtual void merge(GPT& model);
    virtual void unmerge(GPT& model);
    // Training mode switches dropout on the method's own branch (LoRA dropout).
    bool training = false;
    // Optional per-step preparation before a forward (prefix/P-tuning encoders compute once per forward).
    virtual void begin_forward() {}
};

// Which Linears of the model a list of target names selects. Throws ValueError listing the
// names that matched nothing and the module names that exist.
std::vector<std::pair<std::string, Linear*>> match_targets(GPT& model, const std::vector<std::string>& targets);
bool target_matches(const std::string& module_name, const std::string& target);

// Builds a method from an adapter_config.json object (peft_type decides which). Unknown
// peft_type -> ValueError listing the supported ones. Attaches to `model` (freezing it).
std::unique_ptr<Method> make_method(const json& config, GPT& model, Rng& rng);

// Several adapters on one base model: add, switch the active one, disable, delete.
class PeftModel {
public:
    explicit PeftModel(GPT& base) : base_(base) {}
    GPT& base() { return base_; }
    void add(const std::string& name, std::unique_ptr<Method> m, bool make_active = true);
    void set_active(const std::string& name);   // ValueError naming the adapters that exist
    void disable();                              // exactly the base model
    void remove(const std::string& name);
    Method* active();                            // nullptr when disabled
    Method& get(const std::string& name);
    std::vector<std::string> names() const;
private:
    GPT& base_;
    std::map<std::string, std::unique_ptr<Method>> adapters_;
    std::string active_;
};

// "trainable params: N || all params: M || trainable%: P", as HF PEFT prints it.
std::string trainable_line(const GPT& model, const Method* m);

// Save / load an adapter folder. Save prints nothing; returns the safetensors file size.
// Non-finite values are refused both ways: NumericError on save, FileError on load.
int64_t save_adapter(const std::string& dir, const Method& m, const GPT& model);
std::unique_ptr<Method> load_adapter(const std::string& dir, GPT& model, Rng& rng);
