// cli/common.cpp — strict numeric flags, --config files, shared flags, printing helpers.
#include "common.h"
#include <filesystem>
#include <algorithm>
#include <climits>
#include <array>
#include <cstdio>
#include <fstream>
#include <cstdlib>
#include <thread>
#include <unistd.h>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include "engine/fileio.h"
#include "engine/parallel.h"
#include "engine/reference_ops.h"

// ---- numeric flags

// [-]digits, or with `fraction`: [-]digits[.digits][(e|E)[+|-]digits], where one side of the
// '.' may be empty (.5, 5.). No hex, no inf/nan, no spaces, nothing after.
static bool is_decimal(const std::string& s, bool fraction) {
    size_t i = !s.empty() && s[0] == '-' ? 1 : 0;
    auto digits = [&] {
        const size_t from = i;
        while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) i++;
        return i - from;
    };
    size_t n = digits();
    if (fraction && i < s.size() && s[i] == '.') { i++; n += digits(); }
    if (n == 0) return false;
    if (fraction && i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < s.size() && (s[i] == '+' || s[i] == '-')) i++;
        if (digits() == 0) return false;
    }
    return i == s.size();
}

template <class T>
static std::string strict_integer(std::string& text, T lo, T hi) {
    const std::string expected = fmt::format("(expected an integer in [{}, {}])", lo, hi);
    if (!is_decimal(text, false)) return fmt::format("'{}' is not a decimal integer {}", text, expected);
    T v{};
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi)   // a '-' on an unsigned too
        return fmt::format("{} is out of range {}", text, expected);
    text = fmt::format("{}", v);
    return {};
}

std::string strict_number(std::string& text, int64_t lo, int64_t hi) { return strict_integer(text, lo, hi); }
std::string strict_number(std::string& text, uint64_t lo, uint64_t hi) { return strict_integer(text, lo, hi); }

std::string strict_number(std::string& text, double lo, double hi) {
    const std::string expected = fmt::format("(expected a number in [{:g}, {:g}], e.g. 0.001 or 1e-3)", lo, hi);
    if (!is_decimal(text, true)) return fmt::format("'{}' is not a decimal number {}", text, expected);
    errno = 0;
    const double v = std::strtod(text.c_str(), nullptr);
    if (errno == ERANGE || !(v >= lo && v <= hi)) return fmt::format("{} is out of range {}", text, expected);
    text = fmt::format("{}", v);
    return {};
}

// ---- --config FILE.json

// Sets each option named by a key of the JSON object in `file` (the long flag without "--")
// that the command line left unset, through the option's own checks. CLI11 2.1 reads config
// files for the top-level app only, so a subcommand's --config is this option callback.
static void apply_json_config(CLI::App& cmd, const std::string& file) {
    auto bad = [&](const std::string& what) { return CLI::ValidationError("--config", file + ": " + what); };
    const nlohmann::json j = nlohmann::json::parse(read_file(file, 1 << 20), nullptr, false);
    if (!j.is_object()) throw bad(j.is_discarded() ? "not valid JSON (a number out of range is invalid too)" : "not a JSON object");
    for (const auto& [key, value] : j.items()) {
        CLI::Option* opt = cmd.get_option_no_throw("--" + key);
        if (!opt || !opt->get_configurable()) throw bad(fmt::format("unknown key \"{}\" (keys are flags without --)", key));
        if (opt->count() > 0) continue;   // the command line wins
        std::vector<std::string> inputs;
        for (const nlohmann::json& v : value.is_array() ? value : nlohmann::json::array({value})) {
            if (!v.is_string() && !v.is_number() && !v.is_boolean())
                throw bad(fmt::format("\"{}\" must be a number, string, boolean or a list of them", key));
            inputs.push_back(v.is_string() ? v.get<std::string>() : v.dump());
        }
        try {
            opt->add_result(inputs);
            opt->run_callback();   // validates and stores now, whatever the options' order
        } catch (const CLI::ParseError& e) {
            throw bad(e.what());
        }
    }
}

void CommonFlags::add(CLI::App& cmd) {
    add_number(&cmd, "--threads", threads, "threads for OpenMP and OpenBLAS (default: OMP_NUM_THREADS, else the cores no other process is using; never more than the cores)", 1, 1024);
    add_number(&cmd, "--seed", seed, "random seed")->capture_default_str();
    cmd.add_flag("--reference_ops", reference_ops,
                 "run the plain versions of the fast ops (slow; the same results), as PEFT_REFERENCE_OPS=1 does");
    cmd.add_option_function<std::string>("--config", [&cmd](const std::string& file) { apply_json_config(cmd, file); },
                                         "JSON file with flags as keys, e.g. {\"steps\": 200, \"target_modules\": [\"q_proj\"]}")
        ->configurable(false);
}

// Processes running besides this one: the 4th field of /proc/loadavg counts the running ones,
// this one included; the fewest of three looks 2 ms apart.
static int other_running() {
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
    return std::max(0, others);
}

// The thread count (engine/parallel.h, choose_threads): --threads, else OMP_NUM_THREADS, else
// the free cores. Said on stderr when it is not what was asked, or not every core.
void CommonFlags::apply() const {
    int requested = threads;
    if (requested == 0)
        if (const char* env = std::getenv("OMP_NUM_THREADS")) requested = std::max(0, std::atoi(env));
    const int cores = int(std::thread::hardware_concurrency());
    const bool spin = !std::getenv("OMP_WAIT_POLICY");   // passive waiting does not suffer from busy cores
    std::string note;
    const int n = choose_threads(requested, cores, spin && (requested == 0 || requested > 1) ? other_running() : 0, note);
    set_num_threads(n);
    if (reference_ops) set_reference_ops(true);
    if (!note.empty()) fmt::print(stderr, "{}: {}\n", requested > 0 ? "warning" : "note", note);
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

std::string self_exe() {
    std::array<char, 4096> buf{};
    const ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    ENGINE_CHECK(n > 0, FileError, "cannot find the running program (/proc/self/exe)");
    return std::string(buf.data(), size_t(n));
}

nlohmann::json run_json(const std::string& cmd, const std::string& log_path) {
    std::string out;
    int rc = -1;
    if (FILE* p = popen((cmd + " 2>&1").c_str(), "r")) {
        std::array<char, 4096> buf{};
        while (fgets(buf.data(), int(buf.size()), p)) out += buf.data();
        rc = pclose(p);
    }
    if (!log_path.empty()) std::ofstream(log_path, std::ios::binary) << out;
    const std::string where = log_path.empty() ? out : "see " + log_path;
    ENGINE_CHECK(rc == 0, Error, "this command failed: {}\n{}", cmd, where);
    nlohmann::json j;
    for (size_t end = out.size(); end > 0 && !j.is_object();) {   // lines from the last one back
        const size_t nl = out.rfind('\n', end - 1), start = nl == std::string::npos ? 0 : nl + 1;
        std::string line = out.substr(start, end - start);
        if (line.rfind("JSON ", 0) == 0) line = line.substr(5);
        j = nlohmann::json::parse(line, nullptr, false);
        end = nl == std::string::npos ? 0 : nl;
    }
    ENGINE_CHECK(j.is_object(), Error, "this command printed no JSON line: {}\n{}", cmd, where);
    return j;
}

void add_quantize_flag(CLI::App& cmd, std::string& value) {
    cmd.add_option("--quantize", value,
                   "store the frozen base's block Linears quantised: q8_0, q4_0 or nf4 (the embedding / LM head stays "
                   "float32; docs/MEMORY.md)");
}

std::optional<QType> quantize_format(const std::string& value, const std::string& method) {
    if (value.empty()) return std::nullopt;
    const QType t = parse_qtype(value);
    ENGINE_CHECK(method != "full", ValueError,
                 "--quantize {} with full fine-tuning: quantised weights are frozen blocks no gradient can update; "
                 "train a PEFT method over them (e.g. --method lora)", value);
    return t;
}

std::string canonical_path(const std::string& path) {
    std::error_code ec;
    const std::filesystem::path p = std::filesystem::weakly_canonical(path, ec);
    return ec ? path : p.string();
}
