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
