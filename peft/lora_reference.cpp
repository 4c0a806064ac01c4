// peft/lora_reference.cpp — LoRA as composed engine ops (peft/lora_reference.h).
#include "lora_reference.h"

namespace reference {

Tensor lora_branch(const Tensor& x, const Tensor& A, const Tensor& B, float s, float p, bool training, Rng& rng) {
    Tensor branch = linear(linear(dropout(x, p, training, rng), A), B);   // (drop(x) Aᵀ) Bᵀ
    return scale(branch, s);
}

Tensor lora_linear(const Tensor& x, const Tensor& W, const Tensor& b, const Tensor& A, const Tensor& B, float s,
                   float p, bool training, Rng& rng) {
    Tensor base = linear(x, W, b);                               // x Wᵀ + b, the frozen path
    return add(base, lora_branch(x, A, B, s, p, training, rng));
}

}  // namespace reference
