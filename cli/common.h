// cli/common.h — what every subcommand shares: the JSON config-file reader for CLI11, the
// --threads/--seed flags, and small printing helpers.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include "engine/check.h"
#include "engine/memory.h"

// Lets `--config FILE.json` set any long flag: {"steps": 200, "lr": 0.001, "target_modules": ["q_proj"]}.
// Unknown keys are errors (CLI11 reports them as extras).
class JsonConfig : public CLI::Config {
public:
    std::string to_config(const CLI::App*, bool, bool, std::string) const override;
    std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;
};

// --threads N (default: OMP_NUM_THREADS or all cores), --seed S, --config FILE.json.
struct CommonFlags {
    int threads = 0;
    uint64_t seed = 1337;
    void add(CLI::App& cmd);
    void apply() const;   // sets the thread count
};

// Registration of each subcommand (one file each under cli/).
void add_train_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_forward_command(CLI::App& app);
void add_merge_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_bench_engine_command(CLI::App& app);
void add_gen_data_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_compare_command(CLI::App& app);

std::string mib(int64_t bytes);            // "12.34 MiB"
std::string human_bytes(int64_t bytes);    // "812 B", "14.2 KiB", "3.10 MiB"
// Where memory went: each category's current and peak bytes, all of them at once, what malloc
// keeps freed for reuse, and the process's peak RSS. A few lines, for train and bench.
std::string memory_table(const MemStats& s);
// The same as JSON fields: peak_<category>_bytes, peak_total_bytes, peak_rss_bytes.
nlohmann::json memory_json(const MemStats& s);
bool stdout_is_terminal();
