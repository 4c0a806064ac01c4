// tests/test_hf_gpt2.cpp — Hugging Face GPT-2 folders: import in either key style and dtype,
// the Conv1D mapping against the naive reference, refusals that load nothing, and export
// round trips.
#include "hf_helpers.h"
#include "models/hf_gpt2.h"
#include "data/bpe.h"
#include "engine/fileio.h"
#include "engine/safetensors.h"
#include "models/reference_gpt.h"

TEST_SUITE("hf_gpt2") {

static bool same_params(GPT& a, GPT& b) {
    if (a.params.size() != b.params.size()) return false;
    for (const Param& p : a.params.all()) {
        const Param* q = b.params.find(p.name);
        if (!q || q->tensor.shape() != p.tensor.shape() ||
            std::memcmp(q->tensor.data(), p.tensor.data(), p.tensor.nbytes()) != 0)
            return false;
    }
    return true;
}

TEST_CASE("hf_gpt2: a folder loads bit for bit in either key style, F32, F16 and BF16") {
    auto src = hf::tiny_model(1);
    TempDir tmp;
    int k = 0;
    for (const char* prefix : {"", "transformer."})
        for (const char* dtype : {"F32", "F16", "BF16"}) {
            CAPTURE(prefix);
            CAPTURE(dtype);
            const std::string dir = tmp / fmt::format("m{}", k++);
            hf::write_folder(dir, *src, {prefix, dtype, k % 2 == 0, k % 3 == 0});
            auto m = load_hf_gpt2_model(dir);
            CHECK(m->config.model_type == "gpt2");
            CHECK(m->config.dropout == 0.f);
            CHECK(same_params(*m, *src));
        }
}

TEST_CASE("hf_gpt2: imported logits equal the naive reference of the HF weights (Conv1D mapped)") {
    auto src = hf::tiny_model(2);
    TempDir tmp;
    hf::write_folder(tmp.path, *src, {"", "F32"});
    auto m = load_hf_gpt2_model(tmp.path);
    // The reference reads the source model, whose weights the writer transposed into HF's
    // layout by its own loops: equal logits mean the importer undid exactly that.
    std::vector<int32_t> ids = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
    std::vector<double> ref;
    for (auto& row : naive::forward(*src, ids)) ref.insert(ref.end(), row.begin(), row.end());
    std::string why;
    CHECK_MESSAGE(allclose(logits_of(*m, Tensor::from_ints(ids, {1, 10})), ref, 1e-5, 1e-5, &why), why);
}

// The first line of the error load_hf_gpt2_model(dir) throws.
static std::string load_error(const std::string& dir) {
    try {
        load_hf_gpt2_model(dir);
    } catch (const FileError& e) {
        return e.what();
    }
    return "(loaded)";
}

TEST_CASE("hf_gpt2: bad folders are one error naming the file and the fault") {
    auto src = hf::tiny_model(3);
    TempDir tmp;
    auto folder = [&](const std::string& name, const std::function<void(nlohmann::json&, std::vector<hf::Raw>&)>& edit) {
        const std::string dir = tmp / name;
        std::filesystem::create_directories(dir);
        nlohmann::json c = hf::config_json(src->config);
        std::vector<hf::Raw> t = hf::hf_tensors(*src);
        edit(c, t);
        std::ofstream(dir + "/config.json") << c.dump();
        hf::write_safetensors(dir + "/model.safetensors", t, "F32");
        return dir;
    };
    using J = nlohmann::json;
    using R = std::vector<hf::Raw>;
    std::string d = folder("type", [](J& c, R&) { c["model_type"] = "llama"; });
    CHECK(load_error(d) == d + "/config.json: model_type \"llama\" is not supported (this engine imports \"gpt2\" "
                               "models: gpt2, distilgpt2, gpt2-medium/large/xl)");
    d = folder("act", [](J& c, R&) { c["activation_function"] = "relu"; });
    CHECK(load_error(d).find(d + "/config.json: activation_function \"relu\" is not supported") == 0);
    d = folder("inner", [](J& c, R&) { c["n_inner"] = 32; });
    CHECK(load_error(d).find("'n_inner' = 32 is not supported") != std::string::npos);
    d = folder("heads", [](J& c, R&) { c["n_head"] = 3; });
    CHECK(load_error(d).find("n_embd 16 is not divisible by n_head 3") != std::string::npos);
    d = folder("missing", [](J&, R& t) { t.erase(t.begin() + 3); });
    CHECK(load_error(d).find(d + "/model.safetensors: does not match " + d + "/config.json:\n  missing tensor 'h.0.ln_1.bias'") == 0);
    d = folder("extra", [](J&, R& t) { t.push_back({"h.0.attn.rotary", {2}, {0, 0}}); });
    CHECK(load_error(d).find("unexpected tensor 'h.0.attn.rotary'") != std::string::npos);
    d = folder("shape", [](J& c, R&) { c["n_positions"] = 30; });
    CHECK(load_error(d).find("tensor 'wpe.weight' is [24, 16] but config.json needs [30, 16]") != std::string::npos);
    d = folder("transposed", [](J&, R& t) {   // a c_attn stored as (out, in): the Conv1D layout matters
        for (hf::Raw& r : t) if (r.name == "h.1.attn.c_attn.weight") std::swap(r.shape[0], r.shape[1]);
    });
    CHECK(load_error(d).find("tensor 'h.1.attn.c_attn.weight' is [48, 16] but config.json needs [16, 48]") != std::string::npos);
    d = folder("untied", [](J&, R& t) {
        hf::Raw head{"lm_head.weight", {13, 16}, t[0].values};
        head.values[5] += 1.f;
        t.push_back(head);
    });
    CHECK(load_error(d).find("'lm_head.weight' differs from the token embedding") != std::string::npos);
    d = folder("nan", [](J&, R& t) { t[2].values[1] = NAN; });
    CHECK(load_error(d).find("holds a non-finite value") != std::string::npos);
    CHECK(load_error(tmp / "nowhere").find(tmp / "nowhere/config.json") == 0);
}

TEST_CASE("hf_gpt2: export writes the Conv1D layout; import -> export -> import is bit-identical") {
    auto src = hf::tiny_model(4);
    TempDir tmp;
    hf::write_folder(tmp / "a", *src, {"", "F16"});
    auto m = load_hf_gpt2_model(tmp / "a");
    export_hf_gpt2(tmp / "b", *m, Tokenizer::bytes());
    SafeTensorsFile st(tmp / "b/model.safetensors");
    REQUIRE(st.find("transformer.h.0.attn.c_attn.weight"));
    CHECK(st.find("transformer.h.0.attn.c_attn.weight")->shape == Shape{16, 48});
    CHECK(st.find("transformer.h.1.mlp.c_proj.weight")->shape == Shape{64, 16});
    CHECK(st.find("lm_head.weight") == nullptr);   // tied, as save_pretrained writes it
    auto back = load_hf_gpt2_model(tmp / "b");
    CHECK(same_params(*back, *m));
    // The folder's bytes are a function of the weights: exporting again gives the same file.
    export_hf_gpt2(tmp / "c", *back, Tokenizer::bytes());
    CHECK(read_file(tmp / "b/model.safetensors", 1 << 24) == read_file(tmp / "c/model.safetensors", 1 << 24));
}

TEST_CASE("hf_gpt2: a model of the gpt layout exports fused and computes the same logits") {
    auto g = lesson_model(5);   // q_proj, k_proj, v_proj, ...
    TempDir tmp;
    export_hf_gpt2(tmp.path, *g, Tokenizer::bytes());
    auto m = load_hf_gpt2_model(tmp.path);
    CHECK(m->config.model_type == "gpt2");
    std::string why;
    std::vector<float> a = logits_of(*g), b = logits_of(*m);
    CHECK_MESSAGE(allclose(b, std::vector<double>(a.begin(), a.end()), 1e-5, 1e-5, &why), why);
}

// A byte-level BPE of 258 tokens: the 256 bytes, "Ġt" (merge "Ġ t") and <|endoftext|>.
static void write_tiny_tokenizer(const std::string& dir) {
    json vocab = json::object();
    for (int b = 0; b < 256; b++) {
        std::string tok;
        utf8_append(tok, byte_to_unicode()[size_t(b)]);
        vocab[tok] = b;
    }
    vocab["\u0120t"] = 256;
    vocab["<|endoftext|>"] = 257;
    std::ofstream(dir + "/vocab.json") << vocab.dump();
    std::ofstream(dir + "/merges.txt") << "#version: 0.2\n\u0120 t\n";
}

TEST_CASE("hf_gpt2: a folder with its tokenizer loads wherever a model is taken, and exports it back") {
    auto src = hf::tiny_model(11, 258);
    TempDir tmp;
    hf::write_folder(tmp / "m", *src);
    write_tiny_tokenizer(tmp / "m");
    Checkpoint ck = load_checkpoint(tmp / "m");   // what --model, --base and friends call
    CHECK(ck.tokenizer.kind() == Tokenizer::Kind::Bpe);
    CHECK(ck.tokenizer.eot_id() == 257);
    CHECK(ck.tokenizer.encode(" t t") == std::vector<int32_t>{256, 256});
    CHECK(same_params(*ck.model, *src));
    export_hf_gpt2(tmp / "out", *ck.model, ck.tokenizer);
    Checkpoint back = load_checkpoint(tmp / "out");
    CHECK(back.tokenizer == ck.tokenizer);
    CHECK(same_params(*back.model, *src));
    CHECK(json::parse(read_file(tmp / "out/config.json", 1 << 20))["eos_token_id"] == 257);
    // A vocabulary larger than the embedding: refused before any weight is read.
    auto small = hf::tiny_model(12, 257);
    hf::write_folder(tmp / "small", *small);
    write_tiny_tokenizer(tmp / "small");
    CHECK_THROWS_AS(load_checkpoint(tmp / "small"), FileError);
    try { load_checkpoint(tmp / "small"); } catch (const FileError& e) { CHECK(std::string(e.what()).find("config.json") != std::string::npos); }
    // No tokenizer files: one error naming the folder.
    hf::write_folder(tmp / "bare", *src);
    CHECK_THROWS_WITH_AS(load_checkpoint(tmp / "bare"), doctest::Contains("no tokenizer"), FileError);
}

// ---- HF-format adapters on a GPT-2 base

TEST_CASE("hf_gpt2: LoRA on a gpt2 base defaults to c_attn with HF's keys, shapes and fan_in_fan_out") {
    auto m = hf::tiny_model(6);
    Rng rng(1);
    auto lora = make_method({{"peft_type", "LORA"}, {"r", 4}}, *m, rng);
    CHECK(lora->config_json()["target_modules"] == json::array({"c_attn"}));
    CHECK(lora->config_json()["fan_in_fan_out"] == true);
    std::map<std::string, Shape> keys;
    for (auto& [name, t] : lora->state()) keys[name] = t.shape();
    CHECK(keys == std::map<std::string, Shape>{
                      {"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", Shape{4, 16}},
                      {"base_model.model.transformer.h.0.attn.c_attn.lora_B.weight", Shape{48, 4}},
                      {"base_model.model.transformer.h.1.attn.c_attn.lora_A.weight", Shape{4, 16}},
                      {"base_model.model.transformer.h.1.attn.c_attn.lora_B.weight", Shape{48, 4}}});
    CHECK(lora->expected_params(m->config) == lora->params.count());
}

TEST_CASE("hf_gpt2: target names match by suffix as HF does (c_proj is both, attn.c_proj one)") {
    auto names = [](const json& targets) {
        auto m = hf::tiny_model(7);
        Rng rng(1);
        auto lora = make_method({{"peft_type", "LORA"}, {"r", 2}, {"target_modules", targets}}, *m, rng);
        std::vector<std::string> out;
        for (auto& [name, t] : lora->state())
            if (name.find("lora_A") != std::string::npos && name.find(".h.0.") != std::string::npos) out.push_back(name);
        return out;
    };
    CHECK(names({"c_proj"}) == std::vector<std::string>{"base_model.model.transformer.h.0.attn.c_proj.lora_A.weight",
                                                        "base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight"});
    CHECK(names({"attn.c_proj"}) == std::vector<std::string>{"base_model.model.transformer.h.0.attn.c_proj.lora_A.weight"});
    CHECK(names({"c_fc", "mlp.c_proj"}) == std::vector<std::string>{"base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight",
                                                                    "base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight"});
}

TEST_CASE("hf_gpt2: IA3 on a gpt2 base uses HF's defaults and ia3_l shapes") {
    auto m = hf::tiny_model(8);
    Rng rng(1);
    auto ia3 = make_method({{"peft_type", "IA3"}}, *m, rng);
    CHECK(ia3->config_json()["target_modules"] == json::array({"c_attn", "mlp.c_proj"}));
    CHECK(ia3->config_json()["feedforward_modules"] == json::array({"mlp.c_proj"}));
    std::map<std::string, Shape> keys;
    for (auto& [name, t] : ia3->state()) keys[name] = t.shape();
    CHECK(keys.at("base_model.model.transformer.h.1.attn.c_attn.ia3_l") == Shape{48, 1});
    CHECK(keys.at("base_model.model.transformer.h.1.mlp.c_proj.ia3_l") == Shape{1, 64});
    CHECK(keys.size() == 4);
}

TEST_CASE("hf_gpt2: an adapter folder as HF PEFT writes it for gpt2 loads and gives the formula's logits") {
    auto m = hf::tiny_model(9);
    TempDir tmp;
    // HF PEFT's adapter_config.json for GPT2LMHeadModel, every field it writes.
    const json cfg = {{"alpha_pattern", json::object()}, {"auto_mapping", nullptr}, {"base_model_name_or_path", "gpt2"},
                      {"bias", "none"}, {"fan_in_fan_out", true}, {"inference_mode", true}, {"init_lora_weights", true},
                      {"layers_pattern", nullptr}, {"layers_to_transform", nullptr}, {"lora_alpha", 8},
                      {"lora_dropout", 0.1}, {"modules_to_save", nullptr}, {"peft_type", "LORA"}, {"r", 2},
                      {"rank_pattern", json::object()}, {"revision", nullptr}, {"target_modules", {"c_attn"}},
                      {"task_type", "CAUSAL_LM"}, {"use_dora", false}, {"use_rslora", false}};
    std::ofstream(tmp / "adapter_config.json") << cfg.dump(2);
    Rng rng(3);
    std::vector<std::pair<std::string, Tensor>> tensors;
    std::vector<Tensor> A(2), B(2);
    for (int l = 0; l < 2; l++) {
        const std::string p = fmt::format("base_model.model.transformer.h.{}.attn.c_attn.", l);
        A[size_t(l)] = Tensor::randn({2, 16}, rng, 0.3f), B[size_t(l)] = Tensor::randn({48, 2}, rng, 0.3f);
        tensors.push_back({p + "lora_A.weight", A[size_t(l)]});
        tensors.push_back({p + "lora_B.weight", B[size_t(l)]});
    }
    save_safetensors(tmp / "adapter_model.safetensors", tensors, {{"format", "pt"}});
    const std::vector<float> base = logits_of(*m);
    // The formula on a copy: HF's Conv1D weight W (in, out) gains s·(B A)ᵀ, i.e. ours (out, in) gains s·B A.
    auto ref = hf::tiny_model(9);
    for (int l = 0; l < 2; l++) {
        float* W = ref->params.get(fmt::format("transformer.h.{}.attn.c_attn.weight", l)).data();
        for (int64_t o = 0; o < 48; o++)
            for (int64_t i = 0; i < 16; i++) {
                double d = 0;
                for (int64_t k = 0; k < 2; k++) d += double(B[size_t(l)].data()[o * 2 + k]) * A[size_t(l)].data()[k * 16 + i];
                W[o * 16 + i] += float(4.0 * d);   // s = lora_alpha / r = 4
            }
    }
    Rng r2(0);
    PeftModel pm(*m);
    pm.add("hf", load_adapter(tmp.path, *m, r2));
    std::vector<float> got = logits_of(*m), want = logits_of(*ref);
    std::string why;
    CHECK_MESSAGE(allclose(got, std::vector<double>(want.begin(), want.end()), 1e-5, 1e-5, &why), why);
    CHECK(got != base);
    // Saved again, the folder has the same keys and shapes and says fan_in_fan_out: true.
    save_adapter(tmp / "again", *pm.active(), *m);
    SafeTensors st = load_safetensors(tmp / "again/adapter_model.safetensors");
    CHECK(st.tensors.size() == 4);
    CHECK(st.at("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight").shape() == Shape{48, 2});
    CHECK(json::parse(read_file(tmp / "again/adapter_config.json", 1 << 20))["fan_in_fan_out"] == true);
}

TEST_CASE("hf_gpt2: fan_in_fan_out true is refused on a model of the gpt layout") {
    auto g = lesson_model(10);
    Rng rng(1);
    CHECK_THROWS_WITH_AS(make_method({{"peft_type", "LORA"}, {"fan_in_fan_out", true}}, *g, rng),
                         doctest::Contains("`fan_in_fan_out` = true is for Conv1D layers"), ValueError);
}

}  // TEST_SUITE
