// cli/cmd_bench_mixed.cpp — `peft bench-mixed`: the throughput of a batch whose samples use N
// different LoRA adapters (peft/mixed.h) against the same batch with one adapter, side by side
// in one run (runs alternate; medians). The goal: mixing costs little, ratio >= 0.8. Both the wall
// time and the process's CPU time are reported: on a busy machine the CPU time (with --threads 1)
// is the steadier measure of the work done.
#include <algorithm>
#include <chrono>
#include <ctime>
#include "common.h"
#include "peft/mixed.h"
#include "peft/peft.h"

namespace {

struct MixedFlags {
    CommonFlags common;
    GPTConfig model;
    int64_t batch = 16, adapters = 4, r = 8, repeats = 7;
    bool json_out = false;
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void run_bench_mixed(MixedFlags& f) {
    f.common.apply();
    Rng rng(f.common.seed);
    GPT model(f.model, rng);
    PeftModel pm(model);
    std::vector<std::string> names;
    for (int64_t i = 0; i < f.adapters; i++) {   // trained-looking adapters: random A and B
        names.push_back(fmt::format("a{}", i));
        auto m = make_method({{"peft_type", "LORA"}, {"r", f.r}, {"target_modules", {"q_proj", "v_proj"}}}, model, rng);
        for (const Param& p : m->params.all())
            for (int64_t k = 0; k < p.tensor.numel(); k++) p.tensor.data()[k] = float(rng.normal() * 0.02);
        pm.add(names.back(), std::move(m));
    }
    const int64_t B = f.batch, T = f.model.block_size;
    std::vector<int32_t> tok(size_t(B * T));
    for (auto& t : tok) t = int32_t(rng.next_u64() % uint64_t(f.model.vocab_size));
    const Tensor ids = Tensor::from_ints(tok, {B, T});
    NoGradGuard no_grad;
    std::vector<double> cpu_one, cpu_mixed;
    auto time = [&](std::vector<double>& cpu, auto&& set_up) {
        const auto t0 = std::chrono::steady_clock::now();
        const std::clock_t c0 = std::clock();
        set_up();
        cpu.push_back(1000.0 * double(std::clock() - c0) / CLOCKS_PER_SEC);
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    };
    std::vector<std::string> per_sample(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; b++) per_sample[size_t(b)] = names[size_t(b % f.adapters)];
    std::vector<double> one, mixed;
    pm.set_active(names[0]);
    model.forward(ids);   // warm-up
    for (int64_t rep = 0; rep < f.repeats; rep++) {
        pm.set_active(names[0]);
        one.push_back(time(cpu_one, [&] { model.forward(ids); }));
        mixed.push_back(time(cpu_mixed, [&] {
            MixedBatch mix(pm, per_sample);
            model.forward(ids);
        }));
    }
    const double m1 = median(one), mn = median(mixed), c1 = median(cpu_one), cn = median(cpu_mixed);
    fmt::print("bench-mixed L={} C={} T={} B={} r={}, medians of {}: one adapter {:.2f} ms ({:.2f} ms CPU), {} adapters "
               "mixed {:.2f} ms ({:.2f} ms CPU) per batch\nthroughput ratio mixed / one: {:.3f} by wall time, {:.3f} by CPU time\n",
               f.model.n_layer, f.model.n_embd, T, B, f.r, f.repeats, m1, c1, f.adapters, mn, cn, m1 / mn, c1 / cn);
    if (f.json_out)
        fmt::print("{}\n", nlohmann::json{{"ms_one", m1}, {"ms_mixed", mn}, {"cpu_ms_one", c1}, {"cpu_ms_mixed", cn},
                                          {"ratio", m1 / mn}, {"cpu_ratio", c1 / cn}, {"adapters", f.adapters}}.dump());
}

}  // namespace

void add_bench_mixed_command(CLI::App& app) {
    auto f = std::make_shared<MixedFlags>();
    f->model.n_layer = 4;
    f->model.n_embd = 256;
    f->model.n_head = 4;
    f->model.block_size = 64;
    CLI::App* cmd = app.add_subcommand("bench-mixed", "time a batch mixing N LoRA adapters against one adapter (inference)");
    f->common.add(*cmd);
    add_number(cmd, "--n_layer", f->model.n_layer, "transformer blocks", 1, 1024)->capture_default_str();
    add_number(cmd, "--n_head", f->model.n_head, "attention heads", 1, 1024)->capture_default_str();
    add_number(cmd, "--n_embd", f->model.n_embd, "width", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--block", f->model.block_size, "sequence length", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--batch", f->batch, "samples per batch", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--adapters", f->adapters, "LoRA adapters mixed in the batch", 1, 1024)->capture_default_str();
    add_number(cmd, "--r", f->r, "LoRA rank", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--repeats", f->repeats, "timed runs of each (alternating)", 1, 1 << 16)->capture_default_str();
    cmd->add_flag("--json", f->json_out, "also print one JSON object on the last line");
    cmd->callback([f]() { run_bench_mixed(*f); });
}
