// models/hf_gpt2.cpp — import and export of Hugging Face GPT-2 folders (see hf_gpt2.h).
#include "hf_gpt2.h"
#include <sys/stat.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include "data/bpe.h"
#include "engine/fileio.h"
#include "engine/safetensors.h"

using json = nlohmann::json;

bool is_hf_folder(const std::string& path) {
    struct stat st{};
    return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && stat((path + "/config.json").c_str(), &st) == 0;
}

// ---- config.json

GPTConfig read_hf_gpt2_config(const std::string& path) {
    const json j = json::parse(read_file(path, 1 << 20), nullptr, false);
    ENGINE_CHECK(j.is_object(), FileError, "{}: not a JSON object", path);
    auto text = [&](const char* key, const char* def) {
        if (!j.contains(key) || j[key].is_null()) return std::string(def);
        ENGINE_CHECK(j[key].is_string(), FileError, "{}: '{}' is not a string", path, key);
        return j[key].get<std::string>();
    };
    const std::string type = text("model_type", "");
    ENGINE_CHECK(type == "gpt2", FileError,
                 "{}: model_type \"{}\" is not supported (this engine imports \"gpt2\" models: gpt2, distilgpt2, "
                 "gpt2-medium/large/xl)", path, type);
    const std::string act = text("activation_function", "gelu_new");
    ENGINE_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh", FileError,
                 "{}: activation_function \"{}\" is not supported (the model computes the tanh GELU, \"gelu_new\")",
                 path, act);
    auto integer = [&](const char* key) {
        ENGINE_CHECK(j.contains(key) && j[key].is_number_integer(), FileError, "{}: '{}' missing or not an integer",
                     path, key);
        return j[key].get<int64_t>();
    };
    GPTConfig c;
    c.model_type = "gpt2";
    c.n_embd = integer("n_embd");
    c.n_head = integer("n_head");
    c.n_layer = integer("n_layer");
    c.block_size = integer("n_positions");
    c.vocab_size = integer("vocab_size");
    c.dropout = 0.f;
    c.bias = true;
    if (j.contains("layer_norm_epsilon")) {
        ENGINE_CHECK(j["layer_norm_epsilon"].is_number(), FileError, "{}: 'layer_norm_epsilon' is not a number", path);
        c.layer_norm_epsilon = j["layer_norm_epsilon"].get<float>();
    }
    // Options that would change what the model computes: refuse rather than compute something else.
    auto refuse_unless = [&](const char* key, const json& want, const char* why) {
        if (j.contains(key) && !j[key].is_null() && j[key] != want)
            throw FileError(fmt::format("{}: '{}' = {} is not supported ({})", path, key, j[key].dump(), why));
    };
    if (j.contains("n_inner") && !j["n_inner"].is_null() && j["n_inner"] != json(4 * c.n_embd))
        throw FileError(fmt::format("{}: 'n_inner' = {} is not supported (the MLP is 4 × n_embd = {} wide)", path,
                                    j["n_inner"].dump(), 4 * c.n_embd));
    refuse_unless("scale_attn_weights", true, "attention scores are scaled by 1/√head_dim");
    refuse_unless("scale_attn_by_inverse_layer_idx", false, "no per-layer attention scaling");
    refuse_unless("add_cross_attention", false, "a decoder without cross-attention");
    refuse_unless("tie_word_embeddings", true, "the LM head is the token embedding");
    try {
        c.validate();
    } catch (const ValueError& e) {
        throw FileError(fmt::format("{}: {}", path, e.what()));
    }
    return c;
}

// ---- model.safetensors

namespace {

// HF's name for each of our parameters, without the optional "transformer." prefix, and whether
// it is a Conv1D weight (stored transposed).
struct HfName {
    std::string ours, hf;
    bool conv1d;
};

std::vector<HfName> hf_names(const GPT& m) {
    std::vector<HfName> out;
    for (const Param& p : m.params.all()) {
        const std::string hf = p.name.substr(std::strlen("transformer."));   // every name starts with it
        const bool conv = p.tensor.ndim() == 2 && p.name.find(".h.") != std::string::npos;
        out.push_back({p.name, hf, conv});
    }
    return out;
}

bool is_mask_buffer(const std::string& name) {   // h.{i}.attn.bias, h.{i}.attn.masked_bias
    auto ends = [&](const char* s) {
        const size_t n = std::strlen(s);
        return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
    };
    return ends(".attn.bias") || ends(".attn.masked_bias");
}

void transpose(const float* src, int64_t rows, int64_t cols, float* dst) {   // src (rows, cols) -> dst (cols, rows)
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
    for (int64_t c = 0; c < cols; c++)
        for (int64_t r = 0; r < rows; r++) dst[c * rows + r] = src[r * cols + c];
}

}  // namespace

std::unique_ptr<GPT> load_hf_gpt2_model(const std::string& dir, std::optional<QType> quantize) {
    const GPTConfig cfg = read_hf_gpt2_config(dir + "/config.json");
    const std::string file = dir + "/model.safetensors";
    SafeTensorsFile st(file);

    // Which key style: the hub's "h.0...." or save_pretrained's "transformer.h.0....".
    const std::string prefix = st.find("transformer.wte.weight") ? "transformer." : "";
    auto model = std::make_unique<GPT>(cfg, quantize);   // zeros until read
    const std::vector<HfName> names = hf_names(*model);

    // Check every name, shape and dtype before reading a single weight.
    std::vector<std::string> problems;
    std::vector<const TensorInfo*> found;
    for (const HfName& n : names) {
        const TensorInfo* t = st.find(prefix + n.hf);
        const Tensor& p = model->params.get(n.ours);
        found.push_back(t);
        if (!t) { problems.push_back(fmt::format("missing tensor '{}'", prefix + n.hf)); continue; }
        const Shape ours = p.shape();
        const Shape hf = n.conv1d ? Shape{ours.dims[1], ours.dims[0]} : ours;
        if (t->shape != hf)
            problems.push_back(fmt::format("tensor '{}' is {} but config.json needs {}", t->name, t->shape.str(), hf.str()));
    }
    const TensorInfo* lm_head = nullptr;
    for (const TensorInfo& t : st.tensors()) {
        if (is_mask_buffer(t.name)) continue;
        if (t.name == "lm_head.weight") { lm_head = &t; continue; }
        const bool ours = t.name.rfind(prefix, 0) == 0 && model->params.find("transformer." + t.name.substr(prefix.size()));
        if (!ours) problems.push_back(fmt::format("unexpected tensor '{}'", t.name));
    }
    if (lm_head && lm_head->shape != Shape{cfg.vocab_size, cfg.n_embd})
        problems.push_back(fmt::format("tensor 'lm_head.weight' is {} but the tied head needs [{}, {}]",
                                       lm_head->shape.str(), cfg.vocab_size, cfg.n_embd));
    refuse_problems(fmt::format("{}: does not match {}/config.json:", file, dir), problems);

    // Tensor by tensor into the model's own storage (or, quantising, its blocks); a Conv1D weight
    // through one buffer of its size.
    std::vector<float> buf;
    LinearLoader load{quantize, {}};
    for (size_t i = 0; i < names.size(); i++) {
        Tensor& p = model->params.get(names[i].ours);
        const TensorInfo& t = *found[i];
        Linear* lin = model->linear_of(names[i].ours);
        float* dst = load.destination(lin, p);
        if (names[i].conv1d) {
            buf.resize(size_t(p.numel()));
            st.read_f32(t, buf.data());
            transpose(buf.data(), t.shape.dims[0], t.shape.dims[1], dst);
        } else {
            st.read_f32(t, dst);
        }
        load.store(lin, p, dst, file, t.name);
    }
    if (lm_head) {   // tied: it must be wte, compared a block of rows at a time
        const Tensor& wte = model->wte.weight;
        const int64_t C = cfg.n_embd, rows = std::max<int64_t>(1, (1 << 20) / C);
        buf.resize(size_t(rows * C));
        for (int64_t r0 = 0; r0 < cfg.vocab_size; r0 += rows) {
            const int64_t n = std::min(rows, cfg.vocab_size - r0);
            st.read_f32_rows(*lm_head, r0, n, buf.data());
            ENGINE_CHECK(std::memcmp(buf.data(), wte.data() + r0 * C, size_t(n * C) * sizeof(float)) == 0, FileError,
                         "{}: 'lm_head.weight' differs from the token embedding: an untied LM head is not supported",
                         file);
        }
    }
    return model;
}

Checkpoint load_hf_gpt2(const std::string& dir, std::optional<QType> quantize) {
    ENGINE_CHECK(Bpe::folder_has_files(dir), FileError,
                 "{}: no tokenizer: the folder needs vocab.json + merges.txt (or encoder.json + vocab.bpe)", dir);
    const GPTConfig cfg = read_hf_gpt2_config(dir + "/config.json");
    Checkpoint ck;
    ck.tokenizer = Tokenizer::bpe_folder(dir);   // first: a bad tokenizer reads no weights
    try {
        ck.tokenizer.check_fits(cfg.vocab_size, dir + "/config.json");
    } catch (const ValueError& e) {
        throw FileError(e.what());
    }
    ck.model = load_hf_gpt2_model(dir, quantize);
    return ck;
}

// ---- export

void export_hf_gpt2(const std::string& dir, const GPT& model, const Tokenizer& tok) {
    const GPTConfig& c = model.config;
    ENGINE_CHECK(c.bias, ValueError, "export: GPT-2 has biases in every Linear and LayerNorm; this model has none");
    make_dirs(dir);
    const int32_t eot = tok.eot_id() >= 0 ? tok.eot_id() : int32_t(c.vocab_size - 1);   // GPT-2's <|endoftext|>
    json cfg = {{"architectures", json::array({"GPT2LMHeadModel"})},
                {"model_type", "gpt2"},
                {"activation_function", "gelu_new"},
                {"n_embd", c.n_embd},
                {"n_head", c.n_head},
                {"n_layer", c.n_layer},
                {"n_positions", c.block_size},
                {"n_ctx", c.block_size},
                {"n_inner", nullptr},
                {"vocab_size", c.vocab_size},
                {"layer_norm_epsilon", c.layer_norm_epsilon},
                {"resid_pdrop", c.dropout},
                {"embd_pdrop", c.dropout},
                {"attn_pdrop", 0.0},
                {"initializer_range", 0.02},
                {"scale_attn_weights", true},
                {"scale_attn_by_inverse_layer_idx", false},
                {"reorder_and_upcast_attn", false},
                {"tie_word_embeddings", true},
                {"bos_token_id", eot},
                {"eos_token_id", eot},
                {"use_cache", true},
                {"torch_dtype", "float32"}};

    // Each tensor in HF's layout, produced one at a time while the file is written.
    struct Out {
        std::string name;
        Shape shape;
        std::function<void(float*)> fill;
    };
    std::vector<Out> outs;
    GPT& m = const_cast<GPT&>(model);   // linears() hands out pointers; nothing is changed
    auto plain = [&](const std::string& ours) {
        const Tensor t = m.params.get(ours);
        outs.push_back({ours, t.shape(), [t](float* dst) { std::memcpy(dst, t.data(), t.nbytes()); }});
    };
    // rows of several (out_i, in) weights stacked, then transposed: HF's (in, Σ out_i)
    auto conv = [&](const std::string& name, std::vector<Tensor> parts) {
        int64_t out = 0;
        for (const Tensor& p : parts) out += p.size(0);
        const int64_t in = parts[0].size(1);
        outs.push_back({name, Shape{in, out}, [parts, in, out](float* dst) {
            std::vector<float> stacked(size_t(in * out));
            int64_t row = 0;
            for (const Tensor& p : parts) {
                std::memcpy(stacked.data() + row * in, p.data(), p.nbytes());
                row += p.size(0);
            }
            transpose(stacked.data(), out, in, dst);
        }});
    };
    auto bias = [&](const std::string& name, std::vector<Tensor> parts) {
        int64_t n = 0;
        for (const Tensor& p : parts) n += p.numel();
        outs.push_back({name, Shape{n}, [parts](float* dst) {
            for (const Tensor& p : parts) dst = std::copy(p.data(), p.data() + p.numel(), dst);
        }});
    };
    plain("transformer.wte.weight");
    plain("transformer.wpe.weight");
    for (int64_t l = 0; l < c.n_layer; l++) {
        const std::string p = fmt::format("transformer.h.{}.", l);
        Block& b = m.h[size_t(l)];
        for (const char* ln : {"ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"}) plain(p + ln);
        std::vector<const Linear*> qkv = c.model_type == "gpt2"
                                             ? std::vector<const Linear*>{&b.attn.c_attn}
                                             : std::vector<const Linear*>{&b.attn.q_proj, &b.attn.k_proj, &b.attn.v_proj};
        std::vector<Tensor> w, bs;
        for (const Linear* lin : qkv) w.push_back(lin->weight), bs.push_back(lin->bias);
        conv(p + "attn.c_attn.weight", w);
        bias(p + "attn.c_attn.bias", bs);
        conv(p + "attn.c_proj.weight", {b.attn.o_proj.weight});
        bias(p + "attn.c_proj.bias", {b.attn.o_proj.bias});
        conv(p + "mlp.c_fc.weight", {b.mlp.fc_in.weight});
        bias(p + "mlp.c_fc.bias", {b.mlp.fc_in.bias});
        conv(p + "mlp.c_proj.weight", {b.mlp.fc_out.weight});
        bias(p + "mlp.c_proj.bias", {b.mlp.fc_out.bias});
    }
    plain("transformer.ln_f.weight");
    plain("transformer.ln_f.bias");

    std::vector<StreamedTensor> shapes;
    for (const Out& o : outs) shapes.push_back({o.name, o.shape});
    // A Linear whose wrap is set (an adapter still attached) would not be what is written: the
    // caller merges first, so the weights are the whole model.
    for (auto& [name, lin] : m.linears())
        ENGINE_CHECK(!lin->wrap, ValueError, "export: '{}' still has an adapter attached; merge it first", name);
    save_safetensors_streamed(dir + "/model.safetensors", shapes,
                              [&](size_t i, void* dst) { outs[i].fill(static_cast<float*>(dst)); }, {{"format", "pt"}});
    atomic_write_file(dir + "/config.json", cfg.dump(2) + "\n");
    if (const Bpe* bpe = tok.bpe_model()) {   // GPT2Tokenizer.from_pretrained reads these two
        atomic_write_file(dir + "/vocab.json", bpe->vocab_json());
        atomic_write_file(dir + "/merges.txt", bpe->merges_txt());
    }
}
