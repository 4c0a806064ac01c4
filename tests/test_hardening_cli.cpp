// tests/test_hardening_cli.cpp — the faults a new user met trying every subcommand with careless
// and hostile input, one test per fault, each run through the real program (tests/cli_helpers.h):
// nothing lost, nothing hanging, nothing surprising.
#include <sys/stat.h>
#include <thread>
#include "cli_helpers.h"

namespace {

// Exactly one line on stderr, "error: ..." containing `fragment`.
void one_error_line(const Run& r, const std::string& fragment) {
    INFO("stderr: " << r.err << "\nstdout: " << r.out);
    CHECK(r.err.rfind("error: ", 0) == 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(fragment) != std::string::npos);
}

std::string copy_dir(const std::string& from, const std::string& to) {
    const std::string d = ws().dir;
    std::error_code ec;
    fs::remove_all(d + "/" + to, ec);
    fs::copy(d + "/" + from, d + "/" + to, fs::copy_options::recursive);
    return d + "/" + to;
}

nlohmann::json config_line(const Run& r) {
    const size_t at = r.out.find("config: ");
    REQUIRE(at != std::string::npos);
    const size_t end = r.out.find('\n', at);
    return nlohmann::json::parse(r.out.substr(at + 8, end - at - 8));
}

}  // namespace

TEST_SUITE("cli hardening") {

TEST_CASE("issue item 1: devices, FIFOs and links to them are refused before reading, never hanging") {
    const std::string d = ws().dir;
    Run r = peft_within(20, "inspect /dev/zero --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "/dev/zero: is a character device, not a regular file");
    r = peft_within(20, "eval --model /dev/zero --data t.tsv --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "/dev/zero: is a character device");
    const std::string z = copy_dir("lora", "zlink");
    fs::remove(z + "/adapter_model.safetensors");
    fs::create_symlink("/dev/zero", z + "/adapter_model.safetensors");
    r = peft_within(20, "eval --model base/model.safetensors --adapter zlink --data t.tsv --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "zlink/adapter_model.safetensors: is a character device");
    ::unlink((d + "/fifo").c_str());
    REQUIRE(::mkfifo((d + "/fifo").c_str(), 0600) == 0);
    r = peft_within(20, "train --data fifo --out fifo_run --steps 1 --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "fifo: is a FIFO (named pipe), not a regular file");
    r = peft_within(20, "inspect fifo --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "is a FIFO");
}

TEST_CASE("issue item 2: merge --out equal to --model is refused") {
    const std::string b = copy_dir("base", "base2");
    const std::string before = slurp(b + "/model.safetensors");
    Run r = peft("merge --model base2/model.safetensors --adapter lora --out base2/../base2/model.safetensors --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "is an input of this command");
    CHECK(slurp(b + "/model.safetensors") == before);
}

TEST_CASE("issue item 2: forward --out equal to the model or the adapter's weights is refused") {
    const std::string b = copy_dir("base", "base3"), a = copy_dir("lora", "lora3");
    const std::string model = slurp(b + "/model.safetensors"), adapter = slurp(a + "/adapter_model.safetensors");
    Run r = peft("forward --model base3/model.safetensors --text hi --out base3/model.safetensors --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "is an input of this command");
    r = peft("forward --model base3/model.safetensors --adapter lora3 --text hi --out lora3/adapter_model.safetensors --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "is an input of this command");
    CHECK(slurp(b + "/model.safetensors") == model);
    CHECK(slurp(a + "/adapter_model.safetensors") == adapter);
}

TEST_CASE("issue item 2: export never writes into a folder holding a model, an adapter or a run") {
    const std::string b = copy_dir("base", "base_x"), a = copy_dir("lora", "lora_x");
    const std::string model = slurp(b + "/model.safetensors"), adapter = slurp(a + "/adapter_model.safetensors");
    Run r = peft("export --model base_x/model.safetensors --out base_x --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "--out base_x already holds model.safetensors");
    r = peft("export --model base_x/model.safetensors --adapter lora_x --out lora_x --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "--out lora_x already holds adapter_model.safetensors");
    CHECK(slurp(b + "/model.safetensors") == model);
    CHECK(slurp(a + "/adapter_model.safetensors") == adapter);
    CHECK(!fs::exists(a + "/config.json"));
}

TEST_CASE("issue item 2: train into a folder holding a run needs --resume or --overwrite; never into the base's folder") {
    const std::string b = copy_dir("base", "base4");
    const std::string model = slurp(b + "/model.safetensors"), opt = slurp(b + "/optimizer.safetensors");
    Run r = peft(std::string("train --data c.txt --out base4 --steps 1 ") + kTiny);
    CHECK(r.code == 1);
    one_error_line(r, "--out base4 already holds a run (model.safetensors, optimizer.safetensors): continue it with --resume, "
                      "or replace it with --overwrite");
    r = peft(std::string("train --base base4/model.safetensors --method lora --data t.tsv --out base4 ") + kQuick);
    CHECK(r.code == 1);
    one_error_line(r, "is the folder of --base base4/model.safetensors: a fine-tune never writes into its base's folder");
    CHECK(slurp(b + "/model.safetensors") == model);
    CHECK(slurp(b + "/optimizer.safetensors") == opt);
    r = peft(std::string("train --data c.txt --out base4 --steps 1 --overwrite ") + kTiny);
    CHECK(r.code == 0);
    CHECK(slurp(b + "/model.safetensors") != model);
}

TEST_CASE("issue item 3: peft status tells a finished run from an unfinished one") {
    Run r = peft("status base");
    CHECK(r.code == 0);
    CHECK(r.out == "finished: step 2 of 2\n");
    r = peft("status nothing_here");
    CHECK(r.code == 0);
    CHECK(r.out == "none\n");
}

TEST_CASE("issue item 4: fine-tuning takes the method's own learning rate and steps; --lr still wins") {
    Run r = peft(std::string("train --base base/model.safetensors --method ia3 --data t.tsv --out ia3_lr --overwrite ") + kQuick);
    REQUIRE(r.code == 0);
    nlohmann::json c = config_line(r);
    CHECK(c["lr"] == 0.3);
    CHECK(c["steps"] == 800);
    CHECK(c["warmup"] == 50);
    r = peft(std::string("train --base base/model.safetensors --method ia3 --data t.tsv --out ia3_lr --overwrite --steps 1 "
                         "--lr 0.05 ") + kQuick);
    REQUIRE(r.code == 0);
    CHECK(config_line(r)["lr"] == 0.05);
}

TEST_CASE("issue item 6: --resume keeps the run's settings, accepts the same values and refuses changed ones") {
    Run r = peft(std::string("train --data c.txt --out r6 --overwrite --steps 2 --lr 0.002 ") + kTiny);
    REQUIRE(r.code == 0);
    const std::string opt = slurp(ws().dir + "/r6/optimizer.safetensors");
    r = peft(std::string("train --data c.txt --out r6 --resume --steps 3 --lr 0.003 ") + kTiny);
    CHECK(r.code == 1);
    one_error_line(r, "--resume: --lr 0.003 differs from the run in r6 (0.002)");
    r = peft("train --data t.tsv --out r6 --resume --steps 3 --threads 1");
    CHECK(r.code == 1);
    one_error_line(r, "--resume: --data");
    CHECK(slurp(ws().dir + "/r6/optimizer.safetensors") == opt);
    r = peft(std::string("train --data c.txt --out r6 --resume --steps 3 ") + kTiny);   // --n_layer 1 etc.: the same values
    INFO(r.err);
    CHECK(r.code == 0);
    CHECK(config_line(r)["lr"] == 0.002);
}

TEST_CASE("issue item 7: --threads beyond the cores is capped and said; the config states the threads used") {
    const Run r = peft("train --data c.txt --out t7 --overwrite --steps 1 --n_layer 1 --n_head 2 --n_embd 16 --block 16 "
                       "--batch 2 --eval_iters 1 --samples 0 --threads 1000");
    REQUIRE(r.code == 0);
    const int cores = int(std::thread::hardware_concurrency());
    CHECK(r.err.find("this machine has " + std::to_string(cores) + " cores: using " + std::to_string(cores)) != std::string::npos);
    CHECK(config_line(r)["threads"].get<int>() <= cores);
}

TEST_CASE("issue item 8: an option of another method is refused, naming the method it belongs to") {
    Run r = peft(std::string("train --base base/model.safetensors --method prefix --r 4 --data t.tsv --out m8 ") + kQuick);
    CHECK(r.code == 1);
    one_error_line(r, "--r is an option of --method lora or loha or lokr or vera or oft; --method prefix does not use it");
    r = peft(std::string("train --base base/model.safetensors --method lora --placement pfeiffer --data t.tsv --out m8 ") + kQuick);
    CHECK(r.code == 1);
    one_error_line(r, "--placement is an option of --method adapter; --method lora does not use it");
    CHECK(!fs::exists(ws().dir + "/m8"));
}

TEST_CASE("issue item 9: the default warmup scales with --steps; a warmup covering the run is said") {
    Run r = peft(std::string("train --data c.txt --out w9 --overwrite --steps 30 --eval_every 0 ") + kTiny);
    REQUIRE(r.code == 0);
    CHECK(config_line(r)["warmup"] == 3);
    r = peft(std::string("train --data c.txt --out w9 --overwrite --steps 2 --warmup 10 ") + kTiny);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("note: the warmup of 10 steps covers the whole run of 2: the learning rate never reaches --lr 0.001") !=
          std::string::npos);
}

TEST_CASE("issue item 10: a mistyped flag is one error line suggesting the right one") {
    const Run r = peft("train --data c.txt --out o --stepz 12");
    CHECK(r.code == 2);
    one_error_line(r, "unknown flag --stepz (did you mean --steps?); see peft train --help");
    CHECK(r.err.find("Run with --help") == std::string::npos);
}

TEST_CASE("issue item 11: a corpus without a newline pretrains and samples; a task file of three lines trains") {
    std::ofstream(ws().dir + "/nonl.txt") << std::string(300, 'a') + "bcabcabc";
    Run r = peft("train --data nonl.txt --out n11 --overwrite --steps 1 --n_layer 1 --n_head 2 --n_embd 16 --block 16 --batch 2 "
                 "--eval_iters 1 --samples 5 --threads 1");
    INFO(r.err);
    CHECK(r.code == 0);
    CHECK(r.out.find("sample after: a") != std::string::npos);
    std::ofstream(ws().dir + "/three.tsv") << "1+2=\t3.\n2+2=\t4.\n3+3=\t6.\n";
    r = peft(std::string("train --base base/model.safetensors --method lora --data three.tsv --out t11 --overwrite --steps 1 ") + kQuick);
    INFO(r.err);
    CHECK(r.code == 0);
    std::ofstream(ws().dir + "/one.tsv") << "1+2=\t3.\n";
    r = peft(std::string("train --base base/model.safetensors --method lora --data one.tsv --out t11b --steps 1 ") + kQuick);
    CHECK(r.code == 1);
    one_error_line(r, "one.tsv' has 1 example: it needs at least 2 (one is held out for validation)");
}

TEST_CASE("issue item 12: resuming a run with another --method names the method the folder holds") {
    const std::string a = copy_dir("lora", "lora12");
    const Run r = peft(std::string("train --base base/model.safetensors --method ia3 --data t.tsv --out lora12 --resume ") + kQuick);
    CHECK(r.code == 1);
    one_error_line(r, "--resume: lora12 holds a LORA run (--method lora), not --method ia3");
}

TEST_CASE("issue item 12: too many virtual tokens for a task says the block size and what is left of it") {
    const Run r = peft(std::string("train --base base/model.safetensors --method prefix --num_virtual_tokens 12 --data t.tsv "
                                   "--out p12 ") + kQuick);
    CHECK(r.code == 1);
    one_error_line(r, "block_size 16 minus 12 virtual tokens leaves 4");
}

TEST_CASE("issue item 13: --steps 0 does not claim a plot; a failed start leaves no folder; floats print short") {
    Run r = peft(std::string("train --data c.txt --out s0 --overwrite --steps 0 ") + kTiny);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("loss.svg") == std::string::npos);
    CHECK(r.out.find("\"lr\":0.001,") != std::string::npos);
    r = peft(std::string("train --data missing.txt --out never_made --steps 1 ") + kTiny);
    CHECK(r.code == 1);
    CHECK(!fs::exists(ws().dir + "/never_made"));
}

TEST_CASE("issue item 13: help shows LoRA's defaults and compare's --lr without an out-of-range 0; inspect and gen-data take --threads") {
    Run r = peft("train --help");
    CHECK(r.out.find("LoRA rank") != std::string::npos);
    CHECK(r.out.find("q_proj,v_proj") != std::string::npos);
    CHECK(r.out.find("=8") != std::string::npos);
    CHECK(r.out.find("=16") != std::string::npos);
    r = peft("compare --help");
    CHECK(r.out.find("=0 ") == std::string::npos);
    r = peft("inspect base/model.safetensors --threads 1");
    CHECK(r.code == 0);
    r = peft("gen-data gd --threads 1");
    CHECK(r.code == 0);
    // every subcommand takes --threads, as the README says
    const std::string top = peft("--help").out;
    for (const char* sub : {"train", "generate", "eval", "forward", "merge", "inspect", "bench-engine", "gen-data", "bench",
                            "compare", "combine", "bench-mixed", "tokenize", "export", "status", "quantize"}) {
        CAPTURE(sub);
        CHECK(top.find(std::string("  ") + sub + " ") != std::string::npos);   // the list is complete
        CHECK(peft(std::string(sub) + " --help").out.find("--threads") != std::string::npos);
    }
}

TEST_CASE("issue item 13: a /proc file is read whole, not reported as empty") {
    const Run r = peft("train --data /proc/self/status --out proc13 --overwrite --steps 1 --n_layer 1 --n_head 2 --n_embd 16 "
                       "--block 16 --batch 2 --eval_iters 1 --samples 0 --threads 1");
    INFO(r.err);
    CHECK(r.err.find("is empty") == std::string::npos);
    CHECK(r.code == 0);
}

TEST_CASE("issue item 13: loss.svg names the run and has five step ticks") {
    const std::string svg = slurp(ws().dir + "/base/loss.svg");
    CHECK(svg.find("loss: base (full)") != std::string::npos);
    size_t ticks = 0;
    for (size_t at = svg.find("class=\"xtick\""); at != std::string::npos; at = svg.find("class=\"xtick\"", at + 1)) ticks++;
    CHECK(ticks == 5);
}

}  // TEST_SUITE("cli hardening")
