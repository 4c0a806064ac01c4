// tests/test_hardening_methods.cpp — each method's bad configs and adapter files that do not fit:
// one clear error naming the field, the value, the tensor or both shapes, and nothing loaded
// halfway. The per-method lessons (tests/test_<method>.cpp) teach what works; this file what is
// refused.
#include <fstream>
#include <functional>
#include "peft_helpers.h"
#include "engine/safetensors.h"
#include "engine/fileio.h"

namespace {

const std::string kQ = "base_model.model.transformer.h.0.attn.q_proj";
const std::string kFF = "base_model.model.transformer.h.0.mlp.fc_out.ia3_l";
const std::string kKey = "base_model.model.transformer.h.";

json bottleneck_config(const std::string& placement) {
    return peft_config("BOTTLENECK", {{"placement", placement}, {"bottleneck_size", 4}, {"non_linearity", "relu"}});
}
json prompt_config(int64_t P, const std::string& init = "RANDOM") {
    return peft_config("PROMPT_TUNING", {{"num_virtual_tokens", P}, {"prompt_tuning_init", init}});
}
json ptuning_config(int64_t P, const std::string& type = "MLP", int64_t h = 8) {
    return peft_config("P_TUNING", {{"num_virtual_tokens", P}, {"encoder_reparameterization_type", type}, {"encoder_hidden_size", h}});
}

// An adapter saved from a wider base model is refused naming n_embd on both sides; one saved on
// this model whose adapter_config.json is then changed by `edit` is refused with `expected`.
void refused_from_wider_base_or_edited_config(const json& config, const std::function<void(json&)>& edit,
                                              const std::string& expected) {
    Rng rng(18);
    TempDir dir;
    save_from_wider_base(dir.path, config, rng);
    auto m = lesson_model();
    CHECK_THROWS_WITH_AS(load_adapter(dir.path, *m, rng), doctest::Contains("n_embd 32 (adapter) vs 16 (model)"), ValueError);
    save_adapter(dir.path, *make_method(config, *m, rng), *m);
    json cfg = json::parse(read_file(dir.path + "/adapter_config.json", 1 << 20));
    edit(cfg);
    std::ofstream(dir.path + "/adapter_config.json") << cfg.dump();
    auto fresh = lesson_model();
    CHECK_THROWS_WITH_AS(load_adapter(dir.path, *fresh, rng), doctest::Contains(expected.c_str()), ValueError);
}

// Building a `type` adapter with these extra fields on model m is one ValueError containing msg.
void refused(GPT& m, const std::string& type, const json& extra, const char* msg) {
    Rng rng(5);
    CAPTURE(extra.dump());
    CHECK_THROWS_WITH_AS(make_method(peft_config(type, extra), m, rng), doctest::Contains(msg), ValueError);
}

}  // namespace

TEST_SUITE("peft hardening") {

// ---- LoRA

TEST_CASE("lora: a target that matches nothing is a ValueError listing the model's Linear modules") {
    auto m = lesson_model();
    Rng rng(15);
    CHECK_THROWS_WITH_AS(make_lora(peft_config("LORA", {{"target_modules", {"q_proj", "query"}}}), *m, rng),
                         doctest::Contains("Target modules [query] not found in the base model; its Linear modules "
                                           "are q_proj, k_proj, v_proj, o_proj, fc_in, fc_out"),
                         ValueError);
    CHECK(m->params.count(true) == m->params.count());   // nothing attached, nothing frozen
}

TEST_CASE("lora: bad config values are ValueErrors naming the field and the value") {
    auto m = lesson_model();
    Rng rng(16);
    auto bad = [&](const json& extra, const char* msg) {
        CAPTURE(extra.dump());
        CHECK_THROWS_WITH_AS(make_lora(peft_config("LORA", extra), *m, rng), doctest::Contains(msg), ValueError);
    };
    bad({{"r", 0}}, "`r` should be a positive integer value but the value passed is 0");
    bad({{"r", -3}}, "`r` should be a positive integer value but the value passed is -3");
    bad({{"r", "8"}}, "`r` should be a positive integer value but the value passed is \"8\"");
    bad({{"r", int64_t(1) << 62}}, "`r` = 4611686018427387904 is larger than the limit 65536");
    bad({{"lora_alpha", 0}}, "`lora_alpha` should be a positive number but the value passed is 0");
    bad({{"lora_alpha", 1e39}}, "`lora_alpha` should be a positive number");   // not a float: s would be inf
    bad({{"lora_dropout", 1.0}}, "`lora_dropout` should be in [0, 1) but the value passed is 1.0");
    bad({{"lora_dropout", 0.99999999999}}, "`lora_dropout` should be in [0, 1)");   // 1.0 as a float
    bad({{"bias", "some"}}, "`bias` should be one of \"none\", \"all\", \"lora_only\" but the value passed is \"some\"");
    bad({{"target_modules", json::array()}}, "`target_modules` should be a non-empty list");
    // one string is a regular expression over WHOLE names (targets.h): "q_proj" alone matches none
    bad({{"target_modules", "q_proj"}}, "`target_modules` = \"q_proj\" (a regular expression over whole module names) matches no module");
    bad({{"use_dora", "yes"}}, "`use_dora` should be true or false but the value passed is \"yes\"");
    bad({{"peft_type", "IA3"}}, "`peft_type` is \"IA3\"");
    // every problem at once
    bad({{"r", 0}, {"bias", "some"}}, "passed is 0; `bias`");
    // unknown keys and nulls are fine (forward compatibility, as HF); an unknown key is a warning
    CapturedWarnings warnings;
    CHECK_NOTHROW(make_lora(peft_config("LORA", {{"some_future_field", 1}, {"layers_to_transform", nullptr}}), *m, rng));
    CHECK(warnings.all == std::vector<std::string>{"LORA config: ignoring unknown key \"some_future_field\""});
}

TEST_CASE("lora: loading an adapter made for another base or with another rank fails, naming what differs") {
    // A config whose r does not match the tensors: each tensor is named with both shapes.
    refused_from_wider_base_or_edited_config(peft_config("LORA"), [](json& cfg) { cfg["r"] = 4; },
                                             "tensor '" + kQ + ".lora_A.weight' is F32[8, 16] but the config on this "
                                             "base model gives F32[4, 16]");
}

// ---- IA³

TEST_CASE("ia3: bad config values and unknown targets are ValueErrors naming them") {
    auto m = lesson_model();
    Rng rng(15);
    auto bad = [&](const json& extra, const char* msg) {
        CAPTURE(extra.dump());
        CHECK_THROWS_WITH_AS(make_ia3(peft_config("IA3", extra), *m, rng), doctest::Contains(msg), ValueError);
    };
    // one string is a regular expression over whole names (peft/targets.h): "k_proj" matches none
    bad({{"target_modules", "k_proj"}}, "`target_modules` = \"k_proj\" (a regular expression over whole module names) matches no module");
    bad({{"target_modules", json::array()}}, "`target_modules` should be a non-empty list of module names");
    bad({{"fan_in_fan_out", true}}, "`fan_in_fan_out` = true is for Conv1D layers");
    bad({{"task_type", "SEQ_CLS"}}, "`task_type` = \"SEQ_CLS\" is not supported");
    bad({{"target_modules", {"key"}}, {"feedforward_modules", json::array()}},
        "Target modules [key] not found in the base model; its Linear modules are q_proj, k_proj");
    CapturedWarnings warnings;   // an unknown key is a warning; init_ia3_weights is HF bookkeeping
    CHECK_NOTHROW(make_ia3(peft_config("IA3", {{"some_future_field", 1}, {"init_ia3_weights", true}}), *m, rng));
    CHECK(warnings.all == std::vector<std::string>{"IA3 config: ignoring unknown key \"some_future_field\""});
}

TEST_CASE("ia3: loading an adapter made for another base or another layout fails, naming what differs") {
    // A config that makes fc_out output-scaled while the file holds input-scaling vectors.
    refused_from_wider_base_or_edited_config(peft_config("IA3"), [](json& cfg) { cfg["feedforward_modules"] = json::array(); },
                                             "tensor '" + kFF + "' is F32[1, 64] but the config on this base model gives "
                                             "F32[16, 1]");
}

// ---- bottleneck adapters

TEST_CASE("adapter: loading an adapter that does not fit fails, naming the tensor and both shapes") {
    Rng rng(9);
    auto model = lesson_model();
    SUBCASE("saved from a base model with another n_embd") {
        TempDir dir;
        save_from_wider_base(dir.path, bottleneck_config("houlsby"), rng);
        CHECK_THROWS_WITH_AS(load_adapter(dir.path, *model, rng), doctest::Contains("n_embd 32 (adapter) vs 16 (model)"),
                             ValueError);
    }
    SUBCASE("one tensor with a wrong shape: nothing is loaded") {
        auto method = make_bottleneck(bottleneck_config("pfeiffer"), *model, rng);
        std::map<std::string, Tensor> tensors;
        for (auto& [name, t] : method->state()) tensors[name] = Tensor::full(t.shape(), 1.f);
        const std::string bad = kKey + "0.mlp_adapter.up.weight";
        tensors[bad] = Tensor::zeros({16, 2});
        CHECK_THROWS_WITH_AS(method->load_state(tensors, "adapter_model.safetensors"),
                             doctest::Contains(("tensor '" + bad + "' is F32[16, 2] but the config on this base model gives F32[16, 4]").c_str()),
                             ValueError);
        CHECK(method->params.get(kKey + "1.mlp_adapter.up.bias").to_vector() == std::vector<float>(16, 0.f));
    }
}

// ---- prefix tuning

TEST_CASE("prefix: prompt_embeddings of the wrong shape, or from another base model, is a clear error") {
    Rng rng(9);
    auto model = lesson_model();
    auto method = make_prefix_tuning(peft_config("PREFIX_TUNING", {{"num_virtual_tokens", 4}}), *model, rng);
    std::map<std::string, Tensor> tensors{{"prompt_embeddings", Tensor::zeros({4, 32})}};
    CHECK_THROWS_WITH_AS(method->load_state(tensors, "adapter_model.safetensors"),
                         doctest::Contains("Invalid `prompt_embeddings` shape. Expected [P, 2LC] = [4, 64], got F32[4, 32]"),
                         ValueError);
    tensors = {{"prompt_embeddings", Tensor::zeros({4, 64})}, {"prompt_encoder.embedding.weight", Tensor::zeros({4, 16})}};
    CHECK_THROWS_WITH_AS(method->load_state(tensors, "adapter_model.safetensors"),
                         doctest::Contains("unexpected tensor 'prompt_encoder.embedding.weight'"), ValueError);

    TempDir dir;
    save_from_wider_base(dir.path, peft_config("PREFIX_TUNING", {{"num_virtual_tokens", 4}}), rng);
    CHECK_THROWS_WITH_AS(load_adapter(dir.path, *model, rng), doctest::Contains("n_embd 32 (adapter) vs 16 (model)"),
                         ValueError);
}

// ---- prompt tuning

TEST_CASE("prompt tuning: bad config values are ValueErrors naming the field and the value") {
    auto model = lesson_model();
    Rng rng(7);
    CHECK_THROWS_WITH_AS(make_method(prompt_config(-1), *model, rng),
                         doctest::Contains("`num_virtual_tokens` should be a non-negative integer value but the value passed is -1"),
                         ValueError);
    CHECK_THROWS_WITH_AS(make_method(prompt_config(2, "ZEROS"), *model, rng),
                         doctest::Contains("one of RANDOM, SAMPLE_VOCAB, TEXT but the value passed is \"ZEROS\""), ValueError);
    json cfg = prompt_config(2);
    cfg["token_dim"] = 32;
    CHECK_THROWS_WITH_AS(make_method(cfg, *model, rng), doctest::Contains("`token_dim` is 32 but the model's n_embd is 16"),
                         ValueError);
    cfg = prompt_config(2, "TEXT");
    cfg["prompt_tuning_init_ids"] = {1, 13};
    CHECK_THROWS_WITH_AS(make_method(cfg, *model, rng), doctest::Contains("token ids in [0, 13)"), ValueError);
    CHECK_THROWS_WITH_AS(make_method(prompt_config(16), *model, rng), doctest::Contains("block_size 16 leaves no room"),
                         ValueError);
}

TEST_CASE("prompt tuning: a mismatched adapter fails naming the tensor and both shapes") {
    auto model = lesson_model();
    Rng rng(13);
    auto m = make_method(prompt_config(4), *model, rng);
    std::map<std::string, Tensor> wrong = {{"prompt_embeddings", Tensor::zeros({3, 16})}};
    CHECK_THROWS_WITH_AS(m->load_state(wrong, "a.safetensors"),
                         doctest::Contains("'prompt_embeddings' is F32[3, 16] but the config on this base model gives F32[4, 16]"),
                         ValueError);

    // Saved from a wider model: load_adapter refuses before touching anything.
    TempDir dir;
    save_from_wider_base(dir.path, prompt_config(4), rng);
    CHECK_THROWS_WITH_AS(load_adapter(dir.path, *model, rng), doctest::Contains("n_embd 32 (adapter) vs 16 (model)"),
                         ValueError);
}

// ---- P-tuning

TEST_CASE("p-tuning: an unknown encoder type is a ValueError listing MLP and LSTM") {
    auto model = lesson_model();
    Rng rng(4);
    CHECK_THROWS_WITH_AS(make_method(ptuning_config(4, "GRU"), *model, rng),
                         doctest::Contains("`encoder_reparameterization_type` should be one of MLP, LSTM but the value passed is \"GRU\""),
                         ValueError);
    CHECK_THROWS_WITH_AS(make_method(ptuning_config(4, "MLP", 0), *model, rng),
                         doctest::Contains("`encoder_hidden_size` should be a positive integer value but the value passed is 0"),
                         ValueError);
    json cfg = ptuning_config(4);
    cfg["encoder_dropout"] = 0.1;
    CHECK_THROWS_WITH_AS(make_method(cfg, *model, rng), doctest::Contains("`encoder_dropout` 0.1 is not supported"), ValueError);
}

TEST_CASE("p-tuning: a mismatched adapter fails naming the tensor and both shapes") {
    auto model = lesson_model();
    Rng rng(11);
    auto m = make_method(ptuning_config(4), *model, rng);
    const int64_t n = m->params.count();
    std::map<std::string, Tensor> wrong = {{"prompt_embeddings", Tensor::zeros({5, 16})}};
    CHECK_THROWS_WITH_AS(m->load_state(wrong, "a.safetensors"),
                         doctest::Contains("'prompt_embeddings' is F32[5, 16] but the config on this base model gives F32[4, 16]"),
                         ValueError);
    CHECK(m->params.count() == n);   // still the unfolded encoder: nothing changed on error
    std::map<std::string, Tensor> extra = {{"prompt_embeddings", Tensor::zeros({4, 16})},
                                           {"prompt_encoder.mlp_head.0.weight", Tensor::zeros({8, 16})}};
    CHECK_THROWS_WITH_AS(m->load_state(extra, "a.safetensors"),
                         doctest::Contains("unexpected tensor 'prompt_encoder.mlp_head.0.weight'"), ValueError);
}

// ---- the LoRA family

TEST_CASE("loha: bad config values are one error naming HF's field") {
    auto m = lesson_model();
    Rng rng(5);
    auto bad = [&](const json& extra, const char* msg) { refused(*m, "LOHA", extra, msg); };
    bad({{"r", 0}}, "invalid LOHA config: `r` should be a positive integer value but the value passed is 0");
    bad({{"alpha", -1}}, "`alpha` should be a positive number");
    bad({{"rank_dropout", 1.5}}, "`rank_dropout` should be in [0, 1)");
    bad({{"module_dropout", -0.1}}, "`module_dropout` should be in [0, 1)");
    bad({{"init_weights", "yes"}}, "`init_weights` should be true or false");
    bad({{"target_modules", {"nope"}}}, "Target modules [nope] not found");
    CHECK(m->params.count(true) == m->params.count());
}


TEST_CASE("lokr: bad config values are one error naming HF's field") {
    auto m = lesson_model();
    Rng rng(4);
    auto bad = [&](const json& extra, const char* msg) { refused(*m, "LOKR", extra, msg); };
    bad({{"r", -2}}, "invalid LOKR config: `r` should be a positive integer value");
    bad({{"decompose_factor", 0}}, "`decompose_factor` should be -1 or a positive integer but the value passed is 0");
    bad({{"decompose_factor", -3}}, "`decompose_factor` should be -1 or a positive integer");
    bad({{"init_weights", "pissa"}}, "`init_weights` should be true, false or \"lycoris\"");
    bad({{"decompose_both", 1}}, "`decompose_both` should be true or false");
    CHECK(m->params.count(true) == m->params.count());
}


TEST_CASE("vera: bad values, and projections that do not fit the targets, are one error; nothing loads halfway") {
    auto m = lesson_model();
    Rng rng(7);
    auto bad = [&](const json& extra, const char* msg) { refused(*m, "VERA", extra, msg); };
    bad({{"r", 0}}, "invalid VERA config: `r` should be a positive integer value");
    bad({{"projection_prng_key", -1}}, "`projection_prng_key` should be a non-negative integer");
    bad({{"vera_dropout", 1}}, "`vera_dropout` should be in [0, 1)");
    bad({{"d_initial", "x"}}, "`d_initial` should be a finite number");
    bad({{"save_projection", "no"}}, "`save_projection` should be true or false");

    auto vera = make_method(peft_config("VERA", {{"r", 8}}), *m, rng);
    std::map<std::string, Tensor> st;
    for (auto& [k, t] : vera->state()) st[k] = t.clone();
    st["base_model.vera_A"] = Tensor::zeros({8, 12});   // made for a model with narrower targets
    const uint64_t before = checksum(vera->params);
    CHECK_THROWS_WITH_AS(vera->load_state(st, "f"), doctest::Contains("tensor 'base_model.vera_A' has shape F32[8, 12] but r = 8"),
                         ValueError);
    st.erase("base_model.vera_A");
    CHECK_THROWS_WITH_AS(vera->load_state(st, "f"), doctest::Contains("missing tensor 'base_model.vera_A' (the config says save_projection: true)"),
                         ValueError);
    CHECK(checksum(vera->params) == before);
}


TEST_CASE("oft: a block size that does not divide a width, both r and oft_block_size, bad values: one error each") {
    auto m = lesson_model();
    Rng rng(6);
    auto bad = [&](const json& extra, const char* msg) { refused(*m, "OFT", extra, msg); };
    bad({{"oft_block_size", 6}}, "transformer.h.0.attn.q_proj: `oft_block_size` = 6 does not divide its input width 16 (the nearest that does: 4)");
    bad({{"oft_block_size", 32}}, "`oft_block_size` = 32 does not divide its input width 16 (the nearest that does: 16)");
    bad({{"r", 3}, {"oft_block_size", 0}}, "`r` = 3 does not divide its input width 16");
    bad({{"r", 2}, {"oft_block_size", 8}}, "You can only specify either `r` (2) or `oft_block_size` (8)");
    bad({{"r", 0}, {"oft_block_size", 0}}, "Either `r` or `oft_block_size` must be non-zero");
    bad({{"num_cayley_neumann_terms", 0}}, "`num_cayley_neumann_terms` should be a positive integer");
    bad({{"eps", 0}}, "`eps` should be a positive number");
    bad({{"module_dropout", 1}}, "`module_dropout` should be in [0, 1)");
    CHECK(m->params.count(true) == m->params.count());
}


TEST_CASE("lora init: bad values and an r beyond the weight's rank are one error naming the field") {
    auto m = lesson_model();
    Rng rng(10);
    CHECK_THROWS_WITH_AS(make_lora(peft_config("LORA", {{"init_lora_weights", "loftq"}}), *m, rng),
                         doctest::Contains("`init_lora_weights` should be true, false, \"gaussian\""), ValueError);
    CHECK_THROWS_WITH_AS(make_lora(peft_config("LORA", {{"init_lora_weights", "pissa_niter_x"}}), *m, rng),
                         doctest::Contains("`init_lora_weights` should be"), ValueError);
    const uint64_t before = base_checksum(*m);
    CHECK_THROWS_WITH_AS(make_lora(peft_config("LORA", {{"init_lora_weights", "pissa"}, {"r", 17}}), *m, rng),
                         doctest::Contains("transformer.h.0.attn.q_proj: `r` = 17 is larger than min(in, out) = 16"),
                         ValueError);
    CHECK(base_checksum(*m) == before);
    CHECK(m->params.count(true) == m->params.count());   // nothing frozen: nothing attached
}

}  // TEST_SUITE
