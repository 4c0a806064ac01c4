// peft/peft_model.cpp — several adapters on one base model.
#include "peft_model.h"

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
