// tests/test_lora_init.cpp — where LoRA starts (HF's init_lora_weights): the LAPACK
// decompositions first, then "gaussian", PiSSA (W's top-r singular directions, the base keeps
// the residual) and OLoRA (W's QR), and the conversion back to a plain LoRA on the original W.
// Bad configs and adapter files that do not fit: tests/test_hardening_methods.cpp.
#include <algorithm>
#include <fstream>
#include "family_helpers.h"
#include "engine/linalg.h"
#include "engine/safetensors.h"
#include "peft/lora.h"

TEST_SUITE("peft") {

static const std::string kQ = "base_model.model.transformer.h.0.attn.q_proj";

static double orthonormality_error(const Tensor& M) { return ::orthonormality_error(M.data(), M.size(0), M.size(1)); }
static Tensor transposed(const Tensor& M) {
    Tensor T = Tensor::empty({M.size(1), M.size(0)});
    for (int64_t i = 0; i < M.size(0); i++)
        for (int64_t j = 0; j < M.size(1); j++) T.data()[j * M.size(0) + i] = M.data()[i * M.size(1) + j];
    return T;
}

TEST_CASE("linalg: svd gives orthonormal U and Vh, descending S, and U diag(S) Vh = W (tall and wide)") {
    Rng rng(1);
    for (Shape s : {Shape{7, 4}, Shape{4, 9}}) {
        CAPTURE(s.str());
        Tensor W = Tensor::randn(s, rng);
        Svd f = svd(W);
        const int64_t m = s[0], n = s[1], k = std::min(m, n);
        CHECK(f.U.shape() == (Shape{m, k}));
        CHECK(f.Vh.shape() == (Shape{k, n}));
        CHECK(orthonormality_error(f.U) < 1e-5);
        CHECK(orthonormality_error(transposed(f.Vh)) < 1e-5);
        for (int64_t i = 0; i + 1 < k; i++) CHECK(f.S.data()[i] >= f.S.data()[i + 1]);
        Mat US = to_mat(f.U);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < k; j++) US[size_t(i * k + j)] *= f.S.data()[j];
        std::string why;
        CHECK_MESSAGE(allclose(W.to_vector(), matmul_ref(US, to_mat(f.Vh), m, k, n), 1e-5, 1e-5, &why), why);
    }
}

TEST_CASE("linalg: qr gives orthonormal Q, upper-triangular R, and Q R = W") {
    Rng rng(2);
    for (Shape s : {Shape{7, 4}, Shape{4, 9}}) {
        CAPTURE(s.str());
        Tensor W = Tensor::randn(s, rng);
        Qr f = qr(W);
        const int64_t m = s[0], n = s[1], k = std::min(m, n);
        CHECK(orthonormality_error(f.Q) < 1e-5);
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < std::min(i, n); j++) CHECK(f.R.data()[i * n + j] == 0.f);
        std::string why;
        CHECK_MESSAGE(allclose(W.to_vector(), matmul_ref(to_mat(f.Q), to_mat(f.R), m, k, n), 1e-5, 1e-5, &why), why);
    }
}

TEST_CASE("lora init: \"gaussian\" draws A ~ N(0, 1/r²) and B = 0; false makes B non-zero (no identity)") {
    auto m = lesson_model();
    Rng rng(3);
    auto g = make_lora(peft_config("LORA", {{"init_lora_weights", "gaussian"}, {"r", 4},
                                               {"target_modules", {"fc_in"}}}), *m, rng);
    std::vector<float> a = g->params.get("base_model.model.transformer.h.0.mlp.fc_in.lora_A.weight").to_vector();
    double ss = 0;
    for (float v : a) ss += double(v) * v;
    CHECK(std::sqrt(ss / double(a.size())) == doctest::Approx(0.25).epsilon(0.15));   // 64 draws of std 1/4
    for (float v : g->params.get("base_model.model.transformer.h.0.mlp.fc_in.lora_B.weight").to_vector()) CHECK(v == 0.f);
    CHECK(g->config_json()["init_lora_weights"] == "gaussian");
    auto m2 = lesson_model();
    auto f = make_lora(peft_config("LORA", {{"init_lora_weights", false}}), *m2, rng);
    const std::vector<float> b = f->params.get(kQ + ".lora_B.weight").to_vector();
    CHECK(std::count(b.begin(), b.end(), 0.f) == 0);
}

// A (r, in) = diag(√(S/s)) Vh[:r], B (out, r) = U[:, :r] diag(√(S/s)): HF's pissa_init, from our svd.
TEST_CASE("lora init: PiSSA takes A, B from W's top-r singular directions; the base keeps W − s·BA") {
    auto m = lesson_model();
    const Tensor W = m->h[0].attn.q_proj.weight.clone();
    const std::vector<float> base_logits = logits_of(*m);
    const uint64_t base = base_checksum(*m);
    Rng rng(4);
    PeftModel pm(*m);
    pm.add("default", make_lora(peft_config("LORA", {{"init_lora_weights", "pissa"}, {"r", 4}, {"lora_alpha", 8}}), *m, rng));
    Method& lora = *pm.active();
    const Tensor A = lora.params.get(kQ + ".lora_A.weight"), B = lora.params.get(kQ + ".lora_B.weight");
    const double s = 8.0 / 4;
    Svd f = svd(W);
    for (int64_t i = 0; i < 4; i++) {
        const double root = std::sqrt(f.S.data()[i] / s);
        for (int64_t j = 0; j < 16; j++) CHECK(A.data()[i * 16 + j] == doctest::Approx(root * f.Vh.data()[i * 16 + j]).epsilon(1e-5).scale(1));
        for (int64_t o = 0; o < 16; o++) CHECK(B.data()[o * 4 + i] == doctest::Approx(f.U.data()[o * 16 + i] * root).epsilon(1e-5).scale(1));
    }
    // The base now holds the residual, and s·B A is the best rank-4 approximation of W:
    // ‖W − s·BA‖²_F = σ₅² + … + σ₁₆² (Eckart–Young).
    const Mat BA = matmul_ref(to_mat(B), to_mat(A), 16, 4, 16);
    const Tensor& Wres = m->h[0].attn.q_proj.weight;
    double tail = 0, resid = 0;
    for (int64_t i = 4; i < 16; i++) tail += double(f.S.data()[i]) * f.S.data()[i];
    for (int64_t k = 0; k < 256; k++) {
        CHECK(Wres.data()[k] == doctest::Approx(W.data()[k] - s * BA[size_t(k)]).epsilon(1e-5).scale(1));
        resid += std::pow(W.data()[k] - s * BA[size_t(k)], 2);
    }
    CHECK(resid == doctest::Approx(tail).epsilon(1e-4));
    // The model is unchanged at init (to rounding), and disabling the adapter restores W exactly.
    std::string why;
    CHECK_MESSAGE(allclose(logits_of(*m), std::vector<double>(base_logits.begin(), base_logits.end()), 1e-5, 1e-5, &why), why);
    pm.disable();
    CHECK(base_checksum(*m) == base);
    CHECK(logits_of(*m) == base_logits);
}

TEST_CASE("lora init: pissa_niter_K, a randomized SVD, finds nearly the best rank-r approximation") {
    // A 32 × 24 matrix with singular values 2⁻ⁱ: the range finder's error shrinks fast with K.
    Rng rng(5);
    Qr u = qr(Tensor::randn({32, 24}, rng)), v = qr(Tensor::randn({24, 24}, rng));
    Mat US = to_mat(u.Q);
    for (int64_t i = 0; i < 32; i++)
        for (int64_t j = 0; j < 24; j++) US[size_t(i * 24 + j)] *= std::pow(2.0, -double(j));
    const Mat Wd = matmul_ref(US, to_mat(transposed(v.Q)), 32, 24, 24);
    Tensor W = Tensor::from(std::vector<float>(Wd.begin(), Wd.end()), {32, 24});
    LoraInit init = lora_init("pissa_niter_4", W, 4, 1.f, rng);
    double resid = 0, tail = 0;
    const Mat BA = matmul_ref(to_mat(init.B), to_mat(init.A), 32, 4, 24);
    for (size_t k = 0; k < BA.size(); k++) resid += std::pow(Wd[k] - BA[k], 2);
    for (int j = 4; j < 24; j++) tail += std::pow(2.0, -2.0 * j);
    CHECK(resid == doctest::Approx(tail).epsilon(1e-2));
}

TEST_CASE("lora init: OLoRA takes A = R[:r], B = Q[:, :r] from W's QR; the base keeps W − s·BA") {
    auto m = lesson_model();
    const Tensor W = m->h[0].attn.q_proj.weight.clone();
    Rng rng(6);
    PeftModel pm(*m);
    pm.add("default", make_lora(peft_config("LORA", {{"init_lora_weights", "olora"}, {"r", 4}}), *m, rng));
    Method& lora = *pm.active();
    const Tensor A = lora.params.get(kQ + ".lora_A.weight"), B = lora.params.get(kQ + ".lora_B.weight");
    Qr f = qr(W);
    for (int64_t i = 0; i < 4; i++) {
        for (int64_t j = 0; j < 16; j++) CHECK(A.data()[i * 16 + j] == f.R.data()[i * 16 + j]);
        for (int64_t o = 0; o < 16; o++) CHECK(B.data()[o * 4 + i] == f.Q.data()[o * 16 + i]);
    }
    CHECK(orthonormality_error(B) < 1e-5);
    const Mat BA = matmul_ref(to_mat(B), to_mat(A), 16, 4, 16);
    for (int64_t k = 0; k < 256; k++)
        CHECK(m->h[0].attn.q_proj.weight.data()[k] == doctest::Approx(W.data()[k] - 4.0 * BA[size_t(k)]).epsilon(1e-5).scale(1));
}

TEST_CASE("lora init: a trained PiSSA adapter converted to a plain LoRA gives the same model on the original base") {
    for (bool rslora : {false, true}) {
        CAPTURE(rslora);
        auto m = lesson_model();
        Rng rng(7);
        PeftModel pm(*m);
        pm.add("default", make_lora(peft_config("LORA", {{"init_lora_weights", "pissa"}, {"use_rslora", rslora}}), *m, rng));
        train_method(*m, *pm.active(), 10);
        const std::vector<float> adapted = logits_of(*m);
        PlainLora plain = convert_to_plain_lora(*pm.active());
        CHECK(plain.config["r"] == 16);   // r doubled, alpha so that s stays: 2·16, or √2·16 with rsLoRA
        CHECK(plain.config["lora_alpha"].get<double>() == doctest::Approx(rslora ? 16 * std::sqrt(2.0) : 32.0));
        CHECK(plain.config["init_lora_weights"] == true);
        auto original = lesson_model();   // the base as it was, never mutated
        json cfg = plain.config;
        cfg["peft_type"] = "LORA";
        auto converted = make_lora(cfg, *original, rng);
        std::map<std::string, Tensor> tensors(plain.tensors.begin(), plain.tensors.end());
        converted->load_state(tensors, "converted");
        PeftModel pm2(*original);
        pm2.add("default", std::move(converted));
        std::string why;
        CHECK_MESSAGE(allclose(logits_of(*original), std::vector<double>(adapted.begin(), adapted.end()), 1e-5, 1e-5, &why), why);
    }
    auto m = lesson_model();
    Rng rng(8);
    auto plain = make_lora(peft_config("LORA"), *m, rng);
    CHECK_THROWS_WITH_AS(convert_to_plain_lora(*plain), doctest::Contains("only a LoRA initialised with \"pissa\" or \"olora\""),
                         ValueError);
}

TEST_CASE("lora init: a saved PiSSA adapter loads onto the original base (the init is redone from W, then A, B are read)") {
    auto m = lesson_model();
    Rng rng(9);
    PeftModel pm(*m);
    pm.add("default", make_lora(peft_config("LORA", {{"init_lora_weights", "pissa"}}), *m, rng));
    train_method(*m, *pm.active(), 5);
    const std::vector<float> adapted = logits_of(*m);
    TempDir dir;
    save_adapter(dir.path, *pm.active(), *m);
    auto m2 = lesson_model();
    PeftModel pm2(*m2);
    pm2.add("default", load_adapter(dir.path, *m2, rng));
    CHECK(logits_of(*m2) == adapted);
}

}  // TEST_SUITE
