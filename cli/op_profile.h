// cli/op_profile.h — time by op: where a training step's time goes (`peft bench --profile`).
//
// Note [Op profile]
// OpProfiler is a ProfileHook (engine/profile_hook.h): while it is installed, every op's
// forward is charged the wall time since the previous event (the previous op, or the last
// mark(), which the caller makes before each forward and before backward), and every backward
// closure the time since the previous one. So the forward times add up to the whole forward,
// and work done between two ops (building position ids, say) is charged to the op after it.
// Time outside forward and backward (the optimizer) is not an op's: callers report it as the
// rest of the step. The GEMMs' FLOPs (2·M·N·K each, reported by gemm) are charged the same way,
// so an op's GEMM rate is its FLOPs over its time, and a frozen weight shows up as a backward
// with half the FLOPs of a trained one: no dW GEMM.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include "engine/profile_hook.h"

struct OpTime {
    double forward_ms = 0, backward_ms = 0;
    double forward_flop = 0, backward_flop = 0;   // of the GEMMs the op ran
    int64_t calls = 0;                            // forwards recorded
};
using OpProfile = std::map<std::string, OpTime>;   // by op name, e.g. "linear"

class OpProfiler : public ProfileHook {
public:
    void start();        // clear, install as the engine's hook, and mark
    void mark();         // the next event's time starts now
    OpProfile stop();    // uninstall; what was gathered since start()
    ~OpProfiler() override;

    void op(const char* name, Phase phase) override;
    void gemm_flop(double flop) override;

private:
    std::chrono::steady_clock::time_point last_;
    std::atomic<int64_t> flop_{0};   // GEMM FLOPs since the last event (GEMMs run on several threads)
    OpProfile table_;
};
