// models/checkpoint.cpp — save / load a GPT with its config and tokenizer, float32 or quantised.
#include "checkpoint.h"
#include <cmath>
#include <cstring>
#include "engine/safetensors.h"
#include "models/hf_gpt2.h"

void check_finite(const float* v, int64_t n, const std::string& file, const std::string& tensor) {
    for (int64_t i = 0; i < n; i++)
        ENGINE_CHECK(std::isfinite(v[i]), FileError, "{}: tensor '{}' holds a non-finite value at index {}", file, tensor, i);
}

void refuse_problems(const std::string& header, const std::vector<std::string>& problems) {
    if (problems.empty()) return;
    std::string msg = header;
    for (size_t i = 0; i < problems.size() && i < 10; i++) msg += "\n  " + problems[i];
    if (problems.size() > 10) msg += fmt::format("\n  ... and {} more", problems.size() - 10);
    throw FileError(msg);
}

float* LinearLoader::destination(Linear* lin, Tensor& param) {
    if (!quantize || !lin) return param.data();
    if (!buf.defined() || buf.numel() != param.numel()) {   // one float32 block weight at a time
        buf = Tensor();
        buf = Tensor::empty(param.shape());
    }
    return buf.data();
}

void LinearLoader::store(Linear* lin, Tensor& param, const float* values, const std::string& file,
                         const std::string& tensor) {
    check_finite(values, param.numel(), file, tensor);
    if (!quantize || !lin) return;   // read straight into the parameter
    lin->set_quantized(QWeight::quantize(buf.view_as(param.shape()), *quantize, tensor));
}

void save_checkpoint(const std::string& path, const GPT& model, const Tokenizer& tok,
                     const std::map<std::string, std::string>& extra) {
    GPT& m = const_cast<GPT&>(model);   // linear_of() is not const; nothing changes
    const std::optional<QType> q = m.quantized_as();
    std::vector<StreamedTensor> specs;
    std::vector<const Linear*> blocks;   // per tensor: the quantised Linear whose blocks it is, or null
    for (const Param& p : model.params.all()) {
        const Linear* lin = m.linear_of(p.name);
        ENGINE_CHECK(!lin || !q || lin->quantized(), ValueError,
                     "{}: not saved: '{}' is float32 while the other block Linears are {}; quantize() or dequantize() "
                     "the whole model first", path, p.name, qtype_name(*q));
        if (lin && lin->quantized()) {
            specs.push_back({p.name, QWeight::stored_shape(lin->qweight->type, lin->out, lin->in, p.name), true});
            blocks.push_back(lin);
            continue;
        }
        // Saved over a good checkpoint, a NaN would replace it with one that load_checkpoint refuses.
        for (int64_t i = 0; i < p.tensor.numel(); i++)
            ENGINE_CHECK(std::isfinite(p.tensor.data()[i]), NumericError,
                         "{}: not saved: tensor '{}' holds a non-finite value at index {}", path, p.name, i);
        specs.push_back({p.name, p.tensor.shape(), false});
        blocks.push_back(nullptr);
    }
    std::map<std::string, std::string> meta = extra;
    meta["format"] = "pt";
    meta["peft.model_config"] = model.config.to_json();
    meta["peft.tokenizer"] = tok.serialize();
    if (q) meta["peft.quantize"] = qtype_name(*q);
    const std::vector<Param>& all = model.params.all();
    save_safetensors_streamed(path, specs, [&](size_t i, void* dst) {
        if (blocks[i]) std::memcpy(dst, blocks[i]->qweight->blocks->data(), blocks[i]->qweight->nbytes());
        else std::memcpy(dst, all[i].tensor.data(), all[i].tensor.nbytes());
    }, meta);
}

Checkpoint load_checkpoint(const std::string& path, std::optional<QType> quantize) {
    if (is_hf_folder(path)) return load_hf_gpt2(path, quantize);   // a Hugging Face GPT-2 folder (models/hf_gpt2.h)
    SafeTensorsFile st(path);
    const std::map<std::string, std::string>& meta = st.metadata();
    ENGINE_CHECK(meta.count("peft.model_config"), FileError,
                 "{}: no 'peft.model_config' in the metadata: not a peft.cpp model checkpoint", path);
    Checkpoint ck;
    ck.metadata = meta;
    GPTConfig cfg;
    try {
        cfg = GPTConfig::from_json(meta.at("peft.model_config"));
    } catch (const ValueError& e) {
        throw FileError(fmt::format("{}: bad model config: {}", path, e.what()));
    }
    if (meta.count("peft.tokenizer")) ck.tokenizer = Tokenizer::deserialize(meta.at("peft.tokenizer"));
    ENGINE_CHECK(ck.tokenizer.vocab_size() == cfg.vocab_size, FileError,
                 "{}: tokenizer has {} symbols but the model's vocab_size is {}", path, ck.tokenizer.vocab_size(),
                 cfg.vocab_size);
    // A quantised file's blocks are read as they are; quantising them again would only add error.
    std::optional<QType> stored;
    if (meta.count("peft.quantize")) {
        try {
            stored = parse_qtype(meta.at("peft.quantize"));
        } catch (const ValueError&) {
            throw FileError(fmt::format("{}: 'peft.quantize' is '{}', not a known format (q8_0, q4_0, nf4)", path,
                                        meta.at("peft.quantize")));
        }
        ENGINE_CHECK(!quantize || *quantize == *stored, ValueError,
                     "{} holds {} blocks: --quantize {} would quantise them again; drop --quantize, or start from the "
                     "float32 model", path, qtype_name(*stored), qtype_name(*quantize));
    }
    const std::optional<QType> as = stored ? stored : quantize;
    ck.model = std::make_unique<GPT>(cfg, as);   // zeros (quantised Linears as blocks) until read

    // Every name, dtype and shape first, before reading a single value.
    std::vector<std::string> problems;
    std::vector<const TensorInfo*> found;
    std::vector<Linear*> lins;   // per parameter: the block Linear whose weight it is, or null
    for (const Param& p : ck.model->params.all()) {
        const TensorInfo* t = st.find(p.name);
        found.push_back(t);
        lins.push_back(ck.model->linear_of(p.name));
        if (!t) { problems.push_back(fmt::format("missing tensor '{}'", p.name)); continue; }
        const bool blocks = stored && lins.back();
        const Shape want = blocks ? QWeight::stored_shape(*stored, p.tensor.size(0), p.tensor.size(1), p.name) : p.tensor.shape();
        const std::string dtype = blocks ? "U8" : "F32";
        if (t->dtype != dtype || t->shape != want)
            problems.push_back(fmt::format("tensor '{}' is {}{} but the config needs {}{}{}", p.name, t->dtype,
                                           t->shape.str(), dtype, want.str(),
                                           blocks ? fmt::format(" ({} blocks of the weight [{}, {}])", qtype_name(*stored),
                                                                p.tensor.size(0), p.tensor.size(1))
                                                  : ""));
    }
    for (const TensorInfo& t : st.tensors())
        if (!ck.model->params.find(t.name)) problems.push_back(fmt::format("unexpected tensor '{}'", t.name));
    refuse_problems(fmt::format("{}: checkpoint does not match its config:", path), problems);

    // Then one tensor at a time into the model: no second copy of the weights.
    LinearLoader load{stored ? std::nullopt : quantize, {}};
    const std::vector<Param>& all = ck.model->params.all();
    for (size_t i = 0; i < all.size(); i++) {
        Tensor p = all[i].tensor;
        if (stored && lins[i]) {
            auto bytes = std::make_shared<Storage>(size_t(found[i]->end - found[i]->begin), Mem::Quantized);
            st.read_bytes(*found[i], bytes->data());
            try {
                lins[i]->set_quantized(QWeight::from_blocks(*stored, p.size(0), p.size(1), bytes, all[i].name));
            } catch (const NumericError& e) {
                throw FileError(fmt::format("{}: {}", path, e.what()));
            }
            continue;
        }
        float* dst = load.destination(lins[i], p);
        st.read_f32(*found[i], dst);
        load.store(lins[i], p, dst, path, all[i].name);
    }
    return ck;
}
