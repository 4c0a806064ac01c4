// tests/test_profile.cpp — the op profile (`peft bench --profile`, cli/op_profile.h) over the
// engine's profiling hook (engine/profile_hook.h): what it charges to which op.
#include <chrono>
#include <thread>
#include "helpers.h"
#include "engine/ops.h"
#include "cli/op_profile.h"

TEST_SUITE("profile") {

TEST_CASE("profile: each op's forward and backward are charged to its name, once per call") {
    Rng rng(1);
    OpProfiler prof;
    Tensor x = Tensor::randn({8, 4}, rng), W = param({6, 4}, rng), R = Tensor::randn({8, 6}, rng);
    prof.start();
    Tensor h = gelu(linear(x, W));
    Tensor loss = projection_loss(h, R);
    loss.backward();
    const OpProfile p = prof.stop();
    REQUIRE(p.count("linear") == 1);
    REQUIRE(p.count("gelu") == 1);
    CHECK(p.at("linear").calls == 1);
    CHECK(p.at("gelu").calls == 1);
    for (const auto& [op, t] : p) {
        CAPTURE(op);
        CHECK(t.forward_ms >= 0);
        CHECK(t.backward_ms >= 0);
    }

    // Stopped, nothing is gathered (the engine has no hook); a new start begins from an empty table.
    CHECK(profile_hook == nullptr);
    gelu(linear(x, W));
    prof.start();
    CHECK(prof.stop().empty());
}

TEST_CASE("profile: time between two ops goes to the second; a mark starts the clock afresh") {
    Rng rng(2);
    OpProfiler prof;
    Tensor x = param({4, 4}, rng);
    prof.start();
    Tensor a = gelu(x);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    Tensor b = relu(a);                      // charged the 30 ms sleep
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    prof.mark();                          // e.g. the optimizer ran here: not an op's time
    Tensor c = tanh(b);
    const OpProfile p = prof.stop();
    CHECK(p.at("relu").forward_ms >= 25);
    CHECK(p.at("gelu").forward_ms < 25);
    CHECK(p.at("tanh").forward_ms < 25);
}

TEST_CASE("profile: GEMM FLOPs are charged to the op that ran them; a frozen weight's backward has no dW GEMM") {
    Rng rng(3);
    OpProfiler prof;
    const int64_t rows = 16, in = 8, out = 12;
    Tensor R = Tensor::randn({rows, out}, rng);
    for (bool frozen : {false, true}) {
        CAPTURE(frozen);
        Tensor x = param({rows, in}, rng), W = Tensor::randn({out, in}, rng);
        W.set_requires_grad(!frozen);
        prof.start();
        Tensor loss = projection_loss(gelu(linear(x, W)), R);
        loss.backward();
        const OpProfile p = prof.stop();
        const double gemm = 2.0 * rows * in * out;   // one GEMM of this linear
        CHECK(p.at("linear").forward_flop == gemm);
        CHECK(p.at("linear").backward_flop == (frozen ? 1 : 2) * gemm);   // dx, and dW only if W trains
        CHECK(p.at("gelu").forward_flop == 0);
    }
}

}  // TEST_SUITE
