// engine/dist.h — data-parallel training across processes: who am I, how many are we, and the
// few collective operations a data-parallel trainer needs (MPI underneath, Open MPI here).
//
// Data parallelism in one paragraph: N processes ("ranks") hold the same weights. Each step,
// every rank runs forward and backward on its own examples; then the trainable gradients are
// summed across ranks (all-reduce) and divided, so every rank holds the gradient of the whole
// global batch and takes the same optimizer step: the weights stay identical without ever being
// sent. Only the trainable gradients cross the wire — for LoRA a fraction of a percent of the
// model (see docs/DISTRIBUTED.md for the cost model and measurements).
//
// Without mpirun nothing here touches MPI: rank() is 0, size() is 1, the collectives return
// their input, and MPI's libraries are not even loaded (Note [Loading MPI only under mpirun]).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>
#include "engine/check.h"

namespace dist {

// True when mpirun/mpiexec started this process: Open MPI sets OMPI_COMM_WORLD_SIZE, other
// PMIx launchers PMIX_RANK.
bool launched();
// Joins the MPI job when launched() (loads the MPI backend, MPI_Init); a no-op otherwise or
// when called again. FileError when the backend cannot be loaded or MPI fails to start.
void init();
bool active();      // init() joined a job
int rank();         // this process's number in the job, 0 … size()−1; 0 without MPI
int size();         // processes in the job; 1 without MPI
int local_size();   // processes of the job on this machine (OMPI_COMM_WORLD_LOCAL_SIZE); 1 without MPI
// "rank 1 of 4: " under MPI, "" otherwise: a prefix for messages that only some ranks print.
std::string who();

// Element-wise sum over all ranks, in place; every rank gets the same result (MPI_Allreduce).
void allreduce_sum(float* data, int64_t n);
void allreduce_sum(double* data, int64_t n);
// Rank 0's bytes (or string) to every rank.
void broadcast(void* data, int64_t bytes);
std::string broadcast(const std::string& s);
// Every rank's string, in rank order, on every rank.
std::vector<std::string> allgather(const std::string& s);
void barrier();
// Ends every process of the job with `code` (MPI_Abort): what a rank does after an error that
// the others cannot know about. Without MPI: std::exit(code).
[[noreturn]] void abort(int code);
// Leaves the job (MPI_Finalize); registered with atexit by init(), so a normal exit does it.
void finalize();

// A 64-bit hash of bytes, for comparing weights, data files and settings across ranks.
uint64_t hash_bytes(const void* data, size_t n, uint64_t h = 0x9e3779b97f4a7c15ull);

// Thrown on every rank alike when the ranks disagree (settings, data, weights): each rank knows
// the same message, so the job can end in order (only rank 0 prints it).
struct MismatchError : ValueError { using ValueError::ValueError; };

// Checks that every rank has the same `value` of `what`; otherwise throws MismatchError on every
// rank naming the first rank that differs from rank 0 and how: for two JSON objects, the keys
// whose values differ ("rank 1 differs from rank 0 in the settings: lr 0.02 vs 0.01").
void check_same(const std::string& what, const std::string& value);

}  // namespace dist
