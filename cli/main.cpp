// cli/main.cpp — the `peft` command line: one subcommand per task.
#include <CLI/CLI.hpp>
#include <cstdio>
#include "engine/check.h"

void add_bench_engine_command(CLI::App& app);

int main(int argc, char** argv) {
    CLI::App app{"peft"};
    app.require_subcommand(1);
    add_bench_engine_command(app);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
