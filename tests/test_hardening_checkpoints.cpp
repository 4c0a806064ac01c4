// tests/test_hardening_checkpoints.cpp — untrusted and damaged model checkpoints, as
// docs/FAILURES.md table A lists them (truncation, bit flips, NaN/Inf), and missing,
// extra or inconsistent contents.
// Every test asserts the error class and a fragment of the message, which must name the file,
// tensor, field or value at fault; "never a crash" means any other exception fails.
#include <cmath>
#include "hardening_helpers.h"
#include "engine/fileio.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"

namespace {

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

TEST_CASE("hardening: a checkpoint truncated at any length is a FileError") {
    TempDir s;
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
    TempDir s;
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
    TempDir s;
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
    TempDir s;
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
    TempDir s;
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
    TempDir s;
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

}  // TEST_SUITE
