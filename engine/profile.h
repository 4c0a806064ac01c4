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
#include <vector>
#include "blas.h"

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

// Note [GEMM floor]
// How fast could a step be if everything but its GEMMs took no time? While the GEMM log is on,
// every gemm call's shape is kept; gemm_floor() then runs the same calls again, alone, on one
// set of buffers that every call reuses (operands as warm as they can be), and times them.
// The calls made at the top
// level run one after another, as gemm splits them over threads; those made inside a parallel
// region (one per thread, as attention's heads) run shared out over the threads. So the result
// is a floor for the step under this BLAS: no softmax, no layernorm, no optimizer, no waiting.
struct GemmCall {
    Trans ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    float beta;
    bool nested;   // called inside a parallel region, so single-threaded
    double flop() const { return 2.0 * double(M) * double(N) * double(K); }
};
struct GemmFloor {
    int64_t calls = 0;
    double flop = 0, ms = 0;   // ms: the median over the repeats of running all the calls once
};
void gemm_log(bool on);                 // start (clearing what was kept) or stop keeping the calls
const std::vector<GemmCall>& gemm_logged();
GemmFloor gemm_floor(const std::vector<GemmCall>& calls, int repeats);

// Called by gemm (engine/blas.cpp) only, also from inside parallel regions: charges the GEMM's
// FLOPs to the op profile if it is on, and keeps the call if the GEMM log is on.
bool gemm_watched();
void profile_gemm(const GemmCall& c);
