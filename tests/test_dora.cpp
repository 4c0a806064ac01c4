// tests/test_dora.cpp — DoRA as a lesson: LoRA's update, split into direction and magnitude,
//     W' = m ⊙ (W + s·B A) / ‖W + s·B A‖   (row norms; m starts at ‖W‖; the norm is a constant in backward).
#include <fstream>
#include "family_helpers.h"
#include "engine/safetensors.h"
#include "peft/lora.h"

TEST_SUITE("peft") {

static json dora_config(const json& extra = json::object()) {
    json c = {{"peft_type", "LORA"}, {"use_dora", true}, {"r", 4}};
    c.update(extra);
    return c;
}
static const std::string kQ = "base_model.model.transformer.h.0.attn.q_proj";

// W' of DoRA from HF's formula, in double: m ⊙ (W + s·B A) / ‖W + s·B A‖ row by row.
static Mat dora_weight_ref(const Tensor& W, const Tensor& A, const Tensor& B, const Tensor& m, double s) {
    const int64_t out = W.size(0), in = W.size(1), r = A.size(0);
    Mat V = matmul_ref(to_mat(B), to_mat(A), out, r, in);
    for (int64_t k = 0; k < out * in; k++) V[size_t(k)] = W.data()[k] + s * V[size_t(k)];
    for (int64_t o = 0; o < out; o++) {
        double ss = 0;
        for (int64_t i = 0; i < in; i++) ss += V[size_t(o * in + i)] * V[size_t(o * in + i)];
        for (int64_t i = 0; i < in; i++) V[size_t(o * in + i)] *= m.data()[o] / std::sqrt(ss);
    }
    return V;
}

TEST_CASE("dora: use_dora adds one magnitude per output row, initialised to the row norms of W") {
    const GPTConfig c = lesson_config();
    auto m = lesson_model();
    Rng rng(1);
    auto dora = make_lora(dora_config(), *m, rng);
    CHECK(dora->config_json()["use_dora"] == true);
    // r·(in + out) + out per target: q and v, C = 16, r = 4 → 2 · (4·32 + 16) per layer
    CHECK(dora->params.count(true) == c.n_layer * 2 * (4 * 2 * c.n_embd + c.n_embd));
    CHECK(dora->expected_params(c) == dora->params.count(true));
    const Tensor mag = dora->params.get(kQ + ".lora_magnitude_vector");
    CHECK(mag.shape() == Shape{16});
    const Tensor& W = m->h[0].attn.q_proj.weight;
    for (int64_t o = 0; o < 16; o++) {
        double ss = 0;
        for (int64_t i = 0; i < 16; i++) ss += double(W.data()[o * 16 + i]) * W.data()[o * 16 + i];
        CHECK(mag.data()[o] == doctest::Approx(std::sqrt(ss)).epsilon(1e-6));
    }
}

TEST_CASE("dora: at init (B = 0, m = ‖W‖) the adapted model gives the base model's logits") {
    auto m = lesson_model();
    const std::vector<float> base = logits_of(*m);
    Rng rng(2);
    PeftModel pm(*m);
    pm.add("default", make_lora(dora_config(), *m, rng));
    // g = m / ‖W‖ is exactly 1 (the same norm computed twice), and x Wᵀ · 1 + b is x Wᵀ + b
    // in float; the base adds b inside its GEMM, here it is added after: equal to rounding.
    std::string why;
    CHECK_MESSAGE(allclose(logits_of(*m), std::vector<double>(base.begin(), base.end()), 1e-6, 1e-6, &why), why);
}

TEST_CASE("dora: the module output matches HF's formula computed independently, with and without dropout") {
    auto m = lesson_model();
    Rng rng(3);
    PeftModel pm(*m);
    pm.add("default", make_lora(dora_config({{"lora_alpha", 8}, {"lora_dropout", 0.3}}), *m, rng));
    Method& dora = *pm.active();
    randomize(dora, rng);
    Tensor A = dora.params.get(kQ + ".lora_A.weight"), B = dora.params.get(kQ + ".lora_B.weight");
    Tensor mag = dora.params.get(kQ + ".lora_magnitude_vector");
    for (int64_t o = 0; o < 16; o++) mag.data()[o] = 1.f + 0.5f * float(o % 3);   // positive, varied
    const Linear& q = m->h[0].attn.q_proj;
    Tensor x = Tensor::randn({2, 3, 16}, rng);
    const double s = 8.0 / 4;
    std::string why;
    CHECK_MESSAGE(allclose(module_output(q, x), apply_weight(x, dora_weight_ref(q.weight, A, B, mag, s), q.bias, 16, 16),
                           1e-5, 1e-5, &why), why);

    // Training with dropout: y = x Wᵀ + b + (g − 1) ⊙ (xd Wᵀ) + g ⊙ s·(xd Aᵀ) Bᵀ, xd = dropout(x)
    // with the mask the model's dropout stream draws next.
    Rng stream = m->dropout_rng;
    Tensor xd = dropout(x, 0.3f, true, stream);
    dora.training = true;
    const std::vector<float> y = module_output(q, x);
    dora.training = false;
    Mat Wm = to_mat(q.weight), BA = matmul_ref(to_mat(B), to_mat(A), 16, 4, 16), V(256);
    std::vector<double> g(16);
    for (int64_t o = 0; o < 16; o++) {
        double ss = 0;
        for (int64_t i = 0; i < 16; i++) ss += std::pow(Wm[size_t(o * 16 + i)] + s * BA[size_t(o * 16 + i)], 2);
        g[size_t(o)] = mag.data()[o] / std::sqrt(ss);
    }
    const std::vector<double> base = apply_weight(x, Wm, q.bias, 16, 16), xdW = apply_weight(xd, Wm, Tensor(), 16, 16),
                              lora = apply_weight(xd, BA, Tensor(), 16, 16);
    std::vector<double> expect(base.size());
    for (size_t i = 0; i < expect.size(); i++)
        expect[i] = base[i] + (g[i % 16] - 1) * xdW[i] + g[i % 16] * s * lora[i];
    CHECK_MESSAGE(allclose(y, expect, 1e-5, 1e-5, &why), why);
}

TEST_CASE("dora_linear: gradcheck of x, A, B and m with the norm held constant, as in backward") {
    Rng rng(4);
    Tensor x = param({2, 3, 8}, rng), W = Tensor::randn({5, 8}, rng), b = Tensor::randn({5}, rng);
    Tensor A = param({3, 8}, rng), B = param({5, 3}, rng), mag = param({5}, rng);
    const Tensor n = dora_weight_norm(W, A, B, 1.5f);   // fixed: backward treats it as a constant
    for (float p : {0.f, 0.3f}) {
        CAPTURE(p);
        gradcheck("dora_linear", [&](const std::vector<Tensor>& in) {
            Rng r(11);
            return dora_linear_with_norm(in[0], W, b, in[1], in[2], in[3], n, 1.5f, p, true, r);
        }, {x, A, B, mag});
    }
    // dora_linear itself gives the same gradients: its norm is detached, not differentiated.
    for (Tensor* t : {&A, &B, &mag}) t->zero_grad();
    Rng r1(5), r2(5);
    Tensor R = Tensor::randn({2, 3, 5}, rng);
    projection_loss(dora_linear(x, W, b, A, B, mag, 1.5f, 0.f, false, r1), R).backward();
    const std::vector<float> dA = A.grad().to_vector(), dm = mag.grad().to_vector();
    for (Tensor* t : {&A, &B, &mag}) t->zero_grad();
    projection_loss(dora_linear_with_norm(x, W, b, A, B, mag, n, 1.5f, 0.f, false, r2), R).backward();
    CHECK(A.grad().to_vector() == dA);
    CHECK(mag.grad().to_vector() == dm);
}

TEST_CASE("dora: training lowers the loss; the base gets no gradient and stays bit-for-bit the same") {
    auto m = lesson_model();
    const uint64_t before = base_checksum(*m);
    Rng rng(6);
    PeftModel pm(*m);
    pm.add("default", make_lora(dora_config({{"r", 8}}), *m, rng));
    std::vector<float> losses = train_method(*m, *pm.active(), 40);
    CHECK(losses.back() < 0.9f * losses.front());
    CHECK(base_has_no_grads(*m));
    CHECK(base_checksum(*m) == before);
    CHECK(pm.active()->params.get(kQ + ".lora_magnitude_vector").has_grad());   // m trains
}

TEST_CASE("dora: merging gives W' = m ⊙ (W + s·BA)/‖W + s·BA‖ and the same logits; unmerge restores W exactly") {
    auto m = lesson_model();
    Rng rng(7);
    PeftModel pm(*m);
    pm.add("default", make_lora(dora_config(), *m, rng));
    Method& dora = *pm.active();
    train_method(*m, dora, 10);
    const std::vector<float> adapted = logits_of(*m);
    const uint64_t base = base_checksum(*m);
    const Tensor W0 = m->h[0].attn.q_proj.weight.clone();
    const Mat expect = dora_weight_ref(W0, dora.params.get(kQ + ".lora_A.weight"), dora.params.get(kQ + ".lora_B.weight"),
                                       dora.params.get(kQ + ".lora_magnitude_vector"), 16.0 / 4);
    dora.merge(*m);
    std::string why;
    CHECK_MESSAGE(allclose(m->h[0].attn.q_proj.weight.to_vector(), expect, 1e-5, 1e-6, &why), why);
    CHECK_MESSAGE(allclose(logits_of(*m), std::vector<double>(adapted.begin(), adapted.end()), 1e-5, 1e-5, &why), why);
    dora.unmerge(*m);
    CHECK(base_checksum(*m) == base);
    CHECK(logits_of(*m) == adapted);
}

TEST_CASE("dora: save and load give the same logits; HF's key lora_magnitude_vector; a wrong length is refused") {
    auto m = lesson_model();
    Rng rng(8);
    PeftModel pm(*m);
    pm.add("default", make_lora(dora_config(), *m, rng));
    train_method(*m, *pm.active(), 5);
    const std::vector<float> adapted = logits_of(*m);
    TempDir dir;
    save_adapter(dir.path, *pm.active(), *m);
    SafeTensors st = load_safetensors(dir / "adapter_model.safetensors");
    CHECK(st.tensors.size() == 12);   // A, B, m on q and v of 2 layers
    CHECK(st.at(kQ + ".lora_magnitude_vector").shape() == Shape{16});
    auto m2 = lesson_model();
    Rng other(99);
    PeftModel pm2(*m2);
    pm2.add("default", load_adapter(dir.path, *m2, other));
    CHECK(logits_of(*m2) == adapted);

    // A magnitude of the wrong length (e.g. from another model) is named, and nothing is loaded.
    std::map<std::string, Tensor> bad = st.tensors;
    bad[kQ + ".lora_magnitude_vector"] = Tensor::zeros({15});
    auto m3 = lesson_model();
    auto fresh = make_lora(dora_config(), *m3, rng);
    const uint64_t params_before = checksum(fresh->params);
    CHECK_THROWS_WITH_AS(fresh->load_state(bad, "f.safetensors"),
                         doctest::Contains(("tensor '" + kQ + ".lora_magnitude_vector' is F32[15] but the config on this base model gives F32[16]").c_str()),
                         ValueError);
    CHECK(checksum(fresh->params) == params_before);
}

}  // TEST_SUITE
