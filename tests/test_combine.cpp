// tests/test_combine.cpp — combining LoRA adapters as a lesson (peft/combine.h): cat is exact,
// linear is lossy by its cross terms, svd is the best low-rank fit, and TIES / DARE / magnitude
// pruning follow HF's merge rules entry by entry. Each combined adapter is checked against the
// exact Σ wᵢ · sᵢ Bᵢ Aᵢ computed here in double loops, not by the code under test.
#include <cmath>
#include "peft_helpers.h"
#include "peft/combine.h"
#include "peft/lora.h"

TEST_SUITE("peft") {

// A LoRA adapter on the lesson model with random (trained-looking) A and B.
static std::unique_ptr<Method> random_lora(GPT& m, const json& extra, uint64_t seed) {
    json c = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}};
    c.update(extra);
    Rng rng(seed);
    auto method = make_method(c, m, rng);
    for (const Param& p : method->params.all())
        for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] = float(rng.normal() * 0.3);
    return method;
}

using Matrix = std::vector<double>;
// Σ wᵢ sᵢ Bᵢ Aᵢ at one module, in double.
static Matrix exact_delta(const std::vector<const Method*>& ms, const std::vector<double>& w, const std::string& module) {
    Matrix d;
    for (size_t i = 0; i < ms.size(); i++)
        for (const LoraFactor& f : lora_factors(*ms[i])) {
            if (f.module != module) continue;
            const int64_t out = f.B.size(0), in = f.A.size(1), r = f.A.size(0);
            d.resize(size_t(out * in), 0.0);
            for (int64_t o = 0; o < out; o++)
                for (int64_t j = 0; j < in; j++) {
                    double s = 0;
                    for (int64_t k = 0; k < r; k++) s += double(f.B.data()[o * r + k]) * f.A.data()[k * in + j];
                    d[size_t(o * in + j)] += w[i] * f.scaling * s;
                }
        }
    return d;
}
// The combined adapter's own ΔW = s' B' A' at one module.
static Matrix delta_of(const Method& m, const std::string& module) { return exact_delta({&m}, {1.0}, module); }

static double rel_diff(const Matrix& a, const Matrix& b) {
    double d = 0, n = 0;
    for (size_t i = 0; i < a.size(); i++) { d += (a[i] - b[i]) * (a[i] - b[i]); n += b[i] * b[i]; }
    return std::sqrt(d / n);
}
static const std::string kQ0 = "transformer.h.0.attn.q_proj";

TEST_CASE("combine: cat stacks the factors, so the combined update is exactly Σ wᵢ·ΔWᵢ (ranks and scales may differ)") {
    auto m = lesson_model();
    auto a = random_lora(*m, {{"r", 2}, {"lora_alpha", 4}}, 1);
    auto b = random_lora(*m, {{"r", 3}, {"lora_alpha", 1.5}, {"target_modules", {"q_proj", "k_proj"}}}, 2);
    CombineReport rep;
    const std::vector<double> w = {0.7, -0.3};   // cat takes any sign: no square roots
    auto c = combine_adapters({a.get(), b.get()}, *m, {"cat", w}, &rep);
    CHECK(rep.rank == 5);                                     // r₁ + r₂
    CHECK(c->config_json()["lora_alpha"] == 5.0);             // alpha = r: the new scale is 1
    for (const char* mod : {"transformer.h.0.attn.q_proj", "transformer.h.1.attn.v_proj", "transformer.h.1.attn.k_proj"})
        CHECK(rel_diff(delta_of(*c, mod), exact_delta({a.get(), b.get()}, w, mod)) < 1e-6);
    CHECK(rep.relative_error < 1e-6);
    CHECK(rep.modules == 6);   // q, v from a; q, k from b; per block
}

TEST_CASE("combine: linear adds the factors, and its error is exactly the cross terms √(wᵢsᵢwⱼsⱼ)·BᵢAⱼ") {
    auto m = lesson_model();
    auto a = random_lora(*m, json::object(), 3), b = random_lora(*m, {{"lora_alpha", 8}}, 4);
    const std::vector<double> w = {0.6, 0.4};
    CombineReport rep;
    auto c = combine_adapters({a.get(), b.get()}, *m, {"linear", w}, &rep);
    const Matrix got = delta_of(*c, kQ0), exact = exact_delta({a.get(), b.get()}, w, kQ0);
    // (√k₁B₁ + √k₂B₂)(√k₁A₁ + √k₂A₂) = k₁B₁A₁ + k₂B₂A₂ + √(k₁k₂)(B₁A₂ + B₂A₁), with kᵢ = wᵢsᵢ
    const LoraFactor fa = lora_factors(*a)[0], fb = lora_factors(*b)[0];
    const double k = std::sqrt(w[0] * fa.scaling * w[1] * fb.scaling);
    Matrix cross(exact.size(), 0.0);
    for (int64_t o = 0; o < 16; o++)
        for (int64_t j = 0; j < 16; j++)
            for (int64_t r = 0; r < 2; r++)
                cross[size_t(o * 16 + j)] += k * (double(fa.B.data()[o * 2 + r]) * fb.A.data()[r * 16 + j] +
                                                  double(fb.B.data()[o * 2 + r]) * fa.A.data()[r * 16 + j]);
    for (size_t i = 0; i < got.size(); i++) CHECK(got[i] - exact[i] == doctest::Approx(cross[i]).epsilon(1e-4).scale(1));
    CHECK(rep.relative_error > 0.1);   // far from exact: what the tool's output says
    MESSAGE("linear on two random rank-2 adapters: relative error " << rep.relative_error);
}

TEST_CASE("combine: each adapter's scale is applied once — one adapter with weight 1 gives back its own ΔW, also with rsLoRA") {
    auto m = lesson_model();
    for (bool rs : {false, true}) {
        auto a = random_lora(*m, {{"use_rslora", rs}, {"lora_alpha", 6}}, 5);
        for (const char* type : {"cat", "svd", "linear"}) {
            CAPTURE(type);
            CAPTURE(rs);
            CombineReport rep;
            auto c = combine_adapters({a.get()}, *m, {type, {1.0}}, &rep);
            // The output keeps use_rslora, and lora_alpha = √r then, so that its scale is 1 (not √r).
            CHECK(c->config_json()["use_rslora"] == rs);
            CHECK(lora_factors(*c)[0].scaling == doctest::Approx(1.0));
            CHECK(rel_diff(delta_of(*c, kQ0), delta_of(*a, kQ0)) < 1e-5);
        }
    }
}

TEST_CASE("combine: svd is the exact sum truncated to svd_rank; at rank Σrᵢ it loses nothing") {
    auto m = lesson_model();
    auto a = random_lora(*m, json::object(), 6), b = random_lora(*m, json::object(), 7);
    const std::vector<double> w = {0.5, 0.5};
    CombineOptions o{"svd", w};
    double previous = 2;
    for (int64_t r : {1, 2, 3, 4}) {   // the sum of two rank-2 updates has rank ≤ 4
        o.svd_rank = r;
        CombineReport rep;
        auto c = combine_adapters({a.get(), b.get()}, *m, o, &rep);
        CHECK(rep.rank == r);
        CHECK(rep.relative_error < previous);   // more rank, less error (Eckart–Young)
        previous = rep.relative_error;
        CHECK(rel_diff(delta_of(*c, kQ0), exact_delta({a.get(), b.get()}, w, kQ0)) ==
              doctest::Approx(rep.relative_error).epsilon(0.5).scale(1e-6));
    }
    CHECK(previous < 1e-5);
}

TEST_CASE("combine: TIES trims by magnitude, elects a sign per entry and averages the agreeing entries (HF merge_utils)") {
    Rng rng(0);
    const std::vector<std::vector<float>> t = {{3, -1, 2, 0.5f}, {-4, 2, 1, 0.25f}};
    // density 0.5: keep the 2 largest |x| of each: {3, 0, 2, 0} and {-4, 2, 0, 0}.
    // signs elected from the sums 3−4 < 0 → −, 0+2 → +, 2 → +, 0 → + ("total")
    // weights 1 and 0.5: entry 0 keeps only −4·0.5 = −2; entry 1: 2·0.5 = 1; entry 2: 2·1 = 2; entry 3: nothing = 0.
    CHECK(merge_task_tensors("ties", t, {1, 0.5}, 0.5, "total", rng) == std::vector<float>{-2, 1, 2, 0});
    // "frequency" counts signs: entry 0 has one + and one −, a tie, so + wins: 3·1 = 3.
    CHECK(merge_task_tensors("ties", t, {1, 0.5}, 0.5, "frequency", rng)[0] == 3);
    // magnitude_prune: the same trim, then the plain weighted sum: 3 − 2, 0 + 1, 2 + 0, 0.
    CHECK(merge_task_tensors("magnitude_prune", t, {1, 0.5}, 0.5, "total", rng) == std::vector<float>{1, 1, 2, 0});
    CHECK(merge_task_tensors("linear", t, {1, 0.5}, 1, "total", rng) == std::vector<float>{1, 0, 2.5f, 0.625f});
}

TEST_CASE("combine: DARE drops entries at random and rescales the rest by 1/density; a seed makes it reproducible") {
    std::vector<float> ones(10000, 1.f);
    Rng r1(42), r2(42), r3(43);
    const auto a = merge_task_tensors("dare_linear", {ones}, {1}, 0.25, "total", r1);
    const auto b = merge_task_tensors("dare_linear", {ones}, {1}, 0.25, "total", r2);
    const auto c = merge_task_tensors("dare_linear", {ones}, {1}, 0.25, "total", r3);
    CHECK(a == b);
    CHECK(a != c);
    double kept = 0, sum = 0;
    for (float x : a) { kept += x != 0; sum += x; CHECK((x == 0 || x == 4.f)); }   // 1 / 0.25 = 4
    CHECK(kept / 10000 == doctest::Approx(0.25).epsilon(0.1));
    CHECK(sum / 10000 == doctest::Approx(1.0).epsilon(0.1));   // the expectation is kept
    // density 1 drops nothing: dare_linear is linear then
    Rng r4(1);
    CHECK(merge_task_tensors("dare_linear", {{1, 2}, {3, 4}}, {1, 2}, 1, "total", r4) == std::vector<float>{7, 10});
    // and on adapters, two runs with one seed give the same file contents
    auto m = lesson_model();
    auto x = random_lora(*m, json::object(), 8), y = random_lora(*m, json::object(), 9);
    CombineOptions o{"dare_ties", {0.5, 0.5}, 0.5};
    o.seed = 7;
    auto c1 = combine_adapters({x.get(), y.get()}, *m, o), c2 = combine_adapters({x.get(), y.get()}, *m, o);
    CHECK(c1->params.get("base_model.model." + kQ0 + ".lora_A.weight").to_vector() ==
          c2->params.get("base_model.model." + kQ0 + ".lora_A.weight").to_vector());
}

TEST_CASE("combine: bad input is one ValueError naming the field and the value") {
    auto m = lesson_model();
    auto a = random_lora(*m, json::object(), 10), b = random_lora(*m, {{"r", 4}}, 11);
    Rng rng(1);
    auto ia3 = make_method({{"peft_type", "IA3"}}, *m, rng);
    auto bad = [&](std::vector<const Method*> ms, CombineOptions o, const char* msg) {
        CHECK_THROWS_WITH_AS(combine_adapters(ms, *m, o), doctest::Contains(msg), ValueError);
    };
    bad({a.get(), b.get()}, {"cat", {1}}, "weights: 1 values for 2 adapters");
    bad({a.get(), ia3.get()}, {"cat", {1, 1}}, "adapter 2 is IA3: combine takes LORA adapters only");
    bad({a.get(), b.get()}, {"linear", {1, 1}}, "have ranks 2 and 4; linear needs equal ranks");
    bad({a.get(), a.get()}, {"ties", {1, 1}, 0}, "density = 0 must be in (0, 1]");
    bad({a.get(), a.get()}, {"dare_linear", {1, 1}, 1.5}, "density = 1.5 must be in (0, 1]");
    bad({a.get(), a.get()}, {"linear", {1, -1}}, "weights: -1 for adapter 2 is negative");
    bad({a.get(), a.get()}, {"average", {1, 1}}, "combination_type \"average\" is not one of");
    CombineOptions o{"svd", {1, 1}};
    o.svd_rank = -2;
    bad({a.get(), a.get()}, o, "svd_rank = -2 must be a positive rank");
}

}  // TEST_SUITE
