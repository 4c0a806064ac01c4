// tests/test_hardening_training.cpp — faults in training, as docs/FAILURES.md tables D and E
// list them: NaN in the loss or in one gradient, extreme logits, constant LayerNorm rows, and
// reproducibility of a seeded run (same seed, other seed, 1 and 2 threads).
#include <cmath>
#include <fstream>
#include "hardening_helpers.h"
#include "engine/ops.h"
#include "engine/parallel.h"
#include "train/trainer.h"

namespace {

// ---- training set-up for the NaN and determinism tests

std::string write_corpus(const TempDir& s) {
    std::string text;
    for (int i = 0; i < 200; i++) text += "the cat sat on the mat. the dog ran to the cat. ";
    std::ofstream(s / "c.txt") << text;
    return s / "c.txt";
}

GPTConfig small_config(int64_t V) {
    GPTConfig c;
    c.n_layer = 2; c.n_head = 2; c.n_embd = 32; c.block_size = 16; c.vocab_size = V; c.dropout = 0.1f;
    return c;
}

TrainConfig quick(int64_t steps, uint64_t seed = 1337) {
    TrainConfig t;
    t.steps = steps; t.batch = 4; t.warmup = 2; t.eval_every = 0; t.eval_iters = 1; t.lr = 3e-3f; t.seed = seed;
    return t;
}

// Forward y = x; backward dx = dy, and `victim` gets a gradient that is NaN at element 0 (zero
// elsewhere): exactly one poisoned gradient, as a bad kernel or a bit flip would produce.
Tensor nan_grad_tap(const Tensor& x, const Tensor& victim) {
    Tensor y = x.clone();
    const int64_t n = x.numel(), m = victim.numel();
    record(y, "nan_grad_tap", {x, victim}, [n, m](const Tensor& dy, Grads& g) {
        // forward: y = x, so dx = dy; the victim's gradient is poisoned on purpose
        if (g.needs(0)) {
            GradBuf dx = g.buf(0);
            for (int64_t i = 0; i < n; i++) dx.acc(i, dy.data()[i]);
        }
        if (g.needs(1)) {
            GradBuf dv = g.buf(1);
            for (int64_t i = 0; i < m; i++) dv.acc(i, i == 0 ? NAN : 0.f);
        }
    });
    return y;
}

// Seams that poison layer 1's attention output: its values (NaN loss) or one gradient.
struct Poison : Hooks {
    bool loss = false;
    Tensor victim;
    Tensor block_output(Site site, int64_t layer, const Tensor& f) override {
        if (site != Site::Attn || layer != 1) return f;
        return loss ? scale(f, NAN) : nan_grad_tap(f, victim);
    }
};

std::vector<double> losses_of_run(const TextDataset& ds, uint64_t seed, int steps) {
    Rng init(seed);
    GPT m(small_config(ds.tokenizer().vocab_size()), init);
    Trainer t(m, m.params, TrainData{&ds, nullptr}, quick(steps, seed));
    std::vector<double> losses;
    t.run([&](const LogRow& r) { losses.push_back(r.train_loss); }, nullptr);
    losses.push_back(double(checksum(m.params)));   // the final weights, bit for bit
    return losses;
}
}  // namespace

TEST_SUITE("hardening") {

// ---- D7: NaN in the loss or in a gradient

TEST_CASE("hardening: a NaN loss from a poisoned batch stops training at that step, naming the step") {
    TempDir s;
    TextDataset ds(write_corpus(s));
    Rng rng(7);
    GPT m(small_config(ds.tokenizer().vocab_size()), rng);
    Trainer t(m, m.params, TrainData{&ds, nullptr}, quick(10));
    for (int i = 0; i < 3; i++) CHECK(std::isfinite(t.train_step().train_loss));
    Poison poison;
    poison.loss = true;
    m.hooks = &poison;
    CHECK_THROWS_WITH_AS(t.train_step(), doctest::Contains("step 3: non-finite value in the loss"), NumericError);
    m.hooks = nullptr;
}

TEST_CASE("hardening: a NaN in one gradient stops training at that step, naming the tensor; skipping keeps every weight") {
    TempDir s;
    TextDataset ds(write_corpus(s));
    Rng rng(8);
    GPT m(small_config(ds.tokenizer().vocab_size()), rng);
    Poison poison;
    poison.victim = m.params.get("transformer.h.1.mlp.fc_in.bias");
    {
        Trainer t(m, m.params, TrainData{&ds, nullptr}, quick(10));
        t.train_step();
        t.train_step();
        m.hooks = &poison;
        CHECK_THROWS_WITH_AS(t.train_step(),
                             doctest::Contains("step 2: non-finite value in the gradient of 'transformer.h.1.mlp.fc_in.bias'"),
                             NumericError);
        m.hooks = nullptr;
    }
    TrainConfig skip = quick(10);
    skip.skip_nonfinite = true;
    Trainer t(m, m.params, TrainData{&ds, nullptr}, skip);
    const uint64_t before = checksum(m.params);
    m.hooks = &poison;
    t.train_step();   // skipped: no update at all
    m.hooks = nullptr;
    CHECK(checksum(m.params) == before);
    CHECK(std::isfinite(t.train_step().train_loss));
    CHECK(checksum(m.params) != before);   // the next clean batch trains again

    // A PEFT method's tensor is named the same way.
    Rng mrng(9);
    PeftModel peft(m);
    peft.add("lora", make_method({{"peft_type", "LORA"}, {"r", 2}}, m, mrng));
    const std::string name = "base_model.model.transformer.h.1.attn.v_proj.lora_A.weight";
    poison.victim = peft.active()->params.get(name);
    Trainer lt(m, peft.active()->params, TrainData{&ds, nullptr}, quick(10));
    m.hooks = &poison;
    CHECK_THROWS_WITH_AS(lt.train_step(), doctest::Contains(("step 0: non-finite value in the gradient of '" + name + "'").c_str()),
                         NumericError);
    m.hooks = nullptr;
}

// ---- E5, E6: extreme inputs to the numerically delicate ops

TEST_CASE("hardening: softmax and cross-entropy of +-1e30 logits are finite, with gradient softmax minus onehot") {
    const float big = 1e30f, inf = INFINITY;
    Tensor logits = Tensor::from({big, -big, 0.f, big,    -big, -big, -big, 5.f,
                                  7.f, 7.f, 7.f, 7.f,     -inf, -inf, 3.f, -inf}, {4, 4});
    logits.set_requires_grad(true);
    const std::vector<float> p = softmax(logits).to_vector();
    const std::vector<float> want = {0.5f, 0, 0, 0.5f, 0, 0, 0, 1, 0.25f, 0.25f, 0.25f, 0.25f, 0, 0, 1, 0};
    for (size_t i = 0; i < p.size(); i++) CHECK(p[i] == doctest::Approx(want[i]).epsilon(1e-6));
    Tensor loss = cross_entropy(logits, Tensor::from_ints({0, 3, 2, 2}, {4}));
    CHECK(std::isfinite(loss.item()));
    CHECK(loss.item() == doctest::Approx((std::log(2.0) + std::log(4.0)) / 4).epsilon(1e-5));
    loss.backward();
    const std::vector<float> g = logits.grad().to_vector();
    const std::vector<float> onehot = {1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0};
    for (size_t i = 0; i < g.size(); i++) CHECK(g[i] == doctest::Approx((want[i] - onehot[i]) / 4).epsilon(1e-6));
}

TEST_CASE("hardening: LayerNorm on constant rows and on huge or tiny magnitudes is finite in value and gradient") {
    Rng rng(10);
    std::vector<float> v;
    for (float c : {5.f, 0.f, -1e30f}) for (int j = 0; j < 8; j++) v.push_back(c);             // constant rows
    for (float s : {1e-30f, 1e15f}) for (int j = 0; j < 8; j++) v.push_back(s * float(j - 3));  // tiny and huge spread
    Tensor x = Tensor::from(v, {5, 8});
    x.set_requires_grad(true);
    Tensor w = param({8}, rng), b = param({8}, rng);
    Tensor y = layernorm(x, w, b);
    for (float f : y.to_vector()) CHECK(std::isfinite(f));
    projection_loss(y, Tensor::randn({5, 8}, rng)).backward();
    for (const Tensor& t : {x, w, b})
        for (float f : t.grad().to_vector()) CHECK(std::isfinite(f));
    for (int j = 0; j < 8; j++) CHECK(y.data()[j] == b.data()[j]);   // a constant row normalises to 0, leaving the bias
}

// ---- E11-E13: reproducibility

TEST_CASE("hardening: the same seed twice gives bitwise-identical losses and weights; another seed differs") {
    TempDir s;
    TextDataset ds(write_corpus(s));
    const std::vector<double> first = losses_of_run(ds, 11, 6), again = losses_of_run(ds, 11, 6), other = losses_of_run(ds, 12, 6);
    CHECK(first == again);
    for (size_t i = 0; i < first.size(); i++) CHECK(first[i] != other[i]);
}

TEST_CASE("hardening: 1 and 2 threads give bitwise-identical losses and weights") {
    TempDir s;
    TextDataset ds(write_corpus(s));
    const int threads = num_threads();
    set_num_threads(1);
    const std::vector<double> one = losses_of_run(ds, 13, 6);
    set_num_threads(2);
    const std::vector<double> two = losses_of_run(ds, 13, 6);
    set_num_threads(threads);
    CHECK(one == two);
}
}  // TEST_SUITE
