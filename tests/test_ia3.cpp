// tests/test_ia3.cpp — IA³ as a lesson, top to bottom: learned vectors l, initialised to 1,
// rescale the activations of frozen Linears:
//     y = l ⊙ (x Wᵀ + b)    output scaling (k_proj, v_proj): l has one number per output
//     y = (x ⊙ l) Wᵀ + b    input scaling (the feed-forward fc_out): one number per input
#include <fstream>
#include "peft_helpers.h"
#include "engine/safetensors.h"

TEST_SUITE("peft") {

static json ia3_config(const json& extra = json::object()) {
    json c = {{"peft_type", "IA3"}};
    c.update(extra);
    return c;
}
static const std::string kK = "base_model.model.transformer.h.0.attn.k_proj.ia3_l";
static const std::string kFF = "base_model.model.transformer.h.0.mlp.fc_out.ia3_l";

// l ← 1 + 0.2·N(0, 1) for every vector, so that the scalings are visible.
static void perturb(Method& ia3, uint64_t seed) {
    Rng rng(seed);
    for (const Param& p : ia3.params.all())
        for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] = 1.f + float(rng.normal() * 0.2);
}

// ---- the method on the tiny GPT

TEST_CASE("ia3: by default k_proj and v_proj scale their output, fc_out its input (HF's shapes)") {
    auto m = lesson_model();
    Rng rng(1);
    auto ia3 = make_ia3(ia3_config(), *m, rng);
    json c = ia3->config_json();
    CHECK(c["target_modules"] == json({"k_proj", "v_proj", "fc_out"}));
    CHECK(c["feedforward_modules"] == json({"fc_out"}));
    CHECK(c["inference_mode"] == true);
    CHECK(ia3->peft_type() == "IA3");
    CHECK(ia3->params.get(kK).shape() == Shape{16, 1});   // [out, 1]
    CHECK(ia3->params.get(kFF).shape() == Shape{1, 64});  // [1, in]: fc_out reads the 4C GELU outputs
    for (const Param& p : ia3->params.all())
        for (float v : p.tensor.to_vector()) CHECK(v == 1.f);
}

TEST_CASE("ia3: at init the adapted model's logits equal the base model's, bit for bit") {
    auto m = lesson_model();
    ToyBatch b = lesson_batch();
    const std::vector<float> base = m->forward(b.ids).to_vector();
    Rng rng(2);
    PeftModel pm(*m);
    pm.add("default", make_ia3(ia3_config(), *m, rng));
    // Why exact: every l is 1.0, and v · 1.0 == v in IEEE arithmetic; the base part is the
    // very linear() call of the plain model on the same data.
    CHECK(m->forward(b.ids).to_vector() == base);
}

TEST_CASE("ia3: the trainable count is 6·L·C for the defaults (C + C + 4C per layer)") {
    const GPTConfig c = lesson_config();
    auto m = lesson_model();
    Rng rng(3);
    auto ia3 = make_ia3(ia3_config(), *m, rng);
    CHECK(m->params.count(true) == 0);   // the whole base is frozen
    CHECK(ia3->params.count(true) == 6 * c.n_layer * c.n_embd);
    CHECK(ia3->expected_params(c) == ia3->params.count(true));

    // Every Linear, fc_out on its input: q, k, v, o C each, fc_in 4C outputs, fc_out 4C inputs.
    auto m2 = lesson_model();
    auto all = make_ia3(ia3_config({{"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out"}}}),
                        *m2, rng);
    CHECK(all->params.count(true) == 12 * c.n_layer * c.n_embd);
    CHECK(all->expected_params(c) == all->params.count(true));
}

TEST_CASE("ia3: output scaling multiplies the base output, input scaling the input") {
    auto m = lesson_model();
    Rng rng(4);
    PeftModel pm(*m);
    pm.add("default", make_ia3(ia3_config(), *m, rng));
    perturb(*pm.active(), 5);
    NoGradGuard ng;
    {   // k_proj: y[r, o] = l[o] · (x Wᵀ + b)[r, o]
        const Linear& k = m->h[0].attn.k_proj;
        Tensor x = Tensor::randn({3, 16}, rng);
        std::vector<float> y = k(x).to_vector(), z = k.base_forward(x).to_vector();
        const float* l = pm.active()->params.get(kK).data();
        for (int64_t r = 0; r < 3; r++)
            for (int64_t o = 0; o < 16; o++) CHECK(y[size_t(r * 16 + o)] == z[size_t(r * 16 + o)] * l[o]);
    }
    {   // fc_out: y = (x ⊙ l) Wᵀ + b
        const Linear& f = m->h[0].mlp.fc_out;
        Tensor x = Tensor::randn({3, 64}, rng), xl = x.clone();
        const float* l = pm.active()->params.get(kFF).data();
        for (int64_t i = 0; i < xl.numel(); i++) xl.data()[i] *= l[i % 64];
        CHECK(f(x).to_vector() == f.base_forward(xl).to_vector());
    }
}

// ---- training

TEST_CASE("ia3: gradcheck of the l vectors through the tiny model") {
    auto m = lesson_model();
    Rng rng(6);
    PeftModel pm(*m);
    pm.add("default", make_ia3(ia3_config(), *m, rng));
    Method& ia3 = *pm.active();
    perturb(ia3, 7);
    ToyBatch b = lesson_batch();
    GradcheckOptions o;
    o.precise = true;
    o.max_elems = 12;
    std::vector<Tensor> inputs;
    for (const char* n : {"transformer.h.0.attn.k_proj", "transformer.h.1.attn.v_proj", "transformer.h.0.mlp.fc_out"})
        inputs.push_back(ia3.params.get(std::string("base_model.model.") + n + ".ia3_l"));
    gradcheck("ia3 in gpt", [&](const std::vector<Tensor>&) { return m->forward(b.ids); }, inputs, o);
}

TEST_CASE("ia3: training lowers the loss; the base gets no gradient and stays bit-for-bit the same") {
    auto m = lesson_model();
    const uint64_t before = base_checksum(*m);
    Rng rng(8);
    PeftModel pm(*m);
    pm.add("default", make_ia3(ia3_config(), *m, rng));
    // 96 numbers that start at 1 move slowly: lr 0.1 (measured: 2.58 -> 2.16; lr 0.01 gives 2.51).
    std::vector<float> losses = train_method(*m, *pm.active(), 40, 0.1f);
    CHECK(losses.back() < 0.9f * losses.front());
    CHECK(base_has_no_grads(*m));
    CHECK(base_checksum(*m) == before);
}

TEST_CASE("ia3: the optimizer holds state for the l vectors only (AdamW: 2 × their bytes)") {
    auto m = lesson_model();
    Rng rng(9);
    PeftModel pm(*m);
    pm.add("default", make_ia3(ia3_config(), *m, rng));
    Method& ia3 = *pm.active();
    const int64_t opt0 = mem_stats().cur(Mem::Optimizer);
    AdamW opt(ia3.params, AdamWConfig{});
    ToyBatch b = lesson_batch();
    m->loss(b.ids, b.targets).backward();
    opt.step();
    CHECK(mem_stats().cur(Mem::Optimizer) - opt0 == 2 * ia3.params.count(true) * 4);
}

// ---- merging

TEST_CASE("ia3: merged logits equal the unmerged ones, and unmerge restores W and b bit for bit") {
    auto m = lesson_model();
    Rng rng(10);
    PeftModel pm(*m);
    pm.add("default", make_ia3(ia3_config(), *m, rng));
    Method& ia3 = *pm.active();
    perturb(ia3, 11);
    ToyBatch b = lesson_batch();
    const std::vector<float> adapted = m->forward(b.ids).to_vector();
    const uint64_t base = base_checksum(*m);
    const Linear &k = m->h[0].attn.k_proj, &f = m->h[0].mlp.fc_out;
    const std::vector<float> kW = k.weight.to_vector(), kb = k.bias.to_vector(), fW = f.weight.to_vector(),
                             fb = f.bias.to_vector();

    ia3.merge(*m);
    CHECK(k.wrap == nullptr);   // plain base forward on the merged weights
    const float *lk = ia3.params.get(kK).data(), *lf = ia3.params.get(kFF).data();
    for (int64_t o = 0; o < 16; o++) {
        CHECK(k.bias.data()[o] == kb[size_t(o)] * lk[o]);                            // output scaling: b[o]·l[o]
        for (int64_t i = 0; i < 16; i++)                                                 // and the rows of W
            CHECK(k.weight.data()[o * 16 + i] == kW[size_t(o * 16 + i)] * lk[o]);
        CHECK(f.bias.data()[o] == fb[size_t(o)]);                                     // input scaling: b stays
        for (int64_t i = 0; i < 64; i++)                                                 // the columns of W
            CHECK(f.weight.data()[o * 64 + i] == fW[size_t(o * 64 + i)] * lf[i]);
    }
    // float rounding only: (l ⊙ W) x + l ⊙ b is not computed in the order of l ⊙ (W x + b)
    std::string why;
    CHECK_MESSAGE(allclose(m->forward(b.ids).to_vector(), std::vector<double>(adapted.begin(), adapted.end()), 1e-5,
                           1e-6, &why), why);
    CHECK_THROWS_WITH_AS(ia3.merge(*m), doctest::Contains("already merged"), ValueError);

    ia3.unmerge(*m);
    CHECK(base_checksum(*m) == base);   // the copies taken at merge time, not W / l
    CHECK(m->forward(b.ids).to_vector() == adapted);
    CHECK_THROWS_WITH_AS(ia3.unmerge(*m), doctest::Contains("not merged"), ValueError);
}

TEST_CASE("ia3: disabling a merged adapter gives exactly the base model back") {
    auto m = lesson_model();
    ToyBatch b = lesson_batch();
    const std::vector<float> base = m->forward(b.ids).to_vector();
    Rng rng(12);
    PeftModel pm(*m);
    pm.add("default", make_ia3(ia3_config(), *m, rng));
    perturb(*pm.active(), 13);
    pm.active()->merge(*m);
    pm.disable();
    CHECK(m->forward(b.ids).to_vector() == base);
}

// ---- configs (bad ones and files that do not fit: tests/test_hardening_methods.cpp)

TEST_CASE("ia3: feedforward_modules must be a subset of target_modules") {
    auto m = lesson_model();
    Rng rng(14);
    CHECK_THROWS_WITH_AS(make_ia3(ia3_config({{"feedforward_modules", {"fc_in"}}}), *m, rng),
                         doctest::Contains("`feedforward_modules` should be a subset of `target_modules`: [fc_in] "
                                           "not in [k_proj, v_proj, fc_out]"),
                         ValueError);
    CHECK(m->params.count(true) == m->params.count());   // nothing attached, nothing frozen
    // An empty list is a subset: then every target scales its output.
    auto out_only = make_ia3(ia3_config({{"feedforward_modules", json::array()}}), *m, rng);
    CHECK(out_only->params.get(kFF).shape() == Shape{16, 1});
}

// ---- adapter files

TEST_CASE("ia3: save, then load into a fresh copy of the base, gives identical logits") {
    auto m = lesson_model();
    Rng rng(16);
    PeftModel pm(*m);
    pm.add("default", make_ia3(ia3_config(), *m, rng));
    train_method(*m, *pm.active(), 5);
    ToyBatch b = lesson_batch();
    const std::vector<float> adapted = m->forward(b.ids).to_vector();
    TempDir dir;
    save_adapter(dir.path, *pm.active(), *m);

    SafeTensors st = load_safetensors(dir.path + "/adapter_model.safetensors");   // HF's keys and shapes
    CHECK(st.tensors.size() == 6);
    CHECK(st.at(kK).shape() == Shape{16, 1});
    CHECK(st.at(kFF).shape() == Shape{1, 64});

    auto m2 = lesson_model();
    PeftModel pm2(*m2);
    pm2.add("default", load_adapter(dir.path, *m2, rng));
    CHECK(m2->forward(b.ids).to_vector() == adapted);
}

}  // TEST_SUITE
