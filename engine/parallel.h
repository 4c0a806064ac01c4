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

void set_num_threads(int n);   // OpenMP and OpenBLAS together; default: OMP_NUM_THREADS or all cores
int num_threads();
