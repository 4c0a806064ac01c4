// cli/cmd_bench.cpp — `peft bench`: training steps on random tokens, timed and measured.
//
// FLOPs per step (stated, not measured): a weight matrix with N entries used on B·T rows costs
// 2·N·B·T in the forward, 2·N·B·T for dx and 2·N·B·T for dW — 6·N·B·T when it trains, 4·N·B·T
// when it is frozen (no dW GEMM). The model's matrices hold 12·L·C² + V·C entries (q, k, v, o,
// fc_in, fc_out, and the tied LM head); a method's own matrices (LoRA's A and B, adapters,
// encoders) train. Attention adds 12·L·C·T²·B (QKᵀ and PV, forward and backward; the causal
// half is counted in full, as PyTorch's reference figures do).
#include <algorithm>
#include <chrono>
#include <numeric>
#include <cstdio>
#include "common.h"
#include "engine/blas.h"
#include "engine/optim.h"
#include "engine/parallel.h"
#include "engine/profile.h"
#include "method_flags.h"
#include "peft/peft.h"

namespace {

// The suite's model shapes (--configs) and methods (--methods); full comes first.
struct SuiteConfig { const char* name; int64_t L, H, C, T, B, V, steps; };
const SuiteConfig kSuiteConfigs[] = {{"tiny", 4, 4, 128, 64, 16, 96, 20},
                                     {"small", 6, 6, 384, 256, 8, 96, 10},
                                     {"gpt2", 12, 12, 768, 128, 4, 50257, 6}};
// Each method as the reference defines it: LoRA r 8 on q, k and v; IA³ on k, v and the MLP's
// hidden activations; Houlsby adapters of width 32 with GELU; 16 virtual tokens.
struct SuiteMethod { const char* name; const char* flags; };
const SuiteMethod kSuiteMethods[] = {
    {"full", "--method full"},
    {"lora", "--method lora --target_modules q_proj,k_proj,v_proj --lora_dropout 0"},
    {"ia3", "--method ia3 --target_modules k_proj,v_proj,fc_out --feedforward_modules fc_out"},
    {"adapter", "--method adapter --placement houlsby --bottleneck_size 32 --non_linearity gelu"},
    {"prefix", "--method prefix --num_virtual_tokens 16"},
    {"prompt", "--method prompt --num_virtual_tokens 16"}};

template <class Row, size_t N>
std::vector<std::string> names(const Row (&rows)[N]) {
    std::vector<std::string> out;
    for (const Row& r : rows) out.push_back(r.name);
    return out;
}

struct BenchFlags {
    CommonFlags common;
    MethodFlags method;
    GPTConfig model;
    int64_t batch = 8, steps = 10, warmup_steps = 2;
    int repeats = 1;   // --repeats: with --suite, runs of each config and method (alternating with --reference)
    bool json_out = false, suite = false, profile = false, gemm_floor = false, steps_given = false;
    std::string reference;   // --reference: a command that trains the same model in another framework
    std::vector<std::string> configs = names(kSuiteConfigs);   // --configs: the suite's model shapes
    std::vector<std::string> methods{"full", "lora"};          // --methods: the suite's methods
};

// The machine's reference GEMM rate: the median of 5 square 2048 sgemms after one warm-up.
double sgemm_gflops() {
    const int64_t n = 2048;
    Rng rng(1);
    Tensor a = Tensor::randn({n, n}, rng), b = Tensor::randn({n, n}, rng), c = Tensor::empty({n, n});
    std::vector<double> t;
    for (int r = 0; r < 6; r++) {
        const auto t0 = std::chrono::steady_clock::now();
        gemm(Trans::N, Trans::N, n, n, n, 1.f, a.data(), b.data(), 0.f, c.data());
        if (r > 0) t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return 2.0 * double(n) * double(n) * double(n) / t[t.size() / 2] * 1e-9;
}

// `--suite`: the three reference configs for full and LoRA (q, k, v as one fused c_attn would
// be), or the methods --methods names, each in its own process so each peak RSS is its own; one summary table. With
// --reference, each of our runs is followed by the reference command with the same model,
// batch, steps and threads (flags --method --layers --heads --embd --block --batch --vocab
// --steps --threads --json; it prints ms_median and peak_rss_mib), and the table shows both.
// With --repeats K the pair runs K times, alternating (every second time the reference goes
// first), and the table gives medians: of our
// runs, of the reference's, and of the K ratios, each taken within one pair (so a machine that
// drifts between pairs moves both sides of a ratio alike), with the ratios' range beside it.
void run_suite(const BenchFlags& f) {
    const std::string exe = self_exe();
    const double rate = sgemm_gflops();
    fmt::print("sgemm 2048x2048x2048: {:.1f} GFLOP/s (OpenBLAS {} kernels{})\n", rate, blas_core(),
               f.reference.empty() ? "" : ", the reference's too: it inherits OPENBLAS_CORETYPE");
    const bool ref = !f.reference.empty();
    // "÷ full": a step's time over full fine-tuning's at the same shape (when --methods has full).
    // "GEMM floor": the step's own GEMMs alone (Note [GEMM floor]); "floor ratio": that over the
    // reference's step, the lowest time ratio these GEMMs would allow. "reference % of sgemm": our
    // step's FLOPs over the reference's time, as a share of the sgemm rate: the rate the reference
    // does this work at, so a time ratio r needs our step to run at that share ÷ r.
    std::string table = "| config (L,H,C,T,B,V) | method | trainable | ms/step | ÷ full | GEMM floor ms | tokens/s | GFLOP/s | % of sgemm | grads MiB | optimizer MiB | saved act. MiB | peak RSS MiB |";
    table += ref ? " reference ms/step | time ratio | reference peak RSS MiB | RSS ratio | floor ratio | reference % of sgemm |\n"
                 : "\n";
    for (int col = 0; col < (ref ? 19 : 13); col++) table += "|---";
    table += "|\n";
    const int threads = f.common.threads ? f.common.threads : num_threads();
    auto run = [](const std::string& cmd) {
        fmt::print("{}\n", cmd);
        std::fflush(stdout);
        return run_json(cmd);
    };
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    for (const SuiteConfig& c : kSuiteConfigs) {
        double full_ms = 0;   // this shape's full fine-tuning step, once it has run (full comes first)
        for (const SuiteMethod& m : kSuiteMethods) {
            if (std::find(f.configs.begin(), f.configs.end(), c.name) == f.configs.end() ||
                std::find(f.methods.begin(), f.methods.end(), m.name) == f.methods.end())
                continue;
            const int64_t steps = f.steps_given ? f.steps : c.steps;   // --steps, else the shape's own
            const std::string cmd = fmt::format("'{}' bench --n_layer {} --n_head {} --n_embd {} --block {} --batch {} "
                                                "--vocab {} --steps {} --json --gemm_floor {}{}",
                                                exe, c.L, c.H, c.C, c.T, c.B, c.V, steps, m.flags,
                                                f.common.threads ? fmt::format(" --threads {}", f.common.threads) : "");
            const std::string rcmd = fmt::format("{} --method {} --layers {} --heads {} --embd {} --block {} --batch {} "
                                                 "--vocab {} --steps {} --threads {} --json",
                                                 f.reference, m.name, c.L, c.H, c.C, c.T, c.B, c.V, steps, threads);
            std::vector<nlohmann::json> ours;
            std::vector<double> ref_ms, ref_rss, ratios;
            for (int rep = 0; rep < f.repeats; rep++) {
                // odd repeats run the reference first: neither side always follows the other's exit
                const bool ref_first = ref && rep % 2 == 1;
                nlohmann::json r = ref_first ? run(rcmd) : nlohmann::json();
                ours.push_back(run(cmd));
                if (!ref) continue;
                if (!ref_first) r = run(rcmd);
                ENGINE_CHECK(r.contains("ms_median") && r.contains("peak_rss_mib"), Error,
                             "the reference printed no ms_median and peak_rss_mib: {}", r.dump());
                ref_ms.push_back(r["ms_median"].get<double>());
                ref_rss.push_back(r["peak_rss_mib"].get<double>());
                ratios.push_back(ours.back()["ms_per_step"].get<double>() / ref_ms.back());
            }
            // our median run supplies the row; memory figures are the same in every run
            std::sort(ours.begin(), ours.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
                return a["ms_per_step"].get<double>() < b["ms_per_step"].get<double>();
            });
            const nlohmann::json& j = ours[ours.size() / 2];
            auto mb = [&](const char* k) { return double(j[k].get<int64_t>()) / 1048576.0; };
            const double ms = j["ms_per_step"].get<double>();
            if (std::string(m.name) == "full") full_ms = ms;
            const std::string vs_full = full_ms > 0 ? fmt::format("{:.2f}", ms / full_ms) : "–";
            const double floor_ms = j["gemm_floor_ms"].get<double>(), gflops = j["gflops"].get<double>();
            table += fmt::format("| {} ({},{},{},{},{},{}) | {} | {} | {:.1f} | {} | {:.1f} | {:.0f} | {:.1f} | {:.0f}% | {:.2f} | {:.2f} | {:.1f} | {:.0f} |",
                                 c.name, c.L, c.H, c.C, c.T, c.B, c.V, m.name, j["trainable_params"].get<int64_t>(),
                                 ms, vs_full, floor_ms, j["tokens_per_s"].get<double>(), gflops,
                                 100 * gflops / rate, mb("peak_grads_bytes"), mb("peak_optimizer_bytes"), mb("peak_saved_bytes"), mb("peak_rss_bytes"));
            if (ref) {
                const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());
                const std::string range = ratios.size() > 1 ? fmt::format(" ({:.2f}–{:.2f})", *lo, *hi) : "";
                const double gflop = gflops * ms / 1000;   // our step's GEMM work
                table += fmt::format(" {:.1f} | {:.2f}{} | {:.0f} | {:.2f} | {:.2f} | {:.0f}% |", median(ref_ms), median(ratios),
                                     range, median(ref_rss), mb("peak_rss_bytes") / median(ref_rss), floor_ms / median(ref_ms),
                                     100 * gflop / (median(ref_ms) / 1000) / rate);
            }
            table += "\n";
        }
    }
    fmt::print("\n{}\nGFLOP/s counts 6·N·B·T per trained and 4·N·B·T per frozen weight matrix of N entries (no dW GEMM), "
               "plus 12·L·C·T²·B for attention (sgemm measured in this run: {:.1f} GFLOP/s); ÷ full: ms/step over full "
               "fine-tuning's at the same shape; GEMM floor: the GEMMs of one of our steps run again alone on "
               "reused buffers{}{}\n", table, rate, ref ? "; floor ratio: the floor over the reference's ms/step; reference % of sgemm: our step's "
                                        "GFLOP over the reference's ms/step, over sgemm (a time ratio r needs ours at that ÷ r)" : "",
               f.repeats > 1 ? fmt::format("; medians of {} runs{}", f.repeats,
                                           ref ? ", ours and the reference's alternating; time ratio: median of the "
                                                 "ratios within each pair, their range in brackets" : "")
                             : "");
}

double flops_per_step(const GPT& m, const Method* method, int64_t B, int64_t T) {
    const double L = double(m.config.n_layer), C = double(m.config.n_embd), V = double(m.config.vocab_size);
    const double base = 12 * L * C * C + V * C, rows = double(B * T);
    double f = (method ? 4.0 : 6.0) * base * rows + 12 * L * C * double(T) * double(T) * double(B);
    if (method)
        for (const Param& p : method->params.all())
            if (p.tensor.ndim() == 2 && p.tensor.size(0) > 1 && p.tensor.size(1) > 1) f += 6.0 * double(p.tensor.numel()) * rows;
    return f;
}

// `--profile`: the ops' forward and backward time per step, largest first (Note [Op profile]).
std::string profile_table(const OpProfile& prof, double steps, double mean_ms) {
    std::vector<std::pair<std::string, OpTime>> rows(prof.begin(), prof.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
        return a.second.forward_ms + a.second.backward_ms > b.second.forward_ms + b.second.backward_ms;
    });
    std::string out = fmt::format("time by op, per step (mean of {:.0f} timed steps: {:.1f} ms); GEMM GFLOP forward + "
                                  "backward, and their rate over the op's whole time\n", steps, mean_ms);
    out += fmt::format("  {:<22} {:>6} {:>12} {:>12} {:>10} {:>7} {:>15} {:>8}\n", "op", "calls", "forward ms", "backward ms",
                       "total ms", "share", "GEMM GFLOP", "GFLOP/s");
    double ops = 0;
    for (const auto& [op, t] : rows) {
        const double fw = t.forward_ms / steps, bw = t.backward_ms / steps;
        const double ff = t.forward_flop / steps * 1e-9, bf = t.backward_flop / steps * 1e-9;
        ops += fw + bw;
        const std::string gemm = ff + bf > 0 ? fmt::format(" {:>15} {:>8.1f}", fmt::format("{:.2f} + {:.2f}", ff, bf),
                                                           (ff + bf) / ((fw + bw) / 1000))
                                             : "";
        out += fmt::format("  {:<22} {:>6} {:>12.2f} {:>12.2f} {:>10.2f} {:>6.1f}%{}\n", op, t.calls / int64_t(steps), fw,
                           bw, fw + bw, 100 * (fw + bw) / mean_ms, gemm);
    }
    out += fmt::format("  {:<22} {:>6} {:>12} {:>12} {:>10.2f} {:>6.1f}%\n", "optimizer and rest", "", "", "",
                       mean_ms - ops, 100 * (mean_ms - ops) / mean_ms);
    return out;
}

void run_bench(BenchFlags& f, const CLI::App& cmd) {
    f.common.apply();
    if (f.suite) return run_suite(f);
    Rng rng(f.common.seed);
    // --block counts real tokens, as the reference trainer's does: virtual tokens and prefix
    // slots get positions of their own beyond it, so every method trains on B·T tokens a step.
    GPTConfig config = f.model;
    if (f.method.method != "full") config.block_size += f.method.to_config(cmd, Tokenizer::bytes()).value("num_virtual_tokens", 0);
    GPT model(config, rng);
    PeftModel peft(model);
    Method* method = nullptr;
    if (f.method.method != "full") {
        peft.add("default", f.method.make(cmd, Tokenizer::bytes(), model, rng));
        method = peft.active();
        method->training = true;
    }
    ParamList& trainable = method ? method->params : model.params;
    const int64_t B = f.batch, T = f.model.block_size;
    AdamWConfig oc;
    oc.lr = 1e-4f;
    AdamW opt(trainable, oc);
    std::vector<int32_t> ids(size_t(B * T)), tg(size_t(B * T));
    std::vector<double> ms;
    const bool floor_on = f.profile || f.gemm_floor;   // Note [GEMM floor]: log the first timed step's GEMMs
    mem_reset_peak();
    for (int64_t s = 0; s < f.warmup_steps + f.steps; s++) {
        for (size_t i = 0; i < ids.size(); i++) {
            ids[i] = int32_t(rng.below(uint64_t(f.model.vocab_size)));
            tg[i] = int32_t(rng.below(uint64_t(f.model.vocab_size)));
        }
        Tensor I = Tensor::from_ints(ids, {B, T}), Tt = Tensor::from_ints(tg, {B, T});
        if (f.profile && s == f.warmup_steps) profile_start();
        if (floor_on && s == f.warmup_steps) gemm_log(true);
        const auto t0 = std::chrono::steady_clock::now();
        opt.zero_grad();
        if (method) method->begin_forward();
        profile_mark();
        Tensor loss = model.loss(I, Tt, true);
        loss.backward();
        opt.step(clip_coefficient(grad_norm(trainable), 1.0));
        const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (s >= f.warmup_steps) ms.push_back(dt);
        if (floor_on && s == f.warmup_steps) gemm_log(false);
    }
    const OpProfile prof = f.profile ? profile_stop() : OpProfile();
    const double mean = ms.empty() ? 0 : std::accumulate(ms.begin(), ms.end(), 0.0) / double(ms.size());
    std::sort(ms.begin(), ms.end());
    const double med = ms.empty() ? 0 : ms[ms.size() / 2];
    const double flops = flops_per_step(model, method, B, T);
    const MemStats st = mem_stats();
    const std::string mem_table = memory_table(st);   // peak RSS now, before the GEMM floor's buffers
    const nlohmann::json mem_json = memory_json(st);
    const GemmFloor floor = floor_on ? gemm_floor(gemm_logged(), 5) : GemmFloor();
    const int64_t n_train = trainable.count(true), n_all = model.params.count() + (method ? method->params.count() : 0);
    fmt::print("bench {} L={} H={} C={} T={} B={} V={} threads={} (OpenBLAS {} kernels)\n", f.method.method,
               f.model.n_layer, f.model.n_head, f.model.n_embd, f.model.block_size, B, f.model.vocab_size, num_threads(),
               blas_core());
    fmt::print("{}\n", trainable_line(model, method));
    fmt::print("median {:.1f} ms/step over {} steps (fastest {:.1f}, slowest {:.1f}) | {:.0f} tokens/s | {:.1f} GFLOP/s "
               "({:.3g} GFLOP/step)\n",
               med, ms.size(), ms.front(), ms.back(), double(B * T) / (med / 1000), flops / (med / 1000) / 1e9,
               flops / 1e9);
    fmt::print("{}\n", mem_table);
    if (f.profile) fmt::print("{}", profile_table(prof, double(ms.size()), mean));
    if (floor_on)
        fmt::print("GEMM floor: the {} GEMMs of one step ({:.3g} GFLOP), run again alone on reused buffers, take "
                   "{:.1f} ms = {:.2f} of the median step ({:.1f} GFLOP/s)\n",
                   floor.calls, floor.flop * 1e-9, floor.ms, floor.ms / med, floor.flop / floor.ms * 1e-6);
    if (f.json_out) {
        nlohmann::json j = {{"method", f.method.method}, {"n_layer", f.model.n_layer}, {"n_head", f.model.n_head},
                            {"n_embd", f.model.n_embd}, {"block", f.model.block_size}, {"batch", B},
                            {"vocab", f.model.vocab_size}, {"threads", num_threads()}, {"blas_core", blas_core()},
                            {"trainable_params", n_train},
                            {"all_params", n_all}, {"ms_per_step", med}, {"ms_min", ms.front()}, {"ms_max", ms.back()},
                            {"tokens_per_s", double(B * T) / (med / 1000)},
                            {"gflops", flops / (med / 1000) / 1e9}};
        j.update(mem_json);
        if (floor_on) j["gemm_floor_ms"] = floor.ms;
        if (f.profile)
            for (const auto& [op, t] : prof)
                j["profile_ms_per_step"][op] = {{"forward", t.forward_ms / double(ms.size())},
                                                {"backward", t.backward_ms / double(ms.size())},
                                                {"calls", t.calls / int64_t(ms.size())},
                                                {"forward_gemm_gflop", t.forward_flop / double(ms.size()) * 1e-9},
                                                {"backward_gemm_gflop", t.backward_flop / double(ms.size()) * 1e-9}};
        fmt::print("{}\n", j.dump());
    }
}

}  // namespace

void add_bench_command(CLI::App& app) {
    auto f = std::make_shared<BenchFlags>();
    CLI::App* cmd = app.add_subcommand("bench", "time training steps of a model of any size on random tokens");
    f->common.add(*cmd);
    f->model.block_size = 64;
    f->model.vocab_size = 96;
    add_number(cmd, "--n_layer", f->model.n_layer, "transformer blocks", 1, 1024)->capture_default_str();
    add_number(cmd, "--n_head", f->model.n_head, "attention heads", 1, 1024)->capture_default_str();
    add_number(cmd, "--n_embd", f->model.n_embd, "width", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--block", f->model.block_size, "sequence length", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--vocab", f->model.vocab_size, "vocabulary size", 1, 1 << 24)->capture_default_str();
    add_number(cmd, "--dropout", f->model.dropout, "dropout probability", 0.0, 0.99);
    add_number(cmd, "--batch", f->batch, "sequences per step", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--steps", f->steps, "timed steps (with --suite, for every shape instead of 20 / 10 / 6)", 1, 1 << 20)
        ->capture_default_str();
    add_number(cmd, "--warmup_steps", f->warmup_steps, "untimed steps first", 0, 1 << 20)->capture_default_str();
    cmd->add_flag("--json", f->json_out, "print the results as one JSON object on the last line");
    cmd->add_flag("--profile", f->profile, "also print the time and GEMM FLOPs of each op's forward and backward per step");
    cmd->add_flag("--gemm_floor", f->gemm_floor,
                  "also time one step's GEMMs run again alone: the step's floor under this BLAS (--profile does too)");
    CLI::Option* suite =
        cmd->add_flag("--suite", f->suite, "run the tiny, small and GPT-2-shape configs for full and LoRA (or --methods); print one table");
    cmd->add_option("--reference", f->reference,
                    "with --suite: a command that trains the same model elsewhere (e.g. \"python3 ref.py\"), run after each of ours")
        ->needs(suite);
    add_number(cmd, "--repeats", f->repeats, "with --suite: run each config and method this many times (alternating "
               "with --reference) and report medians", 1, 1000)
        ->capture_default_str()
        ->needs(suite);
    cmd->add_option("--methods", f->methods, "with --suite: which methods, e.g. full,lora,ia3,adapter,prefix,prompt")
        ->delimiter(',')
        ->check(CLI::IsMember(names(kSuiteMethods)))
        ->capture_default_str()
        ->needs(suite);
    cmd->add_option("--configs", f->configs, "with --suite: which shapes, e.g. tiny,small")
        ->delimiter(',')
        ->check(CLI::IsMember(names(kSuiteConfigs)))
        ->capture_default_str()
        ->needs(suite);
    f->method.add(*cmd);
    cmd->callback([f, cmd]() {
        f->steps_given = cmd->count("--steps") > 0;
        run_bench(*f, *cmd);
    });
}
