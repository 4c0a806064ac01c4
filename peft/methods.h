// peft/methods.h — one factory per method file. Each reads its config from an
// adapter_config.json object (HF field names and defaults), validates it
// (ValueError naming the field), attaches to the model (freezing every base parameter) and
// returns the method, active on nothing yet (PeftModel::add activates it).
#pragma once
#include "config_reader.h"
#include "method.h"

std::unique_ptr<Method> make_lora(const json& config, GPT& model, Rng& rng);            // peft/lora.cpp
std::unique_ptr<Method> make_ia3(const json& config, GPT& model, Rng& rng);             // peft/ia3.cpp
std::unique_ptr<Method> make_bottleneck(const json& config, GPT& model, Rng& rng);      // peft/adapter.cpp
std::unique_ptr<Method> make_prefix_tuning(const json& config, GPT& model, Rng& rng);   // peft/prefix_tuning.cpp
std::unique_ptr<Method> make_prompt_tuning(const json& config, GPT& model, Rng& rng);   // peft/prompt_tuning.cpp
std::unique_ptr<Method> make_p_tuning(const json& config, GPT& model, Rng& rng);        // peft/p_tuning.cpp
std::unique_ptr<Method> make_loha(const json& config, GPT& model, Rng& rng);            // peft/loha.cpp
std::unique_ptr<Method> make_lokr(const json& config, GPT& model, Rng& rng);            // peft/lokr.cpp
std::unique_ptr<Method> make_vera(const json& config, GPT& model, Rng& rng);            // peft/vera.cpp
std::unique_ptr<Method> make_oft(const json& config, GPT& model, Rng& rng);             // peft/oft.cpp

// Builds a method from an adapter_config.json object (peft_type decides which). Unknown
// peft_type -> ValueError listing the supported ones. Attaches to `model` (freezing it).
std::unique_ptr<Method> make_method(const json& config, GPT& model, Rng& rng);   // peft/methods.cpp

// PiSSA / OLoRA adapters as a plain LoRA against the original weights, HF's
// save_pretrained(..., path_initial_model_for_weight_conversion=): r and lora_alpha doubled,
// init_lora_weights true, A' = [A; A₀], B' = [B, −B₀] (peft/lora.cpp). ValueError for any other adapter.
struct PlainLora {
    json config;   // adapter_config.json without peft_type
    NamedTensors tensors;
};
PlainLora convert_to_plain_lora(const Method& m);
