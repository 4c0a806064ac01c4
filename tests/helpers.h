// tests/helpers.h — what every test file uses: allclose, the random-projection loss, gradcheck,
// the accumulation check and the thread-count comparison.
//
// gradcheck compares backward() with central finite differences of the loss
//     L(inputs) = sum(fn(inputs) ⊙ R),   R a fixed random tensor,
// never plain sum(): a uniform upstream gradient (all ones) hides indexing bugs in backward.
// The loss is accumulated in double; the op itself runs in float32.
//
// Tolerances: |analytic − numeric| ≤ atol + rtol·|numeric|. With float32 forwards and a step
// h = 1e-2·max(1,|x|), the difference quotient carries ~1e-7·|L|/h of rounding noise and
// O(h²) truncation error, so rtol 2e-2 / atol 1e-3 separates real bugs (wrong by O(1)) from
// noise. `precise` uses the 4-point stencil, whose truncation error is O(h⁴), for curvy ops
// (GELU, softmax, LayerNorm, attention).
#pragma once
#include <doctest/doctest.h>
#include <cmath>
#include <functional>
#include <string>
#include <vector>
#include <utility>
#include "engine/autograd.h"
#include "engine/parallel.h"
#include "engine/rng.h"
#include "engine/tensor.h"

// L = sum(y ⊙ R) as a one-element tensor, recorded with its own tiny node (independent of the ops under test).
inline Tensor projection_loss(const Tensor& y, const Tensor& R) {
    double acc = 0;
    const float *yp = y.data(), *rp = R.data();
    for (int64_t i = 0; i < y.numel(); i++) acc += double(yp[i]) * rp[i];
    Tensor L = Tensor::full({1}, float(acc));
    Saved Rs = save(R);
    record(L, "projection_loss", {y}, [Rs](const Tensor& dy, Grads& g) {
        GradBuf b = g.buf(0);
        const float d = dy.data()[0];
        for (int64_t i = 0; i < Rs->numel(); i++) b.acc(i, d * Rs.data()[i]);
    });
    return L;
}

inline double projection_loss_value(const Tensor& y, const Tensor& R) {
    double acc = 0;
    for (int64_t i = 0; i < y.numel(); i++) acc += double(y.data()[i]) * R.data()[i];
    return acc;
}

struct GradcheckOptions {
    double rtol = 2e-2, atol = 1e-3;   // see the header comment for why
    double h = 1e-2;                   // relative step: h·max(1, |x|)
    bool precise = false;              // 4-point stencil for curvy ops
    int max_elems = 2000;              // check a random subset of larger inputs
    uint64_t seed = 1234;
};

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Checks d L / d input for every F32 input that requires grad. Returns the number of mismatches.
inline int gradcheck(const std::string& name, const TensorFn& fn, std::vector<Tensor> inputs,
                     GradcheckOptions opt = {}) {
    Rng rng(opt.seed);
    for (Tensor& x : inputs)
        if (x.defined() && x.requires_grad()) x.zero_grad();
    Tensor y = fn(inputs);
    Tensor R = Tensor::randn(y.shape(), rng);
    projection_loss(y, R).backward();

    auto loss_at = [&]() {
        NoGradGuard ng;
        return projection_loss_value(fn(inputs), R);
    };
    int bad = 0;
    for (size_t k = 0; k < inputs.size(); k++) {
        Tensor& x = inputs[k];
        if (!x.defined() || !x.requires_grad()) continue;
        REQUIRE_MESSAGE(x.has_grad(), name << ": input " << k << " got no gradient");
        std::vector<float> analytic = x.grad().to_vector();
        float* xp = x.data();
        const int64_t n = x.numel();
        for (int s = 0; s < std::min<int64_t>(n, opt.max_elems); s++) {
            const int64_t j = n <= opt.max_elems ? s : int64_t(rng.below(uint64_t(n)));
            const float x0 = xp[j];
            const double h = opt.h * std::max(1.0, std::fabs(double(x0)));
            auto at = [&](double delta) { xp[j] = float(x0 + delta); double v = loss_at(); xp[j] = x0; return v; };
            // the actual float steps, so the quotient divides by what was really added
            const double hp = double(float(x0 + h)) - x0, hm = x0 - double(float(x0 - h));
            double numeric;
            if (opt.precise) numeric = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h);
            else numeric = (at(h) - at(-h)) / (hp + hm);
            const double a = analytic[size_t(j)];
            if (std::fabs(a - numeric) > opt.atol + opt.rtol * std::fabs(numeric)) {
                if (bad < 5)
                    FAIL_CHECK(name << ": input " << k << " element " << j << ": analytic " << a << " numeric "
                                    << numeric << " ratio " << (numeric != 0 ? a / numeric : 0));
                bad++;
            }
        }
    }
    CHECK_MESSAGE(bad == 0, name << ": " << bad << " gradient mismatches");
    return bad;
}

// max |a - b| ≤ atol + rtol |b|, elementwise; reports the worst element.
inline bool allclose(const std::vector<float>& a, const std::vector<double>& b, double rtol, double atol,
                     std::string* why = nullptr) {
    if (a.size() != b.size()) { if (why) *why = "size differs"; return false; }
    for (size_t i = 0; i < a.size(); i++)
        if (!(std::fabs(a[i] - b[i]) <= atol + rtol * std::fabs(b[i]))) {
            if (why) *why = "element " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " + std::to_string(b[i]);
            return false;
        }
    return true;
}

inline Tensor param(const Shape& s, Rng& rng, float stddev = 1.f) {
    Tensor t = Tensor::randn(s, rng, stddev);
    t.set_requires_grad(true);
    return t;
}

// Backward twice without zeroing: the second pass adds (beta = 1) onto the first, so every
// gradient must come out doubled.
template <class F>
void check_gradients_accumulate(std::vector<Tensor> leaves, F loss) {
    for (Tensor& t : leaves) t.zero_grad();
    loss().backward();
    std::vector<std::vector<float>> once;
    for (Tensor& t : leaves) once.push_back(t.grad().to_vector());
    loss().backward();
    for (size_t i = 0; i < leaves.size(); i++) {
        std::vector<double> twice(once[i].begin(), once[i].end());
        for (double& v : twice) v *= 2;
        std::string why;
        CHECK_MESSAGE(allclose(leaves[i].grad().to_vector(), twice, 1e-6, 1e-7, &why), "input " << i << ": " << why);
    }
}

// Runs fn on 1 and then on 2 threads (OpenMP and OpenBLAS) and returns both results.
template <class F>
auto with_1_and_2_threads(F fn) {
    const int prev = num_threads();
    set_num_threads(1);
    auto one = fn();
    set_num_threads(2);
    auto two = fn();
    set_num_threads(prev);
    return std::make_pair(one, two);
}
