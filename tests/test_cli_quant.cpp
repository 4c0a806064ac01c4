// tests/test_cli_quant.cpp — `--quantize` through the real program (tests/cli_helpers.h): LoRA
// trains over a quantised base, eval, generate, forward and bench run over one, and each bad
// input is one error line with nothing written.
#include <cmath>
#include <fstream>
#include "cli_helpers.h"

namespace {

// A base of width 32 (the workspace's own is 16 wide: not whole 32-value blocks), made once.
const std::string& base32() {
    static const std::string path = [] {
        const Run r = peft(std::string("train --data c.txt --out base32 --steps 2 --n_layer 1 --n_head 2 --n_embd 32 --block 16 "
                                       "--batch 2 --eval_iters 1 --samples 0 --threads 1"));
        REQUIRE_MESSAGE(r.code == 0, r.err);
        return std::string("base32/model.safetensors");
    }();
    return path;
}

Run ok(const std::string& args) {
    const Run r = peft(args);
    INFO("peft " << args << "\nstderr: " << r.err);
    REQUIRE(r.code == 0);
    return r;
}

}  // namespace

TEST_CASE("cli: --quantize q4_0 trains LoRA over blocks counted in bytes as stored; eval, generate, forward run over them") {
    const nlohmann::json t = last_json(ok("train --base " + base32() + " --method lora --data t.tsv --out qlora --steps 2 "
                                          "--quantize q4_0 --json " + kQuick));
    // one layer: q, k, v, o (32 × 32 each), fc_in (128 × 32), fc_out (32 × 128): 12288 values, 18 bytes per 32
    CHECK(t["peak_quantized_bytes"] == 12288 / 32 * 18);
    CHECK(std::isfinite(t["train_loss"].get<double>()));
    CHECK(fs::exists(ws().dir + "/qlora/adapter_model.safetensors"));
    const std::string eval = "eval --model " + base32() + " --adapter qlora --data t.tsv --eval_iters 2 --accuracy_examples 3 --json --threads 1";
    const double fp32 = last_json(ok(eval))["val_loss"], q8 = last_json(ok(eval + " --quantize q8_0"))["val_loss"];
    CHECK(q8 != fp32);
    CHECK(std::fabs(q8 - fp32) < 0.01 * fp32);   // q8_0 is nearly lossless
    ok("generate --model " + base32() + " --adapter qlora --prompt '1+2=' --max_new 4 --quantize q4_0 --threads 1");
    const Run f = ok("forward --model " + base32() + " --text '1+2=' --out qlogits.safetensors --quantize q8_0 --threads 1");
    CHECK(f.out.find("tokens [4]") != std::string::npos);
    const nlohmann::json b = last_json(ok("bench --method lora --n_layer 1 --n_head 2 --n_embd 64 --steps 1 --warmup_steps 0 "
                                          "--quantize nf4 --json --threads 1"));
    CHECK(b["quantize"] == "nf4");
    CHECK(b["peak_quantized_bytes"] == 12 * 64 * 64 / 64 * 36);   // 12 C² values in 64-value blocks of 36 bytes
}

TEST_CASE("cli: --quantize refuses an unknown format, full fine-tuning and widths that are not whole blocks; nothing is written") {
    base32();
    struct Case { std::string args, fragment; };
    const Case cases[] = {
        {"train --base " + base32() + " --method lora --data t.tsv --out q_bad --steps 1 --quantize q3_k " + kQuick,
         "--quantize 'q3_k' is not a known format (q8_0, q4_0, nf4)"},
        {"train --base " + base32() + " --method full --data t.tsv --out q_full --steps 1 --quantize q8_0 " + kQuick,
         "with full fine-tuning: quantised weights are frozen blocks no gradient can update"},
        {std::string("train --base base/model.safetensors --method lora --data t.tsv --out q_16 --steps 1 --quantize q8_0 ") + kQuick,
         "its 16 columns do not divide into q8_0 blocks of 32 values"},
        {"bench --quantize q4_0 --threads 1", "with full fine-tuning"},
        {"eval --model " + base32() + " --data t.tsv --quantize nf4 --threads 1", "do not divide into nf4 blocks of 64"},
        {"forward --model " + base32() + " --text '1+2=' --out q_nf4.safetensors --quantize nf4 --threads 1",
         "do not divide into nf4 blocks of 64"},
    };
    for (const Case& c : cases) {
        expect_error(c.args, c.fragment);
        for (const char* out : {"q_bad", "q_full", "q_16", "q_nf4.safetensors"}) CHECK_FALSE(fs::exists(ws().dir + "/" + out));
    }
}

TEST_CASE("cli: peft quantize writes the blocks once; every command loads them as they are, equal to --quantize at load") {
    const Run q = ok("quantize --model " + base32() + " --quantize q4_0 --out base32_q4.safetensors --threads 1");
    CHECK(q.out.find("as q4_0") != std::string::npos);
    CHECK(fs::file_size(ws().dir + "/base32_q4.safetensors") < fs::file_size(ws().dir + "/" + base32()));
    CHECK(ok("inspect base32_q4.safetensors --threads 1").out.find("U8 [128, 18]") != std::string::npos);   // fc_in's blocks
    const std::string eval = " --data t.tsv --eval_iters 2 --accuracy_examples 3 --json --threads 1";
    const double at_load = last_json(ok("eval --model " + base32() + " --quantize q4_0" + eval))["val_loss"];
    CHECK(last_json(ok("eval --model base32_q4.safetensors" + eval))["val_loss"] == at_load);
    CHECK(last_json(ok("eval --model base32_q4.safetensors --quantize q4_0" + eval))["val_loss"] == at_load);

    // LoRA (and PiSSA, which starts from the dequantised weights and stores its residual in blocks
    // again) trains over it with no --quantize; the blocks are counted as stored.
    const nlohmann::json t = last_json(ok("train --base base32_q4.safetensors --method lora --data t.tsv --out q4lora "
                                          "--steps 2 --json " + std::string(kQuick)));
    CHECK(t["peak_quantized_bytes"] == 12288 / 32 * 18);
    ok("train --base base32_q4.safetensors --method lora --init_lora_weights pissa --data t.tsv --out q4pissa --steps 2 " +
       std::string(kQuick));
    std::ofstream(ws().dir + "/save_fc.json") << R"({"r": 4, "target_modules": ["q_proj"], "modules_to_save": ["fc_in"]})";
    ok("train --base base32_q4.safetensors --method lora --method_config save_fc.json --data t.tsv --out q4save --steps 2 " +
       std::string(kQuick));

    // Written where float32 weights belong, the base is dequantised and a note says so.
    const Run m = ok("merge --model base32_q4.safetensors --adapter q4lora --out q4merged.safetensors --threads 1");
    CHECK(m.err.find("note: the base is quantised (q4_0); the merged checkpoint holds its dequantised float32 weights") !=
          std::string::npos);
    CHECK(ok("inspect q4merged.safetensors --threads 1").out.find("U8") == std::string::npos);
    const Run e = ok("export --model base32_q4.safetensors --out q4export --threads 1");
    CHECK(e.err.find("the GPT-2 folder holds its dequantised float32 weights") != std::string::npos);
}

TEST_CASE("cli: peft quantize and a quantised base refuse what they cannot do, one line, nothing written") {
    ok("quantize --model " + base32() + " --quantize q8_0 --out base32_q8.safetensors --threads 1");
    const std::string before = slurp(ws().dir + "/base32_q8.safetensors");
    struct Case { std::string args, fragment; };
    const Case cases[] = {
        {"quantize --model " + base32() + " --out q_none.safetensors --threads 1", "--quantize is required"},
        {"quantize --model " + base32() + " --quantize q5 --out q_none.safetensors --threads 1", "'q5' is not a known format"},
        {"quantize --model base32_q8.safetensors --quantize q8_0 --out base32_q8.safetensors --threads 1", "is an input of this command"},
        {"quantize --model base32_q8.safetensors --quantize nf4 --out q_none.safetensors --threads 1",
         "holds q8_0 blocks: --quantize nf4 would quantise them again"},
        {"train --base base32_q8.safetensors --method full --data t.tsv --out q_none --steps 1 " + std::string(kQuick),
         "is quantised (q8_0), and quantised weights cannot train"},
    };
    for (const Case& c : cases) {
        expect_error(c.args, c.fragment);
        CHECK_FALSE(fs::exists(ws().dir + "/q_none.safetensors"));
        CHECK_FALSE(fs::exists(ws().dir + "/q_none"));
    }
    CHECK(slurp(ws().dir + "/base32_q8.safetensors") == before);
    // refused with --out an existing file that is not an input: that file stays as it was too
    fs::copy_file(ws().dir + "/base32_q8.safetensors", ws().dir + "/q_old.safetensors", fs::copy_options::overwrite_existing);
    expect_error("quantize --model base32_q8.safetensors --quantize nf4 --out q_old.safetensors --threads 1",
                 "would quantise them again");
    CHECK(slurp(ws().dir + "/q_old.safetensors") == before);
}
