// engine/dist.cpp — rank, size and collectives, through MPI when mpirun started us.
#include "dist.h"
#include <dlfcn.h>
#include <unistd.h>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include "dist_backend.h"

// Note [Loading MPI only under mpirun]
// Linking the program against libmpi would load Open MPI's libraries (libmpi, libopen-rte,
// libopen-pal, hwloc, libevent, …) into every run: about 6 ms more start-up here on a plain
// `peft --help` of ~21 ms, before MPI is even used. So the MPI calls live in their own shared
// library, build/libpeft_mpi.so, beside the program, and init() loads it with dlopen only when
// the environment says mpirun started us. RTLD_GLOBAL: Open MPI loads its own components
// (mca_*.so) later, and they look up libmpi's symbols globally. $PEFT_MPI_LIB names another
// path for it.

namespace dist {
namespace {

const DistBackend* backend = nullptr;
int my_rank = 0, world = 1;

std::string backend_path() {
    if (const char* p = std::getenv("PEFT_MPI_LIB"); p && *p) return p;
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    std::string dir = n > 0 ? std::string(exe, size_t(n)) : std::string("./peft");
    dir = dir.substr(0, dir.find_last_of('/') + 1);
    return dir + "libpeft_mpi.so";
}

int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
}

}  // namespace

bool launched() { return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK"); }
bool active() { return backend != nullptr; }
int rank() { return my_rank; }
int size() { return world; }
int local_size() { return active() ? std::max(1, env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1)) : 1; }
std::string who() { return world > 1 ? fmt::format("rank {} of {}: ", my_rank, world) : std::string(); }

void init() {
    if (backend || !launched()) return;
    const std::string path = backend_path();
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
    ENGINE_CHECK(lib != nullptr, FileError, "started by mpirun, but the MPI backend {} cannot be loaded: {} (build it with make)",
                 path, dlerror());
    using Get = const DistBackend* (*)();
    auto get = reinterpret_cast<Get>(dlsym(lib, "peft_dist_backend"));
    ENGINE_CHECK(get != nullptr, FileError, "{}: no peft_dist_backend symbol", path);
    const DistBackend* b = get();
    ENGINE_CHECK(b->init(&my_rank, &world) == 0, FileError, "MPI_Init failed");
    backend = b;
    std::atexit(finalize);
}

void allreduce_sum(float* data, int64_t n) { if (world > 1) backend->allreduce_sum_f32(data, n); }
void allreduce_sum(double* data, int64_t n) { if (world > 1) backend->allreduce_sum_f64(data, n); }
void broadcast(void* data, int64_t bytes) { if (world > 1) backend->broadcast(data, bytes, 0); }
void barrier() { if (world > 1) backend->barrier(); }
void finalize() { if (backend) backend->finalize(); }

[[noreturn]] void abort(int code) {
    std::fflush(stdout);
    std::fflush(stderr);
    if (world > 1) backend->abort(code);
    std::exit(code);
}

static std::string broadcast_from(const std::string& s, int root) {
    if (world == 1) return s;
    int64_t n = int64_t(s.size());
    backend->broadcast(&n, sizeof n, root);
    std::string out = my_rank == root ? s : std::string(size_t(n), '\0');
    backend->broadcast(out.data(), n, root);
    return out;
}
std::string broadcast(const std::string& s) { return broadcast_from(s, 0); }

std::vector<std::string> allgather(const std::string& s) {
    if (world == 1) return {s};
    // Every string padded to the longest: MPI_Allgather moves the same byte count per rank.
    const int64_t mine = int64_t(s.size());
    std::vector<int64_t> lens(static_cast<size_t>(world), 0);
    backend->allgather(&mine, lens.data(), sizeof mine);
    int64_t longest = 0;
    for (int64_t l : lens) longest = std::max(longest, l);
    std::string padded = s;
    padded.resize(size_t(longest));
    std::string all(size_t(longest * world), '\0');
    backend->allgather(padded.data(), all.data(), longest);
    std::vector<std::string> out;
    for (int r = 0; r < world; r++) out.push_back(all.substr(size_t(r * longest), size_t(lens[size_t(r)])));
    return out;
}

uint64_t hash_bytes(const void* data, size_t n, uint64_t h) {
    // 8 bytes at a time, each word multiplied, rotated and folded in (a multiply–rotate hash in
    // the spirit of xxHash; it only has to tell different buffers apart, not resist attack).
    const unsigned char* p = static_cast<const unsigned char*>(data);
    auto mix = [&h](uint64_t w) {
        h ^= w * 0x9fb21c651e98df25ull;
        h = (h << 27 | h >> 37) * 0xc2b2ae3d27d4eb4full;
    };
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        mix(w);
    }
    uint64_t tail = 0;
    std::memcpy(&tail, p + i, n - i);
    mix(tail ^ (uint64_t(n) << 56));
    h ^= h >> 33;
    return h * 0xff51afd7ed558ccdull;
}

// How `theirs` (rank r's) differs from `ours` (rank 0's): the differing keys of two JSON objects,
// else both values (cut short).
static std::string describe_difference(const std::string& ours, const std::string& theirs) {
    auto a = nlohmann::json::parse(ours, nullptr, false), b = nlohmann::json::parse(theirs, nullptr, false);
    if (a.is_object() && b.is_object()) {
        std::vector<std::string> diffs;
        for (auto& [k, v] : b.items())
            if (!a.contains(k) || a[k] != v) diffs.push_back(fmt::format("{} {} vs {}", k, v.dump(), a.contains(k) ? a[k].dump() : "(none)"));
        for (auto& [k, v] : a.items())
            if (!b.contains(k)) diffs.push_back(fmt::format("{} (none) vs {}", k, v.dump()));
        if (!diffs.empty()) return fmt::format("{}", fmt::join(diffs, ", "));
    }
    auto cut = [](const std::string& s) { return s.size() > 200 ? s.substr(0, 200) + "…" : s; };
    return fmt::format("'{}' vs '{}'", cut(theirs), cut(ours));
}

void check_same(const std::string& what, const std::string& value) {
    if (world == 1) return;
    const std::string ours = broadcast(value);
    const char differs = value != ours;
    std::string flags(size_t(world), '\0');
    backend->allgather(&differs, flags.data(), 1);
    const size_t first = flags.find('\1');
    if (first == std::string::npos) return;
    const std::string theirs = broadcast_from(value, int(first));
    throw MismatchError(fmt::format("rank {} differs from rank 0 in {}: {} (ranks must be started alike)", first, what,
                                    describe_difference(ours, theirs)));
}

}  // namespace dist
