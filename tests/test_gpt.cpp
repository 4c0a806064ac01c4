// tests/test_gpt.cpp — the GPT against an independent double-precision reference, and its contracts.
#include <cmath>
#include "helpers.h"
#include "models/reference_gpt_backward.h"

TEST_SUITE("gpt") {

static GPTConfig tiny_config() {
    GPTConfig c;
    c.n_layer = 2; c.n_head = 2; c.n_embd = 16; c.block_size = 12; c.vocab_size = 11;
    return c;
}

// Make every parameter non-trivial (biases and LayerNorm too), so the reference sees them all.
static void perturb(GPT& m, uint64_t seed) {
    Rng rng(seed);
    for (const Param& p : m.params.all()) {
        float* d = p.tensor.data();
        for (int64_t i = 0; i < p.tensor.numel(); i++) d[i] += float(rng.normal() * 0.1);
    }
}

TEST_CASE("gpt: logits and loss agree with the naive double-precision reference") {
    Rng rng(1);
    GPT m(tiny_config(), rng);
    perturb(m, 2);
    std::vector<int32_t> a = {1, 5, 3, 9, 0, 2, 7}, b = {4, 4, 10, 1, 6, 8, 3};
    std::vector<int32_t> ta = {5, 3, 9, 0, 2, 7, -1}, tb = {4, 10, -1, 6, 8, 3, 2};
    std::vector<int32_t> ids = a, tg = ta;
    ids.insert(ids.end(), b.begin(), b.end());
    tg.insert(tg.end(), tb.begin(), tb.end());
    Tensor I = Tensor::from_ints(ids, {2, 7}), Tt = Tensor::from_ints(tg, {2, 7});
    Tensor logits = m.forward(I);
    std::vector<double> ref;
    std::vector<naive::Vec> la = naive::forward(m, a), lb = naive::forward(m, b);
    for (auto* l : {&la, &lb}) for (auto& row : *l) ref.insert(ref.end(), row.begin(), row.end());
    std::string why;
    // float32 through 2 layers of width 16: ~1e-6 relative error per op; 1e-4 absolute is ample
    CHECK_MESSAGE(allclose(logits.to_vector(), ref, 1e-4, 1e-4, &why), why);
    std::vector<naive::Vec> all = la;
    all.insert(all.end(), lb.begin(), lb.end());
    CHECK(m.loss(I, Tt).item() == doctest::Approx(naive::loss(all, tg)).epsilon(1e-5));
}

TEST_CASE("gpt: unfused_loss and attention_saved_probs (the plain cures, for bench) give the same loss and gradients") {
    auto run = [](bool plain) {
        Rng rng(1);
        GPT m(tiny_config(), rng);
        perturb(m, 2);
        m.unfused_loss = m.attention_saved_probs = plain;
        Tensor I = Tensor::from_ints({1, 5, 3, 9, 0, 2, 7, 4}, {2, 4}), Tt = Tensor::from_ints({5, 3, 9, -1, 2, 7, 4, 1}, {2, 4});
        Tensor loss = m.loss(I, Tt, true);
        loss.backward();
        std::vector<float> out = {loss.item()};
        for (const Param& p : m.params.all()) {
            const std::vector<float> g = p.tensor.grad().to_vector();
            out.insert(out.end(), g.begin(), g.end());
        }
        return out;
    };
    const std::vector<float> fused = run(false), plain = run(true);
    std::string why;
    CHECK_MESSAGE(allclose(plain, std::vector<double>(fused.begin(), fused.end()), 1e-5, 1e-6, &why), why);
}

TEST_CASE("gpt: gradcheck through the whole tiny model (every parameter kind)") {
    Rng rng(3);
    GPTConfig c = tiny_config();
    GPT m(c, rng);
    perturb(m, 4);
    Tensor I = Tensor::from_ints({1, 5, 3, 9, 0, 2, 4, 4, 10, 1, 6, 8}, {2, 6});
    std::vector<Tensor> inputs;
    for (const std::string n : {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
                                "transformer.h.0.attn.q_proj.weight", "transformer.h.1.attn.v_proj.bias",
                                "transformer.h.1.mlp.fc_in.weight", "transformer.h.1.mlp.fc_out.bias",
                                "transformer.ln_f.bias"})
        inputs.push_back(m.params.get(n));
    GradcheckOptions o;
    o.precise = true;
    o.max_elems = 40;
    gradcheck("gpt", [&](const std::vector<Tensor>&) { return m.forward(I); }, inputs, o);
}

TEST_CASE("gpt: an untrained model's loss is close to ln(vocab)") {
    Rng rng(5);
    GPTConfig c = tiny_config();
    c.vocab_size = 50;
    GPT m(c, rng);
    std::vector<int32_t> ids(24), tg(24);
    for (int i = 0; i < 24; i++) { ids[size_t(i)] = int32_t(rng.below(50)); tg[size_t(i)] = int32_t(rng.below(50)); }
    float L = m.loss(Tensor::from_ints(ids, {2, 12}), Tensor::from_ints(tg, {2, 12})).item();
    CHECK(std::fabs(L - std::log(50.0)) < 0.1);
}

TEST_CASE("gpt: parameter names and shapes follow the contract") {
    Rng rng(6);
    GPT m(tiny_config(), rng);
    CHECK(m.params.get("transformer.wte.weight").shape() == Shape{11, 16});
    CHECK(m.params.get("transformer.wpe.weight").shape() == Shape{12, 16});
    CHECK(m.params.get("transformer.h.1.attn.o_proj.weight").shape() == Shape{16, 16});
    CHECK(m.params.get("transformer.h.0.mlp.fc_in.weight").shape() == Shape{64, 16});
    CHECK(m.params.get("transformer.h.0.mlp.fc_out.weight").shape() == Shape{16, 64});
    CHECK(m.params.get("transformer.ln_f.bias").shape() == Shape{16});
    CHECK(m.params.find("lm_head.weight") == nullptr);   // tied to wte, not stored twice
    const int64_t C = 16, L = 2, V = 11, Tb = 12;
    CHECK(m.params.count() == V * C + Tb * C + L * (12 * C * C + 13 * C) + 2 * C);
    CHECK(m.linears().size() == 12);
}

static GPTConfig tiny_gpt2_config() {
    GPTConfig c = tiny_config();
    c.model_type = "gpt2";
    c.layer_norm_epsilon = 1e-3f;   // not the default, so the reference sees it used
    return c;
}

TEST_CASE("gpt: the gpt2 layout (fused c_attn) agrees with the naive reference") {
    Rng rng(11);
    GPT m(tiny_gpt2_config(), rng);
    perturb(m, 12);
    std::vector<int32_t> a = {1, 5, 3, 9, 0, 2, 7};
    std::vector<double> ref;
    for (auto& row : naive::forward(m, a)) ref.insert(ref.end(), row.begin(), row.end());
    std::string why;
    CHECK_MESSAGE(allclose(m.forward(Tensor::from_ints(a, {1, 7})).to_vector(), ref, 1e-5, 1e-5, &why), why);
}

TEST_CASE("gpt: the gpt2 layout has HF GPT-2's module names and the same parameter count") {
    Rng rng(13);
    GPT m(tiny_gpt2_config(), rng), g(tiny_config(), rng);
    CHECK(m.params.get("transformer.h.1.attn.c_attn.weight").shape() == Shape{48, 16});
    CHECK(m.params.get("transformer.h.1.attn.c_attn.bias").shape() == Shape{48});
    CHECK(m.params.get("transformer.h.0.attn.c_proj.weight").shape() == Shape{16, 16});
    CHECK(m.params.get("transformer.h.0.mlp.c_fc.weight").shape() == Shape{64, 16});
    CHECK(m.params.get("transformer.h.0.mlp.c_proj.weight").shape() == Shape{16, 64});
    CHECK(m.params.find("transformer.h.0.attn.q_proj.weight") == nullptr);
    CHECK(m.params.count() == g.params.count());
    std::vector<std::string> names;
    for (auto& [name, lin] : m.linears()) names.push_back(name);
    CHECK(names == std::vector<std::string>{"transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
                                            "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj",
                                            "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj",
                                            "transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"});
    GPTConfig back = GPTConfig::from_json(m.config.to_json());
    CHECK(back.model_type == "gpt2");
    CHECK(back.layer_norm_epsilon == 1e-3f);
    GPTConfig bad = tiny_config();
    bad.model_type = "llama";
    CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("model_type must be \"gpt\" or \"gpt2\", got \"llama\""),
                         ValueError);
}

TEST_CASE("gpt: gradcheck through the fused c_attn of the gpt2 layout") {
    Rng rng(14);
    GPT m(tiny_gpt2_config(), rng);
    perturb(m, 15);
    Tensor I = Tensor::from_ints({1, 5, 3, 9, 0, 2}, {1, 6});
    std::vector<Tensor> inputs = {m.params.get("transformer.h.0.attn.c_attn.weight"),
                                  m.params.get("transformer.h.1.attn.c_attn.bias"),
                                  m.params.get("transformer.h.1.mlp.c_proj.weight")};
    GradcheckOptions o;
    o.precise = true;
    o.max_elems = 40;
    gradcheck("gpt2", [&](const std::vector<Tensor>&) { return m.forward(I); }, inputs, o);
}

// Every parameter's gradient, engine (GEMMs, fused and recomputing ops) against the plain loops.
static void check_gradients_against_reference(GPT& m) {
    const std::vector<int32_t> ids = {1, 5, 3, 9, 0, 2, 7}, targets = {5, 3, 9, 0, 2, 7, -1};
    m.loss(Tensor::from_ints(ids, {1, 7}), Tensor::from_ints(targets, {1, 7})).backward();
    const naive::Grads ref = naive::gradients(m, ids, targets);
    CHECK(ref.size() == m.params.all().size());
    for (const Param& p : m.params.all()) {
        INFO(p.name);
        REQUIRE(ref.count(p.name));
        REQUIRE(p.tensor.has_grad());
        std::vector<double> want = ref.at(p.name).v;
        std::vector<float> got(p.tensor.grad_data(), p.tensor.grad_data() + p.tensor.numel());
        std::string why;
        CHECK_MESSAGE(allclose(got, want, 1e-4, 1e-5, &why), why);
    }
}

TEST_CASE("gpt: every parameter's gradient agrees with the plain-loop backward (models/reference_gpt_backward.h)") {
    Rng rng(5);
    GPT m(tiny_config(), rng);
    perturb(m, 6);
    check_gradients_against_reference(m);
    Rng rng2(7);
    GPT g(tiny_gpt2_config(), rng2);
    perturb(g, 8);
    check_gradients_against_reference(g);
}

TEST_CASE("gpt: invalid configs and sequences are clear errors") {
    Rng rng(7);
    GPTConfig c = tiny_config();
    c.n_head = 3;
    CHECK_THROWS_WITH_AS(GPT(c, rng), doctest::Contains("not divisible by n_head 3"), ValueError);
    c = tiny_config();
    c.n_layer = 0;
    CHECK_THROWS_WITH_AS(GPT(c, rng), doctest::Contains("n_layer must be >= 1"), ValueError);
    GPT m(tiny_config(), rng);
    std::vector<int32_t> ids(13, 1);
    CHECK_THROWS_WITH_AS(m.forward(Tensor::from_ints(ids, {1, 13})), doctest::Contains("longer than block_size 12"),
                         ShapeError);
}

TEST_CASE("gpt: overfitting one batch drives the loss near zero") {
    Rng rng(8);
    GPTConfig c = tiny_config();
    c.n_embd = 32;
    GPT m(c, rng);
    Tensor I = Tensor::from_ints({1, 5, 3, 9, 0, 2, 7, 4}, {1, 8}), Tt = Tensor::from_ints({5, 3, 9, 0, 2, 7, 4, 1}, {1, 8});
    // plain SGD on every parameter, to keep this test independent of the optimizers
    float L = 0;
    for (int step = 0; step < 300; step++) {
        for (const Param& p : m.params.all()) p.tensor.impl().grad.reset();
        Tensor loss = m.loss(I, Tt, true);
        L = loss.item();
        loss.backward();
        for (const Param& p : m.params.all())
            if (p.tensor.has_grad())
                for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] -= 0.5f * p.tensor.grad_data()[i];
    }
    CHECK(L < 0.05);
}

}  // TEST_SUITE
