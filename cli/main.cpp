// cli/main.cpp — the one program: `peft <subcommand> [--flags]`. Library code throws; here
// every error becomes one line "error: ..." and exit code 1 (2 for bad command lines).
#include <algorithm>
#include <cstdio>
#include <thread>
#include "common.h"
#include "engine/dist.h"
#include "engine/parallel.h"

// Under mpirun every rank runs this same program (docs/DISTRIBUTED.md). The ranks must be started
// alike; only rank 0 prints to stdout (the others' stdout goes to /dev/null) and writes files;
// errors go to stderr from whichever rank meets them, naming it. Each rank takes its share of
// the machine's cores unless OMP_NUM_THREADS or --threads says otherwise.
static void join_mpi_job(int argc, char** argv) {
    dist::init();
    if (dist::size() == 1) return;
    if (dist::rank() != 0 && !std::freopen("/dev/null", "w", stdout)) dist::abort(1);
    if (!std::getenv("OMP_NUM_THREADS"))
        set_num_threads(std::max(1, int(std::thread::hardware_concurrency()) / dist::local_size()));
    // The command line as {"subcommand": "train", "--lr": "0.01", ...}, so a difference names the flag.
    nlohmann::json args = nlohmann::json::object();
    std::string key = "subcommand";
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (a.rfind("--", 0) == 0) {
            key = a;
            args[key] = "";
            continue;
        }
        const std::string before = args.contains(key) ? args[key].get<std::string>() : "";
        args[key] = before.empty() ? a : before + " " + a;
    }
    dist::check_same("the command line", args.dump());
}

// Edit distance (insertions, deletions, substitutions) between two flag names.
static size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); j++) row[j] = j;
    for (size_t i = 1; i <= a.size(); i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); j++) {
            const size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

// "unknown flag --stepz (did you mean --steps?)" for arguments the command did not expect.
static std::string unexpected_message(const CLI::App& app) {
    const CLI::App* cmd = &app;
    for (const CLI::App* sub : app.get_subcommands()) cmd = sub;
    const std::string name = cmd == &app ? "peft" : "peft " + cmd->get_name();
    std::vector<std::string> parts;
    bool value_of_unknown = false;   // the word after an unknown flag is most likely its value
    for (const std::string& arg : cmd->remaining()) {
        if (arg.rfind("-", 0) != 0) {
            if (!value_of_unknown) parts.push_back(fmt::format("unexpected argument '{}'", arg));
            value_of_unknown = false;
            continue;
        }
        value_of_unknown = arg.find('=') == std::string::npos;
        const std::string flag = arg.substr(0, arg.find('='));
        std::string best;
        size_t best_d = 3;   // suggest within two edits
        for (const CLI::Option* opt : cmd->get_options())
            for (const std::string& l : opt->get_lnames()) {
                const size_t d = edit_distance(flag, "--" + l);
                if (d < best_d) best_d = d, best = "--" + l;
            }
        parts.push_back(best.empty() ? fmt::format("unknown flag {}", flag)
                                     : fmt::format("unknown flag {} (did you mean {}?)", flag, best));
    }
    std::string msg = parts.empty() ? "unexpected arguments" : parts[0];
    for (size_t i = 1; i < parts.size(); i++) msg += "; " + parts[i];
    return msg + fmt::format("; see {} --help", name);
}

int main(int argc, char** argv) {
    CLI::App app{"peft.cpp: train GPT-style models and fine-tune them with LoRA, IA3, adapters, prefix, prompt and P-tuning"};
    app.require_subcommand(1);
    add_train_command(app);
    add_generate_command(app);
    add_eval_command(app);
    add_forward_command(app);
    add_merge_command(app);
    add_quantize_command(app);
    add_inspect_command(app);
    add_export_command(app);
    add_bench_engine_command(app);
    add_gen_data_command(app);
    add_bench_command(app);
    add_compare_command(app);
    add_combine_command(app);
    add_bench_mixed_command(app);
    add_tokenize_command(app);
    add_status_command(app);
    try {
        join_mpi_job(argc, argv);
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);   // --help
        // One line, like every other error (CLI11 alone adds "Run with --help for more information").
        std::string msg = dynamic_cast<const CLI::ExtrasError*>(&e) ? unexpected_message(app) : std::string(e.what());
        std::replace(msg.begin(), msg.end(), '\n', ' ');
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", msg.c_str());
        return 2;
    } catch (const dist::MismatchError& e) {   // every rank knows it: rank 0 says it, all leave in order
        std::fflush(stdout);
        if (dist::rank() == 0) std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s%s\n", dist::who().c_str(), e.what());
        if (dist::size() > 1) dist::abort(1);   // the other ranks cannot know: end them too
        return 1;
    }
    return 0;
}
