// peft/lora_reference.h — LoRA's plain version: the fused lora_linear (peft/lora.h) as composed
// engine ops, each with its own backward. Read this first (Note [Reference ops] in
// engine/reference_ops.h: the same switch selects it).
#pragma once
#include "engine/ops.h"

namespace reference {

// y = linear(x, W, b) + s · linear(linear(dropout(x, p), A), B)
// The base path sees x; only the branch sees the dropped-out x. dropout draws the same mask
// the fused op does from the same rng, so both give the same y. Autograd does the rest: W and
// b are frozen, so no op computes their gradient; A and B get theirs through the two linears.
Tensor lora_linear(const Tensor& x, const Tensor& W, const Tensor& b, const Tensor& A, const Tensor& B, float s,
                   float p, bool training, Rng& rng);
// The branch alone, s · linear(linear(dropout(x, p), A), B): also LoRA's path beside a quantised
// base Linear (engine/quant.h), whose own op, quant_linear, gives the base output and its dx.
Tensor lora_branch(const Tensor& x, const Tensor& A, const Tensor& B, float s, float p, bool training, Rng& rng);

}  // namespace reference
