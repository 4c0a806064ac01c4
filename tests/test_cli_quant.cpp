// tests/test_cli_quant.cpp — `--quantize` through the real program (tests/cli_helpers.h): LoRA
// trains over a quantised base, eval, generate, forward and bench run over one, and each bad
// input is one error line with nothing written.
#include <cmath>
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
