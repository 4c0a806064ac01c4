// engine/profile.cpp — the op profile's clock and table (Note [Op profile], profile.h).
#include "profile.h"
#include <atomic>
#include <chrono>

namespace {
bool g_on = false;
std::chrono::steady_clock::time_point g_last;
std::atomic<int64_t> g_flop{0};   // GEMM FLOPs since the last mark (GEMMs run on several threads)
OpProfile g_profile;
}  // namespace

bool profile_on() { return g_on; }
void profile_mark() {
    g_last = std::chrono::steady_clock::now();
    g_flop = 0;
}
void profile_gemm(double flop) { g_flop.fetch_add(int64_t(flop), std::memory_order_relaxed); }
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
