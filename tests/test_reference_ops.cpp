// tests/test_reference_ops.cpp — each fast op equals its plain version (engine/reference_ops.h,
// peft/lora_reference.h) in its output and in every gradient, and a model trained a few steps on
// the plain ops ends where the fast ops take it (Note [Reference ops]).
#include "peft_helpers.h"
#include "engine/reference_ops.h"
#include "peft/lora.h"

namespace {

constexpr double kTol = 1e-5;   // plain (double sums, one thread) vs fast (float GEMMs): rounding only

// Switches the plain ops on for one scope.
struct ReferenceOps {
    explicit ReferenceOps(bool on) { set_reference_ops(on); }
    ~ReferenceOps() { set_reference_ops(false); }
};

// The output, and the gradient of Σ y ⊙ R into each input, of op(inputs) with the plain ops on
// or off. Inputs are made afresh from `seed`, so both runs see the same values and no old gradient.
struct Run {
    std::vector<float> y;
    std::vector<std::vector<float>> grads;   // empty where the input is frozen
};
template <class MakeInputs, class Op>
Run run(bool plain, uint64_t seed, MakeInputs make, Op op) {
    Rng rng(seed);
    std::vector<Tensor> in = make(rng);
    ReferenceOps scope(plain);
    Tensor y = op(in);
    Rng r_rng(seed + 1000);
    projection_loss(y, Tensor::randn(y.shape(), r_rng)).backward();
    Run out{y.to_vector(), {}};
    for (Tensor& t : in) out.grads.push_back(t.requires_grad() && t.has_grad() ? t.grad().to_vector() : std::vector<float>{});
    return out;
}

void check_close(const std::vector<float>& plain, const std::vector<float>& fast, const char* what) {
    CAPTURE(what);
    REQUIRE(plain.size() == fast.size());
    for (size_t i = 0; i < plain.size(); i++) {
        CAPTURE(i);
        CHECK(plain[i] == doctest::Approx(fast[i]).epsilon(kTol));
    }
}

template <class MakeInputs, class Op>
void check_plain_equals_fast(uint64_t seed, MakeInputs make, Op op) {
    const Run fast = run(false, seed, make, op), plain = run(true, seed, make, op);
    check_close(plain.y, fast.y, "output");
    for (size_t i = 0; i < fast.grads.size(); i++) {
        CAPTURE(i);
        CHECK(plain.grads[i].size() == fast.grads[i].size());
        check_close(plain.grads[i], fast.grads[i], "gradient");
    }
}

}  // namespace

TEST_SUITE("reference ops") {

TEST_CASE("reference ops: the switch is off by default and set_reference_ops turns it on and off") {
    CHECK_FALSE(reference_ops());
    {
        ReferenceOps on(true);
        CHECK(reference_ops());
    }
    CHECK_FALSE(reference_ops());
}

TEST_CASE("reference ops: attention as loops equals the fast attention, with and without prefix keys") {
    // T = 70 crosses the fast op's 64-row blocks; P = 3 prefix keys every query sees.
    constexpr int64_t kBatch = 2, kHeads = 2, kWidth = 8, kT = 70;
    for (int64_t P : {0, 3}) {
        CAPTURE(P);
        check_plain_equals_fast(
            11, [&](Rng& rng) {
                return std::vector<Tensor>{param({kBatch, kT, kWidth}, rng), param({kBatch, P + kT, kWidth}, rng),
                                           param({kBatch, P + kT, kWidth}, rng)};
            },
            [&](std::vector<Tensor>& in) { return causal_attention(in[0], in[1], in[2], kHeads, P, 0.5f); });
    }
}

TEST_CASE("reference ops: layernorm as loops equals the fast layernorm, with and without a bias") {
    constexpr int64_t kRows = 7, kWidth = 16;
    for (bool bias : {true, false}) {
        CAPTURE(bias);
        check_plain_equals_fast(
            12, [&](Rng& rng) {
                return std::vector<Tensor>{param({kRows, kWidth}, rng), param({kWidth}, rng),
                                           bias ? param({kWidth}, rng) : Tensor()};
            },
            [](std::vector<Tensor>& in) { return layernorm(in[0], in[1], in[2]); });
    }
}

TEST_CASE("reference ops: cross-entropy as loops, and the unfused LM head + loss, equal the fast ones") {
    constexpr int64_t kBatch = 2, kT = 5, kVocab = 11, kWidth = 8;
    auto targets = [] {   // two ignored positions (-1)
        std::vector<int32_t> t(kBatch * kT);
        for (size_t i = 0; i < t.size(); i++) t[i] = int32_t((i * 7) % kVocab);
        t[1] = t[6] = -1;
        return Tensor::from_ints(t, {kBatch, kT});
    }();
    check_plain_equals_fast(
        13, [](Rng& rng) { return std::vector<Tensor>{param({kBatch, kT, kVocab}, rng)}; },
        [&](std::vector<Tensor>& in) { return cross_entropy(in[0], targets); });
    check_plain_equals_fast(
        14, [](Rng& rng) { return std::vector<Tensor>{param({kBatch, kT, kWidth}, rng), param({kVocab, kWidth}, rng)}; },
        [&](std::vector<Tensor>& in) { return linear_cross_entropy(in[0], in[1], targets); });
}

TEST_CASE("reference ops: LoRA as composed engine ops equals the fused lora_linear, dropout masks included") {
    constexpr int64_t kBatch = 2, kT = 5, kIn = 8, kOut = 6, kRank = 3;
    constexpr float kScale = 2.f;
    for (float p : {0.f, 0.25f}) {
        CAPTURE(p);
        check_plain_equals_fast(
            15, [&](Rng& rng) {
                return std::vector<Tensor>{param({kBatch, kT, kIn}, rng), Tensor::randn({kOut, kIn}, rng),
                                           Tensor::randn({kOut}, rng), param({kRank, kIn}, rng),
                                           param({kOut, kRank}, rng)};
            },
            [&](std::vector<Tensor>& in) {
                Rng mask_rng(99);   // the same draws in both runs
                return lora_linear(in[0], in[1], in[2], in[3], in[4], kScale, p, true, mask_rng);
            });
    }
}

TEST_CASE("reference ops: a GPT with LoRA trains the same few steps on the plain ops as on the fast ones") {
    constexpr int kSteps = 3;
    auto train = [](bool plain) {
        ReferenceOps scope(plain);
        auto m = lesson_model();
        Rng rng(7);
        auto method = make_method(json{{"peft_type", "LORA"}, {"r", 4}, {"lora_dropout", 0.1},
                                       {"target_modules", {"q_proj", "v_proj", "fc_in"}}},
                                  *m, rng);
        PeftModel pm(*m);
        pm.add("default", std::move(method));
        const std::vector<float> losses = train_method(*m, *pm.active(), kSteps);
        std::vector<float> trained;
        for (const Param& p : pm.active()->params.all())
            for (float v : p.tensor.to_vector()) trained.push_back(v);
        return std::make_pair(losses, trained);
    };
    const auto fast = train(false), plain = train(true);
    check_close(plain.first, fast.first, "losses");
    CHECK(fast.first.back() < fast.first.front());   // it did learn
    check_close(plain.second, fast.second, "trained LoRA weights");
}

}  // TEST_SUITE
