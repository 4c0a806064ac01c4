// tests/test_ops_loss.cpp — cross_entropy and the fused linear_cross_entropy: gradients, values,
// ignore_index, extremes, errors, threads.
#include <cmath>
#include "helpers.h"
#include "engine/memory.h"
#include "engine/ops.h"

TEST_SUITE("ops") {

// The direct formula in double: mean over kept rows of −log(exp(z_t) / Σ_j exp(z_j)).
static double cross_entropy_reference(const Tensor& logits, const std::vector<int32_t>& targets) {
    const int64_t V = logits.shape().back();
    double total = 0;
    int n = 0;
    for (size_t r = 0; r < targets.size(); r++) {
        if (targets[r] == -1) continue;
        double s = 0;
        for (int64_t j = 0; j < V; j++) s += std::exp(double(logits.data()[int64_t(r) * V + j]));
        total += -std::log(std::exp(double(logits.data()[int64_t(r) * V + targets[r]])) / s);
        n++;
    }
    return n ? total / n : 0;
}

TEST_CASE("ops: cross_entropy gradcheck passes with some targets ignored") {
    Rng rng(41);
    Tensor logits = param({2, 3, 7}, rng, 2.f);
    Tensor targets = Tensor::from_ints({3, -1, 0, 6, -1, 2}, {2, 3});
    GradcheckOptions opt;
    opt.precise = true;
    gradcheck("cross_entropy", [&](const std::vector<Tensor>& in) { return cross_entropy(in[0], targets); }, {logits},
              opt);
    // ignored rows get exactly zero gradient
    for (int64_t j = 0; j < 7; j++) {
        CHECK(logits.grad().data()[1 * 7 + j] == 0.f);
        CHECK(logits.grad().data()[4 * 7 + j] == 0.f);
    }
}

TEST_CASE("ops: cross_entropy gradients accumulate into an existing buffer, ignored rows adding nothing") {
    Rng rng(47);
    Tensor logits = param({4, 9}, rng);
    Tensor targets = Tensor::from_ints({3, -1, 8, 0}, {4});
    check_gradients_accumulate({logits}, [&] { return cross_entropy(logits, targets); });
}

TEST_CASE("ops: cross_entropy forward matches the direct formula for (N,V) and (B,T,V)") {
    Rng rng(42);
    Tensor logits = Tensor::randn({6, 11}, rng, 3.f);
    const std::vector<int32_t> t = {0, 10, -1, 5, 5, 3};
    const double want = cross_entropy_reference(logits, t);
    CHECK(cross_entropy(logits, Tensor::from_ints(t, {6})).item() == doctest::Approx(want).epsilon(1e-6));
    CHECK(cross_entropy(logits.view_as({2, 3, 11}), Tensor::from_ints(t, {2, 3})).item() ==
          doctest::Approx(want).epsilon(1e-6));
}

TEST_CASE("ops: cross_entropy of extreme logits is finite, with gradient softmax minus onehot") {
    for (float big : {1e4f, 1e30f}) {
        Tensor logits = Tensor::from({big, -big, 0.f,   //
                                      big, -big, 0.f},
                                     {2, 3});
        logits.set_requires_grad(true);
        Tensor loss = cross_entropy(logits, Tensor::from_ints({0, 1}, {2}));
        // row 0: target is the max, loss 0; row 1: loss = big - (-big) = 2 big. Mean: big.
        CHECK(std::isfinite(loss.item()));
        CHECK(loss.item() == doctest::Approx(big).epsilon(1e-6));
        loss.backward();
        // softmax = (1, 0, 0) on both rows; dz = (p − onehot) / 2
        const std::vector<double> want = {0, 0, 0, 0.5, -0.5, 0};
        std::string why;
        CHECK_MESSAGE(allclose(logits.grad().to_vector(), want, 1e-6, 1e-7, &why), why);
    }
}

TEST_CASE("ops: cross_entropy with every target ignored is zero with zero gradient") {
    Rng rng(43);
    Tensor logits = param({3, 5}, rng);
    Tensor loss = cross_entropy(logits, Tensor::from_ints({-1, -1, -1}, {3}));
    CHECK(loss.item() == 0.f);
    loss.backward();
    for (float g : logits.grad().to_vector()) CHECK(g == 0.f);
}

TEST_CASE("ops: cross_entropy rejects a target outside the vocabulary, naming it and its position") {
    Rng rng(44);
    Tensor logits = Tensor::randn({2, 3, 5}, rng);
    CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::from_ints({0, 1, 2, 3, 4, 5}, {2, 3})),
                         doctest::Contains("target 5 at position [1, 2]"), ValueError);
    CHECK_THROWS_WITH_AS(cross_entropy(logits.view_as({6, 5}), Tensor::from_ints({0, -2, 0, 0, 0, 0}, {6})),
                         doctest::Contains("target -2 at position [1]"), ValueError);
    // another ignore_index makes -1 an error and the chosen value skipped
    CHECK_THROWS_AS(cross_entropy(logits.view_as({6, 5}), Tensor::from_ints({-1, 0, 0, 0, 0, 0}, {6}), 99), ValueError);
    CHECK(std::isfinite(cross_entropy(logits.view_as({6, 5}), Tensor::from_ints({99, 0, 0, 0, 0, 0}, {6}), 99).item()));
}

TEST_CASE("ops: cross_entropy rejects mismatched shapes, naming them") {
    Rng rng(45);
    Tensor logits = Tensor::randn({2, 3, 5}, rng);
    CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::from_ints({0, 0, 0}, {3})),
                         doctest::Contains("logits [2, 3, 5] and targets [3]"), ShapeError);
    CHECK_THROWS_WITH_AS(cross_entropy(Tensor::randn({5}, rng), Tensor::from_ints({0}, {1})),
                         doctest::Contains("logits [5] and targets [1]"), ShapeError);
    CHECK_THROWS_AS(cross_entropy(logits, Tensor::zeros({2, 3})), ValueError);   // float targets
}

TEST_CASE("ops: cross_entropy forward and backward are bitwise equal on 1 and 2 threads") {
    Rng rng(46);
    Tensor z0 = Tensor::randn({64, 301}, rng, 2.f);
    std::vector<int32_t> t(64);
    for (size_t i = 0; i < t.size(); i++) t[i] = i % 7 == 3 ? -1 : int32_t(rng.below(301));
    Tensor targets = Tensor::from_ints(t, {64});
    auto run = [&] {
        Tensor z = z0.clone().set_requires_grad(true);
        Tensor loss = cross_entropy(z, targets);
        loss.backward();
        return std::make_pair(loss.to_vector(), z.grad().to_vector());
    };
    auto [one, two] = with_1_and_2_threads(run);
    CHECK(one == two);
}

// ---- linear_cross_entropy: the LM head and its loss in one op (Note [The LM head and its loss, fused])

TEST_CASE("ops: linear_cross_entropy gradcheck passes for x and W with some targets ignored") {
    Rng rng(51);
    Tensor x = param({2, 3, 5}, rng), W = param({7, 5}, rng);
    Tensor targets = Tensor::from_ints({3, -1, 0, 6, 2, -1}, {2, 3});
    GradcheckOptions opt;
    opt.precise = true;
    gradcheck("linear_cross_entropy",
              [&](const std::vector<Tensor>& in) { return linear_cross_entropy(in[0], in[1], targets); }, {x, W}, opt);
}

TEST_CASE("ops: linear_cross_entropy equals cross_entropy of linear, in the loss and both gradients") {
    Rng rng(52);
    Tensor x0 = Tensor::randn({6, 16}, rng), W0 = Tensor::randn({33, 16}, rng, 0.5f);
    Tensor targets = Tensor::from_ints({0, 32, -1, 5, 5, 17}, {6});
    auto run = [&](int64_t chunk) {   // chunk < 0: the plain, unfused ops
        Tensor x = x0.clone().set_requires_grad(true), W = W0.clone().set_requires_grad(true);
        Tensor loss = chunk >= 0 ? linear_cross_entropy(x, W, targets, -1, chunk) : cross_entropy(linear(x, W), targets);
        scale(loss, 3.f).backward();   // dy = 3, not 1: the backward scales by it
        return std::vector<std::vector<float>>{loss.to_vector(), x.grad().to_vector(), W.grad().to_vector()};
    };
    const auto plain = run(-1);
    for (int64_t chunk : {0, 1, 4, 6}) {   // one chunk of all rows; chunks of 1 and 4 rows (the last one short)
        const auto fused = run(chunk);
        for (size_t i = 0; i < fused.size(); i++) {
            std::string why;
            CHECK_MESSAGE(allclose(fused[i], std::vector<double>(plain[i].begin(), plain[i].end()), 1e-5, 1e-7, &why),
                          "chunk " << chunk << " output " << i << ": " << why);
        }
    }
}

TEST_CASE("ops: linear_cross_entropy with a frozen W computes and keeps nothing for W") {
    Rng rng(53);
    Tensor x = param({4, 8}, rng), W = Tensor::randn({11, 8}, rng);   // W frozen, as a tied LM head under PEFT
    Tensor loss = linear_cross_entropy(x, W, Tensor::from_ints({1, 2, 3, 10}, {4}));
    loss.backward();
    CHECK(x.has_grad());
    CHECK_FALSE(W.has_grad());
}

TEST_CASE("ops: linear_cross_entropy gradients accumulate into existing buffers") {
    Rng rng(54);
    Tensor x = param({5, 6}, rng), W = param({9, 6}, rng);
    Tensor targets = Tensor::from_ints({8, -1, 0, 4, 4}, {5});
    check_gradients_accumulate({x, W}, [&] { return linear_cross_entropy(x, W, targets); });
    check_gradients_accumulate({x, W}, [&] { return linear_cross_entropy(x, W, targets, -1, 2); });
}

TEST_CASE("ops: linear_cross_entropy keeps no (N, V) buffer: it saves dx only, and its peak is one chunk") {
    Rng rng(55);
    const int64_t N = 64, C = 8, V = 1000;
    Tensor x = param({N, C}, rng), W = Tensor::randn({V, C}, rng);   // W frozen
    std::vector<int32_t> t(static_cast<size_t>(N));
    for (int64_t r = 0; r < N; r++) t[size_t(r)] = int32_t(r * 7 % V);
    Tensor targets = Tensor::from_ints(t, {N});
    const MemStats m0 = mem_stats();
    mem_reset_peak();
    Tensor loss = linear_cross_entropy(x, W, targets, -1, 4);
    CHECK(mem_stats().cur(Mem::Saved) - m0.cur(Mem::Saved) == N * C * 4);   // dx
    CHECK(mem_stats().pk(Mem::Workspace) - m0.cur(Mem::Workspace) < 2 * 4 * V * 4);   // about one 4-row chunk of logits
    loss.backward();
}

TEST_CASE("ops: linear_cross_entropy rejects mismatched shapes and bad targets, naming them") {
    Rng rng(55);
    Tensor x = Tensor::randn({2, 3, 4}, rng), W = Tensor::randn({5, 4}, rng);
    CHECK_THROWS_WITH_AS(linear_cross_entropy(x, Tensor::randn({5, 3}, rng), Tensor::from_ints({0, 0, 0, 0, 0, 0}, {2, 3})),
                         doctest::Contains("x [2, 3, 4], W [5, 3] and targets [2, 3]"), ShapeError);
    CHECK_THROWS_WITH_AS(linear_cross_entropy(x, W, Tensor::from_ints({0, 0, 0}, {3})),
                         doctest::Contains("targets [3]"), ShapeError);
    CHECK_THROWS_WITH_AS(linear_cross_entropy(x, W, Tensor::from_ints({0, 0, 5, 0, 0, 0}, {2, 3})),
                         doctest::Contains("target 5 at position [0, 2]"), ValueError);
}

TEST_CASE("ops: linear_cross_entropy gives the same loss bitwise on 1 and 2 threads, and gradients within GEMM rounding") {
    Rng rng(56);
    Tensor x0 = Tensor::randn({64, 32}, rng), W0 = Tensor::randn({301, 32}, rng);
    std::vector<int32_t> t(64);
    for (size_t i = 0; i < t.size(); i++) t[i] = i % 7 == 3 ? -1 : int32_t(rng.below(301));
    Tensor targets = Tensor::from_ints(t, {64});
    auto run = [&] {
        Tensor x = x0.clone().set_requires_grad(true), W = W0.clone().set_requires_grad(true);
        Tensor loss = linear_cross_entropy(x, W, targets);
        loss.backward();
        return std::vector<std::vector<float>>{loss.to_vector(), x.grad().to_vector(), W.grad().to_vector()};
    };
    auto [one, two] = with_1_and_2_threads(run);
    CHECK(one[0] == two[0]);   // the row loop is ours: bitwise; OpenBLAS may round its GEMMs differently per thread count
    for (size_t i = 1; i < 3; i++) CHECK(allclose(one[i], std::vector<double>(two[i].begin(), two[i].end()), 1e-5, 1e-7));
}

}  // TEST_SUITE
