// tests/test_lokr.cpp — LoKr as a lesson: ΔW = (alpha/r) · W1 ⊗ W2, a Kronecker product, with
// HF's factorisation of the shapes, W2 (and with decompose_both W1) low rank, W1 = 0 at init.
// Bad configs and adapter files that do not fit: tests/test_hardening_methods.cpp.
#include "family_helpers.h"
#include "peft/lycoris.h"

TEST_SUITE("peft") {

static const std::string kQ = "base_model.model.transformer.h.0.attn.q_proj";

TEST_CASE("lokr: HF's factorization: the divisor pair nearest √dim, or (factor, dim / factor)") {
    CHECK(lokr_factorization(256, -1) == std::pair<int64_t, int64_t>{16, 16});
    CHECK(lokr_factorization(128, -1) == std::pair<int64_t, int64_t>{8, 16});
    CHECK(lokr_factorization(127, -1) == std::pair<int64_t, int64_t>{1, 127});
    CHECK(lokr_factorization(128, 4) == std::pair<int64_t, int64_t>{4, 32});
    CHECK(lokr_factorization(768, -1) == std::pair<int64_t, int64_t>{24, 32});
    CHECK(lokr_factorization(2304, -1) == std::pair<int64_t, int64_t>{48, 48});   // GPT-2's fused c_attn
    CHECK(lokr_factorization(64, 3) == std::pair<int64_t, int64_t>{2, 32});       // 3 does not divide: ≤ 3 near √
}

TEST_CASE("kron: (a ⊗ b)[i·m + k, j·n + l] = a[i,j]·b[k,l], and its gradcheck") {
    Rng rng(1);
    Tensor a = param({2, 3}, rng), b = param({4, 2}, rng);
    Tensor y = kron(a, b);
    CHECK(y.shape() == (Shape{8, 6}));
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 2; l++) CHECK(y.data()[(i * 4 + k) * 6 + j * 2 + l] == a.data()[i * 3 + j] * b.data()[k * 2 + l]);
    gradcheck("kron", [](const std::vector<Tensor>& in) { return kron(in[0], in[1]); }, {a, b});
}

TEST_CASE("lokr: shapes, keys and counts as HF decides them; W1 starts at zero") {
    const GPTConfig c = lesson_config();   // C = 16 = 4 · 4
    auto m = lesson_model();
    Rng rng(2);
    // r 8 ≥ max(4, 4)/2: W2 is full (lokr_w2 [4, 4]); W1 always full without decompose_both.
    auto full = make_method(peft_config("LOKR"), *m, rng);
    CHECK(full->peft_type() == "LOKR");
    CHECK(full->params.get(kQ + ".lokr_w1").shape() == (Shape{4, 4}));
    CHECK(full->params.get(kQ + ".lokr_w2").shape() == (Shape{4, 4}));
    for (float v : full->params.get(kQ + ".lokr_w1").to_vector()) CHECK(v == 0.f);
    CHECK(full->params.count(true) == c.n_layer * 2 * (16 + 16));
    CHECK(full->expected_params(c) == full->params.count(true));
    // fc_in (64 out, 16 in) = (8·8) × (4·4), r 1 < 8/2: W2 = W2a W2b; decompose_both: W1 = W1a W1b.
    auto m2 = lesson_model();
    auto low = make_method(peft_config("LOKR", {{"r", 1}, {"decompose_both", true}, {"target_modules", {"fc_in"}}}), *m2, rng);
    const std::string k = "base_model.model.transformer.h.0.mlp.fc_in";
    CHECK(low->params.get(k + ".lokr_w1_a").shape() == (Shape{8, 1}));
    CHECK(low->params.get(k + ".lokr_w1_b").shape() == (Shape{1, 4}));
    CHECK(low->params.get(k + ".lokr_w2_a").shape() == (Shape{8, 1}));
    CHECK(low->params.get(k + ".lokr_w2_b").shape() == (Shape{1, 4}));
    CHECK(low->params.count(true) == c.n_layer * (1 * (8 + 4) + 1 * (8 + 4)));
    CHECK(low->expected_params(c) == low->params.count(true));
    CHECK(low->config_json()["decompose_both"] == true);
    CHECK(low->config_json()["decompose_factor"] == -1);
}

TEST_CASE("lokr: at init (W1 = 0) the model is the base model, bit for bit") {
    check_identity_at_init(peft_config("LOKR"));
    check_identity_at_init(peft_config("LOKR", {{"r", 1}, {"decompose_both", true}}));
    check_identity_at_init(peft_config("LOKR", {{"init_weights", "lycoris"}}));   // W2 = 0 instead
}

TEST_CASE("lokr: the module output is x (W + ΔW)ᵀ + b with HF's ΔW = s·kron(W1a W1b, W2a W2b), computed independently") {
    auto m = lesson_model();
    Rng rng(3);
    PeftModel pm(*m);
    pm.add("default", make_method(peft_config("LOKR", {{"r", 1}, {"alpha", 3}, {"decompose_both", true},
                                                          {"target_modules", {"fc_in"}}}), *m, rng));
    Method& lokr = *pm.active();
    randomize(lokr, rng);
    const std::string k = "base_model.model.transformer.h.0.mlp.fc_in";
    auto P = [&](const char* n) { return to_mat(lokr.params.get(k + "." + n)); };
    const Mat w1 = matmul_ref(P("lokr_w1_a"), P("lokr_w1_b"), 8, 1, 4), w2 = matmul_ref(P("lokr_w2_a"), P("lokr_w2_b"), 8, 1, 4);
    const Linear& fc = m->h[0].mlp.fc_in;
    Mat W = to_mat(fc.weight);   // (64, 16)
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            for (int a = 0; a < 8; a++)
                for (int b = 0; b < 4; b++) W[size_t((i * 8 + a) * 16 + j * 4 + b)] += 3.0 / 1 * w1[size_t(i * 4 + j)] * w2[size_t(a * 4 + b)];
    Tensor x = Tensor::randn({3, 16}, rng);
    std::string why;
    CHECK_MESSAGE(allclose(module_output(fc, x), apply_weight(x, W, fc.bias, 64, 16), 1e-5, 1e-5, &why), why);
}

TEST_CASE("lokr: training lowers the loss; the base gets no gradient and stays bit-for-bit the same") {
    check_training(peft_config("LOKR"), 0.95f);
}

TEST_CASE("lokr: merge equals the adapted forward, unmerge is exact, and files round-trip") {
    check_merge_and_files(peft_config("LOKR"));
    check_merge_and_files(peft_config("LOKR", {{"r", 1}, {"decompose_both", true}}));
}

}  // TEST_SUITE
