// engine/reference_ops.h — the plain version of each fast op: read these first.
//
// Every fast op that tangles its math with speed (row blocks, in-place head strides, per-thread
// scratch, fused passes) has a plain twin here, written as loops one reads top to bottom, with
// its backward beside its forward. They compute the same values as the fast ops (tested equal to
// 1e-5 in tests/test_reference_ops.cpp, gradients included), only slower.
//
// Note [Reference ops]
// One run-time switch sends every fast op to its plain twin: the environment variable
// PEFT_REFERENCE_OPS=1, the flag --reference_ops of every subcommand, or set_reference_ops(true).
// Each fast op checks its inputs, then (one line) calls its plain twin when the switch is on, so
// errors are the same either way. The whole model then runs on the plain ops: training, eval and
// generation give the same results to float rounding (tests/test_reference_ops.cpp trains a few
// steps both ways). The plain LoRA op, the fast lora_linear's twin, is peft/lora_reference.h.
#pragma once
#include "ops.h"

bool reference_ops();             // is the switch on? (first call reads PEFT_REFERENCE_OPS)
void set_reference_ops(bool on);

namespace reference {

// The same contracts as the ops of the same names in engine/ops.h.
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_head, int64_t n_prefix,
                        float scale);
Tensor layernorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps);
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index);
// Unfused: the logits are a matrix of their own, then the loss (cross_entropy(linear(x, W))).
Tensor linear_cross_entropy(const Tensor& x, const Tensor& W, const Tensor& targets, int32_t ignore_index);

}  // namespace reference
