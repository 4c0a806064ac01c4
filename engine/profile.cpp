// engine/profile.cpp — the op profile's clock and table (Note [Op profile], profile.h), and the
// GEMM log and floor (Note [GEMM floor]).
#include "profile.h"
#include <omp.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include "parallel.h"

namespace {
bool g_on = false;
std::chrono::steady_clock::time_point g_last;
std::atomic<int64_t> g_flop{0};   // GEMM FLOPs since the last mark (GEMMs run on several threads)
OpProfile g_profile;
bool g_logging = false;
std::mutex g_log_mu;   // nested GEMMs are logged from several threads
std::vector<GemmCall> g_log;
}  // namespace

bool profile_on() { return g_on; }
bool gemm_watched() { return g_on || g_logging; }
void profile_mark() {
    g_last = std::chrono::steady_clock::now();
    g_flop = 0;
}
void profile_gemm(const GemmCall& c) {
    if (g_on) g_flop.fetch_add(int64_t(c.flop()), std::memory_order_relaxed);
    if (g_logging) {
        std::lock_guard<std::mutex> lock(g_log_mu);
        g_log.push_back(c);
    }
}
void profile_start() {
    g_profile.clear();
    g_on = true;
    profile_mark();
}
OpProfile profile_stop() {
    g_on = false;
    return std::move(g_profile);
}

// The milliseconds and GEMM FLOPs since the last mark, and a new mark now.
struct Lap { double ms, flop; };
static Lap lap() {
    const auto now = std::chrono::steady_clock::now();
    const Lap l{std::chrono::duration<double, std::milli>(now - g_last).count(), double(g_flop.exchange(0))};
    g_last = now;
    return l;
}

void profile_forward(const char* op) {
    OpTime& t = g_profile[op];
    const Lap l = lap();
    t.forward_ms += l.ms;
    t.forward_flop += l.flop;
    t.calls++;
}
void profile_backward(const char* op) {
    OpTime& t = g_profile[op];
    const Lap l = lap();
    t.backward_ms += l.ms;
    t.backward_flop += l.flop;
}

// ---- Note [GEMM floor]

void gemm_log(bool on) {
    if (on) g_log.clear();
    g_logging = on;
}
const std::vector<GemmCall>& gemm_logged() { return g_log; }

GemmFloor gemm_floor(const std::vector<GemmCall>& calls, int repeats) {
    GemmFloor f;
    size_t na = 0, nb = 0, nc = 0;   // floats the largest A, B and C need
    std::vector<GemmCall> top, nested;
    for (const GemmCall& c : calls) {
        na = std::max(na, size_t((c.ta == Trans::N ? c.M : c.K) * c.lda));
        nb = std::max(nb, size_t((c.tb == Trans::N ? c.K : c.N) * c.ldb));
        nc = std::max(nc, size_t(c.M * c.ldc));
        f.flop += c.flop();
        (c.nested ? nested : top).push_back(c);
    }
    f.calls = int64_t(calls.size());
    const int nt = num_threads();
    // Small non-zero values: zeros could be pages never written, read faster than real memory.
    std::vector<float> A(na, 1e-3f), B(nb, 1e-3f), C(nc * size_t(nt), 1e-3f);
    auto run = [&](const GemmCall& c, float* Cp) {
        gemm_ld(c.ta, c.tb, c.M, c.N, c.K, 1.f, A.data(), c.lda, B.data(), c.ldb, c.beta, Cp, c.ldc);
    };
    std::vector<double> ms;
    for (int r = 0; r <= repeats; r++) {   // run 0 warms up
        const auto t0 = std::chrono::steady_clock::now();
        for (const GemmCall& c : top) run(c, C.data());
#pragma omp parallel for schedule(static) num_threads(nt)
        for (size_t i = 0; i < nested.size(); i++) run(nested[i], C.data() + size_t(omp_get_thread_num()) * nc);
        if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    f.ms = ms.empty() ? 0 : ms[ms.size() / 2];
    return f;
}
