// peft/adapter_files.cpp — saving and loading adapter folders (atomic writes, all-or-nothing loads).
#include "adapter_files.h"
#include <sys/stat.h>
#include <cmath>
#include "engine/fileio.h"
#include "engine/safetensors.h"
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

int64_t save_adapter(const std::string& dir, const Method& m, const GPT& model) {
    const NamedTensors state = m.state();
    for (const auto& [name, t] : state) {   // load_adapter would refuse the file
        const int64_t i = first_nonfinite(t);
        ENGINE_CHECK(i < 0, NumericError, "{}: not saved: tensor '{}' holds a non-finite value at index {}", dir, name, i);
    }
    make_dirs(dir);
    json cfg = m.config_json();
    cfg["peft_type"] = m.peft_type();
    const std::string weights = dir + "/" + kWeightsFile;
    save_safetensors(weights, state,
                     {{"format", "pt"}, {"peft_type", m.peft_type()}, {"base_model_config", model.config.to_json()}});
    atomic_write_file(dir + "/" + kConfigFile, cfg.dump(2) + "\n");
    struct stat st{};
    stat(weights.c_str(), &st);
    return int64_t(st.st_size);
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
