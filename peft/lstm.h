// peft/lstm.h — a stacked, optionally bidirectional LSTM built from engine ops, like torch.nn.LSTM.
//
// One layer, one direction, over x_0 .. x_{T-1} (Hochreiter & Schmidhuber 1997; torch's gate
// order i, f, g, o):
//   [i f g o] = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh         W_ih [4h, in], W_hh [4h, h]
//   i, f, o = sigmoid(·),  g = tanh(·)
//   c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t),            h_{-1} = c_{-1} = 0
// The reverse direction runs t = T-1 .. 0. A bidirectional layer's output row t is
// [h_fwd_t, h_bwd_t] (2h wide), the next layer's input.
//
// Init, like torch: every weight and bias ~ U(-1/√h, 1/√h). Like torch there are two bias
// vectors (b_ih, b_hh), so per layer and direction: 4h·(in + h) + 8h parameters, in = the
// input width for layer 0 and D·h above it (D = 2 directions, or 1).
//
// It is not a fused op: each step is ~15 small engine ops and autograd differentiates them.
// That is fine where it is used (P-tuning's prompt encoder: one sequence of P ≈ 20 rows per
// forward) and keeps it obviously right. No dropout between layers (torch's `dropout`).
#pragma once
#include <string>
#include <vector>
#include "engine/module.h"

struct LSTM {
    struct Weights {
        Tensor w_ih, w_hh, b_ih, b_hh;   // [4h, in], [4h, h], [4h], [4h]
    };
    int64_t input_size = 0, hidden_size = 0, num_layers = 0;
    bool bidirectional = true;
    std::vector<Weights> cells;   // layer l, direction d (0 forward, 1 reverse) at index l·D + d

    LSTM() = default;
    LSTM(int64_t input_size, int64_t hidden_size, int64_t num_layers, bool bidirectional, Rng& rng);
    int64_t directions() const { return bidirectional ? 2 : 1; }

    // Unbatched, like torch.nn.LSTM on a 2-D input: x: (T, in) -> (T, D·h), T >= 1.
    Tensor operator()(const Tensor& x) const;

    // torch's names: prefix + ".weight_ih_l0", ".weight_hh_l0", ".bias_ih_l0", ".bias_hh_l0",
    // and the same with the suffix "_reverse" for the reverse direction.
    void register_params(ParamList& params, const std::string& prefix);

    // Closed-form parameter count (what torch.nn.LSTM's parameters() sum to).
    static int64_t param_count(int64_t input_size, int64_t hidden_size, int64_t num_layers, bool bidirectional);
};
