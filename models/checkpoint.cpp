// models/checkpoint.cpp — save / load a GPT with its config and tokenizer.
#include "checkpoint.h"
#include <cmath>
#include <cstring>
#include "engine/safetensors.h"
#include "models/hf_gpt2.h"

void save_checkpoint(const std::string& path, const GPT& model, const Tokenizer& tok,
                     const std::map<std::string, std::string>& extra) {
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const Param& p : model.params.all()) {
        // Saved over a good checkpoint, a NaN would replace it with one that load_checkpoint refuses.
        for (int64_t i = 0; i < p.tensor.numel(); i++)
            ENGINE_CHECK(std::isfinite(p.tensor.data()[i]), NumericError,
                         "{}: not saved: tensor '{}' holds a non-finite value at index {}", path, p.name, i);
        tensors.push_back({p.name, p.tensor});
    }
    std::map<std::string, std::string> meta = extra;
    meta["format"] = "pt";
    meta["peft.model_config"] = model.config.to_json();
    meta["peft.tokenizer"] = tok.serialize();
    save_safetensors(path, tensors, meta);
}

Checkpoint load_checkpoint(const std::string& path) {
    if (is_hf_folder(path)) return load_hf_gpt2(path);   // a Hugging Face GPT-2 folder (models/hf_gpt2.h)
    SafeTensors st = load_safetensors(path);
    ENGINE_CHECK(st.metadata.count("peft.model_config"), FileError,
                 "{}: no 'peft.model_config' in the metadata: not a peft.cpp model checkpoint", path);
    Checkpoint ck;
    ck.metadata = st.metadata;
    GPTConfig cfg;
    try {
        cfg = GPTConfig::from_json(st.metadata.at("peft.model_config"));
    } catch (const ValueError& e) {
        throw FileError(fmt::format("{}: bad model config: {}", path, e.what()));
    }
    if (st.metadata.count("peft.tokenizer")) ck.tokenizer = Tokenizer::deserialize(st.metadata.at("peft.tokenizer"));
    ENGINE_CHECK(ck.tokenizer.vocab_size() == cfg.vocab_size, FileError,
                 "{}: tokenizer has {} symbols but the model's vocab_size is {}", path, ck.tokenizer.vocab_size(),
                 cfg.vocab_size);
    Rng rng(0);
    ck.model = std::make_unique<GPT>(cfg, rng);
    std::vector<std::string> problems;
    for (const Param& p : ck.model->params.all()) {
        auto it = st.tensors.find(p.name);
        if (it == st.tensors.end()) { problems.push_back(fmt::format("missing tensor '{}'", p.name)); continue; }
        const Tensor& t = it->second;
        if (t.dtype() != DType::F32 || t.shape() != p.tensor.shape()) {
            problems.push_back(fmt::format("tensor '{}' is {} but the config needs {}", p.name, describe(t), describe(p.tensor)));
            continue;
        }
        for (int64_t i = 0; i < t.numel(); i++)
            if (!std::isfinite(t.data()[i])) {
                problems.push_back(fmt::format("tensor '{}' holds a non-finite value at index {}", p.name, i));
                break;
            }
    }
    for (const auto& [name, t] : st.tensors)
        if (!ck.model->params.find(name)) problems.push_back(fmt::format("unexpected tensor '{}'", name));
    if (!problems.empty()) {
        std::string msg = fmt::format("{}: checkpoint does not match its config:", path);
        for (size_t i = 0; i < problems.size() && i < 10; i++) msg += "\n  " + problems[i];
        throw FileError(msg);
    }
    for (const Param& p : ck.model->params.all()) std::memcpy(p.tensor.data(), st.tensors.at(p.name).data(), p.tensor.nbytes());
    return ck;
}
