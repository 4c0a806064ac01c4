// engine/dist_backend.h — the few MPI calls the program makes, as a table of functions.
//
// engine/dist_mpi.cpp fills this table with plain MPI calls and is built as its own shared
// library (build/libpeft_mpi.so, linked against Open MPI). engine/dist.cpp loads it with dlopen
// only when mpirun started the process, so a plain run never loads MPI's libraries (Note
// [Loading MPI only under mpirun], engine/dist.cpp).
#pragma once
#include <cstdint>

struct DistBackend {
    int (*init)(int* rank, int* size);                          // MPI_Init_thread (FUNNELED); 0 = ok
    void (*allreduce_sum_f32)(float* data, int64_t n);          // in place, every rank gets the sum
    void (*allreduce_sum_f64)(double* data, int64_t n);
    void (*broadcast)(void* data, int64_t bytes, int root);     // root's bytes to every rank
    void (*allgather)(const void* mine, void* all, int64_t bytes);   // rank r's bytes at all + r·bytes
    void (*barrier)();
    void (*abort)(int code);                                     // ends every process of the job
    void (*finalize)();
};

// The one symbol libpeft_mpi.so exports.
extern "C" const DistBackend* peft_dist_backend();
