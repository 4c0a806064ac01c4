// engine/memory.cpp — Storage's allocation, and the per-category counters.
#include "memory.h"
#include <sys/mman.h>
#include <sys/resource.h>
#include <malloc.h>
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <fmt/format.h>
#include "check.h"

namespace {
constexpr size_t kHuge = size_t(2) << 20;

struct Counters {
    std::mutex mu;
    MemStats stats;
};

Counters& counters() {
    static Counters* p = new Counters();   // never destroyed: Storages in static objects may outlive main
    return *p;
}

// Note [Keeping freed memory]
// Every buffer is plain malloc'ed and freed, but glibc is told once to keep what is freed:
// never to hand out big blocks with their own mmap (which free unmaps) and never to trim
// the heap. So freed activations stay resident, and the next step's allocations of any size
// reuse them (free neighbours coalesce): no page faults after the first step, and, unlike
// per-size free lists, the activations freed during backward can become the gradients.
void keep_freed_memory() {
    static const bool once = [] {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, INT_MAX);
        return true;
    }();
    (void)once;
}

void account(Mem m, int64_t delta) {
    MemStats& s = counters().stats;
    int i = int(m);
    s.current[i] += delta;
    s.total_current += delta;
    if (s.current[i] > s.peak[i]) s.peak[i] = s.current[i];
    if (s.total_current > s.total_peak) s.total_peak = s.total_current;
}

}  // namespace

const char* mem_name(Mem m) {
    static const char* names[] = {"params", "grads", "optimizer", "saved activations", "workspace", "quantized"};
    return names[int(m)];
}

Storage::Storage(size_t bytes, Mem category) : bytes_(bytes), cat_(category) {
    keep_freed_memory();
    // malloc + 64 bytes, aligned by hand: aligned_alloc would carve each buffer out of a larger
    // free chunk, so a freed buffer could never be reused exactly by one of the same size.
    const size_t n = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    base_ = std::malloc(n + 64);
    if (!base_) throw Error(fmt::format("out of memory: cannot allocate {} bytes", bytes));
    ptr_ = reinterpret_cast<void*>((uintptr_t(base_) + 64) / 64 * 64);
    if (n >= kHuge) {   // fewer first-touch faults: ask for huge pages on the 2 MiB-aligned interior
        const uintptr_t lo = (uintptr_t(ptr_) + kHuge - 1) / kHuge * kHuge, hi = (uintptr_t(ptr_) + n) / kHuge * kHuge;
        if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
    }
    std::lock_guard<std::mutex> lock(counters().mu);
    account(cat_, int64_t(bytes_));
}

Storage::~Storage() {
    {
        std::lock_guard<std::mutex> lock(counters().mu);
        account(category(), -int64_t(bytes_));
    }
    std::free(base_);
}

void Storage::set_category(Mem m) {
    std::lock_guard<std::mutex> lock(counters().mu);
    account(category(), -int64_t(bytes_));
    cat_ = m;
    account(category(), int64_t(bytes_));
}

void Storage::add_saved_ref() {
    std::lock_guard<std::mutex> lock(counters().mu);
    Mem before = category();
    saved_refs_++;
    if (category() != before) { account(before, -int64_t(bytes_)); account(category(), int64_t(bytes_)); }
}

void Storage::drop_saved_ref() {
    std::lock_guard<std::mutex> lock(counters().mu);
    Mem before = category();
    saved_refs_--;
    if (category() != before) { account(before, -int64_t(bytes_)); account(category(), int64_t(bytes_)); }
}

MemStats mem_stats() {
    std::lock_guard<std::mutex> lock(counters().mu);
    MemStats s = counters().stats;
    s.cached = int64_t(mallinfo2().fordblks);   // freed bytes malloc keeps resident for reuse
    return s;
}

void mem_reset_peak() {
    std::lock_guard<std::mutex> lock(counters().mu);
    MemStats& s = counters().stats;
    s.peak = s.current;
    s.total_peak = s.total_current;
}

static std::string mib(int64_t b) { return fmt::format("{:.2f} MiB", double(b) / (1024.0 * 1024.0)); }

std::string mem_report(const MemStats& s) {
    std::string out;
    for (int i = 0; i < int(Mem::kCount); i++)
        out += fmt::format("{}{} {} (peak {})", i ? ", " : "", mem_name(Mem(i)), mib(s.current[i]), mib(s.peak[i]));
    out += fmt::format("; total {} (peak {}); freed but resident {}", mib(s.total_current), mib(s.total_peak), mib(s.cached));
    return out;
}

int64_t peak_rss_bytes() {
    struct rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return int64_t(ru.ru_maxrss) * 1024;   // Linux reports KiB
}
