// tests/test_hardening_runs.cpp — a run folder through the library (train/run.h,
// train/defaults.h) and the thread choice (engine/parallel.h): what a run records about itself,
// how its log continues, and the defaults a short or busy run gets.
#include <fstream>
#include "hardening_helpers.h"
#include "engine/fileio.h"
#include "engine/parallel.h"
#include "train/defaults.h"
#include "train/run.h"

namespace {

struct TinyRun {
    std::unique_ptr<TextDataset> ds;
    std::unique_ptr<GPT> model;
    std::unique_ptr<Trainer> trainer;
    TinyRun(const TempDir& s, int64_t steps) {
        std::string text;
        for (int i = 0; i < 100; i++) text += "the cat sat on the mat. ";
        std::ofstream(s / "c.txt") << text;
        ds = std::make_unique<TextDataset>(s / "c.txt");
        Rng rng(1);
        model = std::make_unique<GPT>(tiny_config(ds->tokenizer().vocab_size()), rng);
        TrainConfig tc;
        tc.steps = steps; tc.batch = 2; tc.warmup = 1; tc.eval_every = 0; tc.eval_iters = 1;
        trainer = std::make_unique<Trainer>(*model, model->params, TrainData{ds.get(), nullptr}, tc);
    }
};

}  // namespace

TEST_SUITE("run hardening") {

TEST_CASE("issue item 3: a run folder says whether its run reached its last step") {
    TempDir s;
    TinyRun run(s, 4);
    const std::string dir = s / "run";
    make_dirs(dir);
    CHECK(!read_run_state(dir).exists);
    run.trainer->train_step();
    run.trainer->train_step();
    save_run(dir, *run.trainer, *run.model, run.ds->tokenizer(), nullptr, {{"steps", 4}});
    RunState rs = read_run_state(dir);
    CHECK(rs.exists);
    CHECK(rs.step == 2);
    CHECK(rs.steps == 4);
    CHECK(!rs.finished());
    CHECK(rs.settings["steps"] == 4);
    run.trainer->train_step();
    run.trainer->train_step();
    save_run(dir, *run.trainer, *run.model, run.ds->tokenizer(), nullptr);
    CHECK(read_run_state(dir).finished());
}

TEST_CASE("issue item 4: one table of per-method defaults, a row per method") {
    for (const char* m : {"full", "lora", "ia3", "adapter", "prefix", "prompt", "ptuning"}) CHECK(method_defaults(m).steps > 0);
    CHECK(method_defaults("full").lr == 3e-4);
    CHECK(method_defaults("lora").lr == 1e-2);
    CHECK(method_defaults("ia3").lr == 3e-1);
    CHECK(method_defaults("prompt").lr == 3e-1);
    CHECK_THROWS_WITH_AS(method_defaults("nope"), doctest::Contains("no defaults for method 'nope' (known: full, lora"), ValueError);
}

TEST_CASE("issue item 5: continuing a run cuts log.csv back to the checkpoint's step and keeps the earlier points") {
    TempDir s;
    const std::string dir = s / "run";
    make_dirs(dir);
    {
        RunLog log(dir, -1);
        for (int64_t step = 0; step < 5; step++) {
            LogRow r;
            r.step = step;
            r.train_loss = 4.0 - double(step);
            if (step == 1) r.val_loss = 3.5;
            log.add(r);
        }
    }
    RunLog resumed(dir, 3);   // the checkpoint was at step 3: rows 4 and 5 are trained again
    CHECK(resumed.train_points().size() == 3);
    CHECK(resumed.val_points().size() == 1);
    LogRow r;
    r.step = 3;
    r.train_loss = 0.5;
    resumed.add(r);
    resumed.flush();
    const std::string csv = read_file(dir + "/log.csv", 1 << 20);
    CHECK(std::count(csv.begin(), csv.end(), '\n') == 5);   // header + steps 1..4, each once
    CHECK(csv.find("\n4,0.5") != std::string::npos);
    CHECK(csv.find("\n5,") == std::string::npos);
    CHECK(resumed.train_points().size() == 4);
}

TEST_CASE("issue item 7: threads default to the free cores and never exceed the cores without saying so") {
    std::string note;
    CHECK(choose_threads(0, 2, 0, note) == 2);
    CHECK(note.empty());
    CHECK(choose_threads(0, 2, 1, note) == 1);
    CHECK(note.find("1 other process(es) are using the CPU: using 1 thread(s) of 2 cores") != std::string::npos);
    CHECK(choose_threads(0, 2, 5, note) == 1);
    CHECK(choose_threads(1000, 2, 0, note) == 2);
    CHECK(note.find("1000 threads asked for, but this machine has 2 cores: using 2") != std::string::npos);
    CHECK(choose_threads(1, 2, 3, note) == 1);
    CHECK(note.empty());
    CHECK(choose_threads(2, 2, 1, note) == 2);   // asked for: kept, with the warning
    CHECK(note.find("spin-wait") != std::string::npos);
}

TEST_CASE("issue item 9: the default warmup scales with the run") {
    CHECK(default_warmup(1500) == 50);
    CHECK(default_warmup(500) == 50);
    CHECK(default_warmup(30) == 3);
    CHECK(default_warmup(5) == 0);
}

TEST_CASE("issue item 11: a task file of three lines has a validation example; one line says what is missing") {
    TempDir s;
    std::ofstream(s / "three.tsv") << "ab\tc\nba\tc\naa\tb\n";
    const Tokenizer tok = Tokenizer::chars_of("abc\t\n");
    TaskDataset three(s / "three.tsv", tok);
    CHECK(three.size(Split::Val) == 1);
    CHECK(three.size(Split::Train) == 2);
    std::ofstream(s / "one.tsv") << "ab\tc\n";
    CHECK_THROWS_WITH_AS(TaskDataset(s / "one.tsv", tok), doctest::Contains("has 1 example: it needs at least 2"), ValueError);
}

TEST_CASE("issue item 12: an adapter whose weights disagree with its own config says so, not 'another base model'") {
    TempDir s;
    const std::string dir = saved_adapter(s, "r8", lora_json({{"r", 8}}));
    json cfg = json::parse(read_file(dir + "/adapter_config.json", 1 << 20));
    cfg["r"] = 4;
    write_bytes(dir + "/adapter_config.json", cfg.dump());
    auto m = lesson_model();
    Rng rng(0);
    try {
        load_adapter(dir, *m, rng);
        FAIL("loaded");
    } catch (const ValueError& e) {
        const std::string msg = e.what();
        CHECK(msg.find("maybe another base model") == std::string::npos);
        CHECK(msg.find("do not match adapter_config.json") != std::string::npos);
        CHECK(msg.find("[4, 16]") != std::string::npos);
    }
}

}  // TEST_SUITE("run hardening")
