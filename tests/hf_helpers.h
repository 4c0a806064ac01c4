// tests/hf_helpers.h — small Hugging Face GPT-2 folders written by hand for the import tests:
// config.json and a model.safetensors in HF's Conv1D layout, from a model of our gpt2 layout,
// with either key style and F32, F16 or BF16 values. It shares nothing with the importer but
// the safetensors format itself: the header is built here, the transposes are loops here.
#pragma once
#include <fstream>
#include <nlohmann/json.hpp>
#include "peft_helpers.h"

namespace hf {

inline GPTConfig tiny_gpt2(int64_t vocab = 13) {
    GPTConfig c;
    c.model_type = "gpt2";
    c.n_layer = 2; c.n_head = 2; c.n_embd = 16; c.block_size = 24; c.vocab_size = vocab;
    c.layer_norm_epsilon = 1e-5f;
    return c;
}

// A gpt2-layout model whose every value is k/1024 with |k| < 256: exact in F16 and in BF16,
// so a folder written in either loads back bit for bit.
inline std::unique_ptr<GPT> tiny_model(uint64_t seed = 1, int64_t vocab = 13) {
    Rng rng(seed);
    auto m = std::make_unique<GPT>(tiny_gpt2(vocab), rng);
    for (const Param& p : m->params.all())
        for (int64_t i = 0; i < p.tensor.numel(); i++) {
            float v = p.tensor.data()[i] + float(rng.normal() * 0.05);
            v = std::round(v * 1024.f);
            p.tensor.data()[i] = std::max(-255.f, std::min(255.f, v)) / 1024.f;
        }
    return m;
}

inline nlohmann::json config_json(const GPTConfig& c) {
    return {{"model_type", "gpt2"},        {"architectures", nlohmann::json::array({"GPT2LMHeadModel"})}, {"n_embd", c.n_embd},
            {"n_head", c.n_head},          {"n_layer", c.n_layer},                 {"n_positions", c.block_size},
            {"n_ctx", c.block_size},       {"vocab_size", c.vocab_size},          {"layer_norm_epsilon", c.layer_norm_epsilon},
            {"activation_function", "gelu_new"}, {"resid_pdrop", 0.1},            {"n_inner", nullptr}};
}

struct Raw {   // one tensor as it goes into the file
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> values;
};

// HF's tensors of `m`: names without prefix, Conv1D weights transposed to (in, out).
inline std::vector<Raw> hf_tensors(GPT& m) {
    std::vector<Raw> out;
    for (const Param& p : m.params.all()) {
        Raw r{p.name.substr(12), {}, p.tensor.to_vector()};   // strip "transformer."
        const bool conv = p.tensor.ndim() == 2 && p.name.find(".h.") != std::string::npos;
        if (conv) {
            const int64_t O = p.tensor.size(0), I = p.tensor.size(1);
            r.shape = {I, O};
            for (int64_t i = 0; i < I; i++)
                for (int64_t o = 0; o < O; o++) r.values[size_t(i * O + o)] = p.tensor.data()[o * I + i];
        } else {
            for (int d = 0; d < p.tensor.ndim(); d++) r.shape.push_back(p.tensor.size(d));
        }
        out.push_back(r);
    }
    return out;
}

// A safetensors file of `tensors` in `dtype` ("F32", "F16", "BF16").
inline void write_safetensors(const std::string& path, const std::vector<Raw>& tensors, const std::string& dtype) {
    const size_t eb = dtype == "F32" ? 4 : 2;
    nlohmann::json h = {{"__metadata__", {{"format", "pt"}}}};
    std::string data;
    for (const Raw& r : tensors) {
        const size_t begin = data.size();
        for (float v : r.values) {
            if (dtype == "F32") data.append(reinterpret_cast<const char*>(&v), 4);
            else if (dtype == "BF16") {
                uint32_t bits;
                std::memcpy(&bits, &v, 4);
                const uint16_t b = uint16_t(bits >> 16);
                data.append(reinterpret_cast<const char*>(&b), 2);
            } else {
                const _Float16 f = _Float16(v);
                data.append(reinterpret_cast<const char*>(&f), 2);
            }
        }
        h[r.name] = {{"dtype", dtype}, {"shape", r.shape}, {"data_offsets", {begin, begin + r.values.size() * eb}}};
    }
    std::string hs = h.dump();
    hs.append((8 - hs.size() % 8) % 8, ' ');
    std::ofstream f(path, std::ios::binary);
    const uint64_t n = hs.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << hs << data;
}

struct FolderOptions {
    std::string prefix;          // "" (the hub's keys) or "transformer."
    std::string dtype = "F32";
    bool mask_buffers = false;   // h.{i}.attn.bias / masked_bias, as old checkpoints hold
    bool lm_head = false;        // a stored copy of the tied head
};

inline void write_folder(const std::string& dir, GPT& m, const FolderOptions& o = {}) {
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/config.json") << config_json(m.config).dump(2);
    std::vector<Raw> t = hf_tensors(m);
    for (Raw& r : t) r.name = o.prefix + r.name;
    const int64_t T = m.config.block_size;
    for (int64_t l = 0; o.mask_buffers && l < m.config.n_layer; l++) {
        Raw mask{o.prefix + "h." + std::to_string(l) + ".attn.bias", {1, 1, T, T}, std::vector<float>(size_t(T * T))};
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j <= i; j++) mask.values[size_t(i * T + j)] = 1.f;
        t.push_back(mask);
        t.push_back({o.prefix + "h." + std::to_string(l) + ".attn.masked_bias", {}, {-1e4f}});
    }
    if (o.lm_head) t.push_back({"lm_head.weight", {m.config.vocab_size, m.config.n_embd}, m.wte.weight.to_vector()});
    write_safetensors(dir + "/model.safetensors", t, o.dtype);
}

}  // namespace hf
