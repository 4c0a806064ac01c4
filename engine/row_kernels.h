// engine/row_kernels.h — the inner loops of the row-wise ops (softmax, layernorm, attention,
// cross-entropy): the max, sum and dot product of one row, and e^x for x ≤ 0.
//
// Note [Row reductions in 8 lanes]
// A single running sum is a serial chain of dependent adds: the compiler may not reorder it
// (that would change the result; only -ffast-math allows it) so it runs one add per ~4 cycles.
// These reductions keep 8 partial results instead, lane l taking elements l, l+8, l+16, ...,
// combined in a fixed tree at the end. The order is fixed in the source, so the result does not
// depend on the thread count or the vector width, and the 8 independent lanes vectorise.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

// max_j x[j], −inf for n = 0. NaNs are skipped here; they reach the output through exp anyway.
inline float row_max(const float* x, int64_t n) {
    float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
    for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    for (int l = 1; l < 8; l++) m[0] = m[l] > m[0] ? m[l] : m[0];
    return m[0];
}

// Σ_j x[j] in double.
inline double row_sum(const float* x, int64_t n) {
    double s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) s[l] += x[i + l];
    for (; i < n; i++) s[0] += x[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// Σ_j a[j] b[j] in double.
inline double row_dot(const float* a, const float* b, int64_t n) {
    double s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) s[l] += double(a[i + l]) * b[i + l];
    for (; i < n; i++) s[0] += double(a[i]) * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// e^x for x ≤ 0 (softmax and log-sum-exp only need e^(x − max)), within 1 ulp of the exact value;
// 0 below −87.3 (where e^x is subnormal) and at −inf; NaN for NaN. It is plain arithmetic, so a
// `#pragma omp simd` loop vectorises it, about 7x faster here than a call to expf per element.
// Method: x = n·ln2 + r with n = round(x / ln2), |r| ≤ ln2/2; e^r by its Taylor polynomial of
// degree 7 (truncation < 1e-8 relative); 2^n written straight into the float's exponent bits.
inline float exp_nonpos(float x) {
    const float xc = x > -87.3f ? x : -87.3f;                          // NaN becomes −87.3 here (fixed below)
    const float n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;   // round to integer: 1.5·2^23 trick
    const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;   // ln2 in two parts: n·hi is exact
    float p = 1.f / 5040;
    p = p * r + 1.f / 720;
    p = p * r + 1.f / 120;
    p = p * r + 1.f / 24;
    p = p * r + 1.f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    const int32_t bits = (int32_t(n) + 127) << 23;   // the float 2^n (n ≥ −126, so a normal number)
    float two_n;
    std::memcpy(&two_n, &bits, sizeof two_n);
    return x > -87.3f ? p * two_n : (x == x ? 0.f : x);
}

// x[j] ← e^(x[j] − m) in place, returning Σ_j of the new x[j] in double (m ≥ max_j x[j]).
inline double row_exp_in_place(float* x, int64_t n, float m) {
    double s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
#pragma omp simd
        for (int l = 0; l < 8; l++) x[i + l] = exp_nonpos(x[i + l] - m);
        for (int l = 0; l < 8; l++) s[l] += x[i + l];
    }
    for (; i < n; i++) s[0] += (x[i] = exp_nonpos(x[i] - m));
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// σ(z) = 1 / (1 + e^−z) from exp_nonpos(−|z|), so it vectorises the same way and never overflows:
// with e = e^−|z|, σ(z) = 1 / (1 + e) for z ≥ 0 and e / (1 + e) for z < 0.
inline float sigmoid_of(float z) {
    const float e = exp_nonpos(-std::fabs(z)), r = 1.f / (1.f + e);
    return z >= 0.f ? r : e * r;
}

// Σ_j e^(x[j] − m) in double, for m ≥ max_j x[j]: the normaliser of a softmax.
inline double row_sum_exp(const float* x, int64_t n, float m) {
    double s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float e[8];
#pragma omp simd
        for (int l = 0; l < 8; l++) e[l] = exp_nonpos(x[i + l] - m);
        for (int l = 0; l < 8; l++) s[l] += e[l];
    }
    for (; i < n; i++) s[0] += exp_nonpos(x[i] - m);
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}
