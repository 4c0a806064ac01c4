// tests/test_hf_gpt2.cpp — Hugging Face GPT-2 folders: import in either key style and dtype,
// the Conv1D mapping against the naive reference, refusals that load nothing, and export
// round trips.
#include "hf_helpers.h"
#include "models/hf_gpt2.h"
#include "engine/safetensors.h"
#include "reference/naive_gpt.h"

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

}  // TEST_SUITE
