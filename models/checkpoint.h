// models/checkpoint.h — a model checkpoint is one self-contained safetensors file.
//
// Tensors: the parameters under their contract names (models/gpt.h). __metadata__ (strings):
//   "format": "pt", "peft.model_config": GPTConfig JSON, "peft.tokenizer": the vocabulary,
//   "peft.train_state": JSON of the training state (step, RNG streams) when saved by train.
// A quantised checkpoint (`peft quantize`, docs/MEMORY.md) also has "peft.quantize": q8_0, q4_0
// or nf4, and each block Linear's weight is its blocks as they are in memory: a U8 tensor under
// the weight's name, shape QWeight::stored_shape (engine/quant.h) = [out, in / values · bytes].
// Optimizer moments go to a second file beside it (optimizer.safetensors, tensors
// "optim.m.<name>", "optim.v.<name>", same step in its metadata) so that model.safetensors
// loads in any safetensors reader as a plain GPT state dict.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <vector>
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
// Validates: every contract tensor present with the config's shape (blocks: the shape their
// format gives), nothing unexpected, finite values and block scales. Errors name the file and
// the tensor. Reads the header first, then one tensor at a time into the model, so no second copy
// of the weights exists. `quantize`: each block Linear's weight is quantised as soon as it is
// read, so the float32 block weights never exist all at once; a quantised file is kept as it is
// (the same format asked again is fine, another one a ValueError).
Checkpoint load_checkpoint(const std::string& path, std::optional<QType> quantize = std::nullopt);

// ---- shared by both loaders

// FileError "<file>: tensor 'name' holds a non-finite value at index i".
void check_finite(const float* v, int64_t n, const std::string& file, const std::string& tensor);
// A FileError of `header` and the first 10 problems, one a line, if there are any.
void refuse_problems(const std::string& header, const std::vector<std::string>& problems);
// Float32 values read from a file into the model's parameters, one tensor at a time: straight
// into the parameter, or, for a block Linear's weight (`lin`) when `quantize` is set, through `buf`
// into its blocks. destination() says where to read the values; store() checks them and puts them there.
struct LinearLoader {
    std::optional<QType> quantize;
    Tensor buf;
    float* destination(Linear* lin, Tensor& param);
    void store(Linear* lin, Tensor& param, const float* values, const std::string& file, const std::string& tensor);
};
