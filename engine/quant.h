// engine/quant.h — frozen weights stored in blocks of 8 or 4 bits: q8_0, q4_0 (ggml's layouts)
// and nf4 (QLoRA's NormalFloat-4), and the linear op that reads them.
//
// Each row of W (out, in) is cut into blocks of consecutive values; a block is stored as small
// integers and one scale:
//   q8_0  32 values: an fp16 scale d = max|x| / 127, then 32 int8 q = round(x / d);  x ≈ q·d.
//         34 bytes (ggml's block_q8_0, 8.5 bits a value).
//   q4_0  32 values: an fp16 scale d = m / −8, m the value of largest magnitude (sign kept), then
//         16 bytes: byte j holds q of element j in its low nibble and of element j+16 in its high
//         one, q = min(15, ⌊x/d + 8.5⌋);  x ≈ (q − 8)·d.  18 bytes (ggml's block_q4_0, 4.5 bits).
//   nf4   64 values: an fp32 absmax a, then 32 bytes of 4-bit indices into the 16 NormalFloat
//         levels (QLoRA, Dettmers et al. 2023: quantiles of N(0, 1) scaled to [−1, 1], 0 exact),
//         element 2i in the high nibble of byte i and 2i+1 in the low one (as bitsandbytes packs);
//         x ≈ level[q]·a.  36 bytes, 4.5 bits a value (the scales are not quantised again:
//         QLoRA's optional double quantisation would save another 0.37 bits a value).
// Worst error of one value, which tests/test_quant.cpp checks block by block: q8_0 d/2; q4_0 |d|
// (= max|x|/8, at the one clamped end, the value −m) and d/2 elsewhere; nf4 a times half the
// widest gap between neighbouring levels (−1 to −0.696: 0.152·a). q8_0 and q4_0 add the fp16
// rounding of d: at most 2⁻¹¹ of max|x|.
//
// Note [Dequantise by panel]
// OpenBLAS has no int8 or 4-bit GEMM. So quant_linear turns a panel of W's rows back into float32
// in one buffer (at most 16 MiB, or 1 MiB for a few rows of x), reused, and runs the same sgemm on
// it, panel after panel:
// forward y[:, panel] = x panelᵀ (+ b), backward dx += dy[:, panel] panel. Only one Linear's panel
// is float32 at a time, never the model's weights; dequantising is O(out·in) a pass against the
// GEMM's O(rows·out·in). One row (a generated token) goes the same way: gemm turns each panel's
// product into sgemv (engine/blas.cpp).
// The plain version, reference::quant_linear, dequantises all of W and calls linear() (tested equal).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include "tensor.h"

enum class QType { Q8_0, Q4_0, NF4 };
QType parse_qtype(const std::string& name);   // "q8_0" | "q4_0" | "nf4"; ValueError naming --quantize otherwise
const char* qtype_name(QType t);
int64_t qblock_values(QType t);                // values a block: 32, 32, 64
int64_t qblock_bytes(QType t);                 // bytes a block: 34, 18, 36
const std::array<float, 16>& nf4_levels();     // QLoRA's NormalFloat-4 levels, ascending, −1 … 0 … 1

// A (rows, cols) matrix as blocks along each row (row-major, block after block).
struct QWeight {
    QType type = QType::Q8_0;
    int64_t rows = 0, cols = 0;
    std::shared_ptr<Storage> blocks;   // rows · cols / qblock_values blocks, Mem::Quantized

    // Throws, naming `what`: ShapeError if W's columns do not divide into blocks, NumericError for a
    // NaN or Inf value, ValueError if a block's scale does not fit fp16 (q8_0, q4_0).
    static void check(const Tensor& W, QType type, const std::string& what);
    static QWeight quantize(const Tensor& W, QType type, const std::string& what);   // check(), then the blocks
    // In a file (models/checkpoint.h) the blocks are one U8 tensor of this shape: each row of W
    // is cols / qblock_values blocks of qblock_bytes. ShapeError if cols is not whole blocks.
    static Shape stored_shape(QType type, int64_t rows, int64_t cols, const std::string& what);
    // Blocks read from a file, kept as they are: every scale must be finite (and nf4's absmax
    // ≥ 0), else NumericError naming `what` and the block's row and column.
    static QWeight from_blocks(QType type, int64_t rows, int64_t cols, std::shared_ptr<Storage> blocks,
                               const std::string& what);
    void dequantize_rows(int64_t r0, int64_t r1, float* out) const;   // rows [r0, r1) -> (r1 − r0, cols) floats
    Tensor dequantize() const;                                        // (rows, cols) float32
    size_t nbytes() const { return blocks ? blocks->bytes() : 0; }
};

// y = x Wᵀ + b with W quantised, so frozen: x (..., in), b (out) or undefined -> (..., out).
// Backward: dx (Note [Dequantise by panel]) and db; never dW.
Tensor quant_linear(const Tensor& x, const QWeight& W, const Tensor& b = Tensor());

namespace reference {
// The plain version: linear(x, W.dequantize(), b). Its backward keeps the whole float32 W.
Tensor quant_linear(const Tensor& x, const QWeight& W, const Tensor& b = Tensor());
}  // namespace reference
