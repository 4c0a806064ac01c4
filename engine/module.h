// engine/module.h — Linear, LayerNorm, Embedding, and the registry of named parameters.
//
// Modules own their parameters as leaf tensors and register them, with dotted names, in a
// ParamList (`transformer.h.0.attn.q_proj.weight`). The names are for printing, checkpoints
// and freezing by pattern, never for dispatch on the forward path.
#pragma once
#include <memory>
#include <string>
#include <vector>
#include "ops.h"
#include "quant.h"
#include "rng.h"
#include "tensor.h"

struct Param {
    std::string name;
    Tensor tensor;
};

// An ordered list of named parameters.
class ParamList {
public:
    // Registers t under name (unique; throws ValueError on a duplicate), tags its storage as
    // Mem::Params and makes it trainable (requires_grad = true).
    void add(const std::string& name, Tensor t);
    const std::vector<Param>& all() const { return params_; }
    Param* find(const std::string& name);                 // nullptr if absent
    Tensor& get(const std::string& name);                 // throws ValueError naming the missing name
    int64_t count(bool trainable_only = false) const;     // number of elements
    // Pattern: an exact name, or a glob where '*' matches any run of characters
    // ("transformer.h.*.attn.*", "*.bias"). Returns how many matched; 0 matches throws ValueError.
    int freeze(const std::string& pattern);
    int unfreeze(const std::string& pattern);
    void freeze_all();
    std::vector<Tensor> trainable() const;                // the tensors with requires_grad
    size_t size() const { return params_.size(); }
private:
    std::vector<Param> params_;
};

bool glob_match(const std::string& pattern, const std::string& name);

struct Linear;
// The seam PEFT methods use to wrap a Linear (LoRA, IA³): when set, Linear::operator()
// calls wrap->forward(base, x) instead of base_forward(x). Unset, it costs one null check.
struct LinearWrap {
    virtual ~LinearWrap() = default;
    virtual Tensor forward(const Linear& base, const Tensor& x) = 0;
};

// y = x Wᵀ + b, W stored [out, in] like torch.nn.Linear. Init: W ~ N(0, std), b = 0.
//
// A frozen W can be stored quantised instead (engine/quant.h, QLoRA's frozen base): quantize()
// keeps the blocks in `qweight` and frees W's float32 values; `weight` stays registered with its
// name and shape, but its data() throws. The forward then runs quant_linear. If a method puts a
// trainable copy of W in `weight` (modules_to_save), the forward reads that copy, as always.
struct Linear {
    int64_t in = 0, out = 0;
    Tensor weight, bias;                    // bias undefined when has_bias == false
    std::shared_ptr<LinearWrap> wrap;       // PEFT seam, null by default
    std::shared_ptr<const QWeight> qweight; // W's blocks once quantize() ran, else null
    Linear() = default;
    Linear(int64_t in, int64_t out, bool has_bias, Rng& rng, float std = 0.02f);
    static Linear zeros(int64_t in, int64_t out, bool has_bias);   // W = 0, b = 0: for a loader to fill
    Tensor operator()(const Tensor& x) const;   // x: (..., in) -> (..., out)
    // The base layer alone, what PEFT wraps call: linear(x, W, b), or quant_linear on W's blocks.
    Tensor base_forward(const Tensor& x) const;
    bool quantized() const { return qweight && !weight.storage_ptr(); }   // does the forward read qweight?
    // Stores W in blocks of `type`, frees its float32 values. W must be frozen (ValueError saying
    // why otherwise); `name` names the module in errors (QWeight::check's).
    void quantize(QType type, const std::string& name);
    void set_quantized(QWeight q);   // W's blocks as given (e.g. read from a file; shape checked), W's floats freed
    void dequantize();   // W float32 again (the dequantised values), qweight dropped; no-op if not quantised
    void register_params(ParamList& params, const std::string& prefix);   // prefix + ".weight", ".bias"
};

// LayerNorm over the last dim: weight 1, bias 0 (bias optional), eps 1e-5 unless given.
struct LayerNorm {
    int64_t dim = 0;
    float eps = 1e-5f;
    Tensor weight, bias;
    LayerNorm() = default;
    LayerNorm(int64_t dim, bool has_bias, float eps = 1e-5f);
    Tensor operator()(const Tensor& x) const;   // (..., C) -> (..., C)
    void register_params(ParamList& params, const std::string& prefix);
};

// A lookup table of V rows of width C, init N(0, std).
struct Embedding {
    int64_t num = 0, dim = 0;
    Tensor weight;   // (V, C)
    Embedding() = default;
    Embedding(int64_t num, int64_t dim, Rng& rng, float std = 0.02f);
    static Embedding zeros(int64_t num, int64_t dim);   // for a loader to fill
    Tensor operator()(const Tensor& ids) const;   // int32 (B,T) -> (B,T,C)
    void register_params(ParamList& params, const std::string& prefix);   // prefix + ".weight"
};
