// peft/method.h — what every PEFT method is, and the base class of the methods that wrap Linears.
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
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>
#include "models/gpt.h"
#include "saved_modules.h"

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

// ---- methods that wrap target Linears (LoRA, IA³)
//
// What LoRA and IA³ share: while active, and not merged, each target Linear calls the method's
// seam (Linear::wrap) instead of linear(). merge() folds the method into the target weights;
// first it copies each target's weight and bias, so that unmerge() restores them bit for bit.
// (HF unmerges by subtracting the update again, or dividing by l, and (W + d) − d is not W in
// float32.) While merged the seams are off: the forward is the plain base forward on the merged
// weights. Disabling a merged adapter unmerges it first, so it gives exactly the base model.
// A quantised target (engine/quant.h) is dequantised before merging, with a warning: from then on
// its W is float32, merged or unmerged, as HF's merge into a 4-bit base can only round again.
class MergeableMethod : public Method {
public:
    void activate(GPT& model) override;
    void deactivate(GPT& model) override;
    bool can_merge() const override { return true; }
    void merge(GPT& model) override;
    void unmerge(GPT& model) override;
    void load_state(const std::map<std::string, Tensor>& tensors, const std::string& file) override;
    // Each target Linear with a new seam for it, to be called by someone else than the Linear:
    // a mixed-adapter batch runs each sample's rows through its own adapter's seam (peft/mixed.h).
    std::vector<std::pair<Linear*, std::shared_ptr<LinearWrap>>> seams() const;
    bool merged() const { return merged_; }
    bool has_saved_modules() const { return !saved_.empty(); }   // modules_to_save or bias
    // Why this adapter cannot run beside others in a mixed batch (peft/mixed.h), or "" when it can.
    virtual std::string cannot_mix() const { return ""; }

protected:
    explicit MergeableMethod(GPT& model) : model_(&model) {}
    void add_target(Linear* lin);   // the subclass's target i is the i-th one added
    SavedModules saved_;            // modules_to_save and bias: the subclass attaches them
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
