// engine/parallel.h — the threading policy, in one place.
//
// Note [Threading: rows are independent]
// The engine's own loops run under OpenMP, split over independent output rows: each output
// element is computed by exactly one thread, in a fixed order, with no atomics and no
// cross-thread reductions. So results are bitwise identical for any thread count.
// Reductions across rows (a bias gradient, a LayerNorm weight gradient) are split over
// output *columns* instead, each thread summing its columns over all rows in order.
// OpenBLAS (its OpenMP build) runs its own threads from the same OpenMP pool, so the two
// never oversubscribe the cores. A gemm called from inside one of our parallel regions runs
// on the calling thread alone (OpenBLAS checks omp_in_parallel()): attention uses that to
// give each thread whole heads (Note [Attention: one head per thread]), and small GEMMs run as
// two halves side by side (Note [Small GEMMs in two halves], engine/blas.cpp).
#pragma once
#include <string>

void set_num_threads(int n);   // OpenMP and OpenBLAS together; default: OMP_NUM_THREADS or all cores
int num_threads();

// How many threads to use. requested: --threads or OMP_NUM_THREADS (0: neither given); cores:
// the machine's; busy: other processes running right now. OpenMP threads spin-wait for each
// other, so a thread without a core of its own slows every step many times over: by default
// use the free cores (at least 1), and never more threads than cores. `note` says why when the
// choice is not what was asked or not every core ("" otherwise).
int choose_threads(int requested, int cores, int busy, std::string& note);
