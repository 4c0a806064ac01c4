// tests/test_optim.cpp — AdamW and SGD against hand-computed values, state only for trainable
// parameters, checkpointable state, and global-norm gradient clipping.
#include <cmath>
#include <cstring>
#include <memory>
#include "helpers.h"
#include "engine/optim.h"

TEST_SUITE("optim") {

// Gives p a gradient buffer holding g, as backward would.
static void set_grad(Tensor p, const std::vector<float>& g) {
    REQUIRE(int64_t(g.size()) == p.numel());
    p.impl().grad = std::make_shared<Storage>(p.nbytes(), Mem::Grads);
    std::memcpy(p.grad_data(), g.data(), p.nbytes());
}

static bool same_bits(const Tensor& a, const Tensor& b) {
    return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

TEST_CASE("optim: AdamW matches hand-computed values for one and three steps") {
    // Expected values computed in double, step by step, from the AdamW definition:
    //   p -= lr·wd·p;  m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;
    //   p -= lr · (m / (1-β1ᵗ)) / (sqrt(v / (1-β2ᵗ)) + eps)
    // with lr 0.1, β1 0.9, β2 0.999, eps 1e-8, wd 0.1. After step 1, m̂ = g and v̂ = g², so
    // p1 = 0.99 p0 − 0.1 g/(|g| + 1e-8): 1 → 0.99 − 0.1·0.5/0.50000001 = 0.890000002.
    ParamList pl;
    Tensor w = Tensor::from({1.f, -2.f, 0.5f}, {1, 3});   // 2-D: decayed by default
    pl.add("w", w);
    AdamW opt(pl, {0.1f, 0.9f, 0.999f, 1e-8f, 0.1f});
    const std::vector<std::vector<float>> grads = {{0.5f, -0.25f, 2.f}, {0.1f, 0.3f, -1.f}, {-0.4f, 0.2f, 0.05f}};
    const double after[3][3] = {{0.8900000020, -1.8800000040, 0.3950000005},
                                {0.8007959064, -1.8754944765, 0.3644162967},
                                {0.7834180073, -1.8957090600, 0.3387599984}};
    for (int t = 0; t < 3; t++) {
        set_grad(w, grads[t]);
        opt.step();
        CHECK(opt.step_count() == t + 1);
        for (int i = 0; i < 3; i++) CHECK(w.data()[i] == doctest::Approx(after[t][i]).epsilon(1e-6));
        if (t == 0) {   // moments after one step: m = 0.1 g, v = 0.001 g²
            NamedTensors st = opt.state_tensors();
            REQUIRE(st.size() == 2);
            CHECK(st[0].first == "optim.m.w");
            CHECK(st[1].first == "optim.v.w");
            for (int i = 0; i < 3; i++) {
                CHECK(st[0].second.data()[i] == doctest::Approx(0.1 * grads[0][i]).epsilon(1e-6));
                CHECK(st[1].second.data()[i] == doctest::Approx(0.001 * grads[0][i] * grads[0][i]).epsilon(1e-6));
            }
        }
    }
}

TEST_CASE("optim: default decay skips biases, LayerNorm params and embeddings") {
    Rng rng(1);
    auto decays = [&](const std::string& name, const Shape& s) { return default_decay({name, Tensor::zeros(s)}); };
    CHECK(decays("h.0.attn.q_proj.weight", {8, 4}));
    CHECK(decays("lm_head.weight", {16, 4}));
    CHECK_FALSE(decays("h.0.attn.q_proj.bias", {8}));
    CHECK_FALSE(decays("h.0.ln_1.weight", {4}));
    CHECK_FALSE(decays("wte.weight", {16, 4}));
    CHECK_FALSE(decays("transformer.wpe.weight", {8, 4}));
    CHECK_FALSE(decays("prompt_embeddings", {5, 4}));
    CHECK_FALSE(decays("prompt_encoder.embedding.weight", {5, 4}));

    // With zero gradients the Adam step is 0, so only the decay moves a parameter: by (1 − lr·wd).
    ParamList pl;
    Linear l(4, 3, true, rng);
    LayerNorm ln(3, true);
    Embedding e(6, 3, rng);
    l.register_params(pl, "fc");
    ln.register_params(pl, "ln_1");
    e.register_params(pl, "wte");
    l.bias.data()[0] = ln.bias.data()[0] = 0.5f;
    std::vector<std::vector<float>> before;
    for (const Param& p : pl.all()) { before.push_back(p.tensor.to_vector()); set_grad(p.tensor, std::vector<float>(p.tensor.numel(), 0.f)); }
    AdamW opt(pl, {0.1f, 0.9f, 0.999f, 1e-8f, 0.5f});
    opt.step();
    for (size_t k = 0; k < pl.size(); k++) {
        const Param& p = pl.all()[k];
        const float f = p.name == "fc.weight" ? 1.f - 0.1f * 0.5f : 1.f;
        for (int64_t i = 0; i < p.tensor.numel(); i++) CHECK_MESSAGE(p.tensor.data()[i] == before[k][i] * f, p.name);
    }
    // A custom predicate can decay everything.
    AdamW all(pl, {0.1f, 0.9f, 0.999f, 1e-8f, 0.5f}, [](const Param&) { return true; });
    all.step();
    CHECK(l.bias.data()[0] == 0.5f * 0.95f);
}

TEST_CASE("optim: AdamW state is exactly two moments of the trainable parameters, none for frozen ones") {
    Rng rng(2);
    ParamList pl;
    Linear a(32, 16, true, rng), b(16, 8, true, rng);
    Embedding e(50, 32, rng);
    e.register_params(pl, "wte");
    a.register_params(pl, "h.0.fc");
    b.register_params(pl, "h.1.fc");
    pl.freeze("wte.*");
    pl.freeze("h.0.*");
    const int64_t trainable_bytes = pl.count(true) * 4;
    CHECK(trainable_bytes == (16 * 8 + 8) * 4);
    const int64_t opt0 = mem_stats().cur(Mem::Optimizer);
    {
        AdamW opt(pl);
        CHECK(mem_stats().cur(Mem::Optimizer) - opt0 == 2 * trainable_bytes);
        CHECK(opt.state_bytes() == 2 * trainable_bytes);
        CHECK(opt.state_tensors().size() == 4);
        for (const Param& p : pl.all()) set_grad(p.tensor, std::vector<float>(p.tensor.numel(), 0.1f));
        std::vector<float> frozen = a.weight.to_vector();
        opt.step();   // allocates nothing more, and never touches the frozen weights
        CHECK(mem_stats().cur(Mem::Optimizer) - opt0 == 2 * trainable_bytes);
        CHECK(a.weight.to_vector() == frozen);
        SGD sgd(pl, {0.1f, 0.9f, 0.f});
        CHECK(mem_stats().cur(Mem::Optimizer) - opt0 == 3 * trainable_bytes);
        SGD plain(pl, {0.1f, 0.f, 0.f});   // no momentum, no state
        CHECK(mem_stats().cur(Mem::Optimizer) - opt0 == 3 * trainable_bytes);
    }
    CHECK(mem_stats().cur(Mem::Optimizer) == opt0);
}

TEST_CASE("optim: a parameter without a gradient is skipped, decay included") {
    ParamList pl;
    Tensor w = Tensor::from({1.f, 2.f}, {1, 2}), u = Tensor::from({3.f, 4.f}, {1, 2});
    pl.add("w", w);
    pl.add("u", u);
    AdamW opt(pl, {0.1f, 0.9f, 0.999f, 1e-8f, 0.1f});
    set_grad(w, {1.f, 1.f});
    opt.step();
    CHECK(u.to_vector() == std::vector<float>{3.f, 4.f});
    CHECK(opt.state_tensors()[2].second.to_vector() == std::vector<float>{0.f, 0.f});   // optim.m.u
    CHECK(w.data()[0] != 1.f);
}

TEST_CASE("optim: SGD with momentum matches hand-computed values") {
    // lr 0.1, μ 0.9, p0 = 1, grads 0.5, -0.2, 0.3:
    //   b = 0.5,                p = 1 - 0.05    = 0.95
    //   b = 0.45 - 0.2 = 0.25,  p = 0.95 - 0.025 = 0.925
    //   b = 0.225 + 0.3 = 0.525, p = 0.925 - 0.0525 = 0.8725
    ParamList pl;
    Tensor w = Tensor::from({1.f}, {1, 1});
    pl.add("w", w);
    SGD opt(pl, {0.1f, 0.9f, 0.f});
    const float g[3] = {0.5f, -0.2f, 0.3f};
    const double p[3] = {0.95, 0.925, 0.8725}, b[3] = {0.5, 0.25, 0.525};
    for (int t = 0; t < 3; t++) {
        set_grad(w, {g[t]});
        opt.step();
        CHECK(w.item() == doctest::Approx(p[t]).epsilon(1e-6));
        CHECK(opt.state_tensors()[0].second.item() == doctest::Approx(b[t]).epsilon(1e-6));
    }
    CHECK(opt.state_tensors()[0].first == "optim.momentum.w");

    // L2 weight decay enters the gradient: p = 2, g = 0.5, wd 0.1 -> p = 2 - 0.1·(0.5 + 0.2) = 1.93
    ParamList pl2;
    Tensor v = Tensor::from({2.f}, {1, 1});
    pl2.add("v", v);
    SGD plain(pl2, {0.1f, 0.f, 0.1f});
    set_grad(v, {0.5f});
    plain.step();
    CHECK(v.item() == doctest::Approx(1.93).epsilon(1e-6));
}

TEST_CASE("optim: clip_grad_norm scales to max_norm and returns the norm before clipping") {
    ParamList pl;
    Tensor a = Tensor::from({3.f, 0.f}, {2}), b = Tensor::from({4.f}, {1}), c = Tensor::from({7.f}, {1});
    pl.add("a", a);
    pl.add("b", b);
    pl.add("c", c);   // trainable, but no gradient this step: not counted
    set_grad(a, {3.f, 0.f});
    set_grad(b, {4.f});
    CHECK(clip_grad_norm(pl, 10.0) == 5.0);   // under the limit: untouched
    CHECK(b.grad().item() == 4.f);
    CHECK(clip_grad_norm(pl, 1.0) == 5.0);
    CHECK(a.grad().to_vector()[0] == doctest::Approx(0.6).epsilon(1e-6));
    CHECK(b.grad().item() == doctest::Approx(0.8).epsilon(1e-6));
    CHECK(clip_grad_norm(pl, 10.0) == doctest::Approx(1.0).epsilon(1e-6));
    CHECK_FALSE(c.has_grad());
    CHECK_THROWS_AS(clip_grad_norm(pl, 0.0), ValueError);
}

TEST_CASE("optim: clip_grad_norm returns a non-finite norm without scaling") {
    ParamList pl;
    Tensor a = Tensor::from({1.f, 2.f}, {2});
    pl.add("a", a);
    set_grad(a, {NAN, 2.f});
    CHECK(std::isnan(clip_grad_norm(pl, 1.0)));
    CHECK(a.grad().to_vector()[1] == 2.f);
    set_grad(a, {INFINITY, 2.f});
    CHECK(std::isinf(clip_grad_norm(pl, 1.0)));
    CHECK(a.grad().to_vector()[1] == 2.f);
}

TEST_CASE("optim: clipping passed to step() as a coefficient equals clip_grad_norm then step() (AdamW: same bits)") {
    for (int kind = 0; kind < 2; kind++) {   // AdamW, then SGD with momentum
        Rng rng(5);
        std::vector<float> g0 = Tensor::randn({3, 70000}, rng, 4.f).to_vector();   // norm ≈ 1800: clipped
        Tensor w0 = Tensor::randn({3, 70000}, rng);
        auto run = [&](bool fused) {
            ParamList pl;
            Tensor w = w0.clone();
            pl.add("w", w);
            std::unique_ptr<Optimizer> opt;
            if (kind == 0) opt = std::make_unique<AdamW>(pl);
            else opt = std::make_unique<SGD>(pl, SGDConfig{0.1f, 0.9f, 0.01f});
            for (int step = 0; step < 2; step++) {
                set_grad(w, g0);
                if (fused) opt->step(clip_coefficient(grad_norm(pl), 1.0));
                else { clip_grad_norm(pl, 1.0); opt->step(); }
            }
            return w;
        };
        const Tensor a = run(true), b = run(false);
        if (kind == 0) CHECK(same_bits(a, b));
        else   // SGD's g·k + wd·p may become one fused multiply-add, rounding once instead of twice
            CHECK(allclose(a.to_vector(), std::vector<double>(b.data(), b.data() + b.numel()), 1e-6, 1e-7));
    }
    CHECK(clip_coefficient(0.5, 1.0) == 1.f);
    CHECK(clip_coefficient(NAN, 1.0) == 1.f);
    CHECK_THROWS_AS(clip_coefficient(2.0, 0.0), ValueError);
}

TEST_CASE("optim: clip_grad_norm and AdamW give the same bits on 1 and 2 threads") {
    auto run = [] {
        std::vector<Tensor> out;
        Rng r(4);
        ParamList pl;
        Tensor w = Tensor::randn({301, 401}, r), bias = Tensor::randn({401}, r);   // odd: uneven thread splits
        pl.add("w", w);
        pl.add("b", bias);
        AdamW opt(pl);
        for (int s = 0; s < 3; s++) {
            set_grad(w, Tensor::randn({301 * 401}, r).to_vector());
            set_grad(bias, Tensor::randn({401}, r).to_vector());
            const double norm = clip_grad_norm(pl, 1.0);
            out.push_back(Tensor::full({1}, float(norm)));
            opt.step();
        }
        out.push_back(w.clone());
        out.push_back(opt.state_tensors()[1].second.clone());   // v of w
        return out;
    };
    const auto [one, two] = with_1_and_2_threads(run);
    for (size_t k = 0; k < one.size(); k++) CHECK_MESSAGE(same_bits(one[k], two[k]), "result " << k);
}

// A tiny model whose gradients depend on its weights, so any state difference would show.
struct Model {
    Rng rng;
    Linear fc1, fc2;
    ParamList params;
    explicit Model(uint64_t seed) : rng(seed), fc1(6, 5, true, rng, 0.5f), fc2(5, 2, true, rng, 0.5f) {
        fc1.register_params(params, "fc1");
        fc2.register_params(params, "fc2");
    }
    void backward(int step) {
        Rng r(100 + step);
        Tensor x = Tensor::randn({4, 6}, r);
        projection_loss(fc2(fc1(x)), Tensor::randn({4, 2}, r)).backward();
    }
};

static void train(Model& m, AdamW& opt, int from, int to) {
    for (int s = from; s < to; s++) {
        opt.zero_grad();
        m.backward(s);
        clip_grad_norm(m.params, 1.0);
        opt.step();
    }
}

TEST_CASE("optim: saving and loading the state continues bit for bit") {
    const AdamWConfig cfg{0.05f, 0.9f, 0.99f, 1e-8f, 0.1f};
    Model a(7);
    AdamW opt_a(a.params, cfg);
    train(a, opt_a, 0, 3);
    // "checkpoint": copies of the weights and the optimizer state, and the step count
    NamedTensors saved;
    for (const Param& p : a.params.all()) saved.push_back({p.name, p.tensor.clone()});
    for (const auto& [name, t] : opt_a.state_tensors()) saved.push_back({name, t.clone()});
    const int64_t t_saved = opt_a.step_count();
    train(a, opt_a, 3, 6);

    Model b(99);   // other initial weights, overwritten from the checkpoint
    for (const auto& [name, t] : saved)
        if (Param* p = b.params.find(name)) std::memcpy(p->tensor.data(), t.data(), t.nbytes());
    AdamW opt_b(b.params, cfg);
    opt_b.load_state(saved);   // the parameters' own entries are ignored
    opt_b.set_step_count(t_saved);
    train(b, opt_b, 3, 6);
    CHECK(opt_b.step_count() == 6);
    for (size_t k = 0; k < a.params.size(); k++)
        CHECK_MESSAGE(same_bits(a.params.all()[k].tensor, b.params.all()[k].tensor), a.params.all()[k].name);
    NamedTensors sa = opt_a.state_tensors(), sb = opt_b.state_tensors();
    for (size_t k = 0; k < sa.size(); k++) CHECK_MESSAGE(same_bits(sa[k].second, sb[k].second), sa[k].first);
}

TEST_CASE("optim: loading state with a missing, misshapen or unknown tensor names it and changes nothing") {
    Model m(1);
    AdamW opt(m.params);
    NamedTensors good;
    for (const auto& [name, t] : opt.state_tensors()) good.push_back({name, Tensor::full(t.shape(), 0.5f)});

    NamedTensors missing(good.begin() + 1, good.end());
    CHECK_THROWS_WITH_AS(opt.load_state(missing), doctest::Contains("'optim.m.fc1.weight' is missing"), ValueError);
    NamedTensors bad = good;
    bad[3].second = Tensor::zeros({6});
    CHECK_THROWS_WITH_AS(opt.load_state(bad), doctest::Contains("'optim.v.fc1.bias' is F32[6], expected F32[5]"),
                         ValueError);
    NamedTensors extra = good;
    extra.push_back({"optim.m.fc3.weight", Tensor::zeros({1})});
    CHECK_THROWS_WITH_AS(opt.load_state(extra), doctest::Contains("unexpected tensor 'optim.m.fc3.weight'"), ValueError);
    for (const auto& nt : opt.state_tensors()) CHECK(nt.second.to_vector() == std::vector<float>(nt.second.numel(), 0.f));

    opt.load_state(good);
    for (const auto& nt : opt.state_tensors()) CHECK(nt.second.to_vector() == std::vector<float>(nt.second.numel(), 0.5f));
    SGD sgd(m.params, {0.1f, 0.9f, 0.f});
    CHECK_THROWS_WITH_AS(sgd.load_state(good), doctest::Contains("optim.momentum.fc1.weight"), ValueError);
}

TEST_CASE("optim: zero_grad drops the gradient buffers") {
    Model m(2);
    m.backward(0);
    CHECK(m.fc1.weight.has_grad());
    AdamW opt(m.params);
    opt.zero_grad();
    for (const Param& p : m.params.all()) CHECK_FALSE(p.tensor.has_grad());
    m.backward(1);
    zero_grad(m.params);
    for (const Param& p : m.params.all()) CHECK_FALSE(p.tensor.has_grad());
}

TEST_CASE("optim: nothing trainable or a bad hyper-parameter is a clear error") {
    Model m(3);
    CHECK_THROWS_WITH_AS(AdamW(m.params, {0.1f, 1.5f}), doctest::Contains("beta1"), ValueError);
    CHECK_THROWS_WITH_AS(SGD(m.params, {-0.1f}), doctest::Contains("lr"), ValueError);
    AdamW opt(m.params);
    CHECK_THROWS_AS(opt.set_lr(NAN), ValueError);
    opt.set_lr(0.5f);
    CHECK(opt.lr() == 0.5f);
    m.params.freeze_all();
    CHECK_THROWS_WITH_AS(AdamW(m.params), doctest::Contains("none of the 4 parameters is trainable"), ValueError);
}

}  // TEST_SUITE
