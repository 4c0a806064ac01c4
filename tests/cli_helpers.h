// tests/cli_helpers.h — running the real `peft` program (PEFT_BIN, default build/peft) in a
// shared workspace, for tests/test_cli.cpp and tests/test_hardening_cli.cpp. Exit codes, from
// cli/main.cpp: 0 ok, 1 an error (one line "error: ..." on stderr), 2 a command line rejected
// before running (one line "error: ..." naming the flag).
#pragma once
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace fs = std::filesystem;


struct Run {
    int code = -1;
    std::string out, err;
};

inline std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

inline std::string peft_bin() {
    const char* env = std::getenv("PEFT_BIN");
    return fs::absolute(env && *env ? env : "build/peft").string();
}

// `peft ARGS` inside `dir`, with stdout and stderr captured.
inline Run run_in(const std::string& dir, const std::string& args, const std::string& prefix = "") {
    const std::string bin = peft_bin();
    REQUIRE_MESSAGE(fs::exists(bin), "no peft program at " << bin << " (build it, or set PEFT_BIN)");
    const std::string cmd = "cd '" + dir + "' && " + prefix + "'" + bin + "' " + args + " >out.txt 2>err.txt";
    const int status = std::system(cmd.c_str());
    Run r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(dir + "/out.txt");
    r.err = slurp(dir + "/err.txt");
    return r;
}

inline const char* kTiny = "--n_layer 1 --n_head 2 --n_embd 16 --block 16 --batch 2 --eval_iters 1 --samples 0 --threads 1";
inline const char* kQuick = "--batch 2 --eval_iters 1 --samples 0 --threads 1";

// One folder for the whole file: a small corpus, a task file the corpus's characters cover, bad
// datasets, a base model, a narrower base model, and a LoRA and a prefix adapter on the base.
struct Workspace {
    std::string dir;
    Workspace() {
        char tmpl[] = "/tmp/peft_cli_XXXXXX";
        REQUIRE(mkdtemp(tmpl) != nullptr);
        dir = tmpl;
        std::string corpus, task;
        for (int i = 0; i < 120; i++) corpus += "the cat sat on the mat. a dog ran to it. ";
        for (int a = 0; a < 8; a++)
            for (int b = 0; b < 8; b++) task += std::to_string(a) + "+" + std::to_string(b) + "=\t" + std::to_string(a + b) + ".\n";
        std::ofstream(dir + "/c.txt") << corpus << "\n0123456789+=.\t\n";
        std::ofstream(dir + "/t.tsv") << task;
        std::ofstream(dir + "/empty.txt");
        std::ofstream(dir + "/blob.dat", std::ios::binary) << std::string("\x7f" "ELF\x02\x01\x01\x00\x00", 9);
        std::ofstream(dir + "/afile") << "not a folder\n";
        for (const std::string& args : {std::string("train --data c.txt --out base --steps 2 ") + kTiny,
                                       std::string("train --data c.txt --out narrow --steps 1 --n_layer 1 --n_head 2 --n_embd 8 "
                                                   "--block 16 --batch 2 --eval_iters 1 --samples 0 --threads 1"),
                                       std::string("train --base base/model.safetensors --method lora --data t.tsv --out lora --steps 2 ") + kQuick,
                                       std::string("train --base base/model.safetensors --method prefix --num_virtual_tokens 2 "
                                                   "--data t.tsv --out prefix --steps 2 ") + kQuick}) {
            const Run r = run_in(dir, args);
            REQUIRE_MESSAGE(r.code == 0, "peft " << args << "\n" << r.err);
        }
    }
    ~Workspace() { std::error_code ec; fs::remove_all(dir, ec); }
};

inline Workspace& ws() {
    static Workspace w;
    return w;
}

inline Run peft(const std::string& args) { return run_in(ws().dir, args); }

// The last line of stdout, as JSON (what --json prints).
inline nlohmann::json last_json(const Run& r) {
    std::string s = r.out;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return nlohmann::json::parse(s.substr(s.find_last_of('\n') + 1));
}

// Exit code 1 and exactly one line on stderr, "error: ..." containing `fragment`.
inline void expect_error(const std::string& args, const std::string& fragment) {
    const Run r = peft(args);
    INFO("peft " << args << "\nstderr: " << r.err);
    CHECK(r.code == 1);
    CHECK(r.err.rfind("error: ", 0) == 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(fragment) != std::string::npos);
}

// Exit code 2 (CLI11 rejected the command line), its message containing `fragment`.
inline void expect_usage_error(const std::string& args, const std::string& fragment) {
    const Run r = peft(args);
    INFO("peft " << args << "\nstderr: " << r.err);
    CHECK(r.code == 2);
    CHECK(r.err.rfind("error: ", 0) == 0);   // one line, like every other error
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(fragment) != std::string::npos);
}


// `peft ARGS` in the workspace, killed after `seconds` (exit code 124 then): for inputs that
// once made the program hang.
inline Run peft_within(int seconds, const std::string& args) {
    return run_in(ws().dir, args, "timeout " + std::to_string(seconds) + " ");
}
