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

}  // TEST_SUITE
