// cli/main.cpp — the one program: `peft <subcommand> [--flags]`. Library code throws; here
// every error becomes one line "error: ..." and exit code 1 (2 for bad command lines).
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

int main(int argc, char** argv) {
    CLI::App app{"peft.cpp: train GPT-style models and fine-tune them with LoRA, IA3, adapters, prefix, prompt and P-tuning"};
    app.require_subcommand(1);
    add_train_command(app);
    add_generate_command(app);
    add_eval_command(app);
    add_forward_command(app);
    add_merge_command(app);
    add_inspect_command(app);
    add_export_command(app);
    add_bench_engine_command(app);
    add_gen_data_command(app);
    add_bench_command(app);
    add_compare_command(app);
    add_combine_command(app);
    add_bench_mixed_command(app);
    add_tokenize_command(app);
    try {
        join_mpi_job(argc, argv);
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
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
