// tests/test_profile.cpp — the op profile (`peft bench --profile`): what it charges to which op.
#include <chrono>
#include <thread>
#include "helpers.h"
#include "engine/ops.h"
#include "engine/profile.h"

TEST_SUITE("profile") {

TEST_CASE("profile: each op's forward and backward are charged to its name, once per call") {
    Rng rng(1);
    Tensor x = Tensor::randn({8, 4}, rng), W = param({6, 4}, rng), R = Tensor::randn({8, 6}, rng);
    profile_start();
    Tensor h = gelu(linear(x, W));
    Tensor loss = projection_loss(h, R);
    loss.backward();
    const OpProfile p = profile_stop();
    REQUIRE(p.count("linear") == 1);
    REQUIRE(p.count("gelu") == 1);
    CHECK(p.at("linear").calls == 1);
    CHECK(p.at("gelu").calls == 1);
    for (const auto& [op, t] : p) {
        CAPTURE(op);
        CHECK(t.forward_ms >= 0);
        CHECK(t.backward_ms >= 0);
    }

    // Off, nothing is gathered; a new start begins from an empty table.
    gelu(linear(x, W));
    profile_start();
    CHECK(profile_stop().empty());
}

TEST_CASE("profile: time between two ops goes to the second; a mark starts the clock afresh") {
    Rng rng(2);
    Tensor x = param({4, 4}, rng);
    profile_start();
    Tensor a = gelu(x);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    Tensor b = relu(a);                      // charged the 30 ms sleep
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    profile_mark();                          // e.g. the optimizer ran here: not an op's time
    Tensor c = tanh(b);
    const OpProfile p = profile_stop();
    CHECK(p.at("relu").forward_ms >= 25);
    CHECK(p.at("gelu").forward_ms < 25);
    CHECK(p.at("tanh").forward_ms < 25);
}

TEST_CASE("profile: GEMM FLOPs are charged to the op that ran them; a frozen weight's backward has no dW GEMM") {
    Rng rng(3);
    const int64_t rows = 16, in = 8, out = 12;
    Tensor R = Tensor::randn({rows, out}, rng);
    for (bool frozen : {false, true}) {
        CAPTURE(frozen);
        Tensor x = param({rows, in}, rng), W = Tensor::randn({out, in}, rng);
        W.set_requires_grad(!frozen);
        profile_start();
        Tensor loss = projection_loss(gelu(linear(x, W)), R);
        loss.backward();
        const OpProfile p = profile_stop();
        const double gemm = 2.0 * rows * in * out;   // one GEMM of this linear
        CHECK(p.at("linear").forward_flop == gemm);
        CHECK(p.at("linear").backward_flop == (frozen ? 1 : 2) * gemm);   // dx, and dW only if W trains
        CHECK(p.at("gelu").forward_flop == 0);
    }
}

// Note [GEMM floor]: the log keeps each gemm call's shape; the floor runs them all again.
TEST_CASE("profile: the GEMM log keeps every call's shape; the floor runs them all again and counts their FLOPs") {
    Rng rng(4);
    const int64_t rows = 16, in = 8, out = 12;
    Tensor x = param({rows, in}, rng), W = param({out, in}, rng), R = Tensor::randn({rows, out}, rng);
    gemm_log(true);
    projection_loss(linear(x, W), R).backward();
    gemm_log(false);
    const std::vector<GemmCall> calls = gemm_logged();
    REQUIRE(calls.size() == 3);   // y = x Wᵀ, then dx = dy W and dW = dyᵀ x
    CHECK((calls[0].ta == Trans::N && calls[0].tb == Trans::T && calls[0].M == rows && calls[0].N == out &&
           calls[0].K == in && calls[0].ldc == out && !calls[0].nested));
    for (const GemmCall& c : calls) CHECK(2 * c.M * c.N * c.K == 2 * rows * in * out);
    linear(x, W);   // the log is off: nothing more is kept
    CHECK(gemm_logged().size() == 3);

    // Attention's per-head GEMMs run inside a parallel region: they are logged as nested.
    const int64_t B = 2, T = 8, C = 8, H = 2;
    Tensor q = param({B, T, C}, rng), k = param({B, T, C}, rng), v = param({B, T, C}, rng);
    gemm_log(true);
    Tensor y = causal_attention(q, k, v, H, 0, 0.5f);
    gemm_log(false);
    REQUIRE(gemm_logged().size() == size_t(2 * B * H));   // S = q kᵀ and y = A v per head
    for (const GemmCall& c : gemm_logged()) CHECK(c.nested);

    const GemmFloor f = gemm_floor(calls, 3);
    CHECK(f.calls == 3);
    CHECK(f.flop == 3 * 2.0 * rows * in * out);
    CHECK(f.ms > 0);
}

}  // TEST_SUITE
