// tests/test_vera.cpp — VeRA as a lesson: ΔW = diag(λ_b) B diag(λ_d) A with A, B random, frozen
// and shared by every layer, regenerated from projection_prng_key; only λ_b, λ_d train.
// Bad configs and adapter files that do not fit: tests/test_hardening_methods.cpp.
#include <sys/wait.h>
#include <filesystem>
#include <fstream>
#include "family_helpers.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"

TEST_SUITE("peft") {

static const std::string kQ = "base_model.model.transformer.h.0.attn.q_proj";

TEST_CASE("vera: HF's fields and keys; out + r trainable numbers per target; λ_b = 0, λ_d = d_initial") {
    const GPTConfig c = lesson_config();
    auto m = lesson_model();
    Rng rng(1);
    auto vera = make_method(peft_config("VERA", {{"r", 8}, {"target_modules", {"q_proj", "fc_in"}}}), *m, rng);
    CHECK(vera->peft_type() == "VERA");
    const json j = vera->config_json();
    CHECK(j["r"] == 8);
    CHECK(j["projection_prng_key"] == 0);
    CHECK(j["save_projection"] == true);
    CHECK(j["d_initial"] == 0.1);
    CHECK(j["vera_dropout"] == 0.0);
    CHECK(vera->params.get(kQ + ".vera_lambda_b").shape() == Shape{16});
    CHECK(vera->params.get(kQ + ".vera_lambda_d").shape() == Shape{8});
    for (float v : vera->params.get(kQ + ".vera_lambda_b").to_vector()) CHECK(v == 0.f);
    for (float v : vera->params.get(kQ + ".vera_lambda_d").to_vector()) CHECK(v == 0.1f);
    // q (out 16) and fc_in (out 64) per layer, each + r
    CHECK(vera->params.count(true) == c.n_layer * ((16 + 8) + (64 + 8)));
    CHECK(vera->expected_params(c) == vera->params.count(true));
    // The file also holds the shared projections, sized for the largest target: A (r, max_in), B (max_out, r).
    const NamedTensors st = vera->state();
    CHECK(st.size() == vera->params.size() + 2);
    CHECK(st[st.size() - 2].first == "base_model.vera_A");
    CHECK(st[st.size() - 2].second.shape() == (Shape{8, 16}));
    CHECK(st.back().first == "base_model.vera_B");
    CHECK(st.back().second.shape() == (Shape{64, 8}));
    // kaiming-uniform with gain √2: |A| ≤ √6/√max_in, |B| ≤ √6/√r
    for (float v : st[st.size() - 2].second.to_vector()) CHECK(std::fabs(v) <= std::sqrt(6.f / 16.f));
    for (float v : st.back().second.to_vector()) CHECK(std::fabs(v) <= std::sqrt(6.f / 8.f));
}

TEST_CASE("vera: at init (λ_b = 0) the model is the base model, bit for bit") {
    check_identity_at_init(peft_config("VERA", {{"r", 8}}));
}

TEST_CASE("vera: the module output is x (W + diag(λ_b) B[:out] diag(λ_d) A[:, :in])ᵀ + b, computed independently") {
    auto m = lesson_model();
    Rng rng(2);
    PeftModel pm(*m);
    pm.add("default", make_method(peft_config("VERA", {{"r", 6}, {"target_modules", {"q_proj", "fc_in", "fc_out"}}}), *m, rng));
    Method& vera = *pm.active();
    randomize(vera, rng);
    const NamedTensors st = vera.state();
    const Tensor A = st[st.size() - 2].second, B = st.back().second;   // (6, 64), (64, 6): max_in from fc_out, max_out from fc_in
    CHECK(A.shape() == (Shape{6, 64}));
    for (const char* name : {"attn.q_proj", "mlp.fc_in", "mlp.fc_out"}) {
        CAPTURE(name);
        const std::string key = std::string("base_model.model.transformer.h.1.") + name;
        const Linear* lin = nullptr;
        for (auto& [n, l] : m->linears()) if (n == std::string("transformer.h.1.") + name) lin = l;
        REQUIRE(lin);
        const int64_t in = lin->in, out = lin->out;
        const Tensor lb = vera.params.get(key + ".vera_lambda_b"), ld = vera.params.get(key + ".vera_lambda_d");
        Mat W = to_mat(lin->weight);
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++) {
                double d = 0;
                for (int64_t k = 0; k < 6; k++) d += double(B.data()[o * 6 + k]) * ld.data()[k] * A.data()[k * 64 + i];
                W[size_t(o * in + i)] += lb.data()[o] * d;
            }
        Tensor x = Tensor::randn({3, in}, rng);
        std::string why;
        CHECK_MESSAGE(allclose(module_output(*lin, x), apply_weight(x, W, lin->bias, out, in), 1e-5, 1e-5, &why), why);
    }
}

TEST_CASE("vera: training lowers the loss; the base (and A, B) get no gradient and stay bit-for-bit the same") {
    check_training(peft_config("VERA", {{"r", 64}}), 0.95f, 3e-2f);
}

TEST_CASE("vera: merge equals the adapted forward, unmerge is exact, and files round-trip (with and without projections)") {
    check_merge_and_files(peft_config("VERA", {{"r", 8}}));
    check_merge_and_files(peft_config("VERA", {{"r", 8}, {"save_projection", false}, {"projection_prng_key", 7}}));
}

TEST_CASE("vera: the projections come from projection_prng_key: the same key gives the same A and B, another key others") {
    auto m = lesson_model();
    Rng rng(3), other(4);
    auto a = make_method(peft_config("VERA", {{"r", 8}, {"projection_prng_key", 42}}), *m, rng);
    auto m2 = lesson_model();
    auto b = make_method(peft_config("VERA", {{"r", 8}, {"projection_prng_key", 42}}), *m2, other);
    auto m3 = lesson_model();
    auto c = make_method(peft_config("VERA", {{"r", 8}, {"projection_prng_key", 43}}), *m3, other);
    CHECK(a->state().back().second.to_vector() == b->state().back().second.to_vector());
    CHECK(a->state().back().second.to_vector() != c->state().back().second.to_vector());
}

TEST_CASE("vera: an adapter saved without its projections gives the same logits when loaded in a new process") {
    // Train a VeRA adapter here, save it with save_projection false, then let a separate
    // `peft forward` process rebuild A and B from the key and compute the logits.
    TempDir dir;
    auto m = lesson_model();
    Tokenizer tok = Tokenizer::bytes();
    GPTConfig c = lesson_config();
    REQUIRE(tok.vocab_size() >= c.vocab_size);
    c.vocab_size = tok.vocab_size();
    Rng init(5);
    GPT model(c, init);
    save_checkpoint(dir / "base.safetensors", model, tok);
    Rng rng(6);
    PeftModel pm(model);
    pm.add("default", make_method(peft_config("VERA", {{"r", 8}, {"save_projection", false}, {"projection_prng_key", 9}}), model, rng));
    randomize(*pm.active(), rng);
    save_adapter(dir / "vera", *pm.active(), model);
    CHECK(load_safetensors(dir / "vera/adapter_model.safetensors").tensors.count("base_model.vera_A") == 0);
    const std::vector<int32_t> ids = tok.encode("hello");
    const std::vector<float> here = logits_of(model, Tensor::from_ints(ids, {1, int64_t(ids.size())}));

    const char* env = std::getenv("PEFT_BIN");
    const std::string bin = std::filesystem::absolute(env && *env ? env : "build/peft").string();
    REQUIRE(std::filesystem::exists(bin));
    const std::string cmd = "'" + bin + "' forward --model '" + (dir / "base.safetensors") + "' --adapter '" + (dir / "vera") +
                            "' --text hello --out '" + (dir / "logits.safetensors") + "' --threads 1 >/dev/null 2>&1";
    REQUIRE(std::system(cmd.c_str()) == 0);
    const SafeTensors out = load_safetensors(dir / "logits.safetensors");
    CHECK(out.at("logits").to_vector() == here);
}

}  // TEST_SUITE
