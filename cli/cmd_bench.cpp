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
#include "common.h"
#include "engine/blas.h"
#include "engine/optim.h"
#include "engine/parallel.h"
#include "method_flags.h"
#include "op_profile.h"
#include "peft/peft.h"

namespace {

struct BenchFlags {
    CommonFlags common;
    MethodFlags method;
    GPTConfig model;
    int64_t batch = 8, steps = 10, warmup_steps = 2;
    bool json_out = false, profile = false, gradient_checkpointing = false;
    bool unfused_loss = false, attention_saved_probs = false;   // the plain versions (docs/MEMORY.md's descent)
    std::string quantize;
};

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
    Rng rng(f.common.seed);
    // --block counts real tokens, as the reference trainer's does: virtual tokens and prefix
    // slots get positions of their own beyond it, so every method trains on B·T tokens a step.
    GPTConfig config = f.model;
    if (f.method.method != "full") config.block_size += f.method.to_config(cmd, Tokenizer::bytes()).value("num_virtual_tokens", 0);
    // --quantize: each block Linear is quantised as soon as it is initialised, so the float32
    // weights never exist all at once (they would set the peak RSS).
    GPT model(config, rng, quantize_format(f.quantize, f.method.method));
    model.gradient_checkpointing = f.gradient_checkpointing;
    model.unfused_loss = f.unfused_loss;
    model.attention_saved_probs = f.attention_saved_probs;
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
    OpProfiler prof;   // Note [Op profile]
    mem_reset_peak();
    for (int64_t s = 0; s < f.warmup_steps + f.steps; s++) {
        for (size_t i = 0; i < ids.size(); i++) {
            ids[i] = int32_t(rng.below(uint64_t(f.model.vocab_size)));
            tg[i] = int32_t(rng.below(uint64_t(f.model.vocab_size)));
        }
        Tensor I = Tensor::from_ints(ids, {B, T}), Tt = Tensor::from_ints(tg, {B, T});
        if (f.profile && s == f.warmup_steps) prof.start();
        const auto t0 = std::chrono::steady_clock::now();
        opt.zero_grad();
        if (method) method->begin_forward();
        prof.mark();
        Tensor loss = model.loss(I, Tt, true);
        prof.mark();
        loss.backward();
        opt.step(clip_coefficient(grad_norm(trainable), 1.0));
        const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (s >= f.warmup_steps) ms.push_back(dt);
    }
    const OpProfile table = f.profile ? prof.stop() : OpProfile();
    const double mean = ms.empty() ? 0 : std::accumulate(ms.begin(), ms.end(), 0.0) / double(ms.size());
    std::sort(ms.begin(), ms.end());
    const double med = ms.empty() ? 0 : ms[ms.size() / 2];
    const double flops = flops_per_step(model, method, B, T);
    const MemStats st = mem_stats();
    const int64_t n_train = trainable.count(true), n_all = model.params.count() + (method ? method->params.count() : 0);
    fmt::print("bench {} L={} H={} C={} T={} B={} V={} threads={} (OpenBLAS {} kernels)\n", f.method.method,
               f.model.n_layer, f.model.n_head, f.model.n_embd, f.model.block_size, B, f.model.vocab_size, num_threads(),
               blas_core());
    fmt::print("{}\n", trainable_line(model, method));
    fmt::print("median {:.1f} ms/step over {} steps (fastest {:.1f}, slowest {:.1f}) | {:.0f} tokens/s | {:.1f} GFLOP/s "
               "({:.3g} GFLOP/step)\n",
               med, ms.size(), ms.front(), ms.back(), double(B * T) / (med / 1000), flops / (med / 1000) / 1e9,
               flops / 1e9);
    fmt::print("{}\n", memory_table(st));
    if (f.profile) fmt::print("{}", profile_table(table, double(ms.size()), mean));
    if (f.json_out) {
        nlohmann::json j = {{"method", f.method.method}, {"n_layer", f.model.n_layer}, {"n_head", f.model.n_head},
                            {"n_embd", f.model.n_embd}, {"block", f.model.block_size}, {"batch", B},
                            {"vocab", f.model.vocab_size}, {"threads", num_threads()}, {"blas_core", blas_core()},
                            {"quantize", f.quantize}, {"gradient_checkpointing", f.gradient_checkpointing},
                            {"unfused_loss", f.unfused_loss}, {"attention_saved_probs", f.attention_saved_probs},
                            {"trainable_params", n_train},
                            {"all_params", n_all}, {"ms_per_step", med}, {"ms_min", ms.front()}, {"ms_max", ms.back()},
                            {"tokens_per_s", double(B * T) / (med / 1000)},
                            {"gflops", flops / (med / 1000) / 1e9}};
        j.update(memory_json(st));
        if (f.profile)
            for (const auto& [op, t] : table)
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
    add_number(cmd, "--steps", f->steps, "timed steps", 1, 1 << 20)
        ->capture_default_str();
    add_number(cmd, "--warmup_steps", f->warmup_steps, "untimed steps first", 0, 1 << 20)->capture_default_str();
    cmd->add_flag("--json", f->json_out, "print the results as one JSON object on the last line");
    cmd->add_flag("--gradient_checkpointing", f->gradient_checkpointing,
                  "keep only each block's input and run the block again in backward");
    cmd->add_flag("--unfused_loss", f->unfused_loss,
                  "the plain loss: the whole (B,T,V) logits and their gradient, not the fused chunked LM head + cross-entropy");
    cmd->add_flag("--attention_saved_probs", f->attention_saved_probs,
                  "the plain attention: keep the (B,H,T,T) probabilities for backward instead of one log-sum-exp per row");
    add_quantize_flag(*cmd, f->quantize);
    cmd->add_flag("--profile", f->profile, "also print the time and GEMM FLOPs of each op's forward and backward per step");
    f->method.add(*cmd);
    cmd->callback([f, cmd]() { run_bench(*f, *cmd); });
}
