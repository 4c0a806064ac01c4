// tests/peft_helpers.h — the shared set-up of the per-method lessons: a tiny GPT, a toy
// batch, no-grad logits, a checksum of the frozen base, a few AdamW steps on the method's
// tensors, and scratch folders for saving adapters.
#pragma once
#include <stdlib.h>
#include <cstring>
#include <filesystem>
#include "helpers.h"
#include "engine/optim.h"
#include "peft/peft.h"

// An adapter config: {"peft_type": type} and the given fields (HF's names).
inline json peft_config(const std::string& type, const json& extra = json::object()) {
    json c = {{"peft_type", type}};
    c.update(extra);
    return c;
}

inline GPTConfig lesson_config() {
    GPTConfig c;
    c.n_layer = 2; c.n_head = 2; c.n_embd = 16; c.block_size = 16; c.vocab_size = 13;
    return c;
}

// A tiny model with every parameter non-trivial (so LayerNorm/bias paths matter).
inline std::unique_ptr<GPT> lesson_model(uint64_t seed = 1) {
    Rng rng(seed);
    auto m = std::make_unique<GPT>(lesson_config(), rng);
    for (const Param& p : m->params.all())
        for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] += float(rng.normal() * 0.05);
    return m;
}

// One configuration of every method (and the variants of the ones with several shapes), for the
// tests every method must pass.
struct MethodRow {
    const char* name;
    json config;
};

inline const std::vector<MethodRow>& method_rows() {
    static const std::vector<MethodRow> rows = {
        {"lora", {{"peft_type", "LORA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}}}},
        {"ia3", {{"peft_type", "IA3"}, {"target_modules", {"k_proj", "v_proj", "fc_out"}},
                 {"feedforward_modules", {"fc_out"}}}},
        {"adapter-houlsby", {{"peft_type", "BOTTLENECK"}, {"placement", "houlsby"}, {"bottleneck_size", 4}}},
        {"adapter-pfeiffer", {{"peft_type", "BOTTLENECK"}, {"placement", "pfeiffer"}, {"bottleneck_size", 4}}},
        {"prefix", {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 4}}},
        {"prefix-projection", {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 4}, {"prefix_projection", true}}},
        {"prompt", {{"peft_type", "PROMPT_TUNING"}, {"num_virtual_tokens", 4}}},
        {"ptuning-mlp", {{"peft_type", "P_TUNING"}, {"num_virtual_tokens", 4}, {"encoder_hidden_size", 8}}},
        {"ptuning-lstm", {{"peft_type", "P_TUNING"}, {"num_virtual_tokens", 4}, {"encoder_hidden_size", 8},
                          {"encoder_reparameterization_type", "LSTM"}}},
        // The LoRA family. (PiSSA / OLoRA are not here: they put the residual W − s·BA into the
        // base while active, by design; tests/test_lora_init.cpp checks that deactivating restores W.)
        {"dora", {{"peft_type", "LORA"}, {"r", 4}, {"use_dora", true}}},
        {"loha", {{"peft_type", "LOHA"}, {"r", 2}}},
        {"lokr", {{"peft_type", "LOKR"}, {"r", 1}, {"decompose_both", true}}},
        {"vera", {{"peft_type", "VERA"}, {"r", 8}}},
        {"vera-regenerated", {{"peft_type", "VERA"}, {"r", 8}, {"save_projection", false}}},
        {"oft", {{"peft_type", "OFT"}, {"oft_block_size", 4}}},
        {"oft-cayley", {{"peft_type", "OFT"}, {"r", 2}, {"oft_block_size", 0}, {"use_cayley_neumann", false}}},
    };
    return rows;
}

struct ToyBatch { Tensor ids, targets; };
inline ToyBatch lesson_batch() {
    // 2 sequences of 8 tokens; targets = next token, one ignored position
    return {Tensor::from_ints({1, 5, 3, 9, 0, 2, 7, 4, 4, 4, 10, 1, 6, 8, 3, 12}, {2, 8}),
            Tensor::from_ints({5, 3, 9, 0, 2, 7, 4, 1, 4, 10, 1, 6, 8, 3, 12, -1}, {2, 8})};
}

// The logits of a forward without a graph, as a flat vector to compare bit for bit.
inline std::vector<float> logits_of(GPT& m, const Tensor& ids = lesson_batch().ids) {
    NoGradGuard no_grad;
    return m.forward(ids).to_vector();
}

// FNV-1a over the bytes of every tensor of a ParamList: equal checksums = bit-for-bit equal.
inline uint64_t checksum(const ParamList& params) {
    uint64_t h = 1469598103934665603ull;
    for (const Param& p : params.all()) {
        const unsigned char* b = reinterpret_cast<const unsigned char*>(p.tensor.data());
        for (size_t i = 0; i < p.tensor.nbytes(); i++) h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

// The same over the base model's parameters.
inline uint64_t base_checksum(const GPT& m) { return checksum(m.params); }

// `steps` AdamW steps on the method's parameters; returns the losses.
inline std::vector<float> train_method(GPT& m, Method& method, int steps, float lr = 1e-2f) {
    ToyBatch b = lesson_batch();
    AdamWConfig oc;
    oc.lr = lr;
    oc.weight_decay = 0.f;
    AdamW opt(method.params, oc);
    method.training = true;
    std::vector<float> losses;
    for (int s = 0; s < steps; s++) {
        opt.zero_grad();
        method.begin_forward();
        Tensor loss = m.loss(b.ids, b.targets, true);
        losses.push_back(loss.item());
        loss.backward();
        opt.step();
    }
    method.training = false;
    return losses;
}

// No base parameter holds a gradient buffer.
inline bool base_has_no_grads(const GPT& m) {
    for (const Param& p : m.params.all())
        if (p.tensor.has_grad() || p.tensor.requires_grad()) return false;
    return true;
}

// A fresh temporary folder, removed with its contents at the end of the scope.
struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/peft_test_XXXXXX";
        REQUIRE(mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() { std::error_code ec; std::filesystem::remove_all(path, ec); }
    std::string operator/(const std::string& name) const { return path + "/" + name; }
};

// Collects the warnings raised while it lives (engine/check.h) instead of printing them.
struct CapturedWarnings {
    std::vector<std::string> all;
    WarnSink previous = set_warn_sink([this](const std::string& w) { all.push_back(w); });
    ~CapturedWarnings() { set_warn_sink(previous); }
};

// Saves an adapter with `config` made on another base model, the lesson model with n_embd 32,
// into `dir`: loading it onto the lesson model must fail, naming what differs.
inline void save_from_wider_base(const std::string& dir, const json& config, Rng& rng) {
    GPTConfig c = lesson_config();
    c.n_embd = 32;
    GPT wide(c, rng);
    save_adapter(dir, *make_method(config, wide, rng), wide);
}
