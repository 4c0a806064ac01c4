// cli/common.cpp — JSON config files, shared flags, printing helpers.
#include "common.h"
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <unistd.h>
#include <sstream>
#include "engine/parallel.h"

std::string JsonConfig::to_config(const CLI::App*, bool, bool, std::string) const { return "{}"; }

std::vector<CLI::ConfigItem> JsonConfig::from_config(std::istream& input) const {
    std::stringstream ss;
    ss << input.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw CLI::ConversionError("--config: the file is not a JSON object");
    std::vector<CLI::ConfigItem> items;
    for (auto& [key, value] : j.items()) {
        CLI::ConfigItem item;
        item.name = key;
        if (value.is_array()) {
            for (auto& v : value) item.inputs.push_back(v.is_string() ? v.get<std::string>() : v.dump());
        } else if (value.is_boolean()) {
            item.inputs = {value.get<bool>() ? "true" : "false"};
        } else if (value.is_string()) {
            item.inputs = {value.get<std::string>()};
        } else if (value.is_number()) {
            item.inputs = {value.dump()};
        } else {
            throw CLI::ConversionError("--config: key '" + key + "' must be a number, string, boolean or list");
        }
        items.push_back(item);
    }
    return items;
}

void CommonFlags::add(CLI::App& cmd) {
    cmd.add_option("--threads", threads, "threads for OpenMP and OpenBLAS (default: OMP_NUM_THREADS or all cores)")
        ->check(CLI::Range(1, 1024));
    cmd.add_option("--seed", seed, "random seed")->capture_default_str();
    cmd.set_config("--config", "", "JSON file with flags as keys, e.g. {\"steps\": 200}");
    cmd.config_formatter(std::make_shared<JsonConfig>());
}

// OpenMP threads wait for each other by spinning: when another program keeps a core busy, a
// step can get many times slower. Say so once, with the two ways out. Busy means: in three
// looks 2 ms apart, more processes were running than the cores our threads leave free (the
// 4th field of /proc/loadavg counts the running ones, this one included).
static void warn_if_busy() {
    const int cores = int(std::thread::hardware_concurrency());
    if (num_threads() < 2 || std::getenv("OMP_WAIT_POLICY")) return;
    int others = INT_MAX;
    for (int look = 0; look < 3; look++) {
        int running = 0;
        if (FILE* f = std::fopen("/proc/loadavg", "r")) {
            if (std::fscanf(f, "%*s %*s %*s %d", &running) != 1) running = 1;
            std::fclose(f);
        }
        others = std::min(others, running - 1);
        usleep(2000);
    }
    if (others <= cores - num_threads()) return;
    fmt::print(stderr,
               "warning: {} other process(es) are using the CPU; {} threads that spin-wait for each other will be "
               "slow and timings unsteady: use --threads 1, or OMP_WAIT_POLICY=passive\n",
               others, num_threads());
}

void CommonFlags::apply() const {
    if (threads > 0) set_num_threads(threads);
    warn_if_busy();
}

std::string mib(int64_t b) { return fmt::format("{:.2f} MiB", double(b) / (1024.0 * 1024.0)); }

std::string human_bytes(int64_t b) {
    if (b < 1024) return fmt::format("{} B", b);
    if (b < 1024 * 1024) return fmt::format("{:.1f} KiB", double(b) / 1024.0);
    return mib(b);
}

std::string memory_table(const MemStats& s) {
    std::string out = fmt::format("{:<20}{:>14}{:>14}\n", "memory", "current", "peak");
    for (int i = 0; i < int(Mem::kCount); i++)
        out += fmt::format("  {:<18}{:>14}{:>14}\n", mem_name(Mem(i)), mib(s.current[size_t(i)]), mib(s.peak[size_t(i)]));
    out += fmt::format("  {:<18}{:>14}{:>14}\n", "all at once", mib(s.total_current), mib(s.total_peak));
    out += fmt::format("freed and kept for reuse {}; peak RSS {}", mib(s.cached), mib(peak_rss_bytes()));
    return out;
}

nlohmann::json memory_json(const MemStats& s) {
    nlohmann::json j;
    for (int i = 0; i < int(Mem::kCount); i++) {
        std::string name = mem_name(Mem(i));
        std::replace(name.begin(), name.end(), ' ', '_');
        if (name == "saved_activations") name = "saved";
        j["peak_" + name + "_bytes"] = s.peak[size_t(i)];
    }
    j["peak_total_bytes"] = s.total_peak;
    j["peak_rss_bytes"] = peak_rss_bytes();
    return j;
}

bool stdout_is_terminal() { return isatty(STDOUT_FILENO) == 1; }
