// tests/test_lora.cpp — LoRA as a lesson, top to bottom:
//     y = x Wᵀ + b + s · (drop(x) Aᵀ) Bᵀ,   A (r, in) random,  B (out, r) = 0,  s = alpha / r.
// First the method on the tiny GPT (identity, counts, scaling), then the fused op (dropout,
// gradients, memory), then training, merging, configs and adapter files.
#include <cmath>
#include <fstream>
#include "peft_helpers.h"
#include "engine/safetensors.h"
#include "peft/lora.h"

TEST_SUITE("peft") {

static json lora_config(const json& extra = json::object()) {
    json c = {{"peft_type", "LORA"}};
    c.update(extra);
    return c;
}
static const std::string kQ = "base_model.model.transformer.h.0.attn.q_proj";
// HF's defaults, and the lesson model's width (tests/peft_helpers.h): what the numbers below are.
constexpr int64_t kDefaultR = 8;
constexpr double kDefaultAlpha = 16;
constexpr double kDefaultScale = kDefaultAlpha / kDefaultR;   // s = lora_alpha / r = 2
static const int64_t kWidth = lesson_config().n_embd;          // C = 16: every q_proj is C × C

// ---- the method on the tiny GPT

TEST_CASE("lora: the config has HF's field names; r 8, alpha 16, dropout 0.05 on q_proj and v_proj by default") {
    auto m = lesson_model();
    Rng rng(1);
    auto lora = make_lora(lora_config(), *m, rng);
    json c = lora->config_json();
    CHECK(c["r"] == 8);
    CHECK(c["lora_alpha"] == kDefaultAlpha);
    CHECK(c["lora_dropout"] == 0.05);
    CHECK(c["target_modules"] == json({"q_proj", "v_proj"}));
    CHECK(c["use_rslora"] == false);
    CHECK(c["bias"] == "none");
    CHECK(c["task_type"] == "CAUSAL_LM");
    CHECK(c["inference_mode"] == true);   // written on save, as HF does
    CHECK(lora->peft_type() == "LORA");
}

TEST_CASE("lora: at init the adapted model's logits equal the base model's, bit for bit") {
    auto m = lesson_model();
    ToyBatch b = lesson_batch();
    const std::vector<float> base = m->forward(b.ids).to_vector();
    Rng rng(2);
    PeftModel pm(*m);
    pm.add("default", make_lora(lora_config(), *m, rng));
    // Why exact: B = 0, so u Bᵀ is a sum of products u·0 = ±0, s·(±0) = ±0, and y + ±0 = y in
    // IEEE arithmetic (only y = −0 could turn into +0, which == still calls equal). The base
    // part is the very GEMM call linear() makes on the same data.
    CHECK(m->forward(b.ids).to_vector() == base);
    pm.active()->training = true;   // even with dropout on the branch: it drops from a zero update
    CHECK(m->forward(b.ids).to_vector() == base);
}

TEST_CASE("lora: the trainable count is r·(in + out) per target, 4·L·r·C for the defaults") {
    const GPTConfig c = lesson_config();
    auto m = lesson_model();
    Rng rng(3);
    auto lora = make_lora(lora_config(), *m, rng);
    CHECK(m->params.count(true) == 0);   // the whole base is frozen
    CHECK(lora->params.count(true) == 2 * c.n_layer * kDefaultR * (c.n_embd + c.n_embd));   // q and v: r(in + out) each
    CHECK(lora->expected_params(c) == lora->params.count(true));
    CHECK(lora->params.get(kQ + ".lora_A.weight").shape() == Shape{kDefaultR, kWidth});   // A: (r, in)
    CHECK(lora->params.get(kQ + ".lora_B.weight").shape() == Shape{kWidth, kDefaultR});   // B: (out, r)

    // Every Linear: q, k, v, o have in + out = 2C, fc_in and fc_out 5C: 18·L·r·C in all.
    auto m2 = lesson_model();
    auto all = make_lora(lora_config({{"r", 4}, {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out"}}}),
                         *m2, rng);
    CHECK(all->params.count(true) == 18 * c.n_layer * 4 * c.n_embd);
    CHECK(all->expected_params(c) == all->params.count(true));
}

TEST_CASE("lora: A starts kaiming-uniform in (-1/sqrt(in), 1/sqrt(in)) and B at zero") {
    auto m = lesson_model();
    Rng rng(4);
    auto lora = make_lora(lora_config(), *m, rng);
    const float bound = 1.f / std::sqrt(float(kWidth));   // 1/√in
    float lo = 1, hi = -1;
    for (float a : lora->params.get(kQ + ".lora_A.weight").to_vector()) lo = std::min(lo, a), hi = std::max(hi, a);
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    CHECK(hi - lo > bound);   // spread over the range, not a constant
    for (float v : lora->params.get(kQ + ".lora_B.weight").to_vector()) CHECK(v == 0.f);
}

// The branch of one Linear: lin(x) − lin.base_forward(x), and (x Aᵀ) Bᵀ computed separately.
static void branch_and_product(bool rslora, std::vector<float>& branch, std::vector<float>& product) {
    auto m = lesson_model();
    Rng rng(5);
    PeftModel pm(*m);
    pm.add("default", make_lora(lora_config({{"r", 4}, {"use_rslora", rslora}}), *m, rng));
    Tensor A = pm.active()->params.get(kQ + ".lora_A.weight"), B = pm.active()->params.get(kQ + ".lora_B.weight");
    for (int64_t i = 0; i < B.numel(); i++) B.data()[i] = float(rng.normal());
    Tensor x = Tensor::randn({2, 3, 16}, rng);
    NoGradGuard ng;
    const Linear& q = m->h[0].attn.q_proj;
    std::vector<float> y = q(x).to_vector(), base = q.base_forward(x).to_vector();
    branch.resize(y.size());
    for (size_t i = 0; i < y.size(); i++) branch[i] = y[i] - base[i];
    product = linear(linear(x, A), B).to_vector();
}

TEST_CASE("lora: the branch is scaled by alpha/r, or by alpha/sqrt(r) with rsLoRA") {
    std::vector<float> plain, rs, product;
    branch_and_product(false, plain, product);   // r 4, alpha 16: s = 4
    branch_and_product(true, rs, product);       //               s = 16 / 2 = 8
    for (size_t i = 0; i < product.size(); i++) {
        // the difference y − base loses ~1e-7·|y| to rounding; compare with that slack
        CHECK(plain[i] == doctest::Approx(4.f * product[i]).epsilon(1e-4).scale(1.f));
        CHECK(rs[i] == doctest::Approx(8.f * product[i]).epsilon(1e-4).scale(1.f));
    }
}

// ---- the fused op

TEST_CASE("lora_linear: dropout acts on the branch only; the base path sees the undropped x") {
    // With A = B = I (r = in = out), the branch is s · drop(x) itself, so y − (x Wᵀ + b) shows
    // the mask: each element is 0 (dropped) or s · x / (1 − p) (kept and rescaled).
    Rng rng(6);
    const int64_t n = 8;
    Tensor x = Tensor::randn({32, n}, rng), W = Tensor::randn({n, n}, rng), b = Tensor::randn({n}, rng);
    Tensor I = Tensor::zeros({n, n});
    for (int64_t i = 0; i < n; i++) I.data()[i * n + i] = 1.f;
    const float s = 2.f, p = 0.5f;
    Rng drops(99);
    std::vector<float> y = lora_linear(x, W, b, I, I, s, p, true, drops).to_vector();
    std::vector<float> base = linear(x, W, b).to_vector(), xv = x.to_vector();
    int dropped = 0, kept = 0;
    for (size_t i = 0; i < y.size(); i++) {
        const float branch = y[i] - base[i], tol = 1e-5f * (1 + std::fabs(base[i]));
        if (std::fabs(branch) <= tol) dropped++;
        else if (std::fabs(branch - s * xv[i] / (1 - p)) <= tol) kept++;
    }
    CHECK(dropped + kept == 256);   // nothing else: the base part saw all of x
    CHECK(dropped > 96);            // about half of 256
    CHECK(kept > 96);

    // It is the mask the engine's dropout op draws from the same seed: the branch is dropout(x) Aᵀ Bᵀ.
    Rng same(99);
    Tensor xd = dropout(x, p, true, same);
    std::vector<float> expect = linear(linear(xd, I), I).to_vector();
    for (size_t i = 0; i < y.size(); i++) CHECK(y[i] == doctest::Approx(base[i] + s * expect[i]).epsilon(1e-5));

    // A seed fixes the mask; the next call draws a new one.
    Rng again(99);
    CHECK(lora_linear(x, W, b, I, I, s, p, true, again).to_vector() == y);
    CHECK(lora_linear(x, W, b, I, I, s, p, true, again).to_vector() != y);

    // p = 0 while training, or any p in eval, is no dropout: the same numbers, bit for bit, no draws.
    Rng r3(99);
    std::vector<float> eval = lora_linear(x, W, b, I, I, s, p, false, r3).to_vector();
    CHECK(lora_linear(x, W, b, I, I, s, 0.f, true, r3).to_vector() == eval);
    CHECK(r3.state() == Rng(99).state());
}

TEST_CASE("lora_linear: gradcheck of x, A and B, with and without dropout and bias") {
    Rng rng(7);
    Tensor x = param({2, 3, 8}, rng), W = Tensor::randn({5, 8}, rng), b = Tensor::randn({5}, rng);
    Tensor A = param({3, 8}, rng), B = param({5, 3}, rng);
    for (float p : {0.f, 0.3f})
        for (bool with_bias : {true, false}) {
            CAPTURE(p);
            CAPTURE(with_bias);
            Tensor bias = with_bias ? b : Tensor();
            gradcheck("lora_linear", [&](const std::vector<Tensor>& in) {
                Rng r(11);   // the same mask on every call, so the function is deterministic
                return lora_linear(in[0], W, bias, in[1], in[2], 1.5f, p, true, r);
            }, {x, A, B});
        }
}

TEST_CASE("lora_linear: shape errors name the op and both shapes") {
    Rng rng(8);
    Tensor x = Tensor::randn({4, 8}, rng), W = Tensor::randn({5, 8}, rng), b = Tensor::randn({5}, rng);
    Tensor A = Tensor::randn({3, 8}, rng), B = Tensor::randn({5, 3}, rng);
    CHECK_THROWS_WITH_AS(lora_linear(Tensor::randn({4, 7}, rng), W, b, A, B, 1, 0, false, rng),
                         doctest::Contains("lora_linear: x [4, 7] and W [5, 8]"), ShapeError);
    CHECK_THROWS_WITH_AS(lora_linear(x, W, b, Tensor::randn({3, 7}, rng), B, 1, 0, false, rng),
                         doctest::Contains("lora_linear: A [3, 7] must be (r, 8) for W [5, 8]"), ShapeError);
    CHECK_THROWS_WITH_AS(lora_linear(x, W, b, A, Tensor::randn({5, 2}, rng), 1, 0, false, rng),
                         doctest::Contains("lora_linear: B [5, 2] must be [5, 3] for W [5, 8] and A [3, 8]"), ShapeError);
    CHECK_THROWS_WITH_AS(lora_linear(x, W, Tensor::randn({4}, rng), A, B, 1, 0, false, rng),
                         doctest::Contains("lora_linear: bias [4] must be [5]"), ShapeError);
    CHECK_THROWS_WITH_AS(lora_linear(x, W, b, A, B, 1, 1.f, true, rng), doctest::Contains("dropout p"), ValueError);
    Tensor W_trainable = param({5, 8}, rng);
    CHECK_THROWS_WITH_AS(lora_linear(x, W_trainable, b, A, B, 1, 0, false, rng), doctest::Contains("must be frozen"),
                         ValueError);
}

TEST_CASE("lora_linear: it keeps only x and u, and its backward allocates gradients for A and B only") {
    Rng rng(9);
    const int64_t rows = 64, in = 32, out = 24, r = 4;
    Tensor x = Tensor::randn({rows, in}, rng), W = Tensor::randn({out, in}, rng), b = Tensor::randn({out}, rng);
    Tensor A = Tensor::randn({r, in}, rng), B = Tensor::randn({out, r}, rng), R = Tensor::randn({rows, out}, rng);
    ParamList ps;   // as in a model: W, b frozen parameters, A, B trainable ones
    ps.add("W", W); ps.add("b", b); ps.add("A", A); ps.add("B", B);
    ps.freeze("W"); ps.freeze("b");
    const MemStats m0 = mem_stats();
    Tensor y = lora_linear(x, W, b, A, B, 2.f, 0.f, false, rng);
    // dA needs x (the branch input), dB needs u = x Aᵀ; x needs no gradient, so W is not kept.
    CHECK(mem_stats().cur(Mem::Saved) - m0.cur(Mem::Saved) == int64_t(x.nbytes()) + rows * r * 4);
    projection_loss(y, R).backward();
    CHECK(mem_stats().cur(Mem::Grads) - m0.cur(Mem::Grads) == int64_t(A.nbytes() + B.nbytes()));
    CHECK_FALSE(W.has_grad());
    CHECK_FALSE(b.has_grad());
    CHECK(mem_stats().cur(Mem::Saved) == m0.cur(Mem::Saved));   // released after backward

    // With dropout and an x that needs a gradient: the dropped x, u, and the mask as bits.
    Tensor x2 = param({rows, in}, rng);
    const int64_t saved0 = mem_stats().cur(Mem::Saved);
    Tensor y2 = lora_linear(x2, W, b, A, B, 2.f, 0.1f, true, rng);
    CHECK(mem_stats().cur(Mem::Saved) - saved0 == rows * in * 4 + rows * r * 4 + (rows * in + 31) / 32 * 4);
}

// ---- training

TEST_CASE("lora: gradcheck of A and B through the tiny model") {
    auto m = lesson_model();
    Rng rng(10);
    PeftModel pm(*m);
    pm.add("default", make_lora(lora_config(), *m, rng));
    Method& lora = *pm.active();
    for (const Param& p : lora.params.all())   // B = 0 would hide half of A's gradient path
        if (p.name.find("lora_B") != std::string::npos)
            for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] = float(rng.normal() * 0.3);
    ToyBatch b = lesson_batch();
    GradcheckOptions o;
    o.precise = true;
    o.max_elems = 12;
    std::vector<Tensor> inputs;
    for (const char* n : {"transformer.h.0.attn.q_proj.lora_A.weight", "transformer.h.0.attn.q_proj.lora_B.weight",
                          "transformer.h.1.attn.v_proj.lora_A.weight", "transformer.h.1.attn.v_proj.lora_B.weight"})
        inputs.push_back(lora.params.get(std::string("base_model.model.") + n));
    gradcheck("lora in gpt", [&](const std::vector<Tensor>&) { return m->forward(b.ids); }, inputs, o);
}

TEST_CASE("lora: training lowers the loss; the base gets no gradient and stays bit-for-bit the same") {
    auto m = lesson_model();
    const uint64_t before = base_checksum(*m);
    Rng rng(11);
    PeftModel pm(*m);
    pm.add("default", make_lora(lora_config(), *m, rng));
    std::vector<float> losses = train_method(*m, *pm.active(), 40);
    CHECK(losses.back() < 0.9f * losses.front());   // measured: 2.58 -> 2.17 (q and v of 2 tiny layers only)
    CHECK(base_has_no_grads(*m));
    CHECK(base_checksum(*m) == before);
}

TEST_CASE("lora: the optimizer holds state for A and B only (AdamW: 2 × their bytes)") {
    auto m = lesson_model();
    Rng rng(12);
    PeftModel pm(*m);
    pm.add("default", make_lora(lora_config(), *m, rng));
    Method& lora = *pm.active();
    const int64_t opt0 = mem_stats().cur(Mem::Optimizer);
    AdamW opt(lora.params, AdamWConfig{});
    ToyBatch b = lesson_batch();
    m->loss(b.ids, b.targets).backward();
    opt.step();
    CHECK(mem_stats().cur(Mem::Optimizer) - opt0 == 2 * lora.params.count(true) * 4);
}

// ---- merging

TEST_CASE("lora: merged logits equal the unmerged ones, and unmerge restores W bit for bit") {
    auto m = lesson_model();
    Rng rng(13);
    PeftModel pm(*m);
    pm.add("default", make_lora(lora_config(), *m, rng));
    Method& lora = *pm.active();
    train_method(*m, lora, 10);   // B is no longer zero
    CHECK(lora.params.get(kQ + ".lora_B.weight").to_vector() != std::vector<float>(size_t(kWidth * kDefaultR), 0.f));
    ToyBatch b = lesson_batch();
    const std::vector<float> adapted = m->forward(b.ids).to_vector();
    const uint64_t base = base_checksum(*m);
    const std::vector<float> W0 = m->h[0].attn.q_proj.weight.to_vector();

    lora.merge(*m);
    CHECK(m->h[0].attn.q_proj.wrap == nullptr);   // plain base forward on the merged W
    CHECK(base_checksum(*m) != base);
    // W' = W + (alpha/r)·B A, here checked in double
    Tensor A = lora.params.get(kQ + ".lora_A.weight"), B = lora.params.get(kQ + ".lora_B.weight");
    std::vector<double> expect(W0.begin(), W0.end());
    const int64_t C = kWidth, r = kDefaultR;
    for (int64_t o = 0; o < C; o++)
        for (int64_t i = 0; i < C; i++)
            for (int64_t k = 0; k < r; k++)
                expect[size_t(o * C + i)] += kDefaultScale * B.data()[o * r + k] * A.data()[k * C + i];
    std::string why;
    CHECK_MESSAGE(allclose(m->h[0].attn.q_proj.weight.to_vector(), expect, 1e-6, 1e-7, &why), why);
    // float rounding only: merged and unmerged forwards differ in the order of additions
    CHECK_MESSAGE(allclose(m->forward(b.ids).to_vector(), std::vector<double>(adapted.begin(), adapted.end()), 1e-5,
                           1e-6, &why), why);
    CHECK_THROWS_WITH_AS(lora.merge(*m), doctest::Contains("already merged"), ValueError);

    lora.unmerge(*m);
    CHECK(base_checksum(*m) == base);   // the copy taken at merge time, not W − s·B·A
    CHECK(m->forward(b.ids).to_vector() == adapted);
    CHECK_THROWS_WITH_AS(lora.unmerge(*m), doctest::Contains("not merged"), ValueError);
}

TEST_CASE("lora: disabling a merged adapter gives exactly the base model back") {
    auto m = lesson_model();
    ToyBatch b = lesson_batch();
    const std::vector<float> base = m->forward(b.ids).to_vector();
    Rng rng(14);
    PeftModel pm(*m);
    pm.add("default", make_lora(lora_config(), *m, rng));
    train_method(*m, *pm.active(), 5);
    pm.active()->merge(*m);
    pm.disable();
    CHECK(m->forward(b.ids).to_vector() == base);
}

TEST_CASE("lora: two adapters on one base: switching between them is exact, and each removes only its own seams") {
    auto m = lesson_model();
    ToyBatch b = lesson_batch();
    const std::vector<float> base = m->forward(b.ids).to_vector();
    Rng rng(19);
    PeftModel pm(*m);
    pm.add("a", make_lora(lora_config(), *m, rng));
    train_method(*m, pm.get("a"), 5);
    const std::vector<float> with_a = m->forward(b.ids).to_vector();
    pm.add("b", make_lora(lora_config(), *m, rng));   // now active instead of a
    train_method(*m, pm.get("b"), 5);
    const std::vector<float> with_b = m->forward(b.ids).to_vector();
    CHECK(with_b != with_a);
    pm.get("a").deactivate(*m);   // a is not active: b's seams stay
    CHECK(m->forward(b.ids).to_vector() == with_b);
    pm.set_active("a");
    CHECK(m->forward(b.ids).to_vector() == with_a);
    pm.disable();
    CHECK(m->forward(b.ids).to_vector() == base);
}

// ---- adapter files (bad configs and files that do not fit: tests/test_hardening_methods.cpp)

TEST_CASE("lora: save, then load into a fresh copy of the base, gives identical logits") {
    auto m = lesson_model();
    Rng rng(17);
    PeftModel pm(*m);
    pm.add("default", make_lora(lora_config({{"r", 4}, {"use_rslora", true}}), *m, rng));
    train_method(*m, *pm.active(), 5);
    ToyBatch b = lesson_batch();
    const std::vector<float> adapted = m->forward(b.ids).to_vector();
    TempDir dir;
    save_adapter(dir.path, *pm.active(), *m);

    // The files are HF PEFT's: keys base_model.model.<module>.lora_{A,B}.weight, and the config.
    SafeTensors st = load_safetensors(dir.path + "/adapter_model.safetensors");
    CHECK(st.tensors.size() == 8);
    CHECK(st.at(kQ + ".lora_A.weight").shape() == Shape{4, 16});
    CHECK(st.at(kQ + ".lora_B.weight").shape() == Shape{16, 4});
    std::ifstream f(dir.path + "/adapter_config.json");
    json cfg = json::parse(f);
    CHECK(cfg["peft_type"] == "LORA");
    CHECK(cfg["r"] == 4);
    CHECK(cfg["use_rslora"] == true);

    auto m2 = lesson_model();
    Rng other(999);   // a different init: everything must come from the file
    PeftModel pm2(*m2);
    pm2.add("default", load_adapter(dir.path, *m2, other));
    CHECK(m2->forward(b.ids).to_vector() == adapted);
}

}  // TEST_SUITE
