// peft/peft_model.h — several adapters on one base model, and HF's trainable-parameter line.
#pragma once
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
private:
    GPT& base_;
    std::map<std::string, std::unique_ptr<Method>> adapters_;
    std::string active_;
};

// "trainable params: N || all params: M || trainable%: P", as HF PEFT prints it.
std::string trainable_line(const GPT& model, const Method* m);
