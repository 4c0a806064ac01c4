// engine/parallel.cpp — thread count for OpenMP and OpenBLAS together.
#include "parallel.h"
#include <omp.h>
#include <algorithm>
#include "check.h"

extern "C" void openblas_set_num_threads(int);

void set_num_threads(int n) {
    ENGINE_CHECK(n >= 1 && n <= 1024, ValueError, "threads must be between 1 and 1024, got {}", n);
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

int choose_threads(int requested, int cores, int busy, std::string& note) {
    cores = std::max(1, cores);
    const int free_cores = std::max(1, cores - std::max(0, busy));
    note.clear();
    if (requested > cores) {
        note = fmt::format("{} threads asked for, but this machine has {} cores: using {}", requested, cores, cores);
        return cores;
    }
    if (requested > 0) {
        if (requested > free_cores && requested > 1)
            note = fmt::format("{} other process(es) are using the CPU; {} threads that spin-wait for each other will be "
                               "slow: use --threads {}, or OMP_WAIT_POLICY=passive", busy, requested, free_cores);
        return requested;
    }
    if (free_cores < cores)
        note = fmt::format("{} other process(es) are using the CPU: using {} thread(s) of {} cores (choose with --threads)",
                           busy, free_cores, cores);
    return free_cores;
}
