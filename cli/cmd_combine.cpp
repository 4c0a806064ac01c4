// cli/cmd_combine.cpp — `peft combine`: several LoRA adapters into one (peft/combine.h).
//
//   peft combine --model M --adapter A --adapter B --weights 0.7,0.3 --combination_type cat --out C
//
// Everything is checked before anything is written: the adapters load onto M, the weights count
// matches, density and svd_rank fit the type, --out is none of the inputs.
#include <filesystem>
#include "common.h"
#include "models/checkpoint.h"
#include "peft/combine.h"
#include "peft/peft.h"

namespace {

struct CombineFlags {
    CommonFlags common;
    std::string model, out;
    std::vector<std::string> adapters;
    CombineOptions o;
    bool json_out = false;
};

bool same_file(const std::string& a, const std::string& b) {
    std::error_code e1, e2;
    return std::filesystem::equivalent(a, b, e1) && !e1 && !e2;
}

void run_combine(CombineFlags& f, const CLI::App& cmd) {
    f.common.apply();
    ENGINE_CHECK(f.adapters.size() >= 2, ValueError, "--adapter: combine takes two or more adapters, got {}", f.adapters.size());
    ENGINE_CHECK(f.o.weights.size() == f.adapters.size(), ValueError, "--weights: {} values for {} adapters",
                 f.o.weights.size(), f.adapters.size());
    const bool prunes = f.o.combination_type != "cat" && f.o.combination_type != "linear" && f.o.combination_type != "svd";
    if (prunes && !cmd.count("--density")) f.o.density = 1;   // HF's default: nothing pruned
    ENGINE_CHECK(!cmd.count("--density") || (f.o.density > 0 && f.o.density <= 1), ValueError,
                 "--density {} must be in (0, 1]", f.o.density);
    ENGINE_CHECK(!cmd.count("--density") || prunes, ValueError, "--density is for ties, dare_linear, dare_ties and "
                 "magnitude_prune, not {}", f.o.combination_type);
    ENGINE_CHECK(!cmd.count("--svd_rank") || f.o.combination_type == "svd", ValueError, "--svd_rank is for svd, not {}",
                 f.o.combination_type);
    for (const std::string& in : f.adapters)
        ENGINE_CHECK(!same_file(in, f.out), ValueError, "--out {} is the input adapter {}: choose a new folder", f.out, in);
    ENGINE_CHECK(!same_file(f.model, f.out), ValueError, "--out {} is the model file", f.out);
    ENGINE_CHECK(!std::filesystem::exists(f.out + "/adapter_model.safetensors"), ValueError,
                 "--out {} already holds an adapter: choose a new folder", f.out);

    Checkpoint ck = load_checkpoint(f.model);
    Rng rng(0);
    std::vector<std::unique_ptr<Method>> loaded;
    std::vector<const Method*> inputs;
    for (const std::string& dir : f.adapters) {
        loaded.push_back(load_adapter(dir, *ck.model, rng));
        inputs.push_back(loaded.back().get());
    }
    f.o.seed = f.common.seed;
    CombineReport rep;
    std::unique_ptr<Method> combined = combine_adapters(inputs, *ck.model, f.o, &rep);
    save_adapter(f.out, *combined, *ck.model);
    const bool exact = f.o.combination_type == "cat";
    fmt::print("combined {} LORA adapters ({}, weights {}) into {}: rank {}, {} modules\n", f.adapters.size(),
               f.o.combination_type, fmt::join(f.o.weights, ","), f.out, rep.rank, rep.modules);
    fmt::print("distance from the exact sum of weight * delta_W: {:.3g} relative (Frobenius), {:.3g} largest entry{}\n",
               rep.relative_error, rep.max_abs_error,
               exact ? " (cat is exact: float rounding only)"
                     : f.o.combination_type == "linear" ? " (linear adds cross terms B_i A_j; cat or svd are exact or near)" : "");
    if (f.json_out)
        fmt::print("{}\n", nlohmann::json{{"rank", rep.rank}, {"modules", rep.modules}, {"relative_error", rep.relative_error},
                                          {"max_abs_error", rep.max_abs_error}, {"out", f.out}}.dump());
}

}  // namespace

void add_combine_command(CLI::App& app) {
    auto f = std::make_shared<CombineFlags>();
    CLI::App* cmd = app.add_subcommand("combine", "combine LoRA adapters into one (HF's add_weighted_adapter)");
    f->common.add(*cmd);
    cmd->add_option("--model", f->model, "the base model the adapters were trained on")->required();
    cmd->add_option("--adapter", f->adapters, "an adapter folder (give two or more)")->required();
    cmd->add_option("--weights", f->o.weights, "one weight per adapter, e.g. 0.7,0.3")->delimiter(',')->required();
    cmd->add_option("--combination_type", f->o.combination_type,
                    "cat | linear | svd | ties | dare_linear | dare_ties | magnitude_prune")
        ->check(CLI::IsMember({"cat", "linear", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune"}))
        ->required();
    add_number(cmd, "--density", f->o.density, "ties / dare / magnitude_prune: the fraction of entries kept, in (0, 1]");
    add_number(cmd, "--svd_rank", f->o.svd_rank, "svd: the output rank (default: the largest input rank)", int64_t(1),
               int64_t(1) << 16);
    cmd->add_option("--majority_sign_method", f->o.majority_sign_method, "ties / dare_ties: total | frequency")
        ->check(CLI::IsMember({"total", "frequency"}))->capture_default_str();
    cmd->add_option("--out", f->out, "the new adapter folder")->required();
    cmd->add_flag("--json", f->json_out, "also print the report as one JSON object on the last line");
    cmd->callback([f, cmd]() { run_combine(*f, *cmd); });
}
