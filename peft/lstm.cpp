// peft/lstm.cpp — the LSTM of lstm.h as a composition of engine ops (autograd does the backward).
#include "lstm.h"
#include <cmath>

LSTM::LSTM(int64_t in, int64_t h, int64_t layers, bool bidir, Rng& rng)
    : input_size(in), hidden_size(h), num_layers(layers), bidirectional(bidir) {
    ENGINE_CHECK(in >= 1 && h >= 1 && layers >= 1, ValueError,
                 "lstm: input_size {}, hidden_size {} and num_layers {} must all be >= 1", in, h, layers);
    const float k = 1.0f / std::sqrt(float(h));   // torch: U(-1/√h, 1/√h) for every tensor
    for (int64_t l = 0; l < layers; l++)
        for (int64_t d = 0; d < directions(); d++) {
            const int64_t layer_in = l == 0 ? in : directions() * h;
            cells.push_back({Tensor::uniform({4 * h, layer_in}, rng, -k, k), Tensor::uniform({4 * h, h}, rng, -k, k),
                             Tensor::uniform({4 * h}, rng, -k, k), Tensor::uniform({4 * h}, rng, -k, k)});
        }
}

int64_t LSTM::param_count(int64_t in, int64_t h, int64_t layers, bool bidir) {
    const int64_t D = bidir ? 2 : 1;
    int64_t n = 0;
    for (int64_t l = 0; l < layers; l++) n += D * (4 * h * ((l == 0 ? in : D * h) + h) + 8 * h);
    return n;
}

void LSTM::register_params(ParamList& params, const std::string& prefix) {
    for (int64_t l = 0; l < num_layers; l++)
        for (int64_t d = 0; d < directions(); d++) {
            const Weights& w = cells[size_t(l * directions() + d)];
            const std::string s = std::to_string(l) + (d ? "_reverse" : "");
            params.add(prefix + ".weight_ih_l" + s, w.w_ih);
            params.add(prefix + ".weight_hh_l" + s, w.w_hh);
            params.add(prefix + ".bias_ih_l" + s, w.b_ih);
            params.add(prefix + ".bias_hh_l" + s, w.b_hh);
        }
}

// One direction of one layer. x: (1, T, in) -> (1, T, h), row t holding h_t.
static Tensor run_direction(const LSTM::Weights& w, const Tensor& x, bool reverse) {
    const int64_t T = x.size(1), h = w.w_hh.size(1);
    // Every step's input projection in one GEMM, with b_hh folded in: (1, T, 4h).
    Tensor gx = add_row_vector(linear(x, w.w_ih, w.b_ih), w.b_hh);
    Tensor ht, ct, out;   // undefined before the first step: h_{-1} = c_{-1} = 0
    for (int64_t s = 0; s < T; s++) {
        const int64_t t = reverse ? T - 1 - s : s;
        Tensor gates = slice_seq(gx, t, 1);                       // (1, 1, 4h)
        if (ht.defined()) gates = add(gates, linear(ht, w.w_hh)); // + h_{t-1} W_hhᵀ
        Tensor g4 = reshape(gates, {1, 4, h});                    // rows i, f, g, o
        Tensor i = sigmoid(slice_seq(g4, 0, 1)), f = sigmoid(slice_seq(g4, 1, 1));
        Tensor g = tanh(slice_seq(g4, 2, 1)), o = sigmoid(slice_seq(g4, 3, 1));
        ct = ct.defined() ? add(mul(f, ct), mul(i, g)) : mul(i, g);   // c_{-1} = 0: f ⊙ 0 dropped
        ht = mul(o, tanh(ct));                                    // (1, 1, h)
        // Row t of the output: the reverse direction builds its output from the back.
        out = !out.defined() ? ht : reverse ? concat_seq(ht, out) : concat_seq(out, ht);
    }
    return out;
}

Tensor LSTM::operator()(const Tensor& x) const {
    ENGINE_CHECK(x.ndim() == 2 && x.size(0) >= 1 && x.size(1) == input_size, ShapeError,
                 "lstm: x {} must be (T, {}) with T >= 1", x.shape().str(), input_size);
    const int64_t T = x.size(0), h = hidden_size, D = directions();
    Tensor seq = reshape(x, {1, T, input_size});
    for (int64_t l = 0; l < num_layers; l++) {
        Tensor fwd = run_direction(cells[size_t(l * D)], seq, false);
        if (D == 1) { seq = fwd; continue; }
        Tensor bwd = run_direction(cells[size_t(l * D + 1)], seq, true);
        // Row t = [fwd_t, bwd_t]: view both as (T, 1, h), concatenate along dim 1 -> (T, 2, h).
        seq = reshape(concat_seq(reshape(fwd, {T, 1, h}), reshape(bwd, {T, 1, h})), {1, T, 2 * h});
    }
    return reshape(seq, {T, D * h});
}
