// engine/kernels.h — the loop shapes the op files share (internal: ops call these, users don't).
//
// Every helper writes each output element from exactly one thread, in a fixed order, so the
// results are bitwise the same for any thread count (Note [Threading: rows are independent]).
// Loops under kParallelMin elements stay on one thread: waking the team costs more than
// the work. `#pragma omp simd` tells the compiler the iterations are independent, so these
// contiguous loops vectorise even when it cannot prove the pointers do not overlap.
#pragma once
#include <algorithm>
#include <cstdint>
#include "autograd.h"

constexpr int64_t kParallelMin = 32768;   // elements; smaller loops run on the calling thread

// y[i] = f(i) for i in [0, n).
template <class F>
inline void map_n(float* y, int64_t n, F f) {
#pragma omp parallel for simd schedule(static) if (parallel: n >= kParallelMin)
    for (int64_t i = 0; i < n; i++) y[i] = f(i);
}

// d[i] = f(i) into a fresh gradient buffer (beta 0), d[i] += f(i) otherwise.
template <class F>
inline void acc_n(GradBuf d, int64_t n, F f) {
    float* p = d.p;
    if (d.beta == 0.f) map_n(p, n, f);
    else map_n(p, n, [p, &f](int64_t i) { return p[i] + f(i); });
}

// y[r, j] = f(r·C + j, j) over a (rows, C) matrix: the column j indexes a row vector.
template <class F>
inline void map_rows(float* y, int64_t rows, int64_t C, F f) {
#pragma omp parallel for schedule(static) if (rows * C >= kParallelMin)
    for (int64_t r = 0; r < rows; r++)
#pragma omp simd
        for (int64_t j = 0; j < C; j++) y[r * C + j] = f(r * C + j, j);
}

template <class F>
inline void acc_rows(GradBuf d, int64_t rows, int64_t C, F f) {
    float* p = d.p;
    if (d.beta == 0.f) map_rows(p, rows, C, f);
    else map_rows(p, rows, C, [p, &f](int64_t i, int64_t j) { return p[i] + f(i, j); });
}

// d[at + j] (+)= src[j] for j in [0, n): one row of a gradient, serial (call it from a row loop).
inline void acc_row(GradBuf d, int64_t at, const float* src, int64_t n) {
    float* p = d.p + at;
    if (d.beta == 0.f) {
        std::copy(src, src + n, p);
    } else {
#pragma omp simd
        for (int64_t j = 0; j < n; j++) p[j] += src[j];
    }
}

// db[j] (+)= sum_r a[r,j] (· b[r,j] when b is given) over a (rows, n) matrix: the reduction
// across rows of a bias or row-vector gradient. Split over columns, never over rows: each
// thread sums its blocks of 64 columns over all rows, in row order.
inline void add_column_sums(GradBuf db, const float* a, int64_t rows, int64_t n, const float* b = nullptr) {
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMin)
    for (int64_t j0 = 0; j0 < n; j0 += 64) {
        const int64_t w = std::min<int64_t>(64, n - j0);
        float acc[64] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float* ar = a + r * n + j0;
            if (b) {
                const float* br = b + r * n + j0;
#pragma omp simd
                for (int64_t j = 0; j < w; j++) acc[j] += ar[j] * br[j];
            } else {
#pragma omp simd
                for (int64_t j = 0; j < w; j++) acc[j] += ar[j];
            }
        }
        for (int64_t j = 0; j < w; j++) db.acc(j0 + j, acc[j]);
    }
}

// ---- dropout masks (the dropout op and LoRA's branch dropout draw them the same way)

// numel n as bits (1 = kept), drawn on this thread word after word — a seed fixes it for any
// thread count — each rng.next_u64() giving two 32-bit draws, element i kept when its draw is
// >= p·2³². As bits the mask costs 1/32 of the tensor it masks.
inline Tensor draw_dropout_mask(int64_t n, float p, Rng& rng) {
    Tensor mask = Tensor::empty({(n + 31) / 32}, DType::I32);
    uint32_t* m = reinterpret_cast<uint32_t*>(mask.idata());
    const uint64_t cut = uint64_t(double(p) * 4294967296.0);
    for (int64_t w = 0; w < mask.numel(); w++) {
        uint32_t word = 0;
        for (int k = 0; k < 32; k += 2) {
            const uint64_t draws = rng.next_u64();
            word |= uint32_t((draws & 0xffffffffu) >= cut) << k | uint32_t((draws >> 32) >= cut) << (k + 1);
        }
        m[w] = word;
    }
    return mask;
}
inline const uint32_t* mask_bits(const Tensor& mask) { return reinterpret_cast<const uint32_t*>(mask.idata()); }
// 1.0 where element i is kept, else 0.0 (a multiply instead of a branch, so loops vectorise).
inline float mask_kept(const uint32_t* m, int64_t i) { return float((m[i >> 5] >> (i & 31)) & 1u); }
