// tests/test_ops_elementwise.cpp — add, mul, scale, the row-vector ops, activations, dropout:
// gradients, shape errors, exact values, what backward keeps alive, and thread independence.
#include <cmath>
#include "helpers.h"
#include "engine/ops.h"

// randn values pushed at least `gap` away from 0: for ops with a kink there (relu).
static Tensor randn_away_from_zero(const Shape& s, Rng& rng, float gap) {
    Tensor t = Tensor::randn(s, rng);
    for (int64_t i = 0; i < t.numel(); i++) t.data()[i] += t.data()[i] >= 0 ? gap : -gap;
    t.set_requires_grad(true);
    return t;
}

static int64_t saved_bytes() { return mem_stats().cur(Mem::Saved); }

TEST_SUITE("ops") {

TEST_CASE("ops: add, mul and scale gradcheck passes on random input") {
    Rng rng(10);
    Tensor a = param({3, 4, 5}, rng), b = param({3, 4, 5}, rng);
    gradcheck("add", [](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, {a, b});
    gradcheck("mul", [](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {a, b});
    gradcheck("scale", [](const std::vector<Tensor>& in) { return scale(in[0], -1.7f); }, {a});
}

TEST_CASE("ops: add and mul of a tensor with itself sum both gradients") {
    Rng rng(11);
    Tensor x = param({6, 7}, rng);
    gradcheck("x+x", [](const std::vector<Tensor>& in) { return add(in[0], in[0]); }, {x});
    gradcheck("x*x", [](const std::vector<Tensor>& in) { return mul(in[0], in[0]); }, {x});
}

TEST_CASE("ops: add_row_vector and mul_row_vector gradcheck passes on random input") {
    Rng rng(12);
    Tensor x = param({2, 3, 70}, rng), v = param({70}, rng);   // 70: a full and a partial 64-column block
    gradcheck("add_row_vector", [](const std::vector<Tensor>& in) { return add_row_vector(in[0], in[1]); }, {x, v});
    gradcheck("mul_row_vector", [](const std::vector<Tensor>& in) { return mul_row_vector(in[0], in[1]); }, {x, v});
}

TEST_CASE("ops: row-vector ops put v on every row") {
    Tensor x = Tensor::from({1, 2, 3, 4, 5, 6}, {2, 3}), v = Tensor::from({10, 20, 30}, {3});
    CHECK(add_row_vector(x, v).to_vector() == std::vector<float>{11, 22, 33, 14, 25, 36});
    CHECK(mul_row_vector(x, v).to_vector() == std::vector<float>{10, 40, 90, 40, 100, 180});
}

TEST_CASE("ops: activation gradcheck passes on random input") {
    Rng rng(13);
    GradcheckOptions precise;
    precise.precise = true;
    Tensor x = param({4, 33}, rng, 2.f);
    gradcheck("gelu", [](const std::vector<Tensor>& in) { return gelu(in[0]); }, {x}, precise);
    gradcheck("tanh", [](const std::vector<Tensor>& in) { return tanh(in[0]); }, {x}, precise);
    gradcheck("sigmoid", [](const std::vector<Tensor>& in) { return sigmoid(in[0]); }, {x}, precise);
    gradcheck("silu", [](const std::vector<Tensor>& in) { return silu(in[0]); }, {x}, precise);
    Tensor xr = randn_away_from_zero({4, 33}, rng, 0.1f);
    gradcheck("relu", [](const std::vector<Tensor>& in) { return relu(in[0]); }, {xr});
}

TEST_CASE("ops: activations match their textbook formulas") {
    const std::vector<float> xs = {-30.f, -3.f, -0.5f, 0.f, 0.25f, 1.f, 4.f, 30.f};
    Tensor x = Tensor::from(xs, {int64_t(xs.size())});
    std::vector<float> g = gelu(x).to_vector(), r = relu(x).to_vector(), t = tanh(x).to_vector(),
                       s = sigmoid(x).to_vector(), si = silu(x).to_vector();
    for (size_t i = 0; i < xs.size(); i++) {
        const double v = xs[i], sg = 1 / (1 + std::exp(-v));
        const double gref = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        CHECK(g[i] == doctest::Approx(gref).epsilon(1e-5));
        CHECK(r[i] == float(std::max(v, 0.0)));
        CHECK(t[i] == doctest::Approx(std::tanh(v)).epsilon(1e-6));
        CHECK(s[i] == doctest::Approx(sg).epsilon(1e-6));
        CHECK(si[i] == doctest::Approx(v * sg).epsilon(1e-6));
        CHECK(std::isfinite(g[i]));
    }
}

TEST_CASE("ops: activation gradients stay finite for large inputs") {
    Tensor x = Tensor::from({-200.f, -90.f, 90.f, 200.f}, {4});
    x.set_requires_grad(true);
    for (auto op : {gelu, sigmoid, silu}) {
        x.zero_grad();
        projection_loss(op(x), Tensor::full({4}, 1.f)).backward();
        for (float d : x.grad().to_vector()) CHECK(std::isfinite(d));
    }
}

TEST_CASE("ops: elementwise shape mismatches name the op and both shapes") {
    Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2}), v = Tensor::zeros({4});
    CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("add: a [2, 3] and b [3, 2]"), ShapeError);
    CHECK_THROWS_WITH_AS(mul(a, b), doctest::Contains("mul: a [2, 3] and b [3, 2]"), ShapeError);
    CHECK_THROWS_WITH_AS(add_row_vector(a, v), doctest::Contains("add_row_vector: x [2, 3] and v [4]"), ShapeError);
    CHECK_THROWS_WITH_AS(mul_row_vector(a, b), doctest::Contains("mul_row_vector: x [2, 3] and v [3, 2]"),
                         ShapeError);
}

// ---- what backward keeps alive

TEST_CASE("ops: mul_row_vector keeps x only for dv and v only for dx") {
    Rng rng(14);
    Tensor x = Tensor::randn({64, 32}, rng), v = param({32}, rng);   // IA³: frozen x, trainable v
    int64_t before = saved_bytes();
    Tensor y = mul_row_vector(x, v);
    CHECK(saved_bytes() - before == int64_t(x.nbytes()));   // x, not v
    y = Tensor();
    CHECK(saved_bytes() == before);

    x.set_requires_grad(true);
    v.set_requires_grad(false);
    y = mul_row_vector(x, v);
    CHECK(saved_bytes() - before == int64_t(v.nbytes()));   // v, not x
}

TEST_CASE("ops: mul keeps only the factor the needed gradient uses; add and scale keep nothing") {
    Rng rng(15);
    Tensor a = Tensor::randn({64, 32}, rng), b = param({64, 32}, rng);
    int64_t before = saved_bytes();
    Tensor y = mul(a, b);
    CHECK(saved_bytes() - before == int64_t(a.nbytes()));
    Tensor z = add(scale(a, 2.f), add_row_vector(b, Tensor::zeros({32})));
    CHECK(saved_bytes() - before == int64_t(a.nbytes()));
}

TEST_CASE("ops: activations keep one tensor for backward, and nothing without a gradient to compute") {
    Rng rng(24);
    Tensor x = Tensor::randn({64, 32}, rng);
    const int64_t before = saved_bytes();
    mem_reset_peak();
    for (auto op : {gelu, relu, sigmoid, silu}) op(x);   // x frozen: no node, nothing saved even briefly
    dropout(x, 0.5f, true, rng);
    CHECK(mem_stats().pk(Mem::Saved) == before);
    x.set_requires_grad(true);
    for (auto op : {gelu, relu, sigmoid, silu}) {
        Tensor y = op(x);
        CHECK(saved_bytes() - before == int64_t(x.nbytes()));   // x or y, the same size
    }
}

// ---- dropout

TEST_CASE("ops: dropout zeroes about p of the elements and scales the rest by 1/(1-p)") {
    Rng data(16), rng(17);
    Tensor x = Tensor::randn({200, 500}, data);
    const float p = 0.3f;
    std::vector<float> y = dropout(x, p, true, rng).to_vector(), xv = x.to_vector();
    int64_t zeroed = 0, wrong = 0;
    for (size_t i = 0; i < y.size(); i++) {
        if (y[i] == 0.f) zeroed++;
        else if (std::fabs(y[i] - xv[i] / (1 - p)) > 1e-6f * std::fabs(y[i])) wrong++;
    }
    CHECK(wrong == 0);
    // 100k Bernoulli(0.3) draws: the standard deviation of the fraction is 0.0014
    CHECK(double(zeroed) / double(y.size()) == doctest::Approx(p).epsilon(0.02));
}

TEST_CASE("ops: dropout is the identity at p = 0 and in evaluation, and rejects p outside [0, 1)") {
    Rng rng(18);
    Tensor x = param({4, 8}, rng);
    CHECK((dropout(x, 0.f, true, rng).impl_ptr() == x.impl_ptr()));   // the same tensor, no node
    CHECK((dropout(x, 0.5f, false, rng).impl_ptr() == x.impl_ptr()));
    CHECK_THROWS_WITH_AS(dropout(x, 1.f, true, rng), doctest::Contains("dropout: p must be in [0, 1)"), ValueError);
    CHECK_THROWS_WITH_AS(dropout(x, -0.1f, false, rng), doctest::Contains("got -0.1"), ValueError);
    CHECK_THROWS_AS(dropout(x, std::nanf(""), true, rng), ValueError);
}

TEST_CASE("ops: dropout with the same seed draws the same mask; another seed another mask") {
    Rng data(19);
    Tensor x = Tensor::randn({1000}, data);
    Rng r1(5), r2(5), r3(6);
    std::vector<float> y1 = dropout(x, 0.5f, true, r1).to_vector();
    CHECK(dropout(x, 0.5f, true, r2).to_vector() == y1);
    CHECK(dropout(x, 0.5f, true, r3).to_vector() != y1);
    CHECK(dropout(x, 0.5f, true, r1).to_vector() != y1);   // the generator moved on
}

TEST_CASE("ops: dropout gradcheck passes with a fixed mask") {
    Rng rng(20);
    Tensor x = param({5, 37}, rng);   // 185 elements: the last mask word is partly used
    gradcheck("dropout", [](const std::vector<Tensor>& in) {
        Rng mask_rng(99);   // reseeded on every evaluation: the same mask each time
        return dropout(in[0], 0.4f, true, mask_rng);
    }, {x});
}

TEST_CASE("ops: dropout keeps a bit mask for backward, 1/32 of x") {
    Rng rng(21);
    Tensor x = param({128, 256}, rng);
    int64_t before = saved_bytes();
    Tensor y = dropout(x, 0.1f, true, rng);
    CHECK(saved_bytes() - before == int64_t(x.nbytes() / 32));
}

// ---- threads

TEST_CASE("ops: elementwise forwards and backwards are bitwise equal on 1 and 2 threads") {
    auto run = [] {
        Rng rng(22);
        Tensor x = param({96, 1000}, rng), v = param({1000}, rng), w = param({1000}, rng), b = param({96, 1000}, rng);
        Rng mask_rng(23);
        Tensor h = gelu(add_row_vector(x, v));
        h = dropout(mul_row_vector(h, w), 0.2f, true, mask_rng);
        h = add(mul(silu(h), b), sigmoid(scale(tanh(x), 0.5f)));
        Tensor y = relu(h);
        projection_loss(y, Tensor::randn(y.shape(), rng)).backward();
        std::vector<std::vector<float>> out = {y.to_vector()};
        for (const Tensor& t : {x, v, w, b}) out.push_back(t.grad().to_vector());
        return out;
    };
    const auto [one, two] = with_1_and_2_threads(run);
    for (size_t k = 0; k < one.size(); k++) CHECK_MESSAGE(one[k] == two[k], "tensor " << k << " differs");
}

}  // TEST_SUITE
