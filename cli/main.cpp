// cli/main.cpp — the one program: `peft <subcommand> [--flags]`. Library code throws; here
// every error becomes one line "error: ..." and exit code 1 (2 for bad command lines).
#include <cstdio>
#include "common.h"

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
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
