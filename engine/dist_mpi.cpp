// engine/dist_mpi.cpp — the MPI side of engine/dist: each entry of DistBackend is one MPI call.
// Built alone into build/libpeft_mpi.so (see the Makefile), the only file that includes mpi.h.
// MPI counts are ints: buffers longer than 2^30 elements go in pieces. OMPI_SKIP_MPICXX (Makefile):
// only the C API, not Open MPI's deprecated C++ bindings.
#include <mpi.h>
#include <algorithm>
#include "engine/dist_backend.h"

namespace {

constexpr int64_t kPiece = int64_t(1) << 30;

int init(int* rank, int* size) {
    int provided = 0;
    // FUNNELED: only the main thread calls MPI; OpenMP threads compute between the calls.
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return 1;
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    return 0;
}

template <class T>
void allreduce_sum(T* data, int64_t n, MPI_Datatype type) {
    for (int64_t i = 0; i < n; i += kPiece)
        MPI_Allreduce(MPI_IN_PLACE, data + i, int(std::min(kPiece, n - i)), type, MPI_SUM, MPI_COMM_WORLD);
}
void allreduce_sum_f32(float* data, int64_t n) { allreduce_sum(data, n, MPI_FLOAT); }
void allreduce_sum_f64(double* data, int64_t n) { allreduce_sum(data, n, MPI_DOUBLE); }

void broadcast(void* data, int64_t bytes, int root) {
    char* p = static_cast<char*>(data);
    for (int64_t i = 0; i < bytes; i += kPiece)
        MPI_Bcast(p + i, int(std::min(kPiece, bytes - i)), MPI_BYTE, root, MPI_COMM_WORLD);
}

void allgather(const void* mine, void* all, int64_t bytes) {
    MPI_Allgather(mine, int(bytes), MPI_BYTE, all, int(bytes), MPI_BYTE, MPI_COMM_WORLD);
}

void barrier() { MPI_Barrier(MPI_COMM_WORLD); }
void abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }
void finalize() {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

const DistBackend kBackend{init, allreduce_sum_f32, allreduce_sum_f64, broadcast, allgather, barrier, abort, finalize};

}  // namespace

extern "C" const DistBackend* peft_dist_backend() { return &kBackend; }
