// tests/test_cli.cpp — the real `peft` program on bad command lines and bad files
// (docs/FAILURES.md table C), and one round trip: pretrain -> LoRA fine-tune -> eval with
// the adapter -> merge -> forward. PEFT_BIN names the program (default build/peft; `make test`
// sets it). Exit codes, from cli/main.cpp: 0 ok, 1 an error (one line "error: ..." on stderr),
// 2 a command line CLI11 rejects (its message names the flag).
#include <cmath>
#include "cli_helpers.h"

TEST_SUITE("cli") {

TEST_CASE("cli: an unknown flag exits 2 naming the flag") {
    expect_usage_error("train --data c.txt --out o --bogus 1", "error: unknown flag --bogus; see peft train --help");
}

TEST_CASE("cli: malformed numbers ('12abc', '-1' steps, '1e400') and a flag missing its value exit 2 naming the flag") {
    const std::string steps = "--steps: '12abc' is not a decimal integer (expected an integer in [0, 1073741824])";
    expect_usage_error("train --data c.txt --out o --steps 12abc", steps);
    expect_usage_error("train --data c.txt --out o --steps -1", "--steps: -1 is out of range (expected an integer in [0, 1073741824])");
    expect_usage_error("train --data c.txt --out o --steps 1e400", "--steps: '1e400' is not a decimal integer");
    expect_usage_error("train --data c.txt --out o --lr 1e400", "--lr: 1e400 is out of range (expected a number in [1e-12, 10]");
    expect_usage_error("train --data c.txt --out o --steps", "--steps: 1 required");
    CHECK(!fs::exists(ws().dir + "/o"));
}

TEST_CASE("cli: numbers are decimal only: hex, binary, exponents for integers, trailing text, nan/inf and '' exit 2") {
    for (const char* v : {"0x10", "0X10", "0b101", "1e3", "10.0", "+5", "' 5'", "5k", "''"})
        expect_usage_error(std::string("train --data c.txt --out o --steps ") + v, "is not a decimal integer (expected an integer in [0, 1073741824])");
    for (const char* v : {"0x1p-3", "1e-3x", "nan", "inf", "-inf", "1e", "."})
        expect_usage_error(std::string("train --data c.txt --out o --lr ") + v, "is not a decimal number (expected a number in [1e-12, 10]");
    expect_usage_error("generate --model m --temperature 1,5", "--temperature: '1,5' is not a decimal number");
    CHECK(!fs::exists(ws().dir + "/o"));
}

TEST_CASE("cli: numbers outside the flag's range or its type's exit 2 stating the range; -1 for an unsigned too") {
    expect_usage_error("train --data c.txt --out o --seed -1", "--seed: -1 is out of range (expected an integer in [0, 18446744073709551615])");
    expect_usage_error("train --data c.txt --out o --seed 18446744073709551616", "--seed: 18446744073709551616 is out of range");
    expect_usage_error("train --data c.txt --out o --steps 99999999999", "--steps: 99999999999 is out of range");
    expect_usage_error("train --data c.txt --out o --dropout 2", "--dropout: 2 is out of range (expected a number in [0, 0.99]");
    expect_usage_error("train --data c.txt --out o --lora_alpha -1e309", "--lora_alpha: -1e309 is out of range");
    expect_usage_error("bench-engine --threads 0", "--threads: 0 is out of range (expected an integer in [1, 1024])");
}

TEST_CASE("cli: a leading zero is decimal ('--steps 010' is 10 steps, not octal 8); 1e-3 and .5 are numbers") {
    const Run r = peft(std::string("train --data c.txt --out zero --steps 010 --lr 1e-3 --dropout .5 ") + kTiny);
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("\"steps\":10,") != std::string::npos);
    CHECK(r.out.find("\"lr\":0.001,") != std::string::npos);   // 1e-3, printed short
}

TEST_CASE("cli: every numeric flag of every subcommand refuses hex, found from --help") {
    int flags = 0;
    for (const char* sub : {"train", "generate", "eval", "forward", "merge", "bench", "bench-engine", "compare"}) {
        std::istringstream help(peft(std::string(sub) + " --help").out);
        for (std::string line; std::getline(help, line);) {
            std::istringstream words(line);
            std::string flag, type;
            words >> flag >> type;
            if (flag.rfind("--", 0) != 0 || !(type.rfind("INT", 0) == 0 || type.rfind("UINT", 0) == 0 || type.rfind("FLOAT", 0) == 0))
                continue;
            flags++;
            expect_usage_error(std::string(sub) + " " + flag + " 0x10", flag + ": '0x10' is not a decimal");
        }
    }
    CHECK(flags >= 40);
}

TEST_CASE("cli: --config FILE.json sets flags through the same checks; the command line wins; bad keys exit 2") {
    auto config = [](const std::string& name, const std::string& text) { std::ofstream(ws().dir + "/" + name) << text; };
    config("ok.json", "{\"steps\": 3, \"lr\": 1e-3, \"out\": \"cfg\", \"json\": true}");
    const Run r = peft(std::string("train --data c.txt --config ok.json --steps 2 ") + kTiny);
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("\"steps\":2,") != std::string::npos);   // the command line's
    CHECK(r.out.find("\"lr\":0.001,") != std::string::npos);   // floats print short (issue item 13)
    CHECK(fs::exists(ws().dir + "/cfg/model.safetensors"));
    config("hex.json", "{\"steps\": \"0x10\"}");
    expect_usage_error("train --data c.txt --out o --config hex.json", "--config: hex.json: --steps: '0x10' is not a decimal integer");
    config("frac.json", "{\"steps\": 2.5}");
    expect_usage_error("train --data c.txt --out o --config frac.json", "--config: frac.json: --steps: '2.5' is not a decimal integer");
    config("neg.json", "{\"seed\": -1}");
    expect_usage_error("train --data c.txt --out o --config neg.json", "--config: neg.json: --seed: -1 is out of range");
    config("huge.json", "{\"lr\": 1e400}");
    expect_usage_error("train --data c.txt --out o --config huge.json", "--config: huge.json: not valid JSON");
    config("typo.json", "{\"stepz\": 3}");
    expect_usage_error("train --data c.txt --out o --config typo.json", "--config: typo.json: unknown key \"stepz\"");
    config("null.json", "{\"steps\": null}");
    expect_usage_error("train --data c.txt --out o --config null.json", "\"steps\" must be a number, string, boolean or a list");
    CHECK(!fs::exists(ws().dir + "/o"));
}

TEST_CASE("cli: an unknown --method exits 2 listing the choices") {
    expect_usage_error("train --data c.txt --out o --method qlora", "--method: qlora not in {full,lora,ia3,adapter,prefix,prompt,ptuning,loha,lokr,vera,oft}");
}

TEST_CASE("cli: a missing --data file exits 1 with one error line naming it") {
    expect_error(std::string("train --data missing.txt --out o ") + kTiny, "dataset 'missing.txt' not found");
}

TEST_CASE("cli: an empty dataset exits 1 saying it is empty") {
    expect_error(std::string("train --data empty.txt --out o ") + kTiny, "dataset 'empty.txt' is empty");
}

TEST_CASE("cli: a binary dataset exits 1 saying it looks binary") {
    expect_error(std::string("train --data blob.dat --out o ") + kTiny, "dataset 'blob.dat' looks binary: NUL byte at offset 7");
}

TEST_CASE("cli: --block larger than the loaded base model's exits 1 before training") {
    expect_error(std::string("train --base base/model.safetensors --method lora --data t.tsv --out o --block 64 ") + kQuick,
                 "--block 64 is larger than the loaded model's block_size");
    CHECK(peft("train --base base/model.safetensors --method lora --data t.tsv --out o --block 64").out.find("step") ==
          std::string::npos);
}

TEST_CASE("cli: eval --adapter from another base model exits 1 naming the mismatch") {
    expect_error("eval --model narrow/model.safetensors --adapter lora --data t.tsv --threads 1",
                 "lora/adapter_model.safetensors: adapter was trained on another base model: n_embd 16 (adapter) vs 8 (model)");
}

TEST_CASE("cli: an adapter_config.json key this program does not know is a warning naming the file and the key") {
    const std::string dir = ws().dir + "/lora_extra";
    fs::copy(ws().dir + "/lora", dir, fs::copy_options::recursive);
    nlohmann::json cfg = nlohmann::json::parse(slurp(dir + "/adapter_config.json"));
    cfg["a_future_option"] = 3;
    std::ofstream(dir + "/adapter_config.json") << cfg.dump();
    const Run r = peft("eval --model base/model.safetensors --adapter lora_extra --data t.tsv --eval_iters 1 "
                       "--accuracy_examples 1 --threads 1");
    CHECK(r.code == 0);
    CHECK(r.err == "warning: lora_extra/adapter_config.json: LORA config: ignoring unknown key \"a_future_option\"\n");
}

TEST_CASE("cli: merging a prefix adapter exits 1 saying it cannot be merged") {
    expect_error("merge --model base/model.safetensors --adapter prefix --out merged.safetensors --threads 1",
                 "PREFIX_TUNING adapters cannot be merged into the base weights (LORA, IA3, LOHA, LOKR, VERA and OFT can)");
    CHECK(!fs::exists(ws().dir + "/merged.safetensors"));
}

TEST_CASE("cli: --out that is a file exits 1 naming it, before any training") {
    const Run r = peft(std::string("train --data c.txt --out afile ") + kTiny);
    CHECK(r.code == 1);
    CHECK(r.err == "error: afile: not a folder\n");
    CHECK(r.out.empty());
    CHECK(slurp(ws().dir + "/afile") == "not a folder\n");
}

TEST_CASE("cli: a model file that is not a checkpoint, or a prompt outside the vocabulary, exits 1 naming the problem") {
    expect_error("eval --model c.txt --data c.txt --threads 1", "c.txt: header too large");
    expect_error("generate --model base/model.safetensors --prompt 'the %' --threads 1",
                 "character '%' (U+0025) at position 4 (line 1, column 5) is not in the vocabulary");
}

TEST_CASE("cli: pretrain, LoRA fine-tune, eval with the adapter, merge and forward work end to end; --json parses") {
    const std::string rt = ws().dir + "/rt";
    fs::create_directory(rt);
    fs::copy_file(ws().dir + "/c.txt", rt + "/c.txt");
    fs::copy_file(ws().dir + "/t.tsv", rt + "/t.tsv");
    auto ok = [&](const std::string& args) {
        const Run r = run_in(rt, args);
        INFO("peft " << args << "\nstderr: " << r.err);
        REQUIRE(r.code == 0);
        CHECK(r.err.empty());
        return r;
    };
    ok(std::string("train --data c.txt --out base --steps 3 ") + kTiny);
    CHECK(fs::exists(rt + "/base/model.safetensors"));
    const Run ft = ok(std::string("train --base base/model.safetensors --method lora --r 2 --data t.tsv --out lora --steps 3 --json ") + kQuick);
    const nlohmann::json j = last_json(ft);
    CHECK(j["method"] == "lora");
    CHECK(j["steps"] == 3);
    CHECK(j["trainable_params"] == j["expected_trainable_params"]);
    CHECK(std::isfinite(j["train_loss"].get<double>()));
    CHECK(fs::exists(rt + "/lora/adapter_config.json"));
    const nlohmann::json e = last_json(ok("eval --model base/model.safetensors --adapter lora --data t.tsv --eval_iters 2 "
                                          "--accuracy_examples 3 --json --threads 1"));
    CHECK(std::isfinite(e["val_loss"].get<double>()));
    CHECK(e["accuracy"].get<double>() >= 0.0);
    const Run m = ok("merge --model base/model.safetensors --adapter lora --out merged.safetensors --threads 1");
    CHECK(m.out.find("merged LORA into base/model.safetensors") != std::string::npos);
    const Run f = ok("forward --model merged.safetensors --text '1+2=' --out logits.safetensors --threads 1");
    CHECK(f.out.find("tokens [4], logits [4, ") != std::string::npos);
    CHECK(fs::file_size(rt + "/logits.safetensors") > 4 * 4);
}

TEST_CASE("cli: bench --profile --json times LoRA steps (median, fastest, slowest) and lists their ops, their sum within the step") {
    const Run r = peft("bench --n_layer 1 --n_head 2 --n_embd 16 --block 16 --batch 2 --steps 2 --warmup_steps 1 "
                       "--threads 1 --method lora --profile --json");
    INFO("stderr: " << r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("time by op, per step") != std::string::npos);
    CHECK(r.out.find("ms/step over 2 steps (fastest ") != std::string::npos);
    const nlohmann::json j = last_json(r);
    CHECK(j["ms_min"].get<double>() <= j["ms_per_step"].get<double>());
    CHECK(j["ms_per_step"].get<double>() <= j["ms_max"].get<double>());
    const nlohmann::json& p = j["profile_ms_per_step"];
    for (const char* op : {"lora_linear", "linear", "causal_attention", "linear_cross_entropy", "layernorm"}) {
        CAPTURE(op);
        CHECK(p.contains(op));
    }
    CHECK(p["lora_linear"]["calls"] == 2);   // the default targets, q_proj and v_proj, in one layer
    CHECK(p["linear"]["forward_gemm_gflop"].get<double>() > 0);
    CHECK(p["layernorm"]["forward_gemm_gflop"].get<double>() == 0);
    double ops = 0;
    for (const auto& [op, t] : p.items()) ops += t["forward"].get<double>() + t["backward"].get<double>();
    CHECK(ops > 0);
    CHECK(ops <= 2 * j["ms_per_step"].get<double>());   // a mean against a median: allow noise
}

// Note [OpenBLAS kernel on AVX-512 AMD CPUs] in engine/openblas_core.cpp: with no OPENBLAS_CORETYPE,
// an AMD CPU with AVX-512 gets OpenBLAS's AVX-512 kernels; a value the user set is kept.
TEST_CASE("cli: bench reports the OpenBLAS kernels; AVX-512 ones on an AVX-512 AMD CPU unless OPENBLAS_CORETYPE says otherwise") {
    const char* old = std::getenv("OPENBLAS_CORETYPE");
    const std::string saved = old ? old : "";
    auto core = [](const char* value) {
        if (value) setenv("OPENBLAS_CORETYPE", value, 1);
        else unsetenv("OPENBLAS_CORETYPE");
        const Run r = peft("bench --n_layer 1 --n_head 2 --n_embd 16 --block 16 --batch 2 --steps 1 --warmup_steps 0 "
                           "--threads 1 --json");
        INFO("stderr: " << r.err);
        REQUIRE(r.code == 0);
        return last_json(r)["blas_core"].get<std::string>();
    };
    const std::string chosen = core(nullptr), kept = core("Haswell");
    if (old) setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
    else unsetenv("OPENBLAS_CORETYPE");
    CHECK(kept == "Haswell");
    __builtin_cpu_init();
    const bool amd_avx512 = __builtin_cpu_is("amd") && __builtin_cpu_supports("avx512f") &&
                            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd") &&
                            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    if (amd_avx512) CHECK(chosen == (__builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX"));
    else CHECK(!chosen.empty());
}

TEST_CASE("cli: bench trains B·T real tokens a step with every method; virtual tokens come on top of --block") {
    for (const char* m : {"full", "prefix", "prompt", "ptuning"}) {
        CAPTURE(m);
        const Run r = peft(std::string("bench --n_layer 1 --n_head 2 --n_embd 16 --block 16 --batch 2 --steps 1 "
                                       "--warmup_steps 0 --threads 1 --json --num_virtual_tokens 16 --method ") + m);
        INFO("stderr: " << r.err);
        REQUIRE(r.code == 0);
        const nlohmann::json j = last_json(r);
        CHECK(j["tokens_per_s"].get<double>() * j["ms_per_step"].get<double>() / 1000 == doctest::Approx(2 * 16));
    }
}

TEST_CASE("cli: --reference_ops runs the plain ops (Note [Reference ops]): the profile names them") {
    const Run r = peft("bench --n_layer 1 --n_head 2 --n_embd 16 --block 16 --batch 2 --steps 1 --warmup_steps 0 "
                       "--threads 1 --method lora --profile --json --reference_ops");
    INFO("stderr: " << r.err);
    REQUIRE(r.code == 0);
    const nlohmann::json j = last_json(r), &p = j["profile_ms_per_step"];
    for (const char* op : {"reference_causal_attention", "reference_layernorm", "reference_cross_entropy"}) {
        CAPTURE(op);
        CHECK(p.contains(op));
    }
    CHECK_FALSE(p.contains("causal_attention"));
    CHECK_FALSE(p.contains("lora_linear"));   // LoRA as composed linears
}

// Running a suite of shapes and methods against a reference is bench/suite.py's work (it drives
// `peft bench --json`); the program itself times one configuration.
TEST_CASE("cli: bench times one configuration: the suite flags are the script's, not the program's") {
    for (const char* flag : {"--suite", "--gemm_floor", "--reference x", "--repeats 3"}) {
        CAPTURE(flag);
        const Run r = peft(std::string("bench --steps 1 ") + flag);
        CHECK(r.code == 2);
        CHECK(r.err.find(std::string(flag).substr(0, std::string(flag).find(' '))) != std::string::npos);
    }
}

}  // TEST_SUITE
