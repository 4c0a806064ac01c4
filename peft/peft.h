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
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
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
    // Training mode switches dropout on the method's own branch (LoRA dropout); the model
    // sets it at every forward through the hooks (an active method is always model.hooks).
    bool training = false;
    void set_training(bool on) override { training = on; }
    // Optional per-step preparation before a forward (prefix/P-tuning encoders compute once per forward).
    virtual void begin_forward() {}
};

// Which Linears of the model a list of target names selects. Throws ValueError listing the
// names that matched nothing and the module names that exist.
std::vector<std::pair<std::string, Linear*>> match_targets(GPT& model, const std::vector<std::string>& targets);
bool target_matches(const std::string& module_name, const std::string& target);
bool target_matches(const std::string& module_name, const std::vector<std::string>& targets);   // any of them

// Every Linear of a GPT with this config, by name ("transformer.h.0.attn.q_proj"), with its
// in and out features: what the target names can select, in closed form (for expected_params).
struct LinearShape {
    std::string name;
    int64_t in, out;
};
std::vector<LinearShape> linear_shapes(const GPTConfig& cfg);

// A Linear with torch.nn.Linear's default init, weight and bias ~ U(−1/√in, 1/√in): what HF's
// prompt encoders start from (prefix tuning's projection, P-tuning's MLP head).
Linear torch_linear(int64_t in, int64_t out, Rng& rng);

// ---- reading adapter_config.json
//
// Every method reads its config through a ConfigReader, with HF PEFT's field names: a missing
// or null field keeps the default (HF writes null for "not set"). Each bad value is noted in
// HF's words, e.g.
//     `r` should be a positive integer value but the value passed is 0
// and done() throws one ValueError listing every problem: "invalid LORA config: ...; ...".
// Otherwise done() warns (engine/check.h) about the keys no one read, and loading goes on, as
// HF does with fields from a newer version. Not warned about: HF's bookkeeping keys (the list
// in peft.cpp) and keys set to null, false, [] or {}, which ask for nothing.
constexpr int64_t kMaxSize = int64_t(1) << 24;   // the largest size a config may ask for (no overflow)

class ConfigReader {
public:
    // ValueError unless `config` is an object; notes a "peft_type" other than `peft_type`.
    ConfigReader(const json& config, std::string peft_type);
    const json* field(const char* key) const;   // nullptr when missing or null

    // Typed fields: the value, or `def` when the field is missing, null or bad (a bad one is noted).
    int64_t integer(const char* key, int64_t def, int64_t lo, int64_t hi);   // in [lo, hi]; lo is 0 or 1
    double positive_number(const char* key, double def);   // > 0 and a finite float (what the ops use)
    double probability(const char* key, double def);       // in [0, 1), also as a float
    bool boolean(const char* key, bool def);
    std::string text(const char* key, std::string def);
    // One of `choices`; `should` describes them (default "one of A, B, C").
    std::string choice(const char* key, std::string def, const std::vector<std::string>& choices,
                       const char* should = nullptr);
    // Module names; `should` describes them (default "a [non-empty] list of module names (e.g. ...)").
    std::vector<std::string> names(const char* key, std::vector<std::string> def, bool may_be_empty,
                                   const char* should = nullptr);

    // Checks that note a problem:
    void reject(const char* key, const std::string& should);   // a present field: "`key` should be <should> but ..."
    void check(bool ok, const std::string& problem);
    void only(const char* key, const json& value, const char* why);   // "`key` = ... is not supported: <why>"
    void same_as_model(const char* key, const char* what, int64_t want);   // "`key` is .. but the model's <what> is .."
    void refuse(std::initializer_list<const char*> keys);   // HF options that would change the computation
    void done() const;   // throws if anything was noted, else warns about the unread keys

private:
    const json& j_;
    std::string peft_type_;
    std::vector<std::string> bad_;
    mutable std::set<std::string> read_;   // every key field() was asked for
};

// ---- methods that wrap target Linears (LoRA, IA³)
//
// What LoRA and IA³ share: while active, and not merged, each target Linear calls the method's
// seam (Linear::wrap) instead of linear(). merge() folds the method into the target weights;
// first it copies each target's weight and bias, so that unmerge() restores them bit for bit.
// (HF unmerges by subtracting the update again, or dividing by l, and (W + d) − d is not W in
// float32.) While merged the seams are off: the forward is the plain base forward on the merged
// weights. Disabling a merged adapter unmerges it first, so it gives exactly the base model.
class MergeableMethod : public Method {
public:
    void activate(GPT& model) override;
    void deactivate(GPT& model) override;
    bool can_merge() const override { return true; }
    void merge(GPT& model) override;
    void unmerge(GPT& model) override;
    void load_state(const std::map<std::string, Tensor>& tensors, const std::string& file) override;

protected:
    explicit MergeableMethod(GPT& model) : model_(&model) {}
    void add_target(Linear* lin);   // the subclass's target i is the i-th one added
    virtual std::shared_ptr<LinearWrap> make_wrap(size_t i) const = 0;   // target i's seam
    virtual void merge_into(size_t i, Linear& lin) const = 0;            // fold target i into lin's weights

private:
    struct Target {
        Linear* lin;
        Tensor W_orig, b_orig;              // the base weights while merged
        std::shared_ptr<LinearWrap> wrap;   // the seam, while installed
    };
    void install(bool on);   // puts this adapter's seams on, or takes them off (only its own: never another's)
    void check_model(const GPT& model) const;

    GPT* model_;   // the model the targets belong to
    std::vector<Target> targets_;
    bool active_ = false, merged_ = false;
};

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
