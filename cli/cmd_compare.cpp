// cli/cmd_compare.cpp — `peft compare`: full fine-tuning and every PEFT method on one base
// model and one task, same steps and seed, measured side by side.
//
// Each method runs as its own `peft train --json` process, so its peak RSS is its own, and
// every number in the table comes from that run (memory accounting, timings, files on disk);
// the closed-form trainable count is shown beside the measured one as a check.
#include <sys/stat.h>
#include <sys/wait.h>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include "common.h"
#include "engine/fileio.h"
#include "svg.h"
#include "train/defaults.h"

namespace {

// Each row runs `peft train` with its flags; the learning rate and steps are the method's own
// (train/defaults.h, the table `peft train` uses too), so `make train METHOD=m` reproduces a row.
struct Variant {
    std::string label, flags;
};
const std::vector<Variant>& variants() {
    static const std::vector<Variant> v = {
        {"full", "--method full"},
        {"lora", "--method lora"},
        {"ia3", "--method ia3"},
        {"adapter-houlsby", "--method adapter --placement houlsby"},
        {"adapter-pfeiffer", "--method adapter --placement pfeiffer"},
        {"prefix", "--method prefix --num_virtual_tokens 8"},
        {"prompt", "--method prompt --num_virtual_tokens 8"},
        {"ptuning-mlp", "--method ptuning --num_virtual_tokens 8 --encoder_reparameterization_type MLP"},
        {"ptuning-lstm", "--method ptuning --num_virtual_tokens 8 --encoder_reparameterization_type LSTM"},
        // The LoRA family (docs/METHODS.md); each takes its --method's row of train/defaults.cpp.
        {"dora", "--method lora --use_dora"},
        {"pissa", "--method lora --init_lora_weights pissa"},
        {"loha", "--method loha"},
        {"lokr", "--method lokr"},
        {"vera", "--method vera"},
        {"oft", "--method oft"},
    };
    return v;
}

struct CompareFlags {
    CommonFlags common;
    std::string base, data = "dates", out = "runs/compare";
    std::vector<std::string> methods;
    int64_t steps = 0, batch = 16;   // steps 0: each method's own (train/defaults.h)
    double lr = 0;                   // 0: each method's own
    bool json_out = false;
};

std::vector<std::pair<double, double>> val_curve(const std::string& csv_path) {
    std::ifstream in(csv_path);
    std::string line;
    std::getline(in, line);   // header
    std::vector<std::pair<double, double>> pts;
    while (std::getline(in, line)) {
        std::stringstream ss(line);
        std::string step, train, val;
        std::getline(ss, step, ',');
        std::getline(ss, train, ',');
        std::getline(ss, val, ',');
        if (!val.empty()) pts.push_back({std::stod(step), std::stod(val)});
    }
    return pts;
}

void run_compare(CompareFlags& f) {
    ENGINE_CHECK(!f.base.empty(), ValueError, "--base CKPT is required (pretrain one with `peft train --data stories`)");
    std::vector<Variant> chosen;
    for (const Variant& v : variants())
        if (f.methods.empty() || std::find(f.methods.begin(), f.methods.end(), v.label) != f.methods.end()) chosen.push_back(v);
    for (const std::string& m : f.methods) {
        bool known = false;
        for (const Variant& v : variants()) known = known || v.label == m;
        if (!known) {
            std::string names;
            for (const Variant& v : variants()) names += (names.empty() ? "" : ", ") + v.label;
            throw ValueError(fmt::format("--methods: unknown '{}'; choose from {}", m, names));
        }
    }
    make_dirs(f.out);
    const std::string exe = self_exe();
    std::vector<nlohmann::json> rows;
    std::vector<Series> curves;
    for (const Variant& v : chosen) {
        const std::string dir = f.out + "/" + v.label;
        const int64_t steps = f.steps > 0 ? f.steps : method_defaults(v.flags.substr(9, v.flags.find(' ', 9) - 9)).steps;
        std::string cmd = fmt::format("'{}' train --base '{}' --data '{}' --out '{}' --overwrite --steps {} --batch {} "
                                      "--eval_every {} --seed {} --samples 0 --json {}",
                                      exe, f.base, f.data, dir, steps, f.batch, std::max<int64_t>(1, steps / 10),
                                      f.common.seed, v.flags);
        if (f.lr > 0 && v.label != "full") cmd += fmt::format(" --lr {}", f.lr);
        if (f.common.threads > 0) cmd += fmt::format(" --threads {}", f.common.threads);
        fmt::print("running {} ...\n", v.label);
        std::fflush(stdout);
        make_dirs(dir);
        nlohmann::json j = run_json(cmd, dir + "/output.txt");
        j["label"] = v.label;
        rows.push_back(j);
        curves.push_back({v.label, val_curve(dir + "/log.csv")});
    }
    // ---- the table, as Markdown, CSV and JSON
    const char* header = "| method | trainable params (closed form) | trainable % | gradient MiB | optimizer-state MiB | "
                         "saved activations MiB (peak) | peak RSS MiB | ms/step | val loss | task accuracy | saved file size |";
    std::string md = std::string(header) + "\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    std::string csv = "method,trainable_params,expected_params,trainable_pct,grad_mib,optimizer_mib,saved_mib,peak_rss_mib,"
                      "ms_per_step,val_loss,accuracy,saved_file_bytes\n";
    auto m = [](const nlohmann::json& j, const char* k) { return double(j.value(k, int64_t(0))) / (1024.0 * 1024.0); };
    for (const auto& j : rows) {
        const double pct = 100.0 * double(j["trainable_params"].get<int64_t>()) / double(j["all_params"].get<int64_t>());
        const double acc = j.value("accuracy_after", NAN);
        md += fmt::format("| {} | {} ({}) | {:.3f} | {:.2f} | {:.2f} | {:.2f} | {:.0f} | {:.1f} | {:.4f} | {:.1f}% | {} |\n",
                          j["label"].get<std::string>(), j["trainable_params"].get<int64_t>(),
                          j["expected_trainable_params"].get<int64_t>(), pct, m(j, "peak_grads_bytes"),
                          m(j, "peak_optimizer_bytes"), m(j, "peak_saved_bytes"), m(j, "peak_rss_bytes"),
                          j["ms_per_step"].get<double>(), j["val_loss"].get<double>(), 100 * acc,
                          human_bytes(j["saved_file_bytes"].get<int64_t>()));
        csv += fmt::format("{},{},{},{:.4f},{:.4f},{:.4f},{:.4f},{:.1f},{:.2f},{:.5f},{:.4f},{}\n", j["label"].get<std::string>(),
                           j["trainable_params"].get<int64_t>(), j["expected_trainable_params"].get<int64_t>(), pct,
                           m(j, "peak_grads_bytes"), m(j, "peak_optimizer_bytes"), m(j, "peak_saved_bytes"),
                           m(j, "peak_rss_bytes"), j["ms_per_step"].get<double>(), j["val_loss"].get<double>(), acc,
                           j["saved_file_bytes"].get<int64_t>());
    }
    atomic_write_file(f.out + "/compare.md", md);
    atomic_write_file(f.out + "/compare.csv", csv);
    atomic_write_file(f.out + "/val_loss.svg", line_chart_svg("validation loss", "step", "cross-entropy", curves));
    std::vector<std::string> labels;
    Series grads{"gradients", {}}, optim{"optimizer state", {}}, saved{"saved activations (peak)", {}};
    for (size_t i = 0; i < rows.size(); i++) {
        labels.push_back(rows[i]["label"].get<std::string>());
        grads.points.push_back({double(i), m(rows[i], "peak_grads_bytes")});
        optim.points.push_back({double(i), m(rows[i], "peak_optimizer_bytes")});
        saved.points.push_back({double(i), m(rows[i], "peak_saved_bytes")});
    }
    atomic_write_file(f.out + "/memory.svg", bar_chart_svg("memory by category", "memory (MiB)", labels, {grads, optim, saved}));
    fmt::print("\n{}\nwrote {}/compare.md, compare.csv, val_loss.svg, memory.svg\n", md, f.out);
    if (f.json_out) fmt::print("{}\n", nlohmann::json(rows).dump());
}

}  // namespace

void add_compare_command(CLI::App& app) {
    auto f = std::make_shared<CompareFlags>();
    CLI::App* cmd = app.add_subcommand("compare", "full fine-tuning vs every PEFT method, measured side by side");
    f->common.add(*cmd);
    cmd->add_option("--base", f->base, "base checkpoint")->required();
    cmd->add_option("--data", f->data, "task dataset")->capture_default_str();
    cmd->add_option("--out", f->out, "output folder")->capture_default_str();
    cmd->add_option("--methods", f->methods, "subset, e.g. full,lora")->delimiter(',');
    add_number(cmd, "--steps", f->steps, "steps per method (default: each method's own, as peft train)", 1, 1 << 24);
    add_number(cmd, "--batch", f->batch, "sequences per step", 1, 1 << 16)->capture_default_str();
    add_number(cmd, "--lr", f->lr, "one learning rate for every PEFT method (default: each its own, as peft train; full keeps 3e-4)", 1e-9, 10.0);
    cmd->add_flag("--json", f->json_out, "print the table as one JSON array on the last line");
    cmd->callback([f]() { run_compare(*f); });
}
