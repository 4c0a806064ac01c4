// engine/ops.h — every differentiable op, one line of shape contract each.
//
// Each op is one function (in the ops_*.cpp file of its family) with the forward and its
// backward closure side by side. No op broadcasts implicitly: elementwise ops need equal
// shapes; a bias add and a per-channel scale are ops of their own with explicit reductions.
// Any shape mismatch throws ShapeError naming the op and both shapes.
#pragma once
#include <cstdint>
#include "autograd.h"
#include "rng.h"
#include "tensor.h"

// ---- ops_linear.cpp: the GEMM ops
// y = x Wᵀ + b.  x: (..., in)  W: (out, in)  b: (out) or undefined  ->  y: (..., out)
Tensor linear(const Tensor& x, const Tensor& W, const Tensor& b = Tensor());
// y = a b.  a: (M, K)  b: (K, N)  ->  (M, N)
Tensor matmul(const Tensor& a, const Tensor& b);

// ---- ops_elementwise.cpp: same-shape elementwise ops and the two named row-vector ops
Tensor add(const Tensor& a, const Tensor& b);              // a + b, equal shapes
Tensor mul(const Tensor& a, const Tensor& b);              // a ⊙ b, equal shapes
Tensor scale(const Tensor& x, float s);                    // s · x
Tensor add_row_vector(const Tensor& x, const Tensor& v);   // x: (..., C)  v: (C)  ->  x + v on every row (bias)
Tensor mul_row_vector(const Tensor& x, const Tensor& v);   // x: (..., C)  v: (C)  ->  x ⊙ v on every row (IA³)
Tensor gelu(const Tensor& x);                              // GPT-2's tanh approximation
Tensor relu(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor silu(const Tensor& x);                              // x · sigmoid(x)
// Inverted dropout: zero with probability p, scale the rest by 1/(1-p). Identity when
// p == 0 or !training. The mask comes from rng, so a seeded run is reproducible.
Tensor dropout(const Tensor& x, float p, bool training, Rng& rng);

// ---- ops_shape.cpp: reshapes, sequence concat/slice, heads, embedding, reductions
Tensor reshape(const Tensor& x, const Shape& s);           // same numel, shares storage
// Along the sequence axis (dim 1) of (B, T, C) tensors: (B,T1,C),(B,T2,C) -> (B,T1+T2,C)
Tensor concat_seq(const Tensor& a, const Tensor& b);
Tensor slice_seq(const Tensor& x, int64_t start, int64_t len);   // (B,T,C) -> (B,len,C), rows start..start+len
Tensor slice_last(const Tensor& x, int64_t start, int64_t len);  // (..., C) -> (..., len), columns start..start+len
Tensor repeat_batch(const Tensor& x, int64_t B);           // (1,...) -> (B,...); backward sums over the batch
// ids: int32 (B,T) in [0,V)  W: (V,C)  ->  (B,T,C); backward scatter-adds rows of dW.
Tensor embedding(const Tensor& ids, const Tensor& W);
Tensor sum(const Tensor& x);                               // -> (1)
Tensor mean(const Tensor& x);                              // -> (1)

// ---- ops_norm.cpp
// Over the last dim C: (x - mean) / sqrt(var + eps) ⊙ w + b.  x: (..., C)  w, b: (C)
Tensor layernorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps = 1e-5f);
Tensor softmax(const Tensor& x);                           // over the last dim

// ---- ops_attention.cpp
// Causal self-attention, softmax(q kᵀ · scale + mask) v, for every (batch, head).
// q: (B,T,C)   k, v: (B,P+T,C) where the first P = n_prefix rows are prefix keys/values; head h
// is the columns [h·D, (h+1)·D) with D = C / n_head. Query i sees all P prefix rows and the keys
// P..P+i (itself and the past) -> (B,T,C), heads side by side as in q. Keeps one log-sum-exp per
// row and head for backward, never the (T, P+T) probabilities.
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_head, int64_t n_prefix,
                        float scale);
// The same values and gradients, keeping all (B,H,T,P+T) probabilities for backward as attention
// is usually written; the reference the fast op is tested against (Note [Attention without the T × T matrix]).
Tensor causal_attention_saved_probs(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_head,
                                    int64_t n_prefix, float scale);

// ---- ops_loss.cpp
// Mean cross-entropy from logits via log-sum-exp. logits: (N, V) or (B,T,V); targets: int32
// (N) or (B,T), a target of ignore_index (-1) is skipped; the mean is over the rest. -> (1)
// If every target is ignored the loss is 0 with zero gradient.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index = -1);
// cross_entropy(linear(x, W), targets) a chunk of rows at a time: no (N, V) logits or logits-gradient
// buffer ever exists; keeps dx (and dW) for backward (Note [The LM head and its loss, fused and chunked]).
// chunk_rows > 0 sets the rows per chunk (tests); 0 takes as many as 64 MiB of logits hold.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& W, const Tensor& targets, int32_t ignore_index = -1,
                            int64_t chunk_rows = 0);
