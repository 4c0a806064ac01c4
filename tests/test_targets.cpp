// tests/test_targets.cpp — where an adapter goes, as a lesson (peft/targets.h): the forms of
// target_modules, exclude_modules, layers_to_transform, rank_pattern / alpha_pattern; what a
// top-k-blocks LoRA saves in backward; and that every field loads and saves back unchanged.
#include <functional>
#include <set>
#include "peft_helpers.h"
#include "engine/fileio.h"
#include "engine/safetensors.h"

TEST_SUITE("peft") {

static json lora(const json& extra) {
    json c = {{"peft_type", "LORA"}, {"r", 2}};
    c.update(extra);
    return c;
}
// The module names a LoRA config adapts, from the saved keys "base_model.model.<name>.lora_A.weight".
static std::vector<std::string> adapted(const json& config) {
    auto m = lesson_model();
    Rng rng(1);
    auto method = make_method(config, *m, rng);
    std::vector<std::string> out;
    for (const Param& p : method->params.all())
        if (p.name.find(".lora_A.") != std::string::npos)
            out.push_back(p.name.substr(17, p.name.find(".lora_A.") - 17));
    return out;
}
static const char* kH0 = "transformer.h.0.";
static const char* kH1 = "transformer.h.1.";

TEST_CASE("targets: a list matches a name or a dotted suffix; one string is a regex over the whole name") {
    CHECK(adapted(lora({{"target_modules", {"q_proj"}}})) ==
          std::vector<std::string>{std::string(kH0) + "attn.q_proj", std::string(kH1) + "attn.q_proj"});
    CHECK(adapted(lora({{"target_modules", {"attn.o_proj"}}})).size() == 2);   // a longer suffix works too
    // The regex form must match the WHOLE name, as Python's re.fullmatch: here only block 1's q and v.
    CHECK(adapted(lora({{"target_modules", R"(transformer\.h\.1\.attn\.(q|v)_proj)"}})) ==
          std::vector<std::string>{std::string(kH1) + "attn.q_proj", std::string(kH1) + "attn.v_proj"});
    CHECK(adapted(lora({{"target_modules", ".*fc_.*"}})).size() == 4);   // fc_in and fc_out of both blocks
    // "all-linear": every Linear (the LM head is the tied embedding here, so nothing is left out)
    CHECK(adapted(lora({{"target_modules", "all-linear"}})).size() == 12);
}

TEST_CASE("targets: exclude_modules removes modules, as a list of suffixes or one regex") {
    CHECK(adapted(lora({{"target_modules", "all-linear"}, {"exclude_modules", {"fc_in", "fc_out"}}})).size() == 8);
    CHECK(adapted(lora({{"target_modules", {"q_proj", "v_proj"}}, {"exclude_modules", R"(.*\.h\.0\..*)"}})) ==
          std::vector<std::string>{std::string(kH1) + "attn.q_proj", std::string(kH1) + "attn.v_proj"});
}

TEST_CASE("targets: layers_to_transform keeps only the listed blocks (an int or a list; layers_pattern says where the index is)") {
    const std::vector<std::string> top = {std::string(kH1) + "attn.q_proj", std::string(kH1) + "attn.v_proj"};
    CHECK(adapted(lora({{"layers_to_transform", 1}})) == top);
    CHECK(adapted(lora({{"layers_to_transform", {1}}, {"layers_pattern", "h"}})) == top);
    CHECK(adapted(lora({{"layers_to_transform", {0, 1}}, {"layers_pattern", {"layers", "h"}}})).size() == 4);
    // The closed-form count follows the same rule: r·(in + out) for 2 targets of one block.
    auto m = lesson_model();
    Rng rng(2);
    auto method = make_method(lora({{"layers_to_transform", {1}}}), *m, rng);
    CHECK(method->expected_params(m->config) == method->params.count());
    CHECK(method->params.count() == 2 * 2 * (16 + 16));
}

TEST_CASE("targets: rank_pattern and alpha_pattern give per-module ranks and scales, keys matched as (.*\\.)?(key)$") {
    auto m = lesson_model();
    Rng rng(3);
    json c = lora({{"r", 2}, {"lora_alpha", 4}, {"rank_pattern", {{R"(h\.1\.attn\.v_proj)", 6}}},
                   {"alpha_pattern", {{"q_proj", 12}}}});
    auto method = make_method(c, *m, rng);
    const std::string b = "base_model.model.transformer.h.";
    CHECK(method->params.get(b + "0.attn.v_proj.lora_A.weight").shape() == Shape{2, 16});   // the default r
    CHECK(method->params.get(b + "1.attn.v_proj.lora_A.weight").shape() == Shape{6, 16});   // the pattern's
    CHECK(method->params.get(b + "1.attn.v_proj.lora_B.weight").shape() == Shape{16, 6});
    CHECK(method->expected_params(m->config) == method->params.count());
    // The scale of each module shows in its merged update: ΔW = s · B A with s = alpha / r.
    PeftModel pm(*m);
    pm.add("default", std::move(method));
    for (const Param& p : pm.active()->params.all()) p.tensor.data()[0] = 1.f;   // B[0,0] = A[0,0] = 1
    const float w_q = m->h[0].attn.q_proj.weight.data()[0], w_v = m->h[1].attn.v_proj.weight.data()[0];
    const float a_q = pm.active()->params.get(b + "0.attn.q_proj.lora_A.weight").data()[0];
    pm.active()->merge(*m);
    CHECK(m->h[0].attn.q_proj.weight.data()[0] - w_q == doctest::Approx(12.0 / 2 * a_q));   // alpha 12 / r 2
    CHECK(m->h[1].attn.v_proj.weight.data()[0] - w_v == doctest::Approx(4.0 / 6));          // alpha 4 / r 6
}

TEST_CASE("targets: bad targeting values are one ValueError naming the field and the value; nothing is attached") {
    auto m = lesson_model();
    Rng rng(4);
    auto bad = [&](const json& extra, const char* msg) {
        CAPTURE(extra.dump());
        CHECK_THROWS_WITH_AS(make_method(lora(extra), *m, rng), doctest::Contains(msg), ValueError);
        CHECK(m->params.count(true) == m->params.count());   // nothing frozen: nothing happened
    };
    bad({{"target_modules", "q_proj("}}, "`target_modules` = \"q_proj(\" is not a regular expression that compiles");
    bad({{"target_modules", R"(.*\.h\.9\..*)"}}, "`target_modules` = \".*\\\\.h\\\\.9\\\\..*\" (a regular expression over whole module names) matches no module");
    bad({{"exclude_modules", "nothing"}}, "`exclude_modules` = \"nothing\" (a regular expression over whole module names) matches no module");
    bad({{"exclude_modules", {"q_proj", "v_proj"}}}, "no module is left to adapt");
    bad({{"layers_to_transform", {1, 7}}}, "`layers_to_transform` = [1,7] is outside the model: its layers are 0..1");
    bad({{"layers_to_transform", -1}}, "`layers_to_transform` should be a non-negative layer index or a list of them");
    bad({{"layers_to_transform", {1}}, {"layers_pattern", "layers"}}, "`layers_pattern` = \"layers\" names no block list");
    bad({{"rank_pattern", {{"q_proj", 0}}}}, "`rank_pattern` entry \"q_proj\" should be a positive integer rank but the value passed is 0");
    bad({{"alpha_pattern", {{"[", 2}}}}, "`alpha_pattern` = \"(.*\\.)?([)\" is not a regular expression that compiles");
    bad({{"rank_pattern", {{"q_proj", 4}, {"h\\.0\\.attn\\.q_proj", 8}}}},
        "`rank_pattern`: keys \"h\\.0\\.attn\\.q_proj\" and \"q_proj\" both match transformer.h.0.attn.q_proj with different values");
}

// The saving of a top-k LoRA: the frozen blocks below the lowest adapted one produce nothing that
// needs a gradient, so the engine records no node for them (record() skips an op none of whose
// inputs needs a gradient) and keeps none of their activations.
static std::multiset<std::string> graph_ops(const Tensor& loss) {
    std::multiset<std::string> ops;
    std::set<const Node*> seen;
    std::function<void(const std::shared_ptr<Node>&)> walk = [&](const std::shared_ptr<Node>& n) {
        if (!n || !seen.insert(n.get()).second) return;
        ops.insert(n->name);
        for (const Edge& e : n->next) walk(e.node);
    };
    walk(loss.grad_fn());
    return ops;
}

TEST_CASE("targets: LoRA only in the top block records no backward node below it (no gradient work, no saved activation)") {
    auto m = lesson_model();
    ToyBatch b = lesson_batch();
    Rng rng(5);
    PeftModel pm(*m);
    pm.add("all", make_method(lora(json::object()), *m, rng));
    pm.add("top", make_method(lora({{"layers_to_transform", {1}}}), *m, rng));
    pm.set_active("all");
    const auto all = graph_ops(m->loss(b.ids, b.targets));
    pm.set_active("top");
    const auto top = graph_ops(m->loss(b.ids, b.targets));
    CHECK(all.count("lora_linear") == 4);
    CHECK(top.count("lora_linear") == 2);
    CHECK(all.count("embedding") == 0);   // the embedding is frozen either way
    // Block 0 has an attention and a GELU; with LoRA in block 1 only, the graph holds block 1's.
    CHECK(all.count("causal_attention") == 2);
    CHECK(top.count("causal_attention") == 1);
    CHECK(top.count("gelu") == 1);
    CHECK(top.size() < all.size());
}

TEST_CASE("targets: every targeting field loads from an HF-style config and saves back unchanged") {
    auto m = lesson_model();
    Rng rng(6);
    const json fields = {{"target_modules", R"(.*\.(q|v)_proj)"},
                         {"exclude_modules", {"h.0.attn.v_proj"}},
                         {"layers_to_transform", {0, 1}},
                         {"layers_pattern", "h"},
                         {"rank_pattern", {{"q_proj", 4}}},
                         {"alpha_pattern", {{"v_proj", 3.5}}}};
    auto method = make_method(lora(fields), *m, rng);
    TempDir tmp;
    const std::string dir = tmp / "a";
    save_adapter(dir, *method, *m);
    json saved = json::parse(read_file(dir + "/adapter_config.json", 1 << 20));
    for (const auto& [k, v] : fields.items()) CHECK_MESSAGE(saved[k] == v, k);
    // and loads again into the same tensors, keys and shapes
    auto again = load_adapter(dir, *m, rng);
    CHECK(again->state().size() == method->state().size());
    for (const auto& [name, t] : method->state()) CHECK(again->params.get(name).to_vector() == t.to_vector());
}

TEST_CASE("targets: modules_to_save trains a copy of a whole module beside the adapter; the frozen original is untouched") {
    auto m = lesson_model();
    const uint64_t base_sum = base_checksum(*m);
    const auto base = logits_of(*m);
    Rng rng(7);
    PeftModel pm(*m);
    pm.add("default", make_method(lora({{"modules_to_save", {"ln_f"}}}), *m, rng));
    Method& method = *pm.active();
    // the copy is a parameter under HF's saved key (HF strips ".modules_to_save.default")
    CHECK(method.params.get("base_model.model.transformer.ln_f.weight").shape() == Shape{16});
    CHECK(method.params.get("base_model.model.transformer.ln_f.bias").shape() == Shape{16});
    CHECK(method.expected_params(m->config) == method.params.count());   // LoRA's + 2 · C
    CHECK(logits_of(*m) == base);   // a copy of ln_f and B = 0: still the base model
    train_method(*m, method, 5);
    CHECK(base_checksum(*m) == base_sum);   // the original ln_f never moved
    CHECK(base_has_no_grads(*m));
    const auto trained = logits_of(*m);
    CHECK(method.params.get("base_model.model.transformer.ln_f.weight").to_vector() !=
          m->params.get("transformer.ln_f.weight").to_vector());   // the copy trained, the original did not
    {
        DisableAdapterGuard off(pm);
        CHECK(logits_of(*m) == base);   // disabled: the original ln_f again, exactly
    }
    // merge writes the copy into the base (so a merged checkpoint carries it); unmerge restores it
    method.merge(*m);
    CHECK(m->params.get("transformer.ln_f.weight").to_vector() ==
          method.params.get("base_model.model.transformer.ln_f.weight").to_vector());
    const auto merged = logits_of(*m);
    for (size_t i = 0; i < merged.size(); i++) CHECK(merged[i] == doctest::Approx(trained[i]).epsilon(1e-4));
    method.unmerge(*m);
    CHECK(base_checksum(*m) == base_sum);
    // save and load: the same keys and values
    TempDir tmp;
    save_adapter(tmp / "a", method, *m);
    auto again = load_adapter(tmp / "a", *m, rng);
    CHECK(again->params.get("base_model.model.transformer.ln_f.weight").to_vector() ==
          method.params.get("base_model.model.transformer.ln_f.weight").to_vector());
    CHECK(json::parse(read_file(tmp / "a/adapter_config.json", 1 << 20))["modules_to_save"] == json({"ln_f"}));
    // a module that does not exist, and the tied embedding, are refused by name
    CHECK_THROWS_WITH_AS(make_method(lora({{"modules_to_save", {"lm_head"}}}), *m, rng),
                         doctest::Contains("`modules_to_save` = \"lm_head\" names no module"), ValueError);
    CHECK_THROWS_WITH_AS(make_method(lora({{"modules_to_save", {"wte"}}}), *m, rng),
                         doctest::Contains("the token embedding is also the LM head here"), ValueError);
}

TEST_CASE("targets: bias \"all\" trains every bias, \"lora_only\" those of the adapted Linears, as copies") {
    auto m = lesson_model();
    Rng rng(8);
    auto count_biases = [](const Method& x) {
        int n = 0;
        for (const Param& p : x.params.all()) n += p.name.size() > 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0;
        return n;
    };
    auto all = make_method(lora({{"bias", "all"}}), *m, rng);
    auto only = make_method(lora({{"bias", "lora_only"}}), *m, rng);
    CHECK(count_biases(*all) == 2 * (6 + 2) + 1);   // per block 6 Linears + ln_1, ln_2; and ln_f
    CHECK(count_biases(*only) == 4);                // q_proj and v_proj of two blocks
    CHECK(only->params.find("base_model.model.transformer.h.0.attn.q_proj.bias"));
    CHECK(all->expected_params(m->config) == all->params.count());
    CHECK(only->expected_params(m->config) == only->params.count());
    const uint64_t base_sum = base_checksum(*m);
    PeftModel pm(*m);
    pm.add("default", std::move(only));
    train_method(*m, *pm.active(), 3);
    CHECK(base_checksum(*m) == base_sum);   // unlike HF, the base biases themselves never change
    CHECK(pm.active()->config_json()["bias"] == "lora_only");
}

}  // TEST_SUITE
