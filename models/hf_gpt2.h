// models/hf_gpt2.h — Hugging Face GPT-2 folders in and out.
//
// A folder as the hub ships `gpt2`, `distilgpt2`, `gpt2-medium`, ... or as save_pretrained
// writes it:
//   config.json          {"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12,
//                         "n_positions": 1024, "vocab_size": 50257, "layer_norm_epsilon": 1e-05,
//                         "activation_function": "gelu_new", ...}
//   model.safetensors    h.{i}.attn.c_attn.weight [C, 3C] ... (the hub's GPT2Model keys), or the
//                        same under "transformer." (GPT2LMHeadModel.save_pretrained); F32, F16 or BF16
//   vocab.json, merges.txt   the byte-level BPE tokenizer (data/tokenizer.h)
//
// The mapping onto GPTConfig{model_type = "gpt2"} (models/gpt.h):
//   - HF's Conv1D computes y = x W + b with W stored (in, out); our Linear stores (out, in), so
//     every c_attn, c_proj, c_fc weight is transposed on import and back on export. c_attn's
//     columns 0..C-1 make q, C..2C-1 k, 2C..3C-1 v: after the transpose those are its rows,
//     which is how the gpt2 layout splits the fused projection.
//   - wte, wpe, ln_1, ln_2, ln_f are copied as they are; lm_head is tied to wte (a stored
//     lm_head.weight must equal wte, else the model is refused as untied).
//   - attn.bias / attn.masked_bias are the causal-mask buffers of old transformers versions:
//     not weights, ignored.
//   - "gelu_new" (and its other name "gelu_pytorch_tanh") is the tanh GELU the model uses;
//     any other activation_function is refused, as are options that change the computation.
//   - dropout: HF's checkpoints say 0.1 (resid/embd/attn_pdrop); the imported model starts at 0
//     (the engine's `dropout` acts on embeddings and sub-layer outputs, not attention weights).
//
// Loading reads the header first and checks everything (names, shapes against config.json,
// dtypes) before reading any weight, then reads and converts one tensor at a time into the
// model's own parameter: the process never holds a second copy of the weights (peak = model +
// the largest tensor in its file dtype).
#pragma once
#include <memory>
#include <string>
#include "models/checkpoint.h"

// True when `path` is a folder holding config.json (an HF model folder).
bool is_hf_folder(const std::string& path);

// config.json -> GPTConfig{model_type "gpt2"}. FileError naming the file and the field.
GPTConfig read_hf_gpt2_config(const std::string& config_path);

// The folder's model alone (config.json + model.safetensors). FileError naming the file and
// the fault; nothing is returned half-loaded. `quantize`: each block Linear's weight is
// quantised as soon as it is read (load_checkpoint, models/checkpoint.h).
std::unique_ptr<GPT> load_hf_gpt2_model(const std::string& dir, std::optional<QType> quantize = std::nullopt);

// The model and its tokenizer (vocab.json + merges.txt, or encoder.json + vocab.bpe), checked to
// fit the embedding before any weight is read. What load_checkpoint returns for a folder.
Checkpoint load_hf_gpt2(const std::string& dir, std::optional<QType> quantize = std::nullopt);

// Writes config.json, model.safetensors ("transformer."-prefixed keys, F32, Conv1D layout) and,
// for a BPE tokenizer, vocab.json + merges.txt into `dir` (created if needed), each file
// atomically. A "gpt" layout model is written fused (q, k, v rows into c_attn). Needs biases.
void export_hf_gpt2(const std::string& dir, const GPT& model, const Tokenizer& tok);
