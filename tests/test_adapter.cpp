// tests/test_adapter.cpp — bottleneck adapters (peft/adapter.cpp), as a lesson read top to bottom:
// what an adapter computes and where, why the adapted model starts as the base model exactly,
// what it costs in parameters, and that training, disabling, saving and loading behave.
// Bad configs and adapter files that do not fit: tests/test_hardening_methods.cpp.
#include <cmath>
#include "peft_helpers.h"
#include "models/reference_gpt.h"

namespace {

// Houlsby or Pfeiffer placement with bottleneck m on the lesson model (n_embd 16, 2 layers).
json adapter_config(const std::string& placement, int64_t m = 4, const std::string& act = "relu") {
    return {{"peft_type", "BOTTLENECK"}, {"placement", placement}, {"bottleneck_size", m}, {"non_linearity", act}};
}

// Gives every adapter tensor N(0, std) values: at init up = 0 and the adapter does nothing.
void randomise(Method& m, Rng& rng, float std) {
    for (const Param& p : m.params.all())
        for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] = float(rng.normal() * std);
}

const std::string kKey = "base_model.model.transformer.h.";

}  // namespace

TEST_SUITE("peft") {

TEST_CASE("adapter: the bottleneck m is bottleneck_size, else n_embd / reduction_factor") {
    auto model = lesson_model();
    Rng rng(1);
    auto m_of = [&](const json& cfg) {
        return make_method(cfg, *model, rng)->config_json()["bottleneck_size"].get<int64_t>();
    };
    CHECK(m_of({{"peft_type", "BOTTLENECK"}}) == 1);                               // 16 / 16 (the default factor)
    CHECK(m_of({{"peft_type", "BOTTLENECK"}, {"reduction_factor", 4}}) == 4);       // 16 / 4
    CHECK(m_of({{"peft_type", "BOTTLENECK"}, {"reduction_factor", 4}, {"bottleneck_size", 3}}) == 3);   // size wins
    CHECK_THROWS_WITH_AS(make_bottleneck({{"reduction_factor", 32}}, *model, rng),
                         doctest::Contains("n_embd / `reduction_factor` = 16 / 32 rounds down to 0"), ValueError);
    CHECK_THROWS_WITH_AS(make_bottleneck({{"bottleneck_size", 0}}, *model, rng),
                         doctest::Contains("`bottleneck_size` should be a positive integer value but the value passed is 0"),
                         ValueError);
    CHECK_THROWS_WITH_AS(make_bottleneck({{"placement", "middle"}}, *model, rng),
                         doctest::Contains("`placement` should be \"houlsby\" or \"pfeiffer\" but the value passed is \"middle\""),
                         ValueError);
    CHECK_THROWS_WITH_AS(make_bottleneck({{"non_linearity", "tanh"}}, *model, rng),
                         doctest::Contains("`non_linearity` should be one of relu, gelu, silu (or swish) but the value "
                                           "passed is \"tanh\""), ValueError);
}

TEST_CASE("adapter: without non_linearity, Houlsby uses swish (silu) and Pfeiffer relu, as AdapterHub's configs") {
    auto model = lesson_model();
    Rng rng(1);
    auto act_of = [&](const json& cfg) { return make_method(cfg, *model, rng)->config_json()["non_linearity"]; };
    CHECK(act_of({{"peft_type", "BOTTLENECK"}}) == "silu");   // placement houlsby is the default
    CHECK(act_of({{"peft_type", "BOTTLENECK"}, {"placement", "pfeiffer"}}) == "relu");
    CHECK(act_of({{"peft_type", "BOTTLENECK"}, {"placement", "pfeiffer"}, {"non_linearity", "swish"}}) == "silu");
    CHECK(act_of({{"peft_type", "BOTTLENECK"}, {"non_linearity", "relu"}}) == "relu");   // given: as given
}

TEST_CASE("adapter: each non-linearity computes f + up(act(down(f))), and Pfeiffer skips attention") {
    for (const std::string act : {"relu", "gelu", "silu"}) {
        CAPTURE(act);
        auto model = lesson_model();
        Rng rng(2);
        auto method = make_bottleneck(adapter_config("pfeiffer", 4, act), *model, rng);
        randomise(*method, rng, 0.5f);
        Tensor f = Tensor::randn({2, 3, 16}, rng);
        Tensor y = method->block_output(Site::Mlp, 1, f);
        // the same in double, with plain loops
        auto w = [&](const char* n) { return method->params.get(kKey + "1.mlp_adapter." + n).to_vector(); };
        std::vector<float> Wd = w("down.weight"), bd = w("down.bias"), Wu = w("up.weight"), bu = w("up.bias");
        std::vector<double> ref;
        for (int64_t r = 0; r < 6; r++) {
            const float* x = f.data() + r * 16;
            double a[4];
            for (int j = 0; j < 4; j++) {
                double z = bd[size_t(j)];
                for (int i = 0; i < 16; i++) z += double(Wd[size_t(j * 16 + i)]) * x[i];
                a[j] = act == "relu" ? std::max(z, 0.0) : act == "gelu" ? naive::gelu(z) : z / (1 + std::exp(-z));
            }
            for (int i = 0; i < 16; i++) {
                double g = bu[size_t(i)];
                for (int j = 0; j < 4; j++) g += double(Wu[size_t(i * 4 + j)]) * a[j];
                ref.push_back(x[i] + g);
            }
        }
        std::string why;
        CHECK_MESSAGE(allclose(y.to_vector(), ref, 1e-5, 1e-5, &why), why);
        // Pfeiffer places one adapter, after the MLP: the attention output passes through untouched
        CHECK(method->block_output(Site::Attn, 1, f).data() == f.data());
    }
}

TEST_CASE("adapter: a zero up-projection makes the adapted model equal the base bit for bit") {
    for (const std::string placement : {"houlsby", "pfeiffer"}) {
        CAPTURE(placement);
        auto model = lesson_model();
        const std::vector<float> base = logits_of(*model);
        Rng rng(3);
        auto method = make_bottleneck(adapter_config(placement), *model, rng);
        method->activate(*model);
        // Exact, not approximate: up.weight = 0 and up.bias = 0 make g(f) an exact 0 and f + 0 == f.
        // See Note [Why identity at init is exact] in peft/adapter.cpp.
        CHECK(logits_of(*model) == base);

        // At init the gradient reaches up but not down: down's gradient flows through up.weight = 0.
        ToyBatch b = lesson_batch();
        model->loss(b.ids, b.targets).backward();
        for (const Param& p : method->params.all()) {
            float mx = 0;
            for (float g : p.tensor.grad().to_vector()) mx = std::max(mx, std::fabs(g));
            CAPTURE(p.name);
            if (p.name.find(".down.") != std::string::npos) CHECK(mx == 0.f);
            else CHECK(mx > 0.f);
        }
    }
}

TEST_CASE("adapter: trainable count is 2·C·m + m + C per insertion, two per layer (Houlsby) or one (Pfeiffer)") {
    auto model = lesson_model();
    Rng rng(4);
    const int64_t C = 16, L = 2, m = 4, per_insertion = 2 * C * m + m + C;   // 148
    auto houlsby = make_bottleneck(adapter_config("houlsby", m), *model, rng);
    auto pfeiffer = make_bottleneck(adapter_config("pfeiffer", m), *model, rng);
    CHECK(houlsby->params.count(true) == 2 * L * per_insertion);
    CHECK(houlsby->expected_params(model->config) == 2 * L * per_insertion);
    CHECK(pfeiffer->params.count(true) == L * per_insertion);
    CHECK(pfeiffer->expected_params(model->config) == L * per_insertion);
    CHECK(model->params.count(true) == 0);   // attaching froze the base
    CHECK(trainable_line(*model, houlsby.get()).find("trainable params: 592 ||") == 0);

    // The saved keys: per layer and site, down [m, C] + bias [m], up [C, m] + bias [C].
    NamedTensors st = houlsby->state();
    REQUIRE(st.size() == 16);
    CHECK(st[0].first == kKey + "0.attn_adapter.down.weight");
    CHECK(st[0].second.shape() == Shape{m, C});
    CHECK(st[1].first == kKey + "0.attn_adapter.down.bias");
    CHECK(st[1].second.shape() == Shape{m});
    CHECK(st[2].first == kKey + "0.attn_adapter.up.weight");
    CHECK(st[2].second.shape() == Shape{C, m});
    CHECK(st[3].first == kKey + "0.attn_adapter.up.bias");
    CHECK(st[3].second.shape() == Shape{C});
    CHECK(st[4].first == kKey + "0.mlp_adapter.down.weight");
    CHECK(pfeiffer->state()[0].first == kKey + "0.mlp_adapter.down.weight");
}

TEST_CASE("adapter: gradcheck of down and up through the tiny model (up set nonzero first)") {
    // gelu and silu: smooth, so central differences are exact up to O(h⁴). relu's kink would make
    // a finite difference that straddles 0 meaningless; relu's own gradcheck is in the ops tests.
    for (const std::string act : {"gelu", "silu"}) {
        CAPTURE(act);
        auto model = lesson_model();
        Rng rng(5);
        auto method = make_bottleneck(adapter_config("houlsby", 4, act), *model, rng);
        randomise(*method, rng, 0.3f);
        method->activate(*model);
        std::vector<Tensor> inputs;
        for (const char* n : {"0.attn_adapter.down.weight", "0.attn_adapter.down.bias", "0.attn_adapter.up.weight",
                              "0.attn_adapter.up.bias", "1.mlp_adapter.down.weight", "1.mlp_adapter.up.weight"})
            inputs.push_back(method->params.get(kKey + n));
        GradcheckOptions o;
        o.precise = true;
        o.max_elems = 12;
        Tensor ids = lesson_batch().ids;
        gradcheck("bottleneck " + act, [&](const std::vector<Tensor>&) { return model->forward(ids); }, inputs, o);
    }
}

TEST_CASE("adapter: training lowers the loss and changes nothing in the frozen base") {
    auto model = lesson_model();
    const uint64_t before = base_checksum(*model);
    Rng rng(6);
    auto method = make_bottleneck(adapter_config("houlsby"), *model, rng);
    method->activate(*model);
    {   // AdamW keeps two moments for the adapter's tensors and nothing for the base
        const int64_t opt0 = mem_stats().cur(Mem::Optimizer);
        AdamW opt(method->params, AdamWConfig{});
        CHECK(mem_stats().cur(Mem::Optimizer) - opt0 == 2 * method->params.count(true) * 4);
    }
    // 40 AdamW steps at lr 1e-2 on 15 random next-token targets; measured 2.58 -> 2.28
    std::vector<float> losses = train_method(*model, *method, 40);
    INFO("houlsby adapter loss " << losses.front() << " -> " << losses.back());
    CHECK(losses.back() < losses.front() - 0.1f);
    CHECK(base_has_no_grads(*model));
    CHECK(base_checksum(*model) == before);
}

TEST_CASE("adapter: disabling it gives exactly the base logits again, even after training") {
    auto model = lesson_model();
    const std::vector<float> base = logits_of(*model);
    Rng rng(7);
    PeftModel pm(*model);
    pm.add("houlsby", make_bottleneck(adapter_config("houlsby"), *model, rng));
    train_method(*model, *pm.active(), 10);
    const std::vector<float> adapted = logits_of(*model);
    CHECK(adapted != base);
    pm.disable();   // the hooks come off; the base weights were never touched
    CHECK(pm.active() == nullptr);
    CHECK(logits_of(*model) == base);
    pm.set_active("houlsby");
    CHECK(logits_of(*model) == adapted);
    pm.remove("houlsby");
    CHECK(logits_of(*model) == base);
}

TEST_CASE("adapter: save then load into a fresh copy of the base gives identical logits") {
    TempDir dir;
    auto model = lesson_model();
    Rng rng(8);
    auto method = make_bottleneck(adapter_config("houlsby", 3, "silu"), *model, rng);
    method->activate(*model);
    train_method(*model, *method, 5);
    const std::vector<float> trained = logits_of(*model);
    save_adapter(dir.path, *method, *model);

    auto fresh = lesson_model();   // the same base model, built again
    auto loaded = load_adapter(dir.path, *fresh, rng);
    CHECK(loaded->peft_type() == "BOTTLENECK");
    CHECK(loaded->config_json() == method->config_json());
    loaded->activate(*fresh);
    CHECK(logits_of(*fresh) == trained);
}

}  // TEST_SUITE
