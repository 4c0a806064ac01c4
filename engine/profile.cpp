// engine/profile.cpp — the op profile's clock and table (Note [Op profile], profile.h).
#include "profile.h"
#include <chrono>

namespace {
bool g_on = false;
std::chrono::steady_clock::time_point g_last;
OpProfile g_profile;
}  // namespace

bool profile_on() { return g_on; }
void profile_mark() { g_last = std::chrono::steady_clock::now(); }
void profile_start() {
    g_profile.clear();
    g_on = true;
    profile_mark();
}
OpProfile profile_stop() {
    g_on = false;
    return std::move(g_profile);
}

// The milliseconds since the last mark, and a new mark now.
static double lap_ms() {
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - g_last).count();
    g_last = now;
    return ms;
}

void profile_forward(const char* op) {
    OpTime& t = g_profile[op];
    t.forward_ms += lap_ms();
    t.calls++;
}
void profile_backward(const char* op) { g_profile[op].backward_ms += lap_ms(); }
