// tests/test_hardening_adapters.cpp — untrusted adapter folders and adapter configs, as
// docs/FAILURES.md table B lists them.
// Every test asserts the error class and a fragment of the message, which must name the file,
// tensor, field or value at fault; "never a crash" means any other exception fails.
#include <filesystem>
#include "hardening_helpers.h"
#include "engine/safetensors.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace {

// Rewrites an adapter's weights file: `edit` may change the tensors and the metadata.
void edit_weights(const std::string& dir, const Edit& edit) {
    const std::string file = dir + "/adapter_model.safetensors";
    SafeTensors st = load_safetensors(file);
    edit(st.tensors, st.metadata);
    save_safetensors(file, NamedTensors(st.tensors.begin(), st.tensors.end()), st.metadata);
}

void write_config(const std::string& dir, const json& config) { write_bytes(dir + "/adapter_config.json", config.dump()); }

// Loads `dir` into a fresh lesson model and checks that a failure left that model as it was.
void load_into_fresh(const std::string& dir) {
    auto model = lesson_model();
    const uint64_t before = base_checksum(*model);
    Rng rng(0);
    try {
        load_adapter(dir, *model, rng);
    } catch (...) {
        CHECK(base_checksum(*model) == before);
        CHECK(model->hooks == nullptr);
        for (auto& [name, lin] : model->linears()) CHECK(lin->wrap == nullptr);
        throw;
    }
}

}  // namespace

TEST_SUITE("hardening") {

// ---- B: adapter folders

TEST_CASE("hardening: an adapter folder without adapter_config.json is a FileError naming the path") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    fs::remove(dir + "/adapter_config.json");
    CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                         doctest::Contains((dir + "/adapter_config.json: cannot open: No such file").c_str()), FileError);
    CHECK_THROWS_WITH_AS(load_into_fresh(s / "nowhere"), doctest::Contains("nowhere/adapter_config.json: cannot open"),
                         FileError);
}

TEST_CASE("hardening: an unreadable adapter_config.json (a folder, or over 1 MiB) is a FileError naming the path") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    fs::remove(dir + "/adapter_config.json");
    fs::create_directory(dir + "/adapter_config.json");
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains((dir + "/adapter_config.json: is a directory").c_str()),
                         FileError);
    fs::remove(dir + "/adapter_config.json");
    write_bytes(dir + "/adapter_config.json", "{\"peft_type\": \"LORA\", \"x\": \"" + std::string(1 << 20, 'x') + "\"}");
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains("adapter_config.json: file too large"), FileError);
}

TEST_CASE("hardening: adapter_config.json that is not JSON, or not an object, is a FileError naming the path") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    for (const char* text : {"{\"peft_type\": \"LORA\",", "", "\xff\xfe{}", "{'peft_type': 'LORA'}"}) {
        CAPTURE(text);
        write_bytes(dir + "/adapter_config.json", text);
        CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains((dir + "/adapter_config.json: not valid JSON").c_str()),
                             FileError);
    }
    write_bytes(dir + "/adapter_config.json", "[\"LORA\"]");
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains("adapter_config.json: must hold a JSON object"), FileError);
}

TEST_CASE("hardening: an adapter config without peft_type is a ValueError saying so") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    json c = lora_json();
    c.erase("peft_type");
    write_config(dir, c);
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains("adapter_config.json: adapter config has no 'peft_type'"),
                         ValueError);
    c["peft_type"] = 3;
    write_config(dir, c);
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains("no 'peft_type' string"), ValueError);
}

TEST_CASE("hardening: an unknown peft_type is a ValueError listing the supported types") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    write_config(dir, lora_json({{"peft_type", "ADALORA"}}));
    CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                         doctest::Contains("unknown peft_type 'ADALORA'; supported: LORA, IA3, BOTTLENECK, PREFIX_TUNING, "
                                           "PROMPT_TUNING, P_TUNING"),
                         ValueError);
}

TEST_CASE("hardening: unknown extra keys in adapter_config.json are tolerated and the adapter loads") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    write_config(dir, lora_json({{"a_future_option", {1, 2}}, {"base_model_name_or_path", "gpt2"}, {"revision", nullptr},
                                 {"lora_dropuot", 0.1}}));
    auto model = lesson_model();
    Rng rng(0);
    CapturedWarnings warnings;
    std::unique_ptr<Method> m = load_adapter(dir, *model, rng);
    CHECK(m->peft_type() == "LORA");
    CHECK(m->params.get(kQ + ".lora_B.weight").data()[1] == 0.02f);   // the file's values, not a fresh init
    REQUIRE(warnings.all.size() == 1);   // one warning naming the file and each unknown key
    CHECK(warnings.all[0] == dir + "/adapter_config.json: LORA config: ignoring unknown keys \"a_future_option\", \"lora_dropuot\"");
}

TEST_CASE("hardening: HF's bookkeeping keys, keys set to null or false, and each method's own config load without a warning") {
    TempDir s;
    const json hf_lora = {{"alpha_pattern", json::object()}, {"auto_mapping", nullptr}, {"base_model_name_or_path", "gpt2"},
                          {"bias", "none"}, {"fan_in_fan_out", false}, {"inference_mode", true}, {"init_lora_weights", true},
                          {"layer_replication", nullptr}, {"layers_pattern", nullptr}, {"layers_to_transform", nullptr},
                          {"loftq_config", json::object()}, {"lora_alpha", 8}, {"lora_bias", false}, {"lora_dropout", 0.0},
                          {"megatron_config", nullptr}, {"megatron_core", "megatron.core"}, {"modules_to_save", nullptr},
                          {"peft_type", "LORA"}, {"r", 4}, {"rank_pattern", json::object()}, {"revision", nullptr},
                          {"target_modules", {"q_proj", "v_proj"}}, {"task_type", "CAUSAL_LM"}, {"use_dora", false},
                          {"use_rslora", false}};
    const json configs[] = {hf_lora,
                            {{"peft_type", "IA3"}},
                            {{"peft_type", "BOTTLENECK"}, {"reduction_factor", 4}},
                            {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 2}, {"prefix_projection", true}},
                            {{"peft_type", "PROMPT_TUNING"}, {"num_virtual_tokens", 2}},
                            {{"peft_type", "P_TUNING"}, {"num_virtual_tokens", 2}, {"encoder_hidden_size", 8}}};
    for (const json& config : configs) {
        const std::string dir = saved_adapter(s, config["peft_type"], config);
        if (config == hf_lora) write_config(dir, hf_lora);   // as HF writes it, not as saved here
        auto model = lesson_model();
        Rng rng(0);
        CapturedWarnings warnings;
        load_adapter(dir, *model, rng);
        CHECK_MESSAGE(warnings.all.empty(), config["peft_type"] << ": " << (warnings.all.empty() ? "" : warnings.all[0]));
    }
}

TEST_CASE("hardening: LoRA r = 0 or negative is a ValueError quoting the value, with the config's path") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    for (int r : {0, -3}) {
        write_config(dir, lora_json({{"r", r}}));
        CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                             doctest::Contains(fmt::format("`r` should be a positive integer value but the value passed is {}", r).c_str()),
                             ValueError);
        CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains((dir + "/adapter_config.json: invalid LORA config").c_str()),
                             ValueError);
    }
}

TEST_CASE("hardening: lora_alpha <= 0 is a ValueError naming the field and the value") {
    auto model = lesson_model();
    Rng rng(1);
    for (double a : {0.0, -16.0}) {
        CAPTURE(a);
        CHECK_THROWS_WITH_AS(make_method(lora_json({{"lora_alpha", a}}), *model, rng),
                             doctest::Contains("`lora_alpha` should be a positive number but the value passed is"), ValueError);
    }
}

TEST_CASE("hardening: lora_dropout outside [0, 1) is a ValueError naming the field and the value") {
    auto model = lesson_model();
    Rng rng(1);
    for (double p : {-0.1, 1.0, 1.5}) {
        CAPTURE(p);
        CHECK_THROWS_WITH_AS(make_method(lora_json({{"lora_dropout", p}}), *model, rng),
                             doctest::Contains("`lora_dropout` should be in [0, 1) but the value passed is"), ValueError);
    }
}

TEST_CASE("hardening: num_virtual_tokens + T > block_size is refused at config time, before training and at the forward") {
    auto model = lesson_model();   // block_size 16
    Rng rng(2);
    CHECK_THROWS_WITH_AS(make_method({{"peft_type", "PROMPT_TUNING"}, {"num_virtual_tokens", 16}}, *model, rng),
                         doctest::Contains("`num_virtual_tokens` is 16 but the model's block_size 16 leaves no room"), ValueError);
    CHECK_THROWS_WITH_AS(make_method({{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 20}}, *model, rng),
                         doctest::Contains("`num_virtual_tokens` 20 leaves no room for a token in block_size 16"), ValueError);

    PeftModel peft(*model);
    peft.add("p", make_method({{"peft_type", "PROMPT_TUNING"}, {"num_virtual_tokens", 10}}, *model, rng));
    CHECK_THROWS_WITH_AS(model->forward(Tensor::zeros({1, 8}, DType::I32)),
                         doctest::Contains("sequence of 8 tokens plus 10 virtual tokens is longer than block_size 16"), ShapeError);
    TempDir s;
    write_bytes(s / "c.txt", std::string(200, 'a') + std::string(200, 'b'));
    TextDataset text(s / "c.txt", Tokenizer::chars_of("abcdefghijklm"));
    TrainConfig tc;
    tc.block = 8;
    CHECK_THROWS_WITH_AS(Trainer(*model, peft.active()->params, TrainData{&text, nullptr}, tc),
                         doctest::Contains("--block 8 is larger than the model allows (6, block_size 16)"), ValueError);
}

TEST_CASE("hardening: target_modules matching nothing is a ValueError listing the model's modules; the base is not frozen") {
    auto model = lesson_model();
    Rng rng(3);
    CHECK_THROWS_WITH_AS(make_method(lora_json({{"target_modules", {"q_proj", "query_key_value"}}}), *model, rng),
                         doctest::Contains("Target modules [query_key_value] not found in the base model; its Linear "
                                           "modules are q_proj, k_proj, v_proj, o_proj, fc_in, fc_out"),
                         ValueError);
    CHECK(model->params.count(true) == model->params.count());
    CHECK_THROWS_WITH_AS(make_method({{"peft_type", "IA3"}, {"target_modules", {"c_attn"}}, {"feedforward_modules", json::array()}}, *model, rng),
                         doctest::Contains("Target modules [c_attn] not found"), ValueError);
}

TEST_CASE("hardening: IA3 feedforward_modules not a subset of target_modules is a ValueError listing the outsiders") {
    auto model = lesson_model();
    Rng rng(4);
    CHECK_THROWS_WITH_AS(make_method({{"peft_type", "IA3"}, {"target_modules", {"k_proj", "v_proj"}},
                                      {"feedforward_modules", {"fc_out", "v_proj"}}},
                                     *model, rng),
                         doctest::Contains("`feedforward_modules` should be a subset of `target_modules`: [fc_out] not in "
                                           "[k_proj, v_proj]"),
                         ValueError);
}

TEST_CASE("hardening: an adapter tensor of the wrong shape is refused naming the tensor and both shapes") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    edit_weights(dir, [](auto& t, auto&) {
        t[kQ + ".lora_A.weight"] = Tensor::zeros({4, 8});
        t[kQ + ".lora_B.weight"] = Tensor::zeros({16, 2});
    });
    for (const char* what : {"tensor 'base_model.model.transformer.h.0.attn.q_proj.lora_A.weight' is F32[4, 8] but "
                             "the config on this base model gives F32[4, 16]",
                             "tensor 'base_model.model.transformer.h.0.attn.q_proj.lora_B.weight' is F32[16, 2] but "
                             "the config on this base model gives F32[16, 4]",
                             "adapter_model.safetensors: the tensors do not match adapter_config.json (LORA as built on this base model)"})
        CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains(what), ValueError);
}

TEST_CASE("hardening: lora_A without its lora_B is refused naming the missing tensor") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    edit_weights(dir, [](auto& t, auto&) { t.erase(kQ + ".lora_B.weight"); });
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains(("missing tensor '" + kQ + ".lora_B.weight'").c_str()),
                         ValueError);
}

TEST_CASE("hardening: an adapter with a tensor for a module not in the base is refused naming the tensor") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    const std::string ghost = "base_model.model.transformer.h.7.attn.q_proj.lora_A.weight";   // the model has 2 layers
    edit_weights(dir, [&](auto& t, auto&) { t[ghost] = Tensor::zeros({4, 16}); });
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains(("unexpected tensor '" + ghost + "'").c_str()), ValueError);
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains("the tensors do not match adapter_config.json"), ValueError);
}

TEST_CASE("hardening: zero-size [0] adapter tensors (an empty ZeRO-3 save) are refused, not loaded as zeros") {
    TempDir s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    edit_weights(dir, [](auto& t, auto&) {
        for (auto& [name, tensor] : t) tensor = Tensor::zeros({0});
    });
    CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                         doctest::Contains(("tensor '" + kQ + ".lora_A.weight' is F32[0] but the config on this base model gives F32[4, 16]").c_str()),
                         ValueError);
}

TEST_CASE("hardening: an adapter saved on another base model is refused naming n_embd or vocab_size on both sides") {
    TempDir s;
    for (auto [field, value, fragment] : {std::tuple{"n_embd", 8, "n_embd 8 (adapter) vs 16 (model)"},
                                          std::tuple{"vocab_size", 40, "vocab_size 40 (adapter) vs 13 (model)"}}) {
        GPTConfig c = lesson_config();
        (std::string(field) == "n_embd" ? c.n_embd : c.vocab_size) = value;
        Rng rng(6);
        GPT other(c, rng);
        const std::string dir = saved_adapter(s, field, lora_json(), &other);
        CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                             doctest::Contains((dir + "/adapter_model.safetensors: adapter was trained on another base model").c_str()),
                             ValueError);
        CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains(fragment), ValueError);
    }
    // Without the fingerprint (a file from another writer) the shapes still catch it.
    GPTConfig narrow = lesson_config();
    narrow.n_embd = 8;
    Rng rng(7);
    GPT other(narrow, rng);
    const std::string dir = saved_adapter(s, "hf", lora_json(), &other);
    edit_weights(dir, [](auto&, auto& meta) { meta = {{"format", "pt"}}; });
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains("is F32[4, 8] but the config on this base model gives F32[4, 16]"),
                         ValueError);
}

TEST_CASE("hardening: a prefix-tuning tensor of the wrong shape is refused with the expected and found shapes") {
    TempDir s;
    const std::string dir = saved_adapter(s, "p", {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 3}});
    edit_weights(dir, [](auto& t, auto&) { t["prompt_embeddings"] = Tensor::zeros({3, 32}); });
    CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                         doctest::Contains("Invalid `prompt_embeddings` shape. Expected [P, 2LC] = [3, 64], got F32[3, 32]"),
                         ValueError);
}

TEST_CASE("hardening: an adapter holding a NaN or Inf is refused naming the tensor and the index") {
    TempDir s;
    for (float bad : {NAN, INFINITY}) {
        const std::string dir = saved_adapter(s, "a", lora_json());
        edit_weights(dir, [bad](auto& t, auto&) { t[kQ + ".lora_B.weight"].data()[5] = bad; });
        CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                             doctest::Contains(("tensor '" + kQ + ".lora_B.weight' holds a non-finite value at index 5").c_str()),
                             FileError);
    }
}

}  // TEST_SUITE
