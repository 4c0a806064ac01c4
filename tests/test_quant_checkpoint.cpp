// tests/test_quant_checkpoint.cpp — a quantised base on disk and on its way in: a quantised
// checkpoint keeps the blocks as they are (models/checkpoint.h), a float32 checkpoint or HF folder
// is quantised tensor by tensor as it is read, and a file whose blocks do not fit its config, or
// whose scales are NaN or Inf, is refused naming the tensor.
#include <cmath>
#include <cstring>
#include "hf_helpers.h"
#include "peft_helpers.h"
#include "engine/fileio.h"
#include "engine/half.h"
#include "engine/memory.h"
#include "engine/quant.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "models/hf_gpt2.h"
#include "peft/adapter_files.h"

TEST_SUITE("quant") {

static const QType kTypes[] = {QType::Q8_0, QType::Q4_0, QType::NF4};

static doctest::Contains has(const std::string& s) { return doctest::Contains(s.c_str()); }

// The lesson GPT made wide enough for 64-value blocks, every parameter away from its init.
static std::unique_ptr<GPT> wide_model(uint64_t seed = 3) {
    GPTConfig c = lesson_config();
    c.n_embd = 64;
    Rng rng(seed);
    auto m = std::make_unique<GPT>(c, rng);
    for (const Param& p : m->params.all())
        for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] += float(rng.normal() * 0.05);
    m->params.freeze_all();
    return m;
}

static bool same_blocks(GPT& a, GPT& b) {
    auto la = a.linears(), lb = b.linears();
    for (size_t i = 0; i < la.size(); i++) {
        const QWeight *qa = la[i].second->qweight.get(), *qb = lb[i].second->qweight.get();
        if (!qa || !qb || qa->type != qb->type || qa->nbytes() != qb->nbytes() ||
            std::memcmp(qa->blocks->data(), qb->blocks->data(), qa->nbytes()) != 0)
            return false;
    }
    return true;
}

// Every tensor of a safetensors file, as it is stored, to write back changed (save_safetensors_streamed).
struct Stored {
    std::vector<StreamedTensor> specs;
    std::vector<std::vector<unsigned char>> bytes;
    std::map<std::string, std::string> metadata;
    explicit Stored(const std::string& path) {
        SafeTensorsFile f(path);
        metadata = f.metadata();
        for (const TensorInfo& t : f.tensors()) {
            specs.push_back({t.name, t.shape, t.dtype == "U8"});
            bytes.emplace_back(size_t(t.end - t.begin));
            if (t.dtype == "U8") f.read_bytes(t, bytes.back().data());
            else f.read_f32(t, reinterpret_cast<float*>(bytes.back().data()));
        }
    }
    size_t index(const std::string& name) const {
        for (size_t i = 0; i < specs.size(); i++)
            if (specs[i].name == name) return i;
        FAIL("no tensor " << name);
        return 0;
    }
    void write(const std::string& path) const {
        save_safetensors_streamed(path, specs, [this](size_t i, void* dst) {
            std::memcpy(dst, bytes[i].data(), bytes[i].size());
        }, metadata);
    }
};

TEST_CASE("quant checkpoint: the blocks are saved as they are: U8 tensors of the format's shape, reloaded bit for bit") {
    TempDir tmp;
    for (QType t : kTypes) {
        CAPTURE(qtype_name(t));
        auto m = wide_model();
        const Tokenizer tok = Tokenizer::bytes();
        m->quantize(t);
        const std::vector<float> before = logits_of(*m);
        const std::string path = tmp / fmt::format("{}.safetensors", qtype_name(t));
        save_checkpoint(path, *m, Tokenizer::deserialize(R"({"kind":"char","chars":"abcdefghijklm"})"));
        {
            SafeTensorsFile f(path);
            CHECK(f.metadata().at("peft.quantize") == qtype_name(t));
            const TensorInfo* fc = f.find("transformer.h.0.mlp.fc_in.weight");   // (256, 64): 256 rows of 64 / n blocks
            REQUIRE(fc);
            CHECK(fc->dtype == "U8");
            CHECK(fc->shape == Shape{256, 64 / qblock_values(t) * qblock_bytes(t)});
            CHECK(f.find("transformer.wte.weight")->dtype == "F32");   // the embedding and LM head stay float32
        }
        Checkpoint ck = load_checkpoint(path);
        CHECK(ck.model->quantized_as() == t);
        CHECK(same_blocks(*ck.model, *m));
        CHECK(logits_of(*ck.model) == before);
        Checkpoint again = load_checkpoint(path, t);   // the same format asked again: kept as it is
        CHECK(same_blocks(*again.model, *m));
        CHECK_THROWS_WITH_AS(load_checkpoint(path, t == QType::Q8_0 ? QType::NF4 : QType::Q8_0),
                             has(fmt::format("holds {} blocks: --quantize", qtype_name(t))), ValueError);
    }
}

TEST_CASE("quant checkpoint: quantising while loading equals quantising after, and the float32 block weights never coexist") {
    TempDir tmp;
    auto m = wide_model();
    const std::string path = tmp / "f32.safetensors";
    save_checkpoint(path, *m, Tokenizer::deserialize(R"({"kind":"char","chars":"abcdefghijklm"})"));
    int64_t block_floats = 0;
    for (auto& [name, lin] : m->linears()) block_floats += lin->weight.nbytes();
    const int64_t largest = 4 * 256 * 64;   // fc_in or fc_out: the one float32 copy a loader may hold
    const int64_t work = mem_stats().cur(Mem::Workspace);
    mem_reset_peak();
    load_checkpoint(path);   // the workspace a float32 load takes (small tensors on their way to parameters)
    const int64_t float_load = mem_stats().pk(Mem::Workspace) - work;
    for (QType t : kTypes) {
        CAPTURE(qtype_name(t));
        Checkpoint after = load_checkpoint(path);
        after.model->params.freeze_all();
        after.model->quantize(t);
        const int64_t params0 = mem_stats().cur(Mem::Params), work0 = mem_stats().cur(Mem::Workspace);
        mem_reset_peak();
        Checkpoint during = load_checkpoint(path, t);
        // Only the float32 tensors that stay float32 (and at most one block weight's worth more) were allocated.
        const int64_t kept = mem_stats().cur(Mem::Params) - params0;
        CHECK(mem_stats().pk(Mem::Params) - params0 <= kept + largest);
        CHECK(mem_stats().pk(Mem::Workspace) - work0 <= float_load + largest);
        CHECK(mem_stats().pk(Mem::Params) - params0 < kept + block_floats / 2);
        CHECK(same_blocks(*during.model, *after.model));
        CHECK(logits_of(*during.model) == logits_of(*after.model));
    }
}

TEST_CASE("quant checkpoint: an HF GPT-2 folder is quantised as it is read, equal to quantising after") {
    GPTConfig c = hf::tiny_gpt2();
    c.n_embd = 64;
    Rng rng(4);
    GPT src(c, rng);
    TempDir tmp;
    hf::write_folder(tmp / "gpt2", src);
    for (QType t : kTypes) {
        CAPTURE(qtype_name(t));
        auto after = load_hf_gpt2_model(tmp / "gpt2");
        after->params.freeze_all();
        after->quantize(t);
        auto during = load_hf_gpt2_model(tmp / "gpt2", t);
        CHECK(during->quantized_as() == t);
        CHECK(same_blocks(*during, *after));
    }
}

TEST_CASE("quant checkpoint: blocks that do not fit the config, NaN or Inf scales, an unknown format are refused naming the tensor") {
    TempDir tmp;
    auto m = wide_model();
    const Tokenizer tok = Tokenizer::deserialize(R"({"kind":"char","chars":"abcdefghijklm"})");
    const std::string fc = "transformer.h.1.mlp.fc_in.weight";   // (256, 64)
    for (QType t : kTypes) {
        CAPTURE(qtype_name(t));
        auto q = wide_model();
        q->quantize(t);
        const std::string good = tmp / "good.safetensors";
        save_checkpoint(good, *q, tok);
        const int64_t bb = qblock_bytes(t), per_row = 64 / qblock_values(t);

        Stored s(good);   // one block too few in every row of fc_in
        const size_t i = s.index(fc);
        s.specs[i].shape = Shape{256, (per_row - 1) * bb};
        s.bytes[i].resize(size_t(256 * (per_row - 1) * bb));
        if (per_row > 1) {
            s.write(tmp / "short.safetensors");
            CHECK_THROWS_WITH_AS(load_checkpoint(tmp / "short.safetensors"),
                                 has(fmt::format("tensor '{}' is U8[256, {}] but the config needs U8[256, {}] ({} "
                                                               "blocks of the weight [256, 64])", fc, (per_row - 1) * bb,
                                                               per_row * bb, qtype_name(t))), FileError);
        }
        Stored rows(good);   // a block count that is right in bytes but not in shape
        rows.specs[rows.index(fc)].shape = Shape{128, 2 * per_row * bb};
        rows.write(tmp / "reshaped.safetensors");
        CHECK_THROWS_WITH_AS(load_checkpoint(tmp / "reshaped.safetensors"), doctest::Contains("is U8[128, "), FileError);

        // A scale that is NaN, +Inf, or (nf4's absmax) negative, in row 3's second block.
        const size_t at = size_t((3 * per_row + std::min<int64_t>(1, per_row - 1)) * bb);
        const int64_t column = std::min<int64_t>(1, per_row - 1) * qblock_values(t);
        const std::vector<float> bad_nf4 = {NAN, INFINITY, -0.5f};
        const std::vector<uint16_t> bad_half = {0x7E00, 0x7C00, 0xFC00};   // NaN, +Inf, −Inf
        for (size_t k = 0; k < 3; k++) {
            Stored b(good);
            unsigned char* block = b.bytes[b.index(fc)].data() + at;
            if (t == QType::NF4) std::memcpy(block, &bad_nf4[k], 4);
            else std::memcpy(block, &bad_half[k], 2);
            b.write(tmp / "scale.safetensors");
            CHECK_THROWS_WITH_AS(load_checkpoint(tmp / "scale.safetensors"),
                                 has(fmt::format("{}: the {} block of row 3 at column {} has scale", fc,
                                                               qtype_name(t), column)), FileError);
        }
    }
    Stored s(tmp / "good.safetensors");
    s.metadata["peft.quantize"] = "q3_k";
    s.write(tmp / "format.safetensors");
    CHECK_THROWS_WITH_AS(load_checkpoint(tmp / "format.safetensors"),
                         doctest::Contains("'peft.quantize' is 'q3_k', not a known format"), FileError);
    s.metadata.erase("peft.quantize");   // blocks where a float32 weight belongs
    s.write(tmp / "unmarked.safetensors");
    CHECK_THROWS_WITH_AS(load_checkpoint(tmp / "unmarked.safetensors"),
                         doctest::Contains("tensor 'transformer.h.0.mlp.fc_in.weight' is U8[256, 36] but the config needs F32[256, 64]"),
                         FileError);

    // A model half quantised (a Linear dequantised again) is not saved: its file could not be read back.
    auto half = wide_model();
    half->quantize(QType::Q4_0);
    half->linears()[2].second->dequantize();
    CHECK_THROWS_WITH_AS(save_checkpoint(tmp / "half.safetensors", *half, tok),
                         doctest::Contains("'transformer.h.0.attn.v_proj.weight' is float32 while the other block Linears are q4_0"),
                         ValueError);
    CHECK_FALSE(std::filesystem::exists(tmp / "half.safetensors"));
    const std::string before = read_file(tmp / "good.safetensors", size_t(1) << 30);   // over a file: it stays as it was
    CHECK_THROWS_AS(save_checkpoint(tmp / "good.safetensors", *half, tok), ValueError);
    CHECK(read_file(tmp / "good.safetensors", size_t(1) << 30) == before);

    // An adapter never holds blocks: a U8 tensor in one is refused by name.
    auto base = wide_model();
    Rng r(1);
    auto lora = make_method({{"peft_type", "LORA"}, {"r", 2}}, *base, r);
    save_adapter(tmp / "lora", *lora, *base);
    Stored a(tmp / "lora/adapter_model.safetensors");
    a.specs[0].u8 = true;
    a.specs[0].shape = Shape{int64_t(a.bytes[0].size())};
    a.write(tmp / "lora/adapter_model.safetensors");
    Rng r2(1);
    CHECK_THROWS_WITH_AS(load_adapter(tmp / "lora", *wide_model(), r2),
                         has(fmt::format("tensor '{}': unsupported dtype 'U8'", a.specs[0].name)), FileError);
}

}  // TEST_SUITE
