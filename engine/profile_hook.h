// engine/profile_hook.h — the engine's one seam for a profiler (`peft bench --profile` installs
// cli/op_profile.h's OpProfiler here). The engine measures nothing itself.
//
// Note [Profiling hook]
// While a hook is installed, the engine tells it two kinds of event and nothing else:
//   op(name, phase)  an op has just finished its forward work (autograd's record(), which every
//                    op calls after computing its output) or one backward closure has just run
//                    (autograd's backward()); `name` is the op's, e.g. "linear";
//   gemm_flop(n)     a GEMM of n = 2·M·N·K floating-point operations is about to run
//                    (engine/blas.cpp), possibly from inside a parallel region, so from any thread.
// The hook keeps its own clock: an event's time is the time since the hook's previous event.
// With no hook (the default) the cost is one pointer test per op and per GEMM.
#pragma once

struct ProfileHook {
    enum Phase { Forward, Backward };
    virtual ~ProfileHook() = default;
    virtual void op(const char* name, Phase phase) = 0;
    virtual void gemm_flop(double flop) = 0;
};

inline ProfileHook* profile_hook = nullptr;   // installed by a profiler; nullptr: off
