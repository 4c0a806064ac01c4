// tests/test_loha.cpp — LoHa as a lesson: ΔW = (alpha/r) · (W1a W1b) ⊙ (W2a W2b), an elementwise
// product of two rank-r products, W2b = 0 at init.
// Bad configs and adapter files that do not fit: tests/test_hardening_methods.cpp.
#include "family_helpers.h"
#include "engine/safetensors.h"

TEST_SUITE("peft") {

static const std::string kQ = "base_model.model.transformer.h.0.attn.q_proj";

TEST_CASE("loha: HF's config fields and keys; 2·r·(in + out) trainable numbers per target; W2b starts at zero") {
    const GPTConfig c = lesson_config();
    auto m = lesson_model();
    Rng rng(1);
    auto loha = make_method(peft_config("LOHA", {{"r", 4}}), *m, rng);
    CHECK(loha->peft_type() == "LOHA");
    const json j = loha->config_json();
    CHECK(j["r"] == 4);
    CHECK(j["alpha"] == 8.0);
    CHECK(j["rank_dropout"] == 0.0);
    CHECK(j["module_dropout"] == 0.0);
    CHECK(j["init_weights"] == true);
    CHECK(loha->params.get(kQ + ".hada_w1_a").shape() == (Shape{16, 4}));
    CHECK(loha->params.get(kQ + ".hada_w1_b").shape() == (Shape{4, 16}));
    CHECK(loha->params.get(kQ + ".hada_w2_a").shape() == (Shape{16, 4}));
    CHECK(loha->params.get(kQ + ".hada_w2_b").shape() == (Shape{4, 16}));
    for (float v : loha->params.get(kQ + ".hada_w2_b").to_vector()) CHECK(v == 0.f);
    // kaiming-uniform: fan_in is the second size (r for W1a, in for W1b)
    for (float v : loha->params.get(kQ + ".hada_w1_a").to_vector()) CHECK(std::fabs(v) <= 0.5f);
    for (float v : loha->params.get(kQ + ".hada_w1_b").to_vector()) CHECK(std::fabs(v) <= 0.25f);
    CHECK(loha->params.count(true) == c.n_layer * 2 * 2 * 4 * (16 + 16));
    CHECK(loha->expected_params(c) == loha->params.count(true));
    CHECK(m->params.count(true) == 0);
}

TEST_CASE("loha: at init (W2b = 0) the model is the base model, bit for bit") {
    check_identity_at_init(peft_config("LOHA"));
}

TEST_CASE("loha: the module output is x (W + ΔW)ᵀ + b with HF's ΔW, computed independently") {
    auto m = lesson_model();
    Rng rng(2);
    PeftModel pm(*m);
    pm.add("default", make_method(peft_config("LOHA", {{"r", 4}, {"alpha", 6}}), *m, rng));
    Method& loha = *pm.active();
    randomize(loha, rng);
    auto P = [&](const char* k) { return to_mat(loha.params.get(kQ + "." + k)); };
    const Mat p1 = matmul_ref(P("hada_w1_a"), P("hada_w1_b"), 16, 4, 16), p2 = matmul_ref(P("hada_w2_a"), P("hada_w2_b"), 16, 4, 16);
    const Linear& q = m->h[0].attn.q_proj;
    Mat W = to_mat(q.weight);
    for (size_t k = 0; k < W.size(); k++) W[k] += 6.0 / 4 * p1[k] * p2[k];
    Tensor x = Tensor::randn({3, 16}, rng);
    std::string why;
    CHECK_MESSAGE(allclose(module_output(q, x), apply_weight(x, W, q.bias, 16, 16), 1e-5, 1e-5, &why), why);
}

TEST_CASE("loha: gradcheck of the four factors through the tiny model") {
    auto m = lesson_model();
    Rng rng(3);
    PeftModel pm(*m);
    pm.add("default", make_method(peft_config("LOHA", {{"r", 2}}), *m, rng));
    Method& loha = *pm.active();
    randomize(loha, rng);
    ToyBatch b = lesson_batch();
    GradcheckOptions o;
    o.precise = true;
    o.max_elems = 8;
    std::vector<Tensor> inputs;
    for (const char* k : {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}) inputs.push_back(loha.params.get(kQ + "." + k));
    gradcheck("loha in gpt", [&](const std::vector<Tensor>&) { return m->forward(b.ids); }, inputs, o);
}

TEST_CASE("loha: training lowers the loss; the base gets no gradient and stays bit-for-bit the same") {
    check_training(peft_config("LOHA"));
}

TEST_CASE("loha: merge equals the adapted forward, unmerge is exact, and files round-trip") {
    check_merge_and_files(peft_config("LOHA", {{"r", 4}}));
}

TEST_CASE("loha: module_dropout skips the update in some training forwards; rank_dropout zeroes output rows") {
    auto m = lesson_model();
    Rng rng(4);
    PeftModel pm(*m);
    pm.add("default", make_method(peft_config("LOHA", {{"module_dropout", 0.5}}), *m, rng));
    randomize(*pm.active(), rng);
    const Linear& q = m->h[0].attn.q_proj;
    Tensor x = Tensor::randn({2, 16}, rng);
    const std::vector<float> base = q.base_forward(x).to_vector(), adapted = module_output(q, x);
    pm.active()->training = true;
    int skipped = 0;
    for (int i = 0; i < 40; i++) {
        const std::vector<float> y = module_output(q, x);
        skipped += y == base;
        CHECK((y == base || y == adapted));
    }
    CHECK(skipped > 8);
    CHECK(skipped < 32);

    auto m2 = lesson_model();
    PeftModel pm2(*m2);
    pm2.add("default", make_method(peft_config("LOHA", {{"rank_dropout", 0.5}}), *m2, rng));
    randomize(*pm2.active(), rng);
    const Linear& q2 = m2->h[0].attn.q_proj;
    const std::vector<float> b2 = q2.base_forward(x).to_vector();
    pm2.active()->training = true;
    const std::vector<float> y = module_output(q2, x);
    int same_rows = 0;
    for (int o = 0; o < 16; o++) same_rows += y[size_t(o)] == b2[size_t(o)] && y[size_t(16 + o)] == b2[size_t(16 + o)];
    CHECK(same_rows > 2);    // dropped rows: exactly the base output
    CHECK(same_rows < 14);
}

}  // TEST_SUITE
