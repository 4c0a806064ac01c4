// tests/hardening_helpers.h — what the hardening tests share (test_hardening_adapters,
// _checkpoints, _data, _faults, _training): writing a file's bytes, a LoRA config, a saved
// adapter folder, a tiny model config, and edits of a safetensors file.
#pragma once
#include <unistd.h>
#include <fstream>
#include <functional>
#include <map>
#include "peft_helpers.h"

// (A new file each time: ext4 flushes a truncated-and-rewritten file to disk on close.)
inline void write_bytes(const std::string& path, const std::string& bytes) {
    ::unlink(path.c_str());
    std::ofstream(path, std::ios::binary) << bytes;
}

inline const std::string kQ = "base_model.model.transformer.h.0.attn.q_proj";

inline json lora_json(const json& extra = json::object()) {
    json c = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"lora_dropout", 0.0}, {"target_modules", {"q_proj", "v_proj"}}};
    c.update(extra);
    return c;
}

// An adapter folder for `config`, saved from a lesson model (or from `model` when given).
inline std::string saved_adapter(const TempDir& s, const std::string& name, const json& config, GPT* model = nullptr) {
    auto own = lesson_model();
    GPT& m = model ? *model : *own;
    Rng rng(5);
    auto method = make_method(config, m, rng);
    for (const Param& p : method->params.all())   // nonzero everywhere, so a silent zero-load would show
        for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] = 0.01f * float(i % 7 + 1);
    save_adapter(s / name, *method, m);
    return s / name;
}

// Changes a safetensors file's tensors and metadata (see edit_weights, write_checkpoint).
using Edit = std::function<void(std::map<std::string, Tensor>&, std::map<std::string, std::string>&)>;

inline GPTConfig tiny_config(int64_t vocab) {
    GPTConfig c;
    c.n_layer = 1; c.n_head = 2; c.n_embd = 8; c.block_size = 8; c.vocab_size = vocab;
    return c;
}
