// tests/test_module.cpp — the parameter registry (names, counts, freezing by pattern) and the
// Linear, LayerNorm and Embedding modules.
#include "helpers.h"
#include "engine/module.h"

TEST_SUITE("modules") {

static bool same_tensor(const Tensor& a, const Tensor& b) { return a.impl_ptr() == b.impl_ptr(); }

// A two-layer stack registered the way the GPT registers its blocks.
struct Tiny {
    Linear q, fc;
    LayerNorm ln;
    ParamList params;
    explicit Tiny(Rng& rng) : q(4, 3, true, rng), fc(3, 2, false, rng), ln(3, true) {
        q.register_params(params, "h.0.attn.q_proj");
        fc.register_params(params, "h.0.mlp.fc");
        ln.register_params(params, "h.0.ln_1");
    }
};

TEST_CASE("modules: registry keeps dotted names in order and counts elements") {
    Rng rng(1);
    Tiny m(rng);
    std::vector<std::string> names;
    for (const Param& p : m.params.all()) names.push_back(p.name);
    CHECK(names == std::vector<std::string>{"h.0.attn.q_proj.weight", "h.0.attn.q_proj.bias", "h.0.mlp.fc.weight",
                                            "h.0.ln_1.weight", "h.0.ln_1.bias"});
    CHECK(m.params.size() == 5);
    CHECK(m.params.count() == 12 + 3 + 6 + 3 + 3);
    CHECK(m.params.count(true) == m.params.count());   // registering makes everything trainable
    CHECK(m.params.trainable().size() == 5);
    CHECK(same_tensor(m.params.get("h.0.mlp.fc.weight"), m.fc.weight));   // the same tensor, not a copy
    CHECK(m.params.find("h.0.mlp.fc.bias") == nullptr);
    CHECK_THROWS_WITH_AS(m.params.get("h.0.mlp.fc.bias"), doctest::Contains("h.0.mlp.fc.bias"), ValueError);
}

TEST_CASE("modules: registered tensors count as params memory and require grad") {
    Rng rng(2);
    Tensor t = Tensor::randn({5, 7}, rng);   // created as `other`
    const int64_t params0 = mem_stats().cur(Mem::Params), other0 = mem_stats().cur(Mem::Workspace);
    ParamList pl;
    pl.add("w", t);
    CHECK(t.requires_grad());
    CHECK(t.storage().category() == Mem::Params);
    CHECK(mem_stats().cur(Mem::Params) - params0 == int64_t(t.nbytes()));
    CHECK(other0 - mem_stats().cur(Mem::Workspace) == int64_t(t.nbytes()));
}

TEST_CASE("modules: a duplicate name or the same tensor twice is an error") {
    Rng rng(3);
    ParamList pl;
    Tensor a = Tensor::randn({2}, rng), b = Tensor::randn({2}, rng);
    pl.add("a", a);
    CHECK_THROWS_WITH_AS(pl.add("a", b), doctest::Contains("duplicate parameter name 'a'"), ValueError);
    CHECK_THROWS_WITH_AS(pl.add("tied", a), doctest::Contains("same tensor as 'a'"), ValueError);
    CHECK(pl.size() == 1);
}

TEST_CASE("modules: glob patterns match any run of characters with '*'") {
    CHECK(glob_match("h.0.attn.q_proj.weight", "h.0.attn.q_proj.weight"));
    CHECK_FALSE(glob_match("h.0.attn.q_proj", "h.0.attn.q_proj.weight"));   // exact means exact
    CHECK(glob_match("*.bias", "h.11.mlp.fc.bias"));
    CHECK(glob_match("h.*.attn.*", "h.3.attn.v_proj.weight"));
    CHECK(glob_match("*", "anything"));
    CHECK(glob_match("*", ""));
    CHECK(glob_match("a*b*c", "aXXbYYbZc"));   // needs backtracking past the first 'b'
    CHECK_FALSE(glob_match("a*b*c", "aXXbYY"));
    CHECK_FALSE(glob_match("*.bias", "h.0.ln_1.bias_x"));
    CHECK(glob_match("h.1*", "h.10.attn.weight"));   // '*' crosses dots, unlike a path glob
}

TEST_CASE("modules: freeze and unfreeze by glob change what is trainable") {
    Rng rng(4);
    Tiny m(rng);
    CHECK(m.params.freeze("*.bias") == 2);
    CHECK_FALSE(m.q.bias.requires_grad());
    CHECK_FALSE(m.ln.bias.requires_grad());
    CHECK(m.params.count(true) == 12 + 6 + 3);
    m.params.freeze_all();
    CHECK(m.params.count(true) == 0);
    CHECK(m.params.trainable().empty());
    CHECK(m.params.unfreeze("h.*.attn.*") == 2);
    CHECK(m.q.weight.requires_grad());
    CHECK(m.q.bias.requires_grad());
    CHECK(m.params.count(true) == 15);
    CHECK(m.params.unfreeze("h.0.mlp.fc.weight") == 1);   // an exact name is a pattern too
    CHECK(m.params.trainable().size() == 3);
}

TEST_CASE("modules: freezing a pattern that matches nothing is an error listing real names") {
    Rng rng(5);
    Tiny m(rng);
    CHECK_THROWS_WITH_AS(m.params.freeze("h.*.attn.k_proj.*"), doctest::Contains("no parameter matches 'h.*.attn.k_proj.*'"),
                         ValueError);
    CHECK_THROWS_WITH_AS(m.params.unfreeze("q_proj"), doctest::Contains("h.0.attn.q_proj.weight"), ValueError);
    CHECK(m.params.count(true) == m.params.count());   // nothing changed
}

TEST_CASE("modules: Linear initialises W ~ N(0, std) and b = 0 with torch's [out, in] layout") {
    Rng rng(6);
    Linear l(64, 32, true, rng, 0.02f);
    CHECK(l.weight.shape() == Shape{32, 64});
    CHECK(l.bias.shape() == Shape{32});
    double s2 = 0;
    for (float w : l.weight.to_vector()) s2 += double(w) * w;
    CHECK(std::sqrt(s2 / l.weight.numel()) == doctest::Approx(0.02).epsilon(0.1));
    for (float b : l.bias.to_vector()) CHECK(b == 0.f);
    Linear nb(4, 3, false, rng);
    CHECK_FALSE(nb.bias.defined());
    CHECK_THROWS_AS(Linear(0, 3, true, rng), ValueError);
}

TEST_CASE("modules: Linear forward equals the linear op") {
    Rng rng(7);
    Linear l(5, 3, true, rng, 0.5f);
    Tensor x = Tensor::randn({2, 4, 5}, rng);
    l.bias.data()[1] = 0.25f;
    Tensor y = l(x), ref = linear(x, l.weight, l.bias);
    CHECK(y.shape() == Shape{2, 4, 3});
    CHECK(y.to_vector() == ref.to_vector());
    CHECK(l.base_forward(x).to_vector() == ref.to_vector());
}

// A wrap that records it was called and drops the bias, so its output differs from the base's.
struct NoBiasWrap : LinearWrap {
    int calls = 0;
    Tensor forward(const Linear& base, const Tensor& x) override {
        calls++;
        return linear(x, base.weight);
    }
};

TEST_CASE("modules: a Linear with a wrap calls the wrap instead of the base op") {
    Rng rng(8);
    Linear l(3, 2, true, rng, 0.5f);
    l.bias.data()[0] = 1.f;
    Tensor x = Tensor::randn({4, 3}, rng);
    auto w = std::make_shared<NoBiasWrap>();
    l.wrap = w;
    CHECK(l(x).to_vector() == linear(x, l.weight).to_vector());
    CHECK(w->calls == 1);
    l.wrap.reset();
    CHECK(l(x).to_vector() == linear(x, l.weight, l.bias).to_vector());
}

TEST_CASE("modules: a frozen Linear weight gets no gradient buffer after backward") {
    Rng rng(9);
    Linear l(4, 3, true, rng);
    ParamList pl;
    l.register_params(pl, "proj");
    pl.freeze("proj.weight");
    Tensor x = Tensor::randn({5, 4}, rng);
    const int64_t grads0 = mem_stats().cur(Mem::Grads);
    projection_loss(l(x), Tensor::randn({5, 3}, rng)).backward();
    CHECK_FALSE(l.weight.has_grad());
    CHECK(l.bias.has_grad());
    CHECK(mem_stats().cur(Mem::Grads) - grads0 == int64_t(l.bias.nbytes()));
}

TEST_CASE("modules: an empty prefix names parameters without a leading dot") {
    Rng rng(10);
    Linear l(2, 2, true, rng);
    ParamList pl;
    l.register_params(pl, "");
    CHECK(pl.find("weight") != nullptr);
    CHECK(pl.find("bias") != nullptr);
}

TEST_CASE("modules: LayerNorm starts at weight 1, bias 0 and registers both") {
    LayerNorm ln(6, true);
    CHECK(ln.eps == 1e-5f);
    for (float w : ln.weight.to_vector()) CHECK(w == 1.f);
    for (float b : ln.bias.to_vector()) CHECK(b == 0.f);
    ParamList pl;
    ln.register_params(pl, "ln_f");
    CHECK(pl.size() == 2);
    CHECK(pl.get("ln_f.weight").shape() == Shape{6});
    CHECK(pl.get("ln_f.bias").requires_grad());
    LayerNorm nb(6, false);
    ParamList pl2;
    nb.register_params(pl2, "ln_f");
    CHECK(pl2.size() == 1);
    CHECK_THROWS_AS(LayerNorm(0, true), ValueError);
}

TEST_CASE("modules: Embedding is a (V, C) table registered as prefix.weight") {
    Rng rng(11);
    Embedding e(10, 4, rng, 0.02f);
    CHECK(e.weight.shape() == Shape{10, 4});
    ParamList pl;
    e.register_params(pl, "wte");
    CHECK(pl.size() == 1);
    CHECK(same_tensor(pl.get("wte.weight"), e.weight));
    CHECK(pl.count() == 40);
    CHECK_THROWS_AS(Embedding(10, 0, rng), ValueError);
}

// The forwards of LayerNorm and Embedding call the ops in engine/ops_norm.cpp and ops_shape.cpp;
// here only the module wiring is checked (weights and eps reach the op), against plain loops.
TEST_CASE("modules: LayerNorm and Embedding forwards apply their weights") {
    Rng rng(12);
    LayerNorm ln(5, true);
    for (int i = 0; i < 5; i++) { ln.weight.data()[i] = 0.5f + i; ln.bias.data()[i] = 0.1f * i; }
    Tensor x = Tensor::randn({2, 3, 5}, rng);
    Tensor y = ln(x);
    REQUIRE(y.shape() == x.shape());
    std::vector<double> ref;
    for (int r = 0; r < 6; r++) {
        const float* xr = x.data() + r * 5;
        double mu = 0, var = 0;
        for (int i = 0; i < 5; i++) mu += xr[i] / 5.0;
        for (int i = 0; i < 5; i++) var += (xr[i] - mu) * (xr[i] - mu) / 5.0;
        for (int i = 0; i < 5; i++) ref.push_back((xr[i] - mu) / std::sqrt(var + 1e-5) * (0.5 + i) + 0.1 * i);
    }
    std::string why;
    CHECK_MESSAGE(allclose(y.to_vector(), ref, 1e-5, 1e-5, &why), why);

    Embedding e(7, 3, rng, 1.f);
    Tensor ids = Tensor::from_ints({6, 0, 3, 3}, {2, 2});
    Tensor h = e(ids);
    REQUIRE(h.shape() == Shape{2, 2, 3});
    const int rows[] = {6, 0, 3, 3};
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < 3; c++) CHECK(h.data()[k * 3 + c] == e.weight.data()[rows[k] * 3 + c]);
}

}  // TEST_SUITE
