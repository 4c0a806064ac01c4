// tests/test_lstm.cpp — the LSTM of peft/lstm.h: torch.nn.LSTM's parameters, a naive double
// reference for the forward, and finite-difference gradients through every step.
#include <cmath>
#include "helpers.h"
#include "peft/lstm.h"

// The equations of lstm.h as plain loops in double, on the same weights. x: T rows of in.
static std::vector<double> naive_lstm(const LSTM& m, const Tensor& x) {
    const int64_t T = x.size(0), h = m.hidden_size, D = m.directions();
    std::vector<double> in(x.data(), x.data() + x.numel());
    int64_t width = m.input_size;
    auto sigm = [](double z) { return 1.0 / (1.0 + std::exp(-z)); };
    for (int64_t l = 0; l < m.num_layers; l++) {
        std::vector<double> out(size_t(T * D * h));
        for (int64_t d = 0; d < D; d++) {
            const LSTM::Weights& w = m.cells[size_t(l * D + d)];
            const float *Wi = w.w_ih.data(), *Wh = w.w_hh.data(), *bi = w.b_ih.data(), *bh = w.b_hh.data();
            std::vector<double> hp(size_t(h), 0.0), cp(size_t(h), 0.0), z(size_t(4 * h));
            for (int64_t s = 0; s < T; s++) {
                const int64_t t = d ? T - 1 - s : s;
                for (int64_t r = 0; r < 4 * h; r++) {
                    double a = double(bi[r]) + bh[r];
                    for (int64_t k = 0; k < width; k++) a += double(Wi[r * width + k]) * in[size_t(t * width + k)];
                    for (int64_t k = 0; k < h; k++) a += double(Wh[r * h + k]) * hp[size_t(k)];
                    z[size_t(r)] = a;
                }
                for (int64_t k = 0; k < h; k++) {   // gate order i, f, g, o
                    const double i = sigm(z[size_t(k)]), f = sigm(z[size_t(h + k)]);
                    const double g = std::tanh(z[size_t(2 * h + k)]), o = sigm(z[size_t(3 * h + k)]);
                    cp[size_t(k)] = f * cp[size_t(k)] + i * g;
                    hp[size_t(k)] = o * std::tanh(cp[size_t(k)]);
                    out[size_t(t * D * h + d * h + k)] = hp[size_t(k)];
                }
            }
        }
        in = out;
        width = D * h;
    }
    return in;
}

TEST_SUITE("peft") {

TEST_CASE("lstm: parameters are torch.nn.LSTM's, 4h·(in + h) + 8h per layer and direction") {
    Rng rng(1);
    LSTM m(16, 8, 2, true, rng);
    ParamList params;
    m.register_params(params, "lstm");
    // torch.nn.LSTM(16, 8, num_layers=2, bidirectional=True): 4 layer-directions of
    // 32·16 + 32·8 + 32 + 32 = 832 (layer 1's input is 2·8 = 16 wide too).
    CHECK(params.count() == 4 * 832);
    CHECK(LSTM::param_count(16, 8, 2, true) == 4 * 832);
    CHECK(LSTM::param_count(5, 3, 1, false) == 4 * 3 * (5 + 3) + 8 * 3);
    CHECK(LSTM::param_count(5, 3, 2, true) == 2 * (12 * 8 + 24) + 2 * (12 * 9 + 24));
    CHECK(params.size() == 16);
    CHECK(params.get("lstm.weight_ih_l0").shape() == Shape({32, 16}));
    CHECK(params.get("lstm.weight_hh_l0_reverse").shape() == Shape({32, 8}));
    CHECK(params.get("lstm.weight_ih_l1").shape() == Shape({32, 16}));
    CHECK(params.get("lstm.bias_hh_l1_reverse").shape() == Shape({32}));
}

TEST_CASE("lstm: init is torch's U(-1/sqrt(h), 1/sqrt(h)) for every weight and bias") {
    Rng rng(2);
    LSTM m(6, 16, 1, true, rng);
    for (const LSTM::Weights& w : m.cells)
        for (const Tensor& t : {w.w_ih, w.w_hh, w.b_ih, w.b_hh}) {
            float lo = 1, hi = -1;
            for (float v : t.to_vector()) { lo = std::min(lo, v); hi = std::max(hi, v); }
            CHECK(lo >= -0.25f);
            CHECK(hi <= 0.25f);
            CHECK(hi - lo > 0.3f);   // spread over the range, not a constant
        }
}

TEST_CASE("lstm: the forward matches a naive double implementation") {
    Rng rng(3);
    SUBCASE("bidirectional, 2 layers") {
        LSTM m(6, 4, 2, true, rng);
        Tensor x = Tensor::randn({5, 6}, rng);
        Tensor y = m(x);
        CHECK(y.shape() == Shape({5, 8}));
        std::string why;
        CHECK_MESSAGE(allclose(y.to_vector(), naive_lstm(m, x), 1e-5, 1e-6, &why), why);
    }
    SUBCASE("one direction, 3 layers, a single step") {
        LSTM m(3, 5, 3, false, rng);
        Tensor x = Tensor::randn({1, 3}, rng);
        std::string why;
        CHECK_MESSAGE(allclose(m(x).to_vector(), naive_lstm(m, x), 1e-5, 1e-6, &why), why);
    }
    SUBCASE("one direction, long sequence") {
        LSTM m(4, 3, 1, false, rng);
        Tensor x = Tensor::randn({12, 4}, rng, 2.f);
        std::string why;
        CHECK_MESSAGE(allclose(m(x).to_vector(), naive_lstm(m, x), 1e-5, 1e-6, &why), why);
    }
}

TEST_CASE("lstm: the reverse direction at the last row has seen only the last input") {
    // One bidirectional layer: row t = [h_fwd_t, h_bwd_t]. h_fwd_{T-1} has read every input,
    // h_bwd_{T-1} is the reverse pass's first step, so changing x_0 leaves it untouched.
    Rng rng(4);
    LSTM m(3, 4, 1, true, rng);
    Tensor x = Tensor::randn({5, 3}, rng);
    std::vector<float> a = m(x).to_vector();
    x.data()[0] += 1.0f;
    std::vector<float> b = m(x).to_vector();
    const size_t last = 4 * 8;
    bool fwd_changed = false;
    for (size_t k = 0; k < 4; k++) fwd_changed = fwd_changed || a[last + k] != b[last + k];
    CHECK(fwd_changed);
    for (size_t k = 4; k < 8; k++) CHECK(a[last + k] == b[last + k]);
}

TEST_CASE("lstm: gradcheck over the input and every weight") {
    Rng rng(5);
    LSTM m(3, 4, 2, true, rng);
    ParamList params;
    m.register_params(params, "lstm");   // makes the weights trainable
    Tensor x = param({4, 3}, rng);
    std::vector<Tensor> inputs = {x};
    for (const Param& p : params.all()) inputs.push_back(p.tensor);
    GradcheckOptions opt;
    opt.max_elems = 24;   // a random subset of each tensor: 17 tensors, a ~60-op graph per forward
    gradcheck("lstm", [&](const std::vector<Tensor>& in) { return m(in[0]); }, inputs, opt);
}

TEST_CASE("lstm: an input of the wrong width is a ShapeError naming its shape") {
    Rng rng(6);
    LSTM m(3, 4, 1, true, rng);
    CHECK_THROWS_WITH_AS(m(Tensor::zeros({5, 4})), doctest::Contains("lstm: x [5, 4] must be (T, 3)"), ShapeError);
    CHECK_THROWS_WITH_AS(m(Tensor::zeros({2, 5, 3})), doctest::Contains("[2, 5, 3]"), ShapeError);
    CHECK_THROWS_AS(LSTM(3, 0, 1, true, rng), ValueError);
}

}  // TEST_SUITE
