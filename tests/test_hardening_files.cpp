// tests/test_hardening_files.cpp — untrusted files and bad input, as RELIABILITY.md §6 lists
// them: adapter folders (table B), model checkpoints (A15, A20, D4), datasets and configs
// (table C). Every test asserts the error class and a fragment of the message, which must name
// the file, tensor, field or value at fault; "never a crash" means any other exception fails.
#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include "peft_helpers.h"
#include "data/dataset.h"
#include "engine/fileio.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "models/train.h"

namespace fs = std::filesystem;

namespace {

// A fresh folder, removed with its contents at the end of the test.
struct Scratch {
    std::string path;
    Scratch() {
        char tmpl[] = "/tmp/peft_harden_XXXXXX";
        REQUIRE(mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~Scratch() { std::error_code ec; fs::remove_all(path, ec); }
    std::string operator/(const std::string& name) const { return path + "/" + name; }
};

// (A new file each time: ext4 flushes a truncated-and-rewritten file to disk on close.)
void write_bytes(const std::string& path, const std::string& bytes) {
    ::unlink(path.c_str());
    std::ofstream(path, std::ios::binary) << bytes;
}

const std::string kQ = "base_model.model.transformer.h.0.attn.q_proj";

json lora_json(const json& extra = json::object()) {
    json c = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"lora_dropout", 0.0}, {"target_modules", {"q_proj", "v_proj"}}};
    c.update(extra);
    return c;
}

// An adapter folder for `config`, saved from a lesson model (or from `model` when given).
std::string saved_adapter(const Scratch& s, const std::string& name, const json& config, GPT* model = nullptr) {
    auto own = lesson_model();
    GPT& m = model ? *model : *own;
    Rng rng(5);
    auto method = make_method(config, m, rng);
    for (const Param& p : method->params.all())   // nonzero everywhere, so a silent zero-load would show
        for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] = 0.01f * float(i % 7 + 1);
    save_adapter(s / name, *method, m);
    return s / name;
}

// Rewrites an adapter's weights file: `edit` may change the tensors and the metadata.
using Edit = std::function<void(std::map<std::string, Tensor>&, std::map<std::string, std::string>&)>;
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

// ---- checkpoints

GPTConfig tiny_config(int64_t vocab) {
    GPTConfig c;
    c.n_layer = 1; c.n_head = 2; c.n_embd = 8; c.block_size = 8; c.vocab_size = vocab;
    return c;
}

// A checkpoint written by hand (save_checkpoint refuses some of these): the model's tensors and
// metadata after `edit`.
void write_checkpoint(const std::string& path, const GPT& m, const Tokenizer& tok, const Edit& edit) {
    std::map<std::string, Tensor> tensors;
    for (const Param& p : m.params.all()) tensors[p.name] = p.tensor.clone();
    std::map<std::string, std::string> meta = {
        {"format", "pt"}, {"peft.model_config", m.config.to_json()}, {"peft.tokenizer", tok.serialize()}};
    edit(tensors, meta);
    save_safetensors(path, NamedTensors(tensors.begin(), tensors.end()), meta);
}

}  // namespace

TEST_SUITE("hardening") {

// ---- B: adapter folders

TEST_CASE("hardening: an adapter folder without adapter_config.json is a FileError naming the path") {
    Scratch s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    fs::remove(dir + "/adapter_config.json");
    CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                         doctest::Contains((dir + "/adapter_config.json: cannot open: No such file").c_str()), FileError);
    CHECK_THROWS_WITH_AS(load_into_fresh(s / "nowhere"), doctest::Contains("nowhere/adapter_config.json: cannot open"),
                         FileError);
}

TEST_CASE("hardening: an unreadable adapter_config.json (a folder, or over 1 MiB) is a FileError naming the path") {
    Scratch s;
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
    Scratch s;
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
    Scratch s;
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
    Scratch s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    write_config(dir, lora_json({{"peft_type", "ADALORA"}}));
    CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                         doctest::Contains("unknown peft_type 'ADALORA'; supported: LORA, IA3, BOTTLENECK, PREFIX_TUNING, "
                                           "PROMPT_TUNING, P_TUNING"),
                         ValueError);
}

TEST_CASE("hardening: unknown extra keys in adapter_config.json are tolerated and the adapter loads") {
    Scratch s;
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
    Scratch s;
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
    Scratch s;
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
    Scratch s;
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
    Scratch s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    edit_weights(dir, [](auto& t, auto&) {
        t[kQ + ".lora_A.weight"] = Tensor::zeros({4, 8});
        t[kQ + ".lora_B.weight"] = Tensor::zeros({16, 2});
    });
    for (const char* what : {"tensor 'base_model.model.transformer.h.0.attn.q_proj.lora_A.weight' has shape F32[4, 8] but "
                             "this model needs F32[4, 16]",
                             "tensor 'base_model.model.transformer.h.0.attn.q_proj.lora_B.weight' has shape F32[16, 2] but "
                             "this model needs F32[16, 4]",
                             "adapter_model.safetensors: adapter does not fit this LORA method (maybe another base model?)"})
        CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains(what), ValueError);
}

TEST_CASE("hardening: lora_A without its lora_B is refused naming the missing tensor") {
    Scratch s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    edit_weights(dir, [](auto& t, auto&) { t.erase(kQ + ".lora_B.weight"); });
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains(("missing tensor '" + kQ + ".lora_B.weight'").c_str()),
                         ValueError);
}

TEST_CASE("hardening: an adapter with a tensor for a module not in the base is refused naming the tensor") {
    Scratch s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    const std::string ghost = "base_model.model.transformer.h.7.attn.q_proj.lora_A.weight";   // the model has 2 layers
    edit_weights(dir, [&](auto& t, auto&) { t[ghost] = Tensor::zeros({4, 16}); });
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains(("unexpected tensor '" + ghost + "'").c_str()), ValueError);
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains("maybe another base model?"), ValueError);
}

TEST_CASE("hardening: zero-size [0] adapter tensors (an empty ZeRO-3 save) are refused, not loaded as zeros") {
    Scratch s;
    const std::string dir = saved_adapter(s, "a", lora_json());
    edit_weights(dir, [](auto& t, auto&) {
        for (auto& [name, tensor] : t) tensor = Tensor::zeros({0});
    });
    CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                         doctest::Contains(("tensor '" + kQ + ".lora_A.weight' has shape F32[0] but this model needs F32[4, 16]").c_str()),
                         ValueError);
}

TEST_CASE("hardening: an adapter saved on another base model is refused naming n_embd or vocab_size on both sides") {
    Scratch s;
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
    CHECK_THROWS_WITH_AS(load_into_fresh(dir), doctest::Contains("has shape F32[4, 8] but this model needs F32[4, 16]"),
                         ValueError);
}

TEST_CASE("hardening: a prefix-tuning tensor of the wrong shape is refused with the expected and found shapes") {
    Scratch s;
    const std::string dir = saved_adapter(s, "p", {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 3}});
    edit_weights(dir, [](auto& t, auto&) { t["prompt_embeddings"] = Tensor::zeros({3, 32}); });
    CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                         doctest::Contains("Invalid `prompt_embeddings` shape. Expected [P, 2LC] = [3, 64], got F32[3, 32]"),
                         ValueError);
}

TEST_CASE("hardening: an adapter holding a NaN or Inf is refused naming the tensor and the index") {
    Scratch s;
    for (float bad : {NAN, INFINITY}) {
        const std::string dir = saved_adapter(s, "a", lora_json());
        edit_weights(dir, [bad](auto& t, auto&) { t[kQ + ".lora_B.weight"].data()[5] = bad; });
        CHECK_THROWS_WITH_AS(load_into_fresh(dir),
                             doctest::Contains(("tensor '" + kQ + ".lora_B.weight' holds a non-finite value at index 5").c_str()),
                             FileError);
    }
}

// ---- checkpoints (A15, A20, D4)

TEST_CASE("hardening: a checkpoint truncated at any length is a FileError") {
    Scratch s;
    const Tokenizer tok = Tokenizer::chars_of("abcdefgh");
    Rng rng(8);
    GPT m(tiny_config(8), rng);
    save_checkpoint(s / "m.st", m, tok);
    const std::string bytes = read_file(s / "m.st", 1 << 20);
    int tried = 0;
    for (size_t len = 0; len < bytes.size(); len += len < 4096 ? 1 : 97) {
        write_bytes(s / "cut.st", bytes.substr(0, len));
        CAPTURE(len);
        CHECK_THROWS_AS(load_checkpoint(s / "cut.st"), FileError);
        tried++;
    }
    CHECK(tried > 1000);
}

TEST_CASE("hardening: bit flips in every byte of a checkpoint header give a FileError or a valid load, never a crash") {
    Scratch s;
    const Tokenizer tok = Tokenizer::chars_of("abcdefgh");
    Rng rng(9);
    GPT m(tiny_config(8), rng);
    save_checkpoint(s / "m.st", m, tok);
    const std::string bytes = read_file(s / "m.st", 1 << 20);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= uint64_t(uint8_t(bytes[size_t(i)])) << (8 * i);
    int loaded = 0, refused = 0;
    for (size_t i = 0; i < 8 + n; i++)
        for (int pattern = 0; pattern < 4; pattern++) {
            std::string b = bytes;
            const uint8_t v = uint8_t(b[i]);
            b[i] = char(pattern == 0 ? v ^ 0x01 : pattern == 1 ? v ^ 0x20 : pattern == 2 ? v ^ 0x80 : 0xff);
            if (b[i] == bytes[i]) continue;
            write_bytes(s / "flip.st", b);
            CAPTURE(i);
            CAPTURE(pattern);
            try {
                Checkpoint ck = load_checkpoint(s / "flip.st");   // e.g. a flip inside the "format" value
                CHECK(ck.model->params.count() > 0);
                loaded++;
            } catch (const FileError&) {   // anything else escapes and fails the test
                refused++;
            }
        }
    CHECK(refused > 3000);
    CHECK(loaded > 0);
    MESSAGE("header bytes: " << 8 + n << ", refused " << refused << ", loaded " << loaded);
}

TEST_CASE("hardening: a checkpoint holding a NaN or Inf weight is refused naming the tensor and the index") {
    Scratch s;
    const Tokenizer tok = Tokenizer::chars_of("abcdefgh");
    Rng rng(10);
    GPT m(tiny_config(8), rng);
    for (float bad : {NAN, -INFINITY}) {
        write_checkpoint(s / "nan.st", m, tok, [bad](auto& t, auto&) { t["transformer.h.0.mlp.fc_in.weight"].data()[17] = bad; });
        CHECK_THROWS_WITH_AS(load_checkpoint(s / "nan.st"),
                             doctest::Contains("tensor 'transformer.h.0.mlp.fc_in.weight' holds a non-finite value at index 17"),
                             FileError);
    }
}

TEST_CASE("hardening: save_checkpoint and save_adapter refuse NaN weights and keep the previous file") {
    Scratch s;
    const Tokenizer tok = Tokenizer::chars_of("abcdefgh");
    Rng rng(11);
    GPT m(tiny_config(8), rng);
    save_checkpoint(s / "m.st", m, tok);
    const std::string before = read_file(s / "m.st", 1 << 20);
    m.params.get("transformer.ln_f.bias").data()[3] = NAN;
    CHECK_THROWS_WITH_AS(save_checkpoint(s / "m.st", m, tok),
                         doctest::Contains("tensor 'transformer.ln_f.bias' holds a non-finite value at index 3"), NumericError);
    CHECK(read_file(s / "m.st", 1 << 20) == before);

    auto model = lesson_model();
    const std::string dir = saved_adapter(s, "a", lora_json(), model.get());
    const std::string weights = read_file(dir + "/adapter_model.safetensors", 1 << 20);
    Rng r2(5);
    auto lora = make_method(lora_json(), *model, r2);
    lora->params.get(kQ + ".lora_A.weight").data()[2] = INFINITY;
    CHECK_THROWS_WITH_AS(save_adapter(dir, *lora, *model),
                         doctest::Contains(("tensor '" + kQ + ".lora_A.weight' holds a non-finite value at index 2").c_str()),
                         NumericError);
    CHECK(read_file(dir + "/adapter_model.safetensors", 1 << 20) == weights);
}

TEST_CASE("hardening: a checkpoint missing a tensor, or with an extra one, is refused naming it") {
    Scratch s;
    const Tokenizer tok = Tokenizer::chars_of("abcdefgh");
    Rng rng(12);
    GPT m(tiny_config(8), rng);
    write_checkpoint(s / "m.st", m, tok, [](auto& t, auto&) { t.erase("transformer.h.0.attn.k_proj.bias"); });
    CHECK_THROWS_WITH_AS(load_checkpoint(s / "m.st"), doctest::Contains("missing tensor 'transformer.h.0.attn.k_proj.bias'"),
                         FileError);
    write_checkpoint(s / "m.st", m, tok, [](auto& t, auto&) { t["lm_head.weight"] = Tensor::zeros({8, 8}); });
    CHECK_THROWS_WITH_AS(load_checkpoint(s / "m.st"), doctest::Contains("unexpected tensor 'lm_head.weight'"), FileError);
    write_checkpoint(s / "m.st", m, tok, [](auto& t, auto&) { t["transformer.wpe.weight"] = Tensor::zeros({4, 8}); });
    CHECK_THROWS_WITH_AS(load_checkpoint(s / "m.st"),
                         doctest::Contains("tensor 'transformer.wpe.weight' is F32[4, 8] but the config needs F32[8, 8]"),
                         FileError);
}

TEST_CASE("hardening: a checkpoint whose config is missing, not JSON or invalid is a FileError naming the file") {
    Scratch s;
    const Tokenizer tok = Tokenizer::chars_of("abcdefgh");
    Rng rng(13);
    GPT m(tiny_config(8), rng);
    const std::string p = s / "m.st";
    write_checkpoint(p, m, tok, [](auto&, auto& meta) { meta.erase("peft.model_config"); });
    CHECK_THROWS_WITH_AS(load_checkpoint(p), doctest::Contains((p + ": no 'peft.model_config' in the metadata").c_str()), FileError);
    write_checkpoint(p, m, tok, [](auto&, auto& meta) { meta["peft.model_config"] = "{\"n_layer\": 1,"; });
    CHECK_THROWS_WITH_AS(load_checkpoint(p), doctest::Contains((p + ": bad model config: model config is not a JSON object").c_str()),
                         FileError);
    write_checkpoint(p, m, tok, [](auto&, auto& meta) {
        meta["peft.model_config"] = R"({"n_layer":1,"n_head":3,"n_embd":8,"block_size":8,"vocab_size":8})";
    });
    CHECK_THROWS_WITH_AS(load_checkpoint(p), doctest::Contains("n_embd 8 is not divisible by n_head 3"), FileError);
    write_checkpoint(p, m, tok, [](auto&, auto& meta) { meta["peft.tokenizer"] = R"({"kind":"char","chars":"abc"})"; });
    CHECK_THROWS_WITH_AS(load_checkpoint(p), doctest::Contains("tokenizer has 3 symbols but the model's vocab_size is 8"),
                         FileError);
}

// ---- C: datasets

TEST_CASE("hardening: a missing dataset, or a folder given as one, is a FileError naming the path") {
    Scratch s;
    CHECK_THROWS_WITH_AS(TextDataset(s / "none.txt"), doctest::Contains(("dataset '" + s / "none.txt" + "' not found").c_str()),
                         FileError);
    CHECK_THROWS_WITH_AS(TextDataset(s.path), doctest::Contains("is a directory, not a text file"), FileError);
}

TEST_CASE("hardening: an empty dataset is a FileError saying it is empty") {
    Scratch s;
    write_bytes(s / "e.txt", "");
    CHECK_THROWS_WITH_AS(TextDataset(s / "e.txt"), doctest::Contains(("dataset '" + s / "e.txt" + "' is empty").c_str()),
                         FileError);
}

TEST_CASE("hardening: a binary dataset is a FileError giving the offset of the first NUL byte") {
    Scratch s;
    write_bytes(s / "b.bin", std::string("PK\x03\x04\x00\x01", 6));
    CHECK_THROWS_WITH_AS(TextDataset(s / "b.bin"), doctest::Contains("looks binary: NUL byte at offset 4"), FileError);
}

TEST_CASE("hardening: a dataset that is not UTF-8 is a FileError giving the offset and the byte") {
    Scratch s;
    write_bytes(s / "l1.txt", "caf\xe9 au lait");   // Latin-1
    CHECK_THROWS_WITH_AS(TextDataset(s / "l1.txt"),
                         doctest::Contains("is not UTF-8 text: invalid byte sequence at offset 3 (starting with 0xe9)"), FileError);
    Tokenizer tok = Tokenizer::chars_of("abc");
    CHECK_THROWS_WITH_AS(TaskDataset(s / "l1.txt", tok), doctest::Contains("not UTF-8"), FileError);
}

TEST_CASE("hardening: a dataset shorter than one block is a ValueError stating both numbers") {
    Scratch s;
    write_bytes(s / "short.txt", "abcdefghij");   // 10 tokens: 9 train, 1 val
    TextDataset ds(s / "short.txt");
    Rng rng(1);
    CHECK_THROWS_WITH_AS(ds.sample(Split::Train, 2, 12, rng),
                         doctest::Contains("the train split has 9 tokens; need at least block_size+1 = 13"), ValueError);
    GPTConfig c = tiny_config(ds.tokenizer().vocab_size());
    c.block_size = 16;
    GPT m(c, rng);
    TrainConfig tc;
    tc.steps = 1;
    tc.batch = 1;
    Trainer t(m, m.params, TrainData{&ds, nullptr}, tc);   // block 16, from the model
    CHECK_THROWS_WITH_AS(t.train_step(), doctest::Contains("the train split has 9 tokens; need at least block_size+1 = 17"),
                         ValueError);
}

TEST_CASE("hardening: an unknown character at generation time is a ValueError naming it, never an out-of-range id") {
    const Tokenizer tok = Tokenizer::chars_of("abc\n");
    CHECK_THROWS_WITH_AS(tok.encode("ab\xc3\xa9"), doctest::Contains("character '\xc3\xa9' (U+00E9) at position 2 (line 1, column 3)"),
                         ValueError);
    CHECK_THROWS_WITH_AS(tok.encode("a\x07"), doctest::Contains("(U+0007) at position 1"), ValueError);
    Rng rng(2);
    GPT m(tiny_config(tok.vocab_size()), rng);
    CHECK_THROWS_WITH_AS(m.generate({0, 1, 4}, 2, 0.f, 0, rng),
                         doctest::Contains("embedding: id 4 at position [0, 2] of ids [1, 3] is outside the vocabulary [0, 4)"),
                         ValueError);
    CHECK_THROWS_WITH_AS(tok.decode({1, 9}), doctest::Contains("id 9 at position 1 is outside the vocabulary 0..3"), ValueError);
}

TEST_CASE("hardening: fine-tuning text with a character outside the base vocabulary is refused naming the file") {
    Scratch s;
    write_bytes(s / "ft.txt", "abc abc\nab!");
    CHECK_THROWS_WITH_AS(TextDataset(s / "ft.txt", Tokenizer::chars_of("abc \n")),
                         doctest::Contains("character '!' (U+0021) at position 10 (line 2, column 3)"), ValueError);
    CHECK_THROWS_WITH_AS(TextDataset(s / "ft.txt", Tokenizer::chars_of("abc \n")), doctest::Contains("ft.txt"), ValueError);
}

// ---- C6: configs, through the library's validate()

TEST_CASE("hardening: an invalid model config reports every problem together") {
    GPTConfig c;
    c.n_embd = 30;
    c.n_head = 4;
    c.block_size = 0;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("n_embd 30 is not divisible by n_head 4"), ValueError);
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("block_size must be >= 1, got 0"), ValueError);
    c = GPTConfig();
    c.n_layer = 0;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("n_layer must be >= 1, got 0"), ValueError);
    Rng rng(3);
    CHECK_THROWS_WITH_AS(GPT(c, rng), doctest::Contains("invalid model config"), ValueError);   // before allocating
}

TEST_CASE("hardening: an invalid training config reports batch 0, lr nan or <= 0 and negative steps together") {
    TrainConfig t;
    t.batch = 0;
    t.lr = NAN;
    t.steps = -5;
    for (const char* what : {"--batch must be >= 1, got 0", "--lr must be a finite number > 0, got nan",
                             "--steps must be >= 0, got -5"})
        CHECK_THROWS_WITH_AS(t.validate(), doctest::Contains(what), ValueError);
    for (float lr : {0.f, -1e-3f, INFINITY}) {
        TrainConfig u;
        u.lr = lr;
        CAPTURE(lr);
        CHECK_THROWS_WITH_AS(u.validate(), doctest::Contains("--lr must be a finite number > 0"), ValueError);
    }
}

}  // TEST_SUITE
