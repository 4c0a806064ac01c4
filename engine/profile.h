// engine/profile.h — time by op: where a training step's time goes (`peft bench --profile`).
//
// Note [Op profile]
// While the profile is on, every op's forward is charged the wall time from the previous op's
// record() call to its own (an op calls record() after its work), or from the last mark
// (profile_mark(), which callers make before each forward); every backward closure is timed on
// its own, from a mark just before it. So the forward times add up to
// the whole forward, and work done between two ops (building position ids, say) is charged to
// the op after it. Time outside forward and backward (the optimizer) is not an op's: callers
// report it as the rest of the step. Off (the default), the cost is one branch per op.
// The GEMMs' FLOPs (2·M·N·K each, counted by gemm itself) are charged the same way, so an
// op's GEMM rate is its FLOPs over its time, and a frozen weight shows up as a backward with
// half the FLOPs of a trained one: no dW GEMM.
#pragma once
#include <cstdint>
#include <map>
#include <string>

struct OpTime {
    double forward_ms = 0, backward_ms = 0;
    double forward_flop = 0, backward_flop = 0;   // of the GEMMs the op ran
    int64_t calls = 0;                            // forwards recorded
};
using OpProfile = std::map<std::string, OpTime>;   // by op name, e.g. "linear"

void profile_start();        // clear, turn on, and mark
void profile_mark();         // the next op's forward time starts now: call before each forward
OpProfile profile_stop();    // turn off; what was gathered since profile_start()

// Called by autograd (engine/autograd.cpp) only: record() charges the time since the last mark
// to op's forward; backward() marks before each closure and charges the time to op's backward.
bool profile_on();
void profile_forward(const char* op);
void profile_backward(const char* op);
// Called by gemm (engine/blas.cpp) only, also from inside parallel regions: a GEMM's FLOPs.
void profile_gemm(double flop);
