// peft/peft_model.h — several adapters on one base model, and HF's trainable-parameter line.
#pragma once
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "method.h"

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
    const std::string& active_name() const { return active_; }   // "" when disabled
private:
    GPT& base_;
    std::map<std::string, std::unique_ptr<Method>> adapters_;
    std::string active_;
};

// HF's `with model.disable_adapter():` — while it lives the model computes exactly the base model,
// the adapters stay loaded; when it ends the adapter that was active is active again, also when
// the scope is left by an exception (HF users met a model left disabled after one).
class DisableAdapterGuard {
public:
    explicit DisableAdapterGuard(PeftModel& pm) : pm_(pm), previous_(pm.active_name()) { pm_.disable(); }
    ~DisableAdapterGuard() {   // (an adapter deleted inside the scope is not brought back)
        const auto names = pm_.names();
        if (!previous_.empty() && std::find(names.begin(), names.end(), previous_) != names.end()) pm_.set_active(previous_);
    }
    DisableAdapterGuard(const DisableAdapterGuard&) = delete;
    DisableAdapterGuard& operator=(const DisableAdapterGuard&) = delete;

private:
    PeftModel& pm_;
    std::string previous_;
};

// "trainable params: N || all params: M || trainable%: P", as HF PEFT prints it.
std::string trainable_line(const GPT& model, const Method* m);
