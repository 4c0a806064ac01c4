// tests/test_family_targets.cpp — the LoRA family where LoRA goes, as a lesson: HF's targeting
// fields (target_modules, exclude_modules, layers_to_transform, rank_pattern / alpha_pattern where
// HF has them, modules_to_save, bias) on DoRA, PiSSA / OLoRA, LoHa, LoKr, VeRA and OFT; which of
// them mix in one batch and which combine (and the one-line refusal of the others); and each of
// them on a GPT-2 base, whose fused c_attn HF stores as a Conv1D (fan_in_fan_out).
#include <set>
#include "family_helpers.h"
#include "hf_helpers.h"
#include "peft/combine.h"
#include "peft/mixed.h"

TEST_SUITE("peft") {

struct Row {
    const char* name;
    json config;
};
static const std::vector<Row>& family() {
    static const std::vector<Row> rows = {
        {"dora", {{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}}},
        {"pissa", {{"peft_type", "LORA"}, {"r", 2}, {"init_lora_weights", "pissa"}}},
        {"olora", {{"peft_type", "LORA"}, {"r", 2}, {"init_lora_weights", "olora"}}},
        {"gaussian", {{"peft_type", "LORA"}, {"r", 2}, {"init_lora_weights", "gaussian"}}},
        {"loha", {{"peft_type", "LOHA"}, {"r", 2}}},
        {"lokr", {{"peft_type", "LOKR"}, {"r", 1}}},
        {"vera", {{"peft_type", "VERA"}, {"r", 4}}},
        {"oft", {{"peft_type", "OFT"}, {"oft_block_size", 4}}},
    };
    return rows;
}
static json with(json c, const json& extra) {
    c.update(extra);
    return c;
}
// The modules an adapter holds tensors for: "transformer.h.1.attn.q_proj" from
// "base_model.model.transformer.h.1.attn.q_proj.<key>" (the shared vera_A / vera_B aside).
static std::set<std::string> modules_of(const Method& m) {
    std::set<std::string> out;
    for (const Param& p : m.params.all()) {
        std::string rest = p.name.substr(std::string("base_model.model.").size());
        size_t at = 0;
        for (int dots = 0; dots < 5 && at != std::string::npos; dots++) at = rest.find('.', at + 1);
        out.insert(rest.substr(0, at));
    }
    return out;
}
static Shape shape_of(const Method& m, const std::string& name) {
    for (const Param& p : m.params.all())
        if (p.name == name) return p.tensor.shape();
    return Shape{};
}

TEST_CASE("family: target_modules, exclude_modules and layers_to_transform choose the modules; the file keeps them") {
    const json where = {{"target_modules", {"q_proj", "v_proj", "fc_in"}}, {"exclude_modules", {"v_proj"}},
                        {"layers_to_transform", {1}}};
    for (const Row& row : family()) {
        CAPTURE(row.name);
        auto m = lesson_model();
        Rng rng(3);
        PeftModel pm(*m);
        pm.add("default", make_method(with(row.config, where), *m, rng));
        Method& method = *pm.active();
        CHECK(modules_of(method) == std::set<std::string>{"transformer.h.1.attn.q_proj", "transformer.h.1.mlp.fc_in"});
        CHECK(method.expected_params(m->config) == method.params.count());
        randomize(method, rng, 0.2f);
        const std::vector<float> adapted = logits_of(*m);
        TempDir dir;
        save_adapter(dir.path, method, *m);
        auto m2 = lesson_model();
        PeftModel pm2(*m2);
        pm2.add("default", load_adapter(dir.path, *m2, rng));
        CHECK(logits_of(*m2) == adapted);
        const json saved = pm2.active()->config_json();
        CHECK(saved["layers_to_transform"] == json::array({1}));
        CHECK(saved["exclude_modules"] == json::array({"v_proj"}));
    }
}

TEST_CASE("family: rank_pattern and alpha_pattern give LoHa and LoKr per-module ranks and scales, as HF") {
    const json pattern = {{"target_modules", {"q_proj", "fc_in"}}, {"rank_pattern", {{"fc_in", 4}}}};
    auto m = lesson_model();
    Rng rng(4);
    auto loha = make_method(with({{"peft_type", "LOHA"}, {"r", 2}}, pattern), *m, rng);
    CHECK(shape_of(*loha, "base_model.model.transformer.h.0.attn.q_proj.hada_w1_a") == (Shape{16, 2}));
    CHECK(shape_of(*loha, "base_model.model.transformer.h.0.mlp.fc_in.hada_w1_a") == (Shape{64, 4}));
    CHECK(loha->expected_params(m->config) == loha->params.count());
    // LoKr: fc_in (64, 16) factors as (8·8, 4·4); W2 (8, 4) is low rank only when r < max(8, 4)/2
    auto lokr = make_method(with({{"peft_type", "LOKR"}, {"r", 1}}, pattern), *m, rng);
    CHECK(shape_of(*lokr, "base_model.model.transformer.h.0.attn.q_proj.lokr_w2_a") == (Shape{4, 1}));
    CHECK(shape_of(*lokr, "base_model.model.transformer.h.0.mlp.fc_in.lokr_w2") == (Shape{8, 4}));
    CHECK(lokr->expected_params(m->config) == lokr->params.count());

    // alpha_pattern doubles q_proj's alpha: its update ΔW, hence x ΔWᵀ, doubles exactly (a power of 2)
    for (const char* type : {"LOHA", "LOKR"}) {
        CAPTURE(type);
        auto delta_of = [&](const json& extra) {
            auto mm = lesson_model();
            Rng r(5);
            PeftModel pm(*mm);
            pm.add("default", make_method(with({{"peft_type", type}, {"r", 2}, {"target_modules", {"q_proj"}}}, extra), *mm, r));
            randomize(*pm.active(), r);
            const Tensor x = Tensor::randn({3, 16}, r);
            const auto y = module_output(mm->h[0].attn.q_proj, x), y0 = mm->h[0].attn.q_proj.base_forward(x).to_vector();
            std::vector<double> d;
            for (size_t i = 0; i < y.size(); i++) d.push_back(double(y[i]) - y0[i]);
            return d;
        };
        const auto d1 = delta_of(json::object()), d2 = delta_of({{"alpha_pattern", {{"q_proj", 16}}}});
        double worst = 0, size = 0;
        for (size_t i = 0; i < d1.size(); i++) worst = std::max(worst, std::fabs(d2[i] - 2 * d1[i])), size += std::fabs(d1[i]);
        CHECK(size > 1e-3);
        CHECK(worst < 1e-5);
    }
}

TEST_CASE("family: DoRA and PiSSA take rank_pattern; PiSSA's plain-LoRA conversion doubles every rank and alpha") {
    const json pattern = {{"target_modules", {"q_proj", "fc_in"}}, {"rank_pattern", {{"fc_in", 4}}},
                          {"alpha_pattern", {{"q_proj", 8}}}};
    auto m = lesson_model();
    const std::vector<float> base = logits_of(*m);
    Rng rng(6);
    auto dora = make_method(with({{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}}, pattern), *m, rng);
    CHECK(shape_of(*dora, "base_model.model.transformer.h.0.mlp.fc_in.lora_A.weight") == (Shape{4, 16}));
    CHECK(shape_of(*dora, "base_model.model.transformer.h.0.mlp.fc_in.lora_magnitude_vector") == (Shape{64}));
    CHECK(dora->expected_params(m->config) == dora->params.count());

    PeftModel pm(*m);
    pm.add("pissa", make_method(with({{"peft_type", "LORA"}, {"r", 2}, {"init_lora_weights", "pissa"}}, pattern), *m, rng));
    Method& pissa = *pm.active();
    CHECK(shape_of(pissa, "base_model.model.transformer.h.1.mlp.fc_in.lora_B.weight") == (Shape{64, 4}));
    std::string why;
    CHECK_MESSAGE(allclose(logits_of(*m), std::vector<double>(base.begin(), base.end()), 1e-4, 1e-5, &why), why);
    randomize(pissa, rng, 0.1f);
    const std::vector<float> adapted = logits_of(*m);
    const PlainLora plain = convert_to_plain_lora(pissa);
    CHECK(plain.config["r"] == 4);
    CHECK(plain.config["rank_pattern"] == json({{"fc_in", 8}}));
    CHECK(plain.config["alpha_pattern"] == json({{"q_proj", 16.0}}));
    // the converted adapter on the original base is the PiSSA model
    auto m2 = lesson_model();
    Rng r2(7);
    PeftModel pm2(*m2);
    json cfg = plain.config;
    cfg["peft_type"] = "LORA";
    pm2.add("plain", make_method(cfg, *m2, r2));
    std::map<std::string, Tensor> tensors(plain.tensors.begin(), plain.tensors.end());
    pm2.active()->load_state(tensors, "converted");
    CHECK_MESSAGE(allclose(logits_of(*m2), std::vector<double>(adapted.begin(), adapted.end()), 1e-4, 1e-5, &why), why);
    // HF refuses the conversion with use_rslora and patterns; so do we
    auto rs = make_method(with({{"peft_type", "LORA"}, {"r", 2}, {"init_lora_weights", "olora"}, {"use_rslora", true}},
                               pattern), *m2, r2);
    CHECK_THROWS_WITH_AS(convert_to_plain_lora(*rs), doctest::Contains("use_rslora and rank_pattern / alpha_pattern"), ValueError);
}

TEST_CASE("family: modules_to_save and bias (\"oft_only\", \"vera_only\": HF's names) train copies beside the adapter") {
    auto m = lesson_model();
    const uint64_t before = base_checksum(*m);
    Rng rng(8);
    auto loha = make_method({{"peft_type", "LOHA"}, {"r", 2}, {"modules_to_save", {"ln_f"}}}, *m, rng);
    CHECK(shape_of(*loha, "base_model.model.transformer.ln_f.weight") == (Shape{16}));
    CHECK(loha->expected_params(m->config) == loha->params.count());
    auto oft = make_method({{"peft_type", "OFT"}, {"oft_block_size", 4}, {"bias", "oft_only"}}, *m, rng);
    CHECK(shape_of(*oft, "base_model.model.transformer.h.0.attn.q_proj.bias") == (Shape{16}));
    CHECK(oft->expected_params(m->config) == oft->params.count());
    auto vera = make_method({{"peft_type", "VERA"}, {"r", 4}, {"bias", "vera_only"}}, *m, rng);
    CHECK(vera->expected_params(m->config) == vera->params.count());
    CHECK(base_checksum(*m) == before);
    CHECK_THROWS_WITH_AS(make_method({{"peft_type", "OFT"}, {"bias", "lora_only"}}, *m, rng),
                         doctest::Contains("`bias` should be one of \"none\", \"all\", \"oft_only\""), ValueError);
}

TEST_CASE("family: DoRA, LoHa, LoKr, VeRA and OFT mix in one batch; PiSSA (a residual base) is refused by name") {
    auto m = lesson_model();
    PeftModel pm(*m);
    Rng rng(9);
    const std::vector<std::string> names = {"dora", "loha", "__base__", "lokr", "vera", "oft"};
    for (const Row& row : family())
        if (std::find(names.begin(), names.end(), row.name) != names.end()) {
            pm.add(row.name, make_method(row.config, *m, rng));
            randomize(*pm.active(), rng, 0.2f);
        }
    std::vector<int32_t> tokens;
    for (int i = 0; i < 48; i++) tokens.push_back((i * 7 + 3) % 13);
    std::vector<std::vector<float>> alone;
    for (size_t b = 0; b < names.size(); b++) {
        if (names[b] == "__base__") pm.disable();
        else pm.set_active(names[b]);
        alone.push_back(logits_of(*m, Tensor::from_ints({tokens.begin() + int(b) * 8, tokens.begin() + int(b) * 8 + 8}, {1, 8})));
    }
    std::vector<float> mixed;
    {
        MixedBatch mix(pm, names);
        mixed = logits_of(*m, Tensor::from_ints(tokens, {6, 8}));
    }
    const size_t per = alone[0].size();
    double worst = 0;
    for (size_t b = 0; b < names.size(); b++)
        for (size_t i = 0; i < per; i++) worst = std::max(worst, double(std::fabs(mixed[b * per + i] - alone[b][i])));
    CHECK(worst <= 1e-6);
    CHECK(alone[0] != alone[2]);   // the adapters do change the model

    pm.add("pissa", make_method(family()[1].config, *m, rng), false);
    CHECK_THROWS_WITH_AS(MixedBatch(pm, {"pissa", "dora"}),
                         doctest::Contains("adapter_names: 'pissa' (LORA) cannot be mixed in a batch: it is initialised "
                                           "with \"pissa\""), ValueError);
}

TEST_CASE("family: combine takes plain LoRA only; DoRA, PiSSA / OLoRA and the other methods are one error naming them") {
    auto m = lesson_model();
    Rng rng(10);
    auto refused = [&](const json& config) {
        auto a = make_method(config, *m, rng);
        try {
            combine_adapters({a.get()}, *m, {"cat", {1.0}});
        } catch (const ValueError& e) {
            return std::string(e.what());
        }
        return std::string("combined");
    };
    CHECK(refused(family()[0].config) == "adapter 1: a LORA adapter with use_dora (DoRA) cannot be combined: its update "
                                         "is not s·B A alone");
    CHECK(refused(family()[2].config).find("adapter 1: a LORA adapter with init_lora_weights \"olora\" cannot be combined") == 0);
    CHECK(refused(family()[4].config) == "adapter 1 is LOHA: combine takes LORA adapters only");
    CHECK(refused(family()[3].config) == "combined");   // a gaussian init is a plain LoRA
}

TEST_CASE("family: each method on a GPT-2 base adapts c_attn by default; identity at init, exact merge, files round-trip") {
    for (const Row& row : family()) {
        CAPTURE(row.name);
        auto m = hf::tiny_model();
        const std::vector<float> base = logits_of(*m);
        const uint64_t base_sum = base_checksum(*m);
        Rng rng(11);
        PeftModel pm(*m);
        pm.add("default", make_method(row.config, *m, rng));
        Method& method = *pm.active();
        CHECK(modules_of(method) == std::set<std::string>{"transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"});
        const json cfg = method.config_json();
        CHECK(cfg["target_modules"] == json::array({"c_attn"}));
        if (cfg.contains("fan_in_fan_out")) {   // LoRA, VeRA, OFT: HF's Conv1D flag
            CHECK(cfg["fan_in_fan_out"] == true);
        }
        CHECK(method.expected_params(m->config) == method.params.count());
        std::string why;
        CHECK_MESSAGE(allclose(logits_of(*m), std::vector<double>(base.begin(), base.end()), 1e-4, 1e-5, &why), why);
        randomize(method, rng, 0.2f);
        const std::vector<float> adapted = logits_of(*m);
        CHECK(adapted != base);
        method.merge(*m);
        CHECK_MESSAGE(allclose(logits_of(*m), std::vector<double>(adapted.begin(), adapted.end()), 1e-5, 1e-5, &why), why);
        method.unmerge(*m);
        CHECK(logits_of(*m) == adapted);
        TempDir dir;
        save_adapter(dir.path, method, *m);
        pm.disable();
        CHECK(base_checksum(*m) == base_sum);   // a PiSSA residual goes back out too
        auto m2 = hf::tiny_model();
        PeftModel pm2(*m2);
        pm2.add("default", load_adapter(dir.path, *m2, rng));
        CHECK(logits_of(*m2) == adapted);
    }
}

}  // TEST_SUITE
