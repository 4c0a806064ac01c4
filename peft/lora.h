// peft/lora.h — the fused LoRA linear op (the method itself is built by make_lora, methods.h).
#pragma once
#include <string>
#include <vector>
#include "engine/ops.h"

class Method;

// y = x Wᵀ + b + s · (drop(x) Aᵀ) Bᵀ, in one op whose backward gives dx, dA and dB only.
//   x: (..., in)  W: (out, in) frozen  b: (out) frozen or undefined  A: (r, in)  B: (out, r)
//   -> y: (..., out)
// Dropout (probability p, inverted, only when training) acts on the LoRA branch alone: the
// base path sees the undropped x. The mask is the one dropout(x, p, true, rng) would draw, so
// a seed fixes it whatever the thread count.
// A trainable W or b is a ValueError: this op never computes a gradient for the base weights.
Tensor lora_linear(const Tensor& x, const Tensor& W, const Tensor& b, const Tensor& A, const Tensor& B, float s,
                   float p, bool training, Rng& rng);

// What combining adapters (peft/combine.h) needs of a LoRA adapter: each target module's name,
// its A (r, in), B (out, r) and scale s, so that ΔW = s · B A. ValueError unless m is LORA.
struct LoraFactor {
    std::string module;
    Tensor A, B;
    float scaling;
};
std::vector<LoraFactor> lora_factors(const Method& m);

// ---- DoRA (peft/dora.cpp): W' = m ⊙ (W + s·B A) / ‖W + s·B A‖ row-wise, the norm a constant in backward.
// The row norms ‖W + s·B A‖ (out), computed without a graph.
Tensor dora_weight_norm(const Tensor& W, const Tensor& A, const Tensor& B, float s);
// y = x W'ᵀ + b as HF PEFT computes it (dropout on the branch input only); m: (out) trained.
Tensor dora_linear(const Tensor& x, const Tensor& W, const Tensor& b, const Tensor& A, const Tensor& B, const Tensor& m,
                   float s, float p, bool training, Rng& rng);
// The same with the norm n given (a constant): what dora_linear runs, and what a gradcheck can hold fixed.
Tensor dora_linear_with_norm(const Tensor& x, const Tensor& W, const Tensor& b, const Tensor& A, const Tensor& B,
                             const Tensor& m, const Tensor& n, float s, float p, bool training, Rng& rng);
// W ← (m / ‖W + s·B A‖) ⊙ (W + s·B A), in place.
void dora_merge(Tensor& W, const Tensor& A, const Tensor& B, const Tensor& m, float s);

// ---- LoRA initialisation (peft/lora_init.cpp): HF PEFT's `init_lora_weights`, as a string
// ("true", "false", "gaussian", "pissa", "pissa_niter_K", "olora"). A (r, in), B (out, r); for
// PiSSA and OLoRA also W_res = W − s·B A, the weight the base must keep.
struct LoraInit {
    Tensor A, B, W_res;   // W_res undefined when the base stays W
};
bool lora_init_mutates_base(const std::string& kind);   // pissa*, olora
LoraInit lora_init(const std::string& kind, const Tensor& W, int64_t r, float s, Rng& rng);
