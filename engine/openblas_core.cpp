// engine/openblas_core.cpp — chooses OpenBLAS's AVX-512 kernels on AMD CPUs it does not know yet.
// Not part of build/libpeft.a: the Makefile links this file into the programs (build/peft and
// build/tests) only, so a program that uses the library decides for itself.
//
// Note [OpenBLAS kernel on AVX-512 AMD CPUs]
// What: sets the environment variable OPENBLAS_CORETYPE to "SkylakeX" (or "Cooperlake" when the
// CPU has bfloat16 instructions) before OpenBLAS starts.
// When: only on an AMD CPU with AVX-512 (F, DQ, CD, BW, VL), and only if OPENBLAS_CORETYPE is not
// already set. Everywhere else it does nothing.
// Why: OpenBLAS built with DYNAMIC_ARCH (Debian's) picks its kernels from the CPU model number
// when the library loads. A release older than the CPU (0.3.21 in Debian 12 on a Zen 5 EPYC)
// does not know its AMD family and falls back to the AVX2 "Haswell" kernels, although the CPU
// runs AVX-512 at full width: sgemm then reaches about half the machine's rate (measured on a
// Zen 5 EPYC, 2 threads, n = 2048: Haswell 188-199 GFLOP/s, SkylakeX 363-372). Newer OpenBLAS
// releases treat these CPUs as their Intel AVX-512 counterparts, as this file does.
// How: OpenBLAS reads the variable in its own initialiser, which runs before any constructor of
// ours, so the variable is set from .preinit_array, which the loader runs before the
// initialisers of shared libraries. The variable is set in this process (and its children)
// only: bench/suite.py hands the reference trainer the kernels `peft bench --json` reports.
// Turning it off: set OPENBLAS_CORETYPE yourself (e.g. OPENBLAS_CORETYPE=Haswell: a user's value
// is never replaced), or build without this file: `make OPENBLAS_CORE=`.
// Under valgrind, which hides AVX-512 from CPUID, nothing is set. blas_core()
// (engine/blas.h) reports the kernels in use.
#include <cstdlib>

static void choose_openblas_core() {
    __builtin_cpu_init();   // needed this early, before any constructor has run
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl");
    if (__builtin_cpu_is("amd") && avx512)
        setenv("OPENBLAS_CORETYPE", __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX", 0);
}
__attribute__((section(".preinit_array"), used)) static void (*const choose_openblas_core_at_load)() =
    choose_openblas_core;
// The C library rebuilds the environment after .preinit_array has run; setting the variable
// again from an ordinary initialiser keeps it for getenv and for child processes.
static const bool openblas_core_kept = (choose_openblas_core(), true);
