// tests/family_helpers.h — the independent references the LoRA-family lessons check against:
// each test builds the adapted weight W' of one Linear from HF PEFT's formula with plain loops
// in double, and compares the module's output with x W'ᵀ + b.
#pragma once
#include <algorithm>
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

// max |Mᵀ M − I| over the k columns of a row-major (rows, k) matrix: 0 for orthonormal columns.
inline double orthonormality_error(const float* M, int64_t rows, int64_t k) {
    double worst = 0;
    for (int64_t a = 0; a < k; a++)
        for (int64_t b = 0; b < k; b++) {
            double dot = 0;
            for (int64_t i = 0; i < rows; i++) dot += double(M[i * k + a]) * M[i * k + b];
            worst = std::max(worst, std::fabs(dot - (a == b)));
        }
    return worst;
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

// ---- the method contract, shared by the lessons of the LoRA family

// With the method attached and active at init, the logits are the base model's, bit for bit.
inline void check_identity_at_init(const json& config) {
    auto m = lesson_model();
    const std::vector<float> base = logits_of(*m);
    Rng rng(21);
    PeftModel pm(*m);
    pm.add("default", make_method(config, *m, rng));
    CHECK(logits_of(*m) == base);
}

// 40 AdamW steps lower the loss below `ratio` × the first; the base gets no gradient buffer and
// stays bit for bit the same.
inline void check_training(const json& config, float ratio = 0.9f, float lr = 1e-2f) {
    auto m = lesson_model();
    const uint64_t before = base_checksum(*m);
    Rng rng(22);
    PeftModel pm(*m);
    pm.add("default", make_method(config, *m, rng));
    std::vector<float> losses = train_method(*m, *pm.active(), 40, lr);
    CHECK(losses.back() < ratio * losses.front());
    CHECK(base_has_no_grads(*m));
    CHECK(base_checksum(*m) == before);
}

// Merged logits equal the unmerged ones (to float rounding), and unmerge restores W bit for bit;
// save → load into a fresh base gives the same logits bit for bit.
inline void check_merge_and_files(const json& config) {
    auto m = lesson_model();
    Rng rng(23);
    PeftModel pm(*m);
    pm.add("default", make_method(config, *m, rng));
    Method& method = *pm.active();
    randomize(method, rng, 0.2f);
    const std::vector<float> adapted = logits_of(*m);
    CHECK(adapted != logits_of(*lesson_model()));   // the adapter does change the model
    const uint64_t base = base_checksum(*m);
    method.merge(*m);
    CHECK(m->h[0].attn.q_proj.wrap == nullptr);
    std::string why;
    CHECK_MESSAGE(allclose(logits_of(*m), std::vector<double>(adapted.begin(), adapted.end()), 1e-5, 1e-5, &why), why);
    method.unmerge(*m);
    CHECK(base_checksum(*m) == base);
    CHECK(logits_of(*m) == adapted);
    TempDir dir;
    save_adapter(dir.path, method, *m);
    auto m2 = lesson_model();
    Rng other(999);
    PeftModel pm2(*m2);
    pm2.add("default", load_adapter(dir.path, *m2, other));
    CHECK(logits_of(*m2) == adapted);
}
