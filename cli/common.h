// cli/common.h — what every subcommand shares: strict numeric flags, the --threads, --seed and
// --config flags, and small printing helpers.
#pragma once
#include <CLI/CLI.hpp>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include "engine/check.h"
#include "engine/memory.h"
#include "engine/quant.h"

// ---- numeric flags
//
// Every integer and float flag is added with add_number. Its value must be a decimal integer
// (floats: decimal or exponent notation, e.g. 0.001 or 1e-3) with nothing after it, within
// [lo, hi] and the type's range. `0x10`, `0b1`, `1e3` or `10.0` for an integer, `12abc`, `-1` for
// an unsigned, `nan`, `inf` and `1e400` are command-line errors (exit 2) naming the flag, the
// value and the expected range. Leading zeros are decimal: `010` is 10 (CLI11 alone would read
// it as octal 8). Values from --config files pass the same check, as their text.
std::string strict_number(std::string& text, int64_t lo, int64_t hi);   // "" if fine, else the problem;
std::string strict_number(std::string& text, uint64_t lo, uint64_t hi); // a fine text is rewritten in
std::string strict_number(std::string& text, double lo, double hi);     // canonical decimal form

template <class T>
CLI::Option* add_number(CLI::App* cmd, const std::string& flag, T& value, const std::string& help,
                        std::common_type_t<T> lo = std::numeric_limits<T>::lowest(),
                        std::common_type_t<T> hi = std::numeric_limits<T>::max()) {
    using Wide = std::conditional_t<std::is_floating_point_v<T>, double,
                                    std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;
    const bool bounded = lo != std::numeric_limits<T>::lowest() || hi != std::numeric_limits<T>::max();
    return cmd->add_option(flag, value, help)
        ->transform(CLI::Validator([lo, hi](std::string& text) { return strict_number(text, Wide(lo), Wide(hi)); },
                                   bounded ? fmt::format("[{}, {}]", lo, hi) : "", "number"));
}

// --threads N (default: OMP_NUM_THREADS or all cores), --seed S, and --config FILE.json, which
// sets any long flag the command line did not: {"steps": 200, "lr": 0.001, "target_modules":
// ["q_proj"]}. Its values pass the same checks as the flags'; an unknown key is an error.
// The path with links and ".." resolved as far as it exists (std::filesystem::weakly_canonical),
// or the path itself when that fails: what "is this output one of the inputs?" compares.
std::string canonical_path(const std::string& path);

struct CommonFlags {
    int threads = 0;
    uint64_t seed = 1337;
    bool reference_ops = false;   // --reference_ops: the plain ops (Note [Reference ops], engine/reference_ops.h)
    void add(CLI::App& cmd);
    void apply() const;   // sets the thread count and the ops
};

// --quantize q8_0|q4_0|nf4 (train, eval, generate, forward, bench): the frozen block Linears stored
// in blocks (engine/quant.h, docs/MEMORY.md). quantize_format: nothing for "", else the format;
// ValueError for an unknown one, or with --method full (a quantised weight cannot train).
void add_quantize_flag(CLI::App& cmd, std::string& value);
std::optional<QType> quantize_format(const std::string& value, const std::string& method);

// Registration of each subcommand (one file each under cli/).
void add_train_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_forward_command(CLI::App& app);
void add_merge_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_bench_engine_command(CLI::App& app);
void add_gen_data_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_compare_command(CLI::App& app);
void add_combine_command(CLI::App& app);   // cli/cmd_combine.cpp
void add_bench_mixed_command(CLI::App& app);   // cli/cmd_bench_mixed.cpp
void add_tokenize_command(CLI::App& app);
void add_status_command(CLI::App& app);

std::string mib(int64_t bytes);            // "12.34 MiB"
std::string human_bytes(int64_t bytes);    // "812 B", "14.2 KiB", "3.10 MiB"
// Where memory went: each category's current and peak bytes, all of them at once, what malloc
// keeps freed for reuse, and the process's peak RSS. A few lines, for train and bench.
std::string memory_table(const MemStats& s);
// The same as JSON fields: peak_<category>_bytes, peak_total_bytes, peak_rss_bytes.
nlohmann::json memory_json(const MemStats& s);
bool stdout_is_terminal();

// This program's path (/proc/self/exe), to run it again as a child process.
std::string self_exe();
// Runs a shell command, stdout and stderr together (also written to log_path when one is
// given); returns the JSON object on the last output line that holds one, a leading "JSON "
// skipped. Throws an Error naming the command when it fails or prints no JSON line.
nlohmann::json run_json(const std::string& cmd, const std::string& log_path = "");
