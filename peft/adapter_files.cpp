// peft/adapter_files.cpp — saving and loading adapter folders (atomic writes, all-or-nothing loads).
#include "adapter_files.h"
#include <sys/stat.h>
#include <cmath>
#include "engine/fileio.h"
#include "engine/safetensors.h"
#include "lora.h"
#include "methods.h"

static const char* kConfigFile = "adapter_config.json";
static const char* kWeightsFile = "adapter_model.safetensors";

// The index of the first NaN or Inf in an F32 tensor, or -1.
static int64_t first_nonfinite(const Tensor& t) {
    if (t.dtype() != DType::F32) return -1;
    for (int64_t i = 0; i < t.numel(); i++)
        if (!std::isfinite(t.data()[i])) return i;
    return -1;
}

// Writes adapter_model.safetensors, then adapter_config.json (each atomically); returns the
// safetensors file size.
static int64_t write_adapter(const std::string& dir, json cfg, const std::string& peft_type, const NamedTensors& state,
                             const GPT& model) {
    for (const auto& [name, t] : state) {   // load_adapter would refuse the file
        const int64_t i = first_nonfinite(t);
        ENGINE_CHECK(i < 0, NumericError, "{}: not saved: tensor '{}' holds a non-finite value at index {}", dir, name, i);
    }
    make_dirs(dir);
    cfg["peft_type"] = peft_type;
    const std::string weights = dir + "/" + kWeightsFile;
    save_safetensors(weights, state,
                     {{"format", "pt"}, {"peft_type", peft_type}, {"base_model_config", model.config.to_json()}});
    atomic_write_file(dir + "/" + kConfigFile, cfg.dump(2) + "\n");
    struct stat st{};
    stat(weights.c_str(), &st);
    return int64_t(st.st_size);
}

int64_t save_adapter(const std::string& dir, const Method& m, const GPT& model) {
    return write_adapter(dir, m.config_json(), m.peft_type(), m.state(), model);
}

bool save_converted_lora(const std::string& dir, const Method& m, const GPT& model) {
    const json init = m.config_json().value("init_lora_weights", json(true));
    if (m.peft_type() != "LORA" || !init.is_string() || !lora_init_mutates_base(init.get<std::string>())) return false;
    const PlainLora plain = convert_to_plain_lora(m);
    write_adapter(dir + "/converted_lora", plain.config, "LORA", plain.tensors, model);
    return true;
}

std::unique_ptr<Method> load_adapter(const std::string& dir, GPT& model, Rng& rng) {
    const std::string cfg_path = dir + "/" + kConfigFile, weights = dir + "/" + kWeightsFile;
    json cfg = json::parse(read_file(cfg_path, 1 << 20), nullptr, false);
    ENGINE_CHECK(!cfg.is_discarded(), FileError, "{}: not valid JSON", cfg_path);
    ENGINE_CHECK(cfg.is_object(), FileError, "{}: must hold a JSON object", cfg_path);
    SafeTensors st = load_safetensors(weights);
    for (const auto& [name, t] : st.tensors) {
        const int64_t i = first_nonfinite(t);
        ENGINE_CHECK(i < 0, FileError, "{}: tensor '{}' holds a non-finite value at index {}", weights, name, i);
    }
    if (st.metadata.count("base_model_config")) {
        GPTConfig saved = GPTConfig::from_json(st.metadata.at("base_model_config"));
        const GPTConfig& c = model.config;
        std::vector<std::string> diff;
        auto cmp = [&](const char* what, int64_t a, int64_t b) { if (a != b) diff.push_back(fmt::format("{} {} (adapter) vs {} (model)", what, a, b)); };
        cmp("n_layer", saved.n_layer, c.n_layer);
        cmp("n_head", saved.n_head, c.n_head);
        cmp("n_embd", saved.n_embd, c.n_embd);
        cmp("vocab_size", saved.vocab_size, c.vocab_size);
        if (!diff.empty())
            throw ValueError(fmt::format("{}: adapter was trained on another base model: {}", weights, fmt::join(diff, ", ")));
    }
    std::unique_ptr<Method> m;
    try {
        WarnContext in_file(cfg_path);
        m = make_method(cfg, model, rng);
    } catch (const ValueError& e) {
        throw ValueError(fmt::format("{}: {}", cfg_path, e.what()));
    }
    m->load_state(st.tensors, weights);
    return m;
}
