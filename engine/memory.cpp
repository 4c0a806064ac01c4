// engine/memory.cpp — the caching allocator behind Storage, and the per-category counters.
#include "memory.h"
#include <sys/mman.h>
#include <sys/resource.h>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>
#include <fmt/format.h>
#include "check.h"

namespace {

struct Pool {
    std::mutex mu;
    std::unordered_map<size_t, std::vector<void*>> free_lists;   // size class -> cached buffers
    MemStats stats;
};
Pool& pool() {
    static Pool* p = new Pool();   // never destroyed: Storages in static objects may outlive main
    return *p;
}

// Sizes are rounded up to classes (1/8 steps between powers of two) so near sizes share buffers.
size_t size_class(size_t bytes) {
    if (bytes <= 4096) return (bytes + 63) / 64 * 64;
    size_t p = 4096;
    while (p * 2 < bytes) p *= 2;
    size_t step = p / 8;
    return (bytes + step - 1) / step * step;
}

void account(Mem m, int64_t delta) {
    MemStats& s = pool().stats;
    int i = int(m);
    s.current[i] += delta;
    s.total_current += delta;
    if (s.current[i] > s.peak[i]) s.peak[i] = s.current[i];
    if (s.total_current > s.total_peak) s.total_peak = s.total_current;
}

}  // namespace

const char* mem_name(Mem m) {
    static const char* names[] = {"params", "grads", "optimizer", "saved activations", "other"};
    return names[int(m)];
}

Storage::Storage(size_t bytes, Mem category) : bytes_(bytes), cat_(category) {
    size_t cls = size_class(bytes ? bytes : 1);
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    auto it = p.free_lists.find(cls);
    if (it != p.free_lists.end() && !it->second.empty()) {
        ptr_ = it->second.back();
        it->second.pop_back();
        p.stats.cached -= int64_t(cls);
    } else {
        ptr_ = std::aligned_alloc(64, (cls + 63) / 64 * 64);
        if (!ptr_) throw Error(fmt::format("out of memory: cannot allocate {} bytes", bytes));
        if (cls >= (size_t(2) << 20)) madvise(ptr_, cls, MADV_HUGEPAGE);   // fewer page faults
    }
    account(cat_, int64_t(bytes_));
}

Storage::~Storage() {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    account(category(), -int64_t(bytes_));
    size_t cls = size_class(bytes_ ? bytes_ : 1);
    p.free_lists[cls].push_back(ptr_);
    p.stats.cached += int64_t(cls);
}

void Storage::set_category(Mem m) {
    std::lock_guard<std::mutex> lock(pool().mu);
    account(category(), -int64_t(bytes_));
    cat_ = m;
    account(category(), int64_t(bytes_));
}

void Storage::add_saved_ref() {
    std::lock_guard<std::mutex> lock(pool().mu);
    Mem before = category();
    saved_refs_++;
    if (category() != before) { account(before, -int64_t(bytes_)); account(category(), int64_t(bytes_)); }
}

void Storage::drop_saved_ref() {
    std::lock_guard<std::mutex> lock(pool().mu);
    Mem before = category();
    saved_refs_--;
    if (category() != before) { account(before, -int64_t(bytes_)); account(category(), int64_t(bytes_)); }
}

MemStats mem_stats() {
    std::lock_guard<std::mutex> lock(pool().mu);
    return pool().stats;
}

void mem_reset_peak() {
    std::lock_guard<std::mutex> lock(pool().mu);
    MemStats& s = pool().stats;
    s.peak = s.current;
    s.total_peak = s.total_current;
}

void pool_release_cache() {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    for (auto& [cls, list] : p.free_lists)
        for (void* ptr : list) std::free(ptr);
    p.free_lists.clear();
    p.stats.cached = 0;
}

static std::string mib(int64_t b) { return fmt::format("{:.2f} MiB", double(b) / (1024.0 * 1024.0)); }

std::string mem_report(const MemStats& s) {
    std::string out;
    for (int i = 0; i < int(Mem::kCount); i++)
        out += fmt::format("{}{} {} (peak {})", i ? ", " : "", mem_name(Mem(i)), mib(s.current[i]), mib(s.peak[i]));
    out += fmt::format("; total {} (peak {}); pool cache {}", mib(s.total_current), mib(s.total_peak), mib(s.cached));
    return out;
}

int64_t peak_rss_bytes() {
    struct rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return int64_t(ru.ru_maxrss) * 1024;   // Linux reports KiB
}
