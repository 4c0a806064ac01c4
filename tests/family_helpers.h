// tests/family_helpers.h — the independent references the LoRA-family lessons check against:
// each test builds the adapted weight W' of one Linear from HF PEFT's formula with plain loops
// in double, and compares the module's output with x W'ᵀ + b.
#pragma once
#include <cmath>
#include <vector>
#include "peft_helpers.h"

using Mat = std::vector<double>;   // row-major, sizes passed beside it

inline Mat to_mat(const Tensor& t) { return Mat(t.data(), t.data() + t.numel()); }

// C (m, n) = A (m, k) · B (k, n)
inline Mat matmul_ref(const Mat& A, const Mat& B, int64_t m, int64_t k, int64_t n) {
    Mat C(size_t(m * n), 0.0);
    for (int64_t i = 0; i < m; i++)
        for (int64_t p = 0; p < k; p++)
            for (int64_t j = 0; j < n; j++) C[size_t(i * n + j)] += A[size_t(i * k + p)] * B[size_t(p * n + j)];
    return C;
}

// y = x W'ᵀ + b for x (rows, in), W' (out, in), b (out) or undefined.
inline std::vector<double> apply_weight(const Tensor& x, const Mat& Wp, const Tensor& b, int64_t out, int64_t in) {
    const int64_t rows = x.numel() / in;
    std::vector<double> y(size_t(rows * out));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double acc = b.defined() ? b.data()[o] : 0.0;
            for (int64_t i = 0; i < in; i++) acc += double(x.data()[r * in + i]) * Wp[size_t(o * in + i)];
            y[size_t(r * out + o)] = acc;
        }
    return y;
}

// The target Linear's output on x (no graph), as the model computes it with the adapter active.
inline std::vector<float> module_output(const Linear& lin, const Tensor& x) {
    NoGradGuard ng;
    return lin(x).to_vector();
}

// Fills every parameter of the method with N(0, std²) values: past init, where each term matters.
inline void randomize(Method& m, Rng& rng, float std = 0.3f) {
    for (const Param& p : m.params.all())
        for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] = float(rng.normal() * std);
}

inline json method_config(const char* peft_type, const json& extra = json::object()) {
    json c = {{"peft_type", peft_type}};
    c.update(extra);
    return c;
}
