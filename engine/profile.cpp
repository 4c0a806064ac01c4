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

void profile_forward(const char* op) {
    const auto now = std::chrono::steady_clock::now();
    OpTime& t = g_profile[op];
    t.forward_ms += std::chrono::duration<double, std::milli>(now - g_last).count();
    t.calls++;
    g_last = now;
}
void profile_backward(const char* op, double ms) { g_profile[op].backward_ms += ms; }
