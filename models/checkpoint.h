// models/checkpoint.h — a model checkpoint is one self-contained safetensors file.
//
// Tensors: the parameters under their contract names (models/gpt.h). __metadata__ (strings):
//   "format": "pt", "peft.model_config": GPTConfig JSON, "peft.tokenizer": the vocabulary,
//   "peft.train_state": JSON of the training state (step, RNG streams) when saved by train.
// Optimizer moments go to a second file beside it (optimizer.safetensors, tensors
// "optim.m.<name>", "optim.v.<name>", same step in its metadata) so that model.safetensors
// loads in any safetensors reader as a plain GPT state dict.
#pragma once
#include <map>
#include <memory>
#include <string>
#include "data/tokenizer.h"
#include "models/gpt.h"

struct Checkpoint {
    std::unique_ptr<GPT> model;
    Tokenizer tokenizer = Tokenizer::bytes();
    std::map<std::string, std::string> metadata;
};

// Written to a temp file in the same folder, fsynced and renamed (engine/fileio.h). A NaN or
// Inf weight is a NumericError naming the tensor, and the previous file stays.
void save_checkpoint(const std::string& path, const GPT& model, const Tokenizer& tok,
                     const std::map<std::string, std::string>& extra_metadata = {});
// A folder holding config.json is read as a Hugging Face GPT-2 folder (models/hf_gpt2.h).
// Validates: every contract tensor present with the config's shape, nothing unexpected,
// finite values. Errors name the file and the tensor.
Checkpoint load_checkpoint(const std::string& path);
