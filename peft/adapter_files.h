// peft/adapter_files.h — adapter folders as HF PEFT writes them: adapter_config.json (HF field
// names) and adapter_model.safetensors with only the method's tensors, keys like
// "base_model.model.transformer.h.0.attn.q_proj.lora_A.weight" or "prompt_embeddings".
#pragma once
#include <memory>
#include <string>
#include "method.h"

// Save / load an adapter folder. Save prints nothing; returns the safetensors file size.
// Non-finite values are refused both ways: NumericError on save, FileError on load.
int64_t save_adapter(const std::string& dir, const Method& m, const GPT& model);
// A PiSSA / OLoRA adapter also as a plain LoRA against the original base weights, in
// dir/converted_lora (HF's save_pretrained(..., path_initial_model_for_weight_conversion=)):
// the form that loads on the unchanged base, here or in HF. Other adapters: nothing, false.
bool save_converted_lora(const std::string& dir, const Method& m, const GPT& model);
std::unique_ptr<Method> load_adapter(const std::string& dir, GPT& model, Rng& rng);
