// tests/test_mixed.cpp — several adapters in one batch, and switching without reloading, as a
// lesson (peft/mixed.h, peft/peft_model.h): each sample of a batch gets what running it alone
// with its own adapter gives; disabling gives the base model and always comes back, even when
// an exception leaves the scope.
#include <cmath>
#include "peft_helpers.h"
#include "peft/mixed.h"

TEST_SUITE("peft") {

// Random, trained-looking values in every tensor of a method (at init LoRA and IA³ are the identity).
static std::unique_ptr<Method> shaken(std::unique_ptr<Method> m, uint64_t seed) {
    Rng rng(seed);
    for (const Param& p : m->params.all())
        for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] += float(rng.normal() * 0.2);
    return m;
}

// Four loaded adapters: two LoRAs on different modules and ranks, an IA³, a LoRA with a rank_pattern.
static void load_four(PeftModel& pm, GPT& m) {
    Rng rng(1);
    pm.add("a", shaken(make_method({{"peft_type", "LORA"}, {"r", 2}}, m, rng), 1));
    pm.add("b", shaken(make_method({{"peft_type", "LORA"}, {"r", 4}, {"target_modules", "all-linear"}}, m, rng), 2));
    pm.add("c", shaken(make_method({{"peft_type", "IA3"}}, m, rng), 3));
    pm.add("d", shaken(make_method({{"peft_type", "LORA"}, {"rank_pattern", {{"v_proj", 3}}}}, m, rng), 4));
}

static const std::vector<int32_t> kTokens = {1, 5, 3, 9, 0, 2, 7, 4, 4, 4, 10, 1, 6, 8, 3, 12, 2, 2, 11, 5,
                                             9, 8, 7, 6, 0, 1, 2, 3, 12, 11, 10, 9, 5, 5, 6, 6, 1, 7, 3, 8};
static Tensor sample(int b) { return Tensor::from_ints({kTokens.begin() + b * 8, kTokens.begin() + b * 8 + 8}, {1, 8}); }

TEST_CASE("mixed: each sample of a mixed batch equals running it alone with its adapter (LoRA, IA3, __base__)") {
    auto m = lesson_model();
    PeftModel pm(*m);
    load_four(pm, *m);
    const std::vector<std::string> names = {"a", "__base__", "c", "b", "a"};
    // alone: one sample, its adapter active (or none)
    std::vector<std::vector<float>> alone;
    for (int b = 0; b < 5; b++) {
        if (names[size_t(b)] == "__base__") pm.disable();
        else pm.set_active(names[size_t(b)]);
        alone.push_back(logits_of(*m, sample(b)));
    }
    pm.set_active("d");
    // together: the 5 samples in one batch
    std::vector<float> mixed;
    {
        MixedBatch mix(pm, names);
        CHECK(pm.active() == nullptr);   // no adapter's own seams while mixing
        mixed = logits_of(*m, Tensor::from_ints(kTokens, {5, 8}));
    }
    CHECK(pm.active_name() == "d");   // and the active adapter is back
    const size_t per = alone[0].size();
    double worst = 0;
    for (size_t b = 0; b < 5; b++)
        for (size_t i = 0; i < per; i++) worst = std::max(worst, double(std::fabs(mixed[b * per + i] - alone[b][i])));
    CHECK(worst <= 1e-6);
    // and the adapters do differ, so the test could fail: sample 0 (a) is not the base
    pm.disable();
    const auto base0 = logits_of(*m, sample(0));
    double moved = 0;
    for (size_t i = 0; i < per; i++) moved = std::max(moved, double(std::fabs(base0[i] - alone[0][i])));
    CHECK(moved > 1e-3);
}

TEST_CASE("mixed: one name for the whole batch is that adapter's forward; the four-adapter mix too") {
    auto m = lesson_model();
    PeftModel pm(*m);
    load_four(pm, *m);
    const Tensor ids = Tensor::from_ints(kTokens, {5, 8});
    pm.set_active("b");
    const auto b_alone = logits_of(*m, ids);
    {
        MixedBatch mix(pm, {"b", "b", "b", "b", "b"});
        CHECK(logits_of(*m, ids) == b_alone);   // the very same ops: bit for bit
    }
    MixedBatch mix(pm, {"a", "b", "c", "d", "__base__"});
    CHECK(logits_of(*m, ids).size() == b_alone.size());
}

TEST_CASE("mixed: names that are not loaded, methods that cannot mix, merged adapters and training are refused by name") {
    auto m = lesson_model();
    PeftModel pm(*m);
    load_four(pm, *m);
    Rng rng(5);
    pm.add("prefix", make_method({{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 2}}, *m, rng), false);
    pm.set_active("a");
    CHECK_THROWS_WITH_AS(MixedBatch(pm, {"a", "zz"}), doctest::Contains("adapter_names: 'zz' (sample 1) names no loaded adapter; loaded: [a, b, c, d, prefix] and __base__"), ValueError);
    CHECK_THROWS_WITH_AS(MixedBatch(pm, {"prefix", "a"}), doctest::Contains("'prefix' is PREFIX_TUNING, which cannot be mixed"), ValueError);
    CHECK(pm.active_name() == "a");   // a refusal changes nothing
    pm.get("b").merge(*m);
    CHECK_THROWS_WITH_AS(MixedBatch(pm, {"b"}), doctest::Contains("'b' is merged into the base weights"), ValueError);
    pm.get("b").unmerge(*m);
    MixedBatch mix(pm, {"a", "c"});
    ToyBatch tb = lesson_batch();
    CHECK_THROWS_WITH_AS(m->loss(tb.ids, tb.targets), doctest::Contains("a mixed-adapter batch is for inference"), ValueError);
    NoGradGuard ng;
    CHECK_THROWS_WITH_AS(m->forward(Tensor::from_ints(kTokens, {5, 8})), doctest::Contains("2 names, one per sample, but the batch holds 5"), ShapeError);
}

TEST_CASE("disable_adapter: the base model while the guard lives, the adapter back after, also after an exception") {
    auto m = lesson_model();
    const auto base = logits_of(*m);
    PeftModel pm(*m);
    load_four(pm, *m);
    pm.set_active("a");
    const auto with_a = logits_of(*m);
    REQUIRE(with_a != base);
    {
        DisableAdapterGuard off(pm);
        CHECK(logits_of(*m) == base);   // exactly the base model
        CHECK(pm.names().size() == 4);  // the adapters stay loaded
    }
    CHECK(logits_of(*m) == with_a);
    // The exception path: something throws inside the scope; the adapter is still restored.
    try {
        DisableAdapterGuard off(pm);
        CHECK(logits_of(*m) == base);
        throw std::runtime_error("a failure inside the scope");
    } catch (const std::runtime_error&) {
    }
    CHECK(pm.active_name() == "a");
    CHECK(logits_of(*m) == with_a);
    // ... and a merged adapter: disabling unmerges it (base weights bit for bit), re-enabling re-installs its seams
    pm.active()->merge(*m);
    {
        DisableAdapterGuard off(pm);
        CHECK(logits_of(*m) == base);
    }
    CHECK(logits_of(*m) == with_a);
    // set_adapter / delete_adapter: switching needs no reload; deleting the active one leaves the base
    pm.set_active("c");
    CHECK(logits_of(*m) != with_a);
    pm.set_active("a");
    CHECK(logits_of(*m) == with_a);
    pm.remove("a");
    CHECK(logits_of(*m) == base);
    CHECK_THROWS_WITH_AS(pm.set_active("a"), doctest::Contains("no adapter named 'a'"), ValueError);
}

}  // TEST_SUITE
