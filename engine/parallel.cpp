// engine/parallel.cpp — thread count for OpenMP and OpenBLAS together.
#include "parallel.h"
#include <omp.h>
#include "check.h"

extern "C" void openblas_set_num_threads(int);

void set_num_threads(int n) {
    ENGINE_CHECK(n >= 1 && n <= 1024, ValueError, "threads must be between 1 and 1024, got {}", n);
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }
