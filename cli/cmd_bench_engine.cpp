// cli/cmd_bench_engine.cpp — `peft bench-engine`: how close the engine runs to raw GEMM speed.
//
// Prints medians over --repeats runs (after one warm-up) of:
//   - raw sgemm, y = x Wᵀ, at two transformer-like shapes: the machine's reference rate;
//   - linear forward + backward through the autograd, once with a trainable W and once with a
//     frozen W. x requires grad in both (as inside a network), so the trainable backward runs
//     two GEMMs (dx, dW) and the frozen one only dx: the ratio of their times shows the skipped dW;
//   - causal attention forward + backward at GPT-2-small-like sizes, against its FLOP count.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fmt/format.h>
#include <vector>
#include "common.h"
#include "engine/blas.h"
#include "engine/ops.h"
#include "engine/parallel.h"

namespace {

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// A one-element stand-in for "the rest of the network": its backward hands the fixed gradient
// `grad` to y. Only a copy, so the timed backward is the op's own.
Tensor seed_loss(const Tensor& y, const Tensor& grad) {
    Tensor L = Tensor::zeros({1});
    Saved gs = save(grad);
    record(L, "bench_seed", {y}, [gs](const Tensor&, Grads& g) {
        GradBuf b = g.buf(0);
        const float* src = gs.data();
        if (b.beta == 0.f) std::memcpy(b.p, src, gs->nbytes());
        else for (int64_t i = 0; i < gs->numel(); i++) b.p[i] += src[i];
    });
    return L;
}

struct Times { double fwd = 0, bwd = 0; };

// Medians of forward time and backward time of `forward()` (which returns the op's output).
template <class F>
Times time_fwd_bwd(int repeats, std::vector<Tensor> leaves, F forward) {
    std::vector<double> tf, tb;
    Rng rng(7);
    Tensor grad;
    for (int r = 0; r <= repeats; r++) {   // run 0 warms the memory pool and BLAS up
        for (Tensor& t : leaves) t.zero_grad();
        const double t0 = now_seconds();
        Tensor y = forward();
        const double t1 = now_seconds();
        if (!grad.defined()) grad = Tensor::randn(y.shape(), rng);
        Tensor L = seed_loss(y, grad);
        const double t2 = now_seconds();
        L.backward();
        const double t3 = now_seconds();
        if (r > 0) { tf.push_back(t1 - t0); tb.push_back(t3 - t2); }
    }
    return {median(tf), median(tb)};
}

double gflops(double flops, double seconds) { return flops / seconds * 1e-9; }

void run_bench(int repeats) {
    fmt::print("bench-engine: {} threads, medians over {} repeats\n", num_threads(), repeats);
    struct Size { int64_t M, K, N; };
    const Size sizes[] = {{1024, 384, 1536}, {2048, 768, 768}};
    double sgemm_rate = 0;
    Rng rng(1);
    for (const Size& s : sizes) {
        Tensor x = Tensor::randn({s.M, s.K}, rng), W = Tensor::randn({s.N, s.K}, rng, 0.05f);
        Tensor y = Tensor::empty({s.M, s.N});
        const double flop = 2.0 * double(s.M) * double(s.N) * double(s.K);
        std::vector<double> t;
        for (int r = 0; r <= repeats; r++) {
            const double t0 = now_seconds();
            gemm(Trans::N, Trans::T, s.M, s.N, s.K, 1.f, x.data(), W.data(), 0.f, y.data());
            if (r > 0) t.push_back(now_seconds() - t0);
        }
        const double rate = gflops(flop, median(t));
        sgemm_rate = std::max(sgemm_rate, rate);
        fmt::print("\nM={} K={} N={}\n", s.M, s.K, s.N);
        fmt::print("  raw gemm            {:8.2f} ms  {:7.1f} GFLOP/s\n", median(t) * 1e3, rate);

        Times tt{}, tf{};
        for (bool trainable : {true, false}) {
            Tensor xl = x.clone(), Wl = W.clone();
            xl.set_requires_grad(true);
            Wl.set_requires_grad(trainable);
            Times m = time_fwd_bwd(repeats, {xl, Wl}, [&] { return linear(xl, Wl); });
            const int gemms = trainable ? 3 : 2;   // forward, dx, and dW if trainable
            fmt::print("  linear {:9}    fwd {:7.2f} ms  bwd {:7.2f} ms  fwd+bwd {:7.1f} GFLOP/s ({} GEMMs)\n",
                       trainable ? "trainable" : "frozen", m.fwd * 1e3, m.bwd * 1e3,
                       gflops(gemms * flop, m.fwd + m.bwd), gemms);
            (trainable ? tt : tf) = m;
        }
        fmt::print("  frozen / trainable backward time: {:.2f}\n", tf.bwd / tt.bwd);
    }

    const int64_t B = 8, H = 6, T = 256, D = 64;
    Tensor q = Tensor::randn({B, T, H * D}, rng), k = Tensor::randn({B, T, H * D}, rng);
    Tensor v = Tensor::randn({B, T, H * D}, rng);
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    const float sc = 1.f / std::sqrt(float(D));
    Times m = time_fwd_bwd(repeats, {q, k, v}, [&] { return causal_attention(q, k, v, H, 0, sc); });
    // Dense count: 2 GEMMs forward (q kᵀ, A v) and 4 backward, each 2·T·T·D per head.
    const double flop = 6 * 2.0 * double(B * H) * double(T) * double(T) * double(D);
    const double ideal = flop / (sgemm_rate * 1e9);
    fmt::print("\nattention B={} H={} T={} D={}: fwd {:.2f} ms  bwd {:.2f} ms  total {:.2f} ms\n", B, H, T, D,
               m.fwd * 1e3, m.bwd * 1e3, (m.fwd + m.bwd) * 1e3);
    fmt::print("  {:.2f} GFLOP (dense, 6 GEMMs); at the sgemm rate {:.1f} GFLOP/s that is {:.2f} ms\n", flop * 1e-9,
               sgemm_rate, ideal * 1e3);
    fmt::print("  effective {:.1f} GFLOP/s = {:.2f} of the sgemm rate (time {:.2f}x the ideal)\n",
               gflops(flop, m.fwd + m.bwd), gflops(flop, m.fwd + m.bwd) / sgemm_rate, (m.fwd + m.bwd) / ideal);
}

}  // namespace

void add_bench_engine_command(CLI::App& app) {
    auto* cmd = app.add_subcommand("bench-engine", "time GEMM, linear and attention forward + backward");
    static int repeats = 10, threads = 0;
    add_number(cmd, "--repeats", repeats, "timed runs per measurement (the median is printed)", 1, 100000);
    add_number(cmd, "--threads", threads, "threads for OpenMP and OpenBLAS (default: OMP_NUM_THREADS or all cores)", 1, 1024);
    cmd->callback([] {
        if (threads > 0) set_num_threads(threads);
        run_bench(repeats);
    });
}
