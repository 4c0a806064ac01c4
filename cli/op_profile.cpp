// cli/op_profile.cpp — the op profile's clock and table (Note [Op profile], op_profile.h).
#include "op_profile.h"

void OpProfiler::start() {
    table_.clear();
    profile_hook = this;
    mark();
}

void OpProfiler::mark() {
    last_ = std::chrono::steady_clock::now();
    flop_ = 0;
}

OpProfile OpProfiler::stop() {
    if (profile_hook == this) profile_hook = nullptr;
    return std::move(table_);
}

OpProfiler::~OpProfiler() {
    if (profile_hook == this) profile_hook = nullptr;
}

void OpProfiler::gemm_flop(double flop) { flop_.fetch_add(int64_t(flop), std::memory_order_relaxed); }

void OpProfiler::op(const char* name, Phase phase) {
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count(), flop = double(flop_.exchange(0));
    last_ = now;
    OpTime& t = table_[name];
    if (phase == Forward) {
        t.forward_ms += ms;
        t.forward_flop += flop;
        t.calls++;
    } else {
        t.backward_ms += ms;
        t.backward_flop += flop;
    }
}
