// tests/test_prefix_tuning.cpp — prefix tuning (peft/prefix_tuning.cpp), as a lesson read top to
// bottom: P trained key/value rows in front of every layer's own, where they come from in E,
// that every query sees them, what they cost, and that training, saving and loading behave.
// Bad configs and adapter files that do not fit: tests/test_hardening_methods.cpp.
#include <cmath>
#include "peft_helpers.h"
#include "models/reference_gpt.h"

namespace {

// The lesson model: L = 2 layers, H = 2 heads of D = 8, C = 16, block_size 16.
constexpr int64_t L = 2, H = 2, D = 8, C = 16;

json prefix_config(int64_t P, bool projection = false, int64_t h = 0) {
    json j = {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", P}, {"prefix_projection", projection}};
    if (h > 0) j["encoder_hidden_size"] = h;
    return j;
}

}  // namespace

TEST_SUITE("peft") {

TEST_CASE("prefix: with P = 0 the model is exactly the base model") {
    auto model = lesson_model();
    Tensor ids = lesson_batch().ids;
    const std::vector<float> base = logits_of(*model, ids);
    Rng rng(1);
    auto method = make_method(prefix_config(0), *model, rng);
    method->activate(*model);
    CHECK(method->n_prefix() == 0);
    CHECK(method->params.count() == 0);
    CHECK(logits_of(*model, ids) == base);   // no prefix rows are asked for: the forward is the plain GPT's
}

TEST_CASE("prefix: layer l's keys and values are slots 2l and 2l+1 of each row of E, for every sequence") {
    auto model = lesson_model();
    Rng rng(2);
    const int64_t P = 3, B = 2;
    auto method = make_prefix_tuning(prefix_config(P), *model, rng);
    Tensor E = method->params.get("prompt_embeddings");
    REQUIRE(E.shape() == Shape{P, 2 * L * C});   // row p = [k_0 | v_0 | k_1 | v_1], each C = H·D wide
    for (int64_t l = 0; l < L; l++) {
        auto [k, v] = method->prefix_kv(l, B);
        REQUIRE(k.shape() == Shape{B, P, C});   // heads side by side, as attention reads k and v
        REQUIRE(v.shape() == Shape{B, P, C});
        int bad = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t p = 0; p < P; p++)
                for (int64_t col = 0; col < C; col++) {
                    const int64_t i = (b * P + p) * C + col;
                    bad += k.data()[i] != E.data()[p * 2 * L * C + (2 * l) * C + col];
                    bad += v.data()[i] != E.data()[p * 2 * L * C + (2 * l + 1) * C + col];
                }
        CHECK(bad == 0);
    }
}

TEST_CASE("prefix: every query sees all P prefix rows (agrees with the naive reference, positions from P)") {
    auto model = lesson_model();
    Rng rng(3);
    const int64_t P = 4;
    auto method = make_prefix_tuning(prefix_config(P), *model, rng);
    method->activate(*model);
    ToyBatch batch = lesson_batch();
    const std::vector<float> logits = logits_of(*model, batch.ids);

    // The reference takes per-layer prefix rows (P rows of width C) and token positions pos0..;
    // it lets query i attend to all P prefix rows plus real keys 0..i.
    Tensor E = method->params.get("prompt_embeddings");
    naive::Prefix prefix;
    for (int64_t l = 0; l < L; l++)
        for (int64_t p = 0; p < P; p++) {
            const float* row = E.data() + p * 2 * L * C;
            prefix[l].first.push_back(naive::Vec(row + 2 * l * C, row + (2 * l + 1) * C));
            prefix[l].second.push_back(naive::Vec(row + (2 * l + 1) * C, row + (2 * l + 2) * C));
        }
    std::vector<double> ref;
    for (int64_t b = 0; b < 2; b++) {
        std::vector<int32_t> seq(batch.ids.idata() + b * 8, batch.ids.idata() + (b + 1) * 8);
        for (auto& row : naive::forward(*model, seq, prefix, /*pos0=*/P)) ref.insert(ref.end(), row.begin(), row.end());
    }
    std::string why;
    // float32 through 2 layers of width 16: 1e-4 absolute is ample (as in the plain GPT's test)
    CHECK_MESSAGE(allclose(logits, ref, 1e-4, 1e-4, &why), why);

    // The mask: change one prefix value row of layer 0 and every position's logits move, the
    // first token's included (it sees nothing but the prefix and itself).
    E.data()[(P - 1) * 2 * L * C + C + 5] += 1.f;
    const std::vector<float> moved = logits_of(*model, batch.ids);
    const int64_t V = model->config.vocab_size;
    for (int64_t t = 0; t < 16; t++) {
        float diff = 0;
        for (int64_t j = 0; j < V; j++) diff = std::max(diff, std::fabs(moved[size_t(t * V + j)] - logits[size_t(t * V + j)]));
        CAPTURE(t);
        CHECK(diff > 1e-6f);
    }
}

TEST_CASE("prefix: the prefix takes P positions, so P + T > block_size is an error") {
    auto model = lesson_model();   // block_size 16
    Rng rng(4);
    auto method = make_prefix_tuning(prefix_config(4), *model, rng);
    method->activate(*model);
    CHECK_NOTHROW(logits_of(*model, Tensor::from_ints(std::vector<int32_t>(12, 1), {1, 12})));   // 4 + 12 = 16
    CHECK_THROWS_WITH_AS(logits_of(*model, Tensor::from_ints(std::vector<int32_t>(13, 1), {1, 13})),
                         doctest::Contains("13 tokens plus 4 virtual tokens is longer than block_size 16"), ShapeError);
    // A config that could never fit a token is refused when the method is built.
    CHECK_THROWS_WITH_AS(make_prefix_tuning(prefix_config(16), *model, rng),
                         doctest::Contains("`num_virtual_tokens` 16 leaves no room for a token in block_size 16"),
                         ValueError);
    CHECK_THROWS_WITH_AS(make_prefix_tuning(prefix_config(-1), *model, rng),
                         doctest::Contains("`num_virtual_tokens` should be a non-negative integer value but the value "
                                           "passed is -1"), ValueError);
    CHECK_THROWS_WITH_AS(make_prefix_tuning({{"num_virtual_tokens", 4}, {"token_dim", 32}}, *model, rng),
                         doctest::Contains("`token_dim` is 32 but the model's n_embd is 16"), ValueError);
}

TEST_CASE("prefix: trainable count is 2·L·P·C, or P·C + C·h + h + h·2LC + 2LC with the projection") {
    auto model = lesson_model();
    Rng rng(5);
    const int64_t P = 4, h = 8, LC2 = 2 * L * C;
    auto plain = make_prefix_tuning(prefix_config(P), *model, rng);
    CHECK(plain->params.count(true) == 2 * L * P * C);   // 256
    CHECK(plain->expected_params(model->config) == 2 * L * P * C);
    auto proj = make_prefix_tuning(prefix_config(P, true, h), *model, rng);
    CHECK(proj->params.count(true) == P * C + C * h + h + h * LC2 + LC2);   // 776
    CHECK(proj->expected_params(model->config) == P * C + C * h + h + h * LC2 + LC2);
    auto proj_c = make_prefix_tuning(prefix_config(P, true), *model, rng);   // h defaults to C
    CHECK(proj_c->params.count(true) == P * C + C * C + C + C * LC2 + LC2);
    CHECK(model->params.count(true) == 0);
    // Either way one tensor is saved, the [P, 2LC] table the attention uses.
    for (Method* m : {plain.get(), proj.get()}) {
        NamedTensors st = m->state();
        REQUIRE(st.size() == 1);
        CHECK(st[0].first == "prompt_embeddings");
        CHECK(st[0].second.shape() == Shape{P, LC2});
    }
}

TEST_CASE("prefix: gradcheck of E, and of E' and the projection's weights") {
    GradcheckOptions o;
    o.precise = true;
    o.max_elems = 16;
    Tensor ids = lesson_batch().ids;
    auto model = lesson_model();
    Rng rng(6);
    auto plain = make_prefix_tuning(prefix_config(3), *model, rng);
    plain->activate(*model);
    gradcheck("prefix E", [&](const std::vector<Tensor>&) { return model->forward(ids); },
              {plain->params.get("prompt_embeddings")}, o);
    plain->deactivate(*model);

    auto proj = make_prefix_tuning(prefix_config(3, true, 8), *model, rng);
    proj->activate(*model);
    std::vector<Tensor> inputs;
    for (const Param& p : proj->params.all()) inputs.push_back(p.tensor);   // E', transform.0 and .2, weights and biases
    REQUIRE(inputs.size() == 5);
    gradcheck("prefix projection", [&](const std::vector<Tensor>&) { return model->forward(ids); }, inputs, o);
}

TEST_CASE("prefix: training lowers the loss and changes nothing in the frozen base") {
    for (bool projection : {false, true}) {
        CAPTURE(projection);
        auto model = lesson_model();
        const uint64_t before = base_checksum(*model);
        Rng rng(7);
        auto method = make_prefix_tuning(prefix_config(4, projection, 8), *model, rng);
        method->activate(*model);
        {   // AdamW keeps two moments for the method's tensors and nothing for the base
            const int64_t opt0 = mem_stats().cur(Mem::Optimizer);
            AdamW opt(method->params, AdamWConfig{});
            CHECK(mem_stats().cur(Mem::Optimizer) - opt0 == 2 * method->params.count(true) * 4);
        }
        // E is N(0, 1), so it takes larger steps than the adapters: lr 0.1. 40 steps on 15 random
        // next-token targets; measured 2.60 -> 2.32 (plain) and 2.59 -> 2.16 (projection).
        std::vector<float> losses = train_method(*model, *method, 40, 0.1f);
        INFO("prefix (projection " << projection << ") loss " << losses.front() << " -> " << losses.back());
        CHECK(losses.back() < losses.front() - 0.1f);
        CHECK(base_has_no_grads(*model));
        CHECK(base_checksum(*model) == before);
    }
}

TEST_CASE("prefix: save then load gives identical logits (a projection is saved folded into E)") {
    for (bool projection : {false, true}) {
        CAPTURE(projection);
        TempDir dir;
        auto model = lesson_model();
        Rng rng(8);
        auto method = make_prefix_tuning(prefix_config(4, projection, 8), *model, rng);
        method->activate(*model);
        train_method(*model, *method, 5);
        Tensor ids = lesson_batch().ids;
        const std::vector<float> trained = logits_of(*model, ids);
        save_adapter(dir.path, *method, *model);

        auto fresh = lesson_model();
        auto loaded = load_adapter(dir.path, *fresh, rng);
        loaded->activate(*fresh);
        CHECK(logits_of(*fresh, ids) == trained);
        // What was loaded is the table itself: a plain E [P, 2LC], whatever produced it.
        CHECK(loaded->params.count() == 2 * L * 4 * C);
        CHECK(loaded->params.find("prompt_embeddings") != nullptr);
    }
}

}  // TEST_SUITE
