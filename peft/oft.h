// peft/oft.h — OFT's two ops (peft/oft.cpp); the method itself is built by make_oft (methods.h).
#pragma once
#include "engine/ops.h"

// R (n, b, b) from the upper triangles w (n, b(b−1)/2) of skew-symmetric Qs: the Cayley–Neumann
// series with `terms` terms as HF truncates it, or (terms ≤ 0) the exact (I − Q)(I + Q)⁻¹.
Tensor oft_rotation(const Tensor& w, int64_t b, int64_t terms);
// x (..., in) -> x rotated block by block: y[..., k·b + j] = Σ_i x[..., k·b + i] R[k, i, j]
// (R (in / b, b, b), or (1, b, b) shared by every block).
Tensor block_rotate(const Tensor& x, const Tensor& R);
