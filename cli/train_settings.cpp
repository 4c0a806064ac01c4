// cli/train_settings.cpp — the settings of `peft train` runs: recording, resuming, defaults and
// which outputs are allowed (cli/train_settings.h).
#include "train_settings.h"
#include <algorithm>
#include <filesystem>
#include <fstream>
#include "engine/dist.h"
#include "engine/fileio.h"
#include "train/defaults.h"
#include "train/run.h"

namespace fs = std::filesystem;

double shortest(float x) { return std::strtod(fmt::format("{}", x).c_str(), nullptr); }

// The settings a run is started with, keys named like the flags: recorded in the run folder,
// kept and checked by --resume. Two are over all MPI ranks, so that a run may continue with
// another number of processes: batch_all_ranks (--batch × ranks) and data_streams_all_ranks
// (--data_streams × ranks).
nlohmann::json run_settings(const TrainFlags& f) {
    nlohmann::json j = {{"data", canonical_path(resolve_dataset(f.data))}, {"base", f.base.empty() ? "" : canonical_path(f.base)},
                        {"method", f.method.method}, {"steps", f.train.steps},
                        {"batch_all_ranks", f.train.batch * dist::size()},
                        {"data_streams_all_ranks", f.train.data_streams * dist::size()},
                        {"grad_accum", f.train.grad_accum}, {"lr", shortest(f.train.lr)}, {"min_lr", shortest(f.train.min_lr)},
                        {"warmup", f.train.warmup}, {"weight_decay", shortest(f.train.weight_decay)},
                        {"grad_clip", shortest(f.train.grad_clip)}, {"eval_every", f.train.eval_every},
                        {"eval_iters", f.train.eval_iters}, {"seed", f.common.seed}, {"dropout", shortest(f.model.dropout)},
                        {"skip_nonfinite", f.train.skip_nonfinite}, {"quantize", f.quantize}};
    return j;
}

// --resume: settings the command line leaves out are the run's own; one it gives must equal the
// recorded value unless it is one a resume may change (kResumeMayChange).
const char* const kResumeMayChange[] = {"steps", "eval_every", "eval_iters", "skip_nonfinite"};

void continue_settings(TrainFlags& f, const CLI::App& cmd) {
    const RunState rs = read_run_state(f.out);
    ENGINE_CHECK(rs.exists, ValueError, "--resume: {} holds no run to continue", f.out);
    // The method first: a folder of another method's run is named as such.
    static const std::pair<const char*, const char*> kTypes[] = {{"LORA", "lora"}, {"IA3", "ia3"}, {"BOTTLENECK", "adapter"},
                                                               {"PREFIX_TUNING", "prefix"}, {"PROMPT_TUNING", "prompt"},
                                                               {"P_TUNING", "ptuning"}, {"FULL", "full"}};
    std::string held = rs.settings.is_object() ? rs.settings.value("method", "") : "";
    const std::string cfg_path = f.out + "/adapter_config.json";
    if (held.empty() && std::ifstream(cfg_path).good()) {
        const nlohmann::json c = nlohmann::json::parse(read_file(cfg_path, 1 << 20), nullptr, false);
        for (const auto& [type, name] : kTypes)
            if (c.is_object() && c.value("peft_type", "") == type) held = name;
    }
    if (held.empty() && std::ifstream(run_files::model(f.out)).good()) held = "full";
    if (!held.empty() && held != f.method.method) {
        std::string type = held;
        for (const auto& [t, name] : kTypes)
            if (name == held) type = t;
        ENGINE_CHECK(!cmd.count("--method"), ValueError, "--resume: {} holds a {} run (--method {}), not --method {}", f.out,
                     type, held, f.method.method);
        f.method.method = held;
    }
    if (!rs.settings.is_object()) return;   // a run from before settings were recorded
    const nlohmann::json now = run_settings(f);
    auto may_change = [](const std::string& k) {
        return std::find(std::begin(kResumeMayChange), std::end(kResumeMayChange), k) != std::end(kResumeMayChange);
    };
    // The flag behind a recorded key (the two per-rank ones name their product).
    auto flag_of = [](const std::string& key) -> std::string {
        if (key == "batch_all_ranks") return "batch";
        if (key == "data_streams_all_ranks") return "data_streams";
        return key;
    };
    const int64_t ranks = dist::size();
    auto per_rank = [&](const std::string& key, const nlohmann::json& total) {
        const int64_t t = total.get<int64_t>();
        ENGINE_CHECK(t % ranks == 0, ValueError, "--resume: the run in {} has {} {}, which {} ranks cannot share equally", f.out,
                     key == "batch_all_ranks" ? "a batch over all ranks of" : "data streams over all ranks:", t, ranks);
        return t / ranks;
    };
    for (const auto& [key, was] : rs.settings.items()) {
        if (key == "method" || key == "peft_config" || !now.contains(key)) continue;
        const std::string flag = flag_of(key);
        const bool given = key == "data" || (key == "base" ? !f.base.empty() : cmd.count("--" + flag) > 0);
        if (given) {
            const std::string what = flag == key ? fmt::format("--{} {}", key, now[key].dump())
                                                 : fmt::format("--{} {} × {} rank(s) = {} {}", flag, now[key].get<int64_t>() / ranks,
                                                               ranks, key, now[key].dump());
            ENGINE_CHECK(now[key] == was || may_change(key), ValueError,
                         "--resume: {} differs from the run in {} ({}); only --{} may change when resuming", what, f.out,
                         was.dump(), fmt::join(kResumeMayChange, ", --"));
            continue;
        }
        if (key == "base") f.base = was.get<std::string>();
        else if (key == "steps") f.train.steps = was.get<int64_t>();
        else if (key == "batch_all_ranks") f.train.batch = per_rank(key, was);
        else if (key == "data_streams_all_ranks") f.train.data_streams = per_rank(key, was);
        else if (key == "grad_accum") f.train.grad_accum = was.get<int64_t>();
        else if (key == "lr") f.train.lr = was.get<float>();
        else if (key == "min_lr") f.train.min_lr = was.get<float>();
        else if (key == "warmup") f.train.warmup = was.get<int64_t>();
        else if (key == "weight_decay") f.train.weight_decay = was.get<float>();
        else if (key == "grad_clip") f.train.grad_clip = was.get<float>();
        else if (key == "eval_every") f.train.eval_every = was.get<int64_t>();
        else if (key == "eval_iters") f.train.eval_iters = was.get<int64_t>();
        else if (key == "seed") f.common.seed = was.get<uint64_t>();
        else if (key == "dropout") f.model.dropout = was.get<float>();
        else if (key == "skip_nonfinite") f.train.skip_nonfinite = was.get<bool>();
        else if (key == "quantize") f.quantize = was.get<std::string>();
    }
    // The method's options: the recorded config, which a given flag must not contradict.
    if (rs.settings.contains("peft_config") && rs.settings["peft_config"].is_object()) {
        const nlohmann::json& cfg = rs.settings["peft_config"];
        const nlohmann::json asked = f.method.to_config(cmd, Tokenizer::bytes());
        for (const auto& [key, value] : asked.items())
            ENGINE_CHECK(!cmd.get_option_no_throw("--" + key) || !cmd.count("--" + key) || !cfg.contains(key) || cfg[key] == value,
                         ValueError,
                         "--resume: --{} {} differs from the run in {} ({}); only --{} may change when resuming", key,
                         value.dump(), f.out, cfg[key].dump(), fmt::join(kResumeMayChange, ", --"));
        f.resume_peft_config = cfg;
    }
}

// Each method's own learning rate and steps when fine-tuning (train/defaults.h); a warmup that
// scales with the run.
void apply_defaults(TrainFlags& f, const CLI::App& cmd) {
    if (f.resume) return;   // the run's own settings (continue_settings)
    if (!f.base.empty()) {
        const MethodDefaults& d = method_defaults(f.method.method);
        if (!cmd.count("--lr")) f.train.lr = float(d.lr);
        if (!cmd.count("--steps")) f.train.steps = d.steps;
    }
    if (!cmd.count("--warmup")) f.train.warmup = default_warmup(f.train.steps);
}

// Nothing this command reads is written over: not the base model, the data or a config; a
// fine-tune never writes into its base's folder; a folder holding a run needs --resume (to
// continue it) or --overwrite (to replace it).
void check_outputs(const TrainFlags& f) {
    const std::string out = canonical_path(f.out);
    if (!f.base.empty()) {
        const std::string base = canonical_path(f.base);
        ENGINE_CHECK(fs::path(base).parent_path() != fs::path(out), ValueError,
                     "--out {} is the folder of --base {}: a fine-tune never writes into its base's folder (choose another --out)",
                     f.out, f.base);
    }
    for (const std::string& written : {run_files::model(out), run_files::optimizer(out), run_files::adapter_weights(out),
                                       out + "/adapter_config.json", run_files::log(out), out + "/loss.svg"})
        for (const std::string& input : {f.base, resolve_dataset(f.data), f.method.method_config})
            ENGINE_CHECK(input.empty() || canonical_path(input) != written, ValueError,
                         "--out {} would write over {}, an input of this command", f.out, input);
    if (f.resume || f.overwrite) return;
    const std::vector<std::string> held = run_files::present(f.out);
    ENGINE_CHECK(held.empty(), ValueError,
                 "--out {} already holds a run ({}): continue it with --resume, or replace it with --overwrite", f.out,
                 fmt::join(held, ", "));
}
