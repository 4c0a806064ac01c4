// engine/quant.cpp — q8_0, q4_0 and nf4 blocks, and quant_linear (Note [Dequantise by panel]).
#include "quant.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include "blas.h"
#include "check.h"
#include "half.h"
#include "kernels.h"
#include "ops.h"
#include "reference_ops.h"

QType parse_qtype(const std::string& name) {
    if (name == "q8_0") return QType::Q8_0;
    if (name == "q4_0") return QType::Q4_0;
    if (name == "nf4") return QType::NF4;
    throw ValueError(fmt::format("--quantize '{}' is not a known format (q8_0, q4_0, nf4)", name));
}
const char* qtype_name(QType t) { return t == QType::Q8_0 ? "q8_0" : t == QType::Q4_0 ? "q4_0" : "nf4"; }
int64_t qblock_values(QType t) { return t == QType::NF4 ? 64 : 32; }
int64_t qblock_bytes(QType t) { return t == QType::Q8_0 ? 34 : t == QType::Q4_0 ? 18 : 36; }

// bitsandbytes' NF4 table: QLoRA's levels, quantiles of N(0, 1) normalised to [−1, 1], with 8
// positive levels, 7 negative ones and an exact 0 (tests/test_quant.cpp derives them again).
const std::array<float, 16>& nf4_levels() {
    static const std::array<float, 16> levels = {
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
        -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
        0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
        0.7229568362236023f, 1.0f};
    return levels;
}

// ---- one block each way

static uint8_t nf4_index(float v) {   // the level nearest to v ∈ [−1, 1] (the lower one on a tie)
    const std::array<float, 16>& L = nf4_levels();
    int best = 0;
    for (int i = 1; i < 16; i++)
        if (std::fabs(v - L[size_t(i)]) < std::fabs(v - L[size_t(best)])) best = i;
    return uint8_t(best);
}

static float block_absmax(const float* x, int64_t n) {
    float a = 0;
    for (int64_t j = 0; j < n; j++) a = std::max(a, std::fabs(x[j]));
    return a;
}

// The n = qblock_values(t) values x as one block of qblock_bytes(t) bytes at out; ggml's and
// bitsandbytes' arithmetic: the integers come from the float32 scale, the fp16 one is stored.
static void quantize_block(QType t, const float* x, uint8_t* out) {
    if (t == QType::Q8_0) {
        const float d = block_absmax(x, 32) / 127, id = d != 0 ? 1 / d : 0;
        const uint16_t h = float_to_half(d);
        std::memcpy(out, &h, 2);
        for (int j = 0; j < 32; j++) out[2 + j] = uint8_t(int8_t(std::lround(x[j] * id)));
    } else if (t == QType::Q4_0) {
        float m = 0;   // the value of largest magnitude, its sign kept: it maps to q = 0 exactly
        for (int j = 0; j < 32; j++)
            if (std::fabs(x[j]) > std::fabs(m)) m = x[j];
        const float d = m / -8, id = d != 0 ? 1 / d : 0;
        const uint16_t h = float_to_half(d);
        std::memcpy(out, &h, 2);
        for (int j = 0; j < 16; j++) {   // x/d + 8.5 ≥ 0.5, so the cast floors; −m would give 16: clamped
            const int lo = std::min(15, int(x[j] * id + 8.5f)), hi = std::min(15, int(x[j + 16] * id + 8.5f));
            out[2 + j] = uint8_t(lo | (hi << 4));
        }
    } else {
        const float a = block_absmax(x, 64), ia = a != 0 ? 1 / a : 0;
        std::memcpy(out, &a, 4);
        for (int i = 0; i < 32; i++) out[4 + i] = uint8_t(nf4_index(x[2 * i] * ia) << 4 | nf4_index(x[2 * i + 1] * ia));
    }
}

static void dequantize_block(QType t, const uint8_t* in, float* x) {
    if (t == QType::NF4) {
        const std::array<float, 16>& L = nf4_levels();
        float a;
        std::memcpy(&a, in, 4);
        for (int i = 0; i < 32; i++) {
            x[2 * i] = L[in[4 + i] >> 4] * a;
            x[2 * i + 1] = L[in[4 + i] & 0x0F] * a;
        }
        return;
    }
    uint16_t h;
    std::memcpy(&h, in, 2);
    const float d = half_to_float(h);
    if (t == QType::Q8_0) {
        for (int j = 0; j < 32; j++) x[j] = float(int8_t(in[2 + j])) * d;
        return;
    }
    for (int j = 0; j < 16; j++) {
        x[j] = float(int(in[2 + j] & 0x0F) - 8) * d;
        x[j + 16] = float(int(in[2 + j] >> 4) - 8) * d;
    }
}

// ---- whole matrices

void QWeight::check(const Tensor& W, QType type, const std::string& what) {
    ENGINE_CHECK(W.ndim() == 2 && W.dtype() == DType::F32, ShapeError, "quantize {}: need a float32 matrix, got {}",
                 what, describe(W));
    const int64_t n = qblock_values(type), cols = W.size(1);
    ENGINE_CHECK(cols % n == 0, ShapeError,
                 "quantize {} {}: its {} columns do not divide into {} blocks of {} values", what, W.shape().str(), cols,
                 qtype_name(type), n);
    const float* w = W.data();
    // fp16 holds scales up to 65504: |x| up to 65504·127 (q8_0) or 65504·8 (q4_0). nf4 keeps fp32.
    const float most = type == QType::Q8_0 ? 65504.f * 127 : type == QType::Q4_0 ? 65504.f * 8 : INFINITY;
    for (int64_t i = 0; i < W.numel(); i++) {
        ENGINE_CHECK(std::isfinite(w[i]), NumericError, "quantize {}: element [{}, {}] is {}: no block scale holds it",
                     what, i / cols, i % cols, w[i]);
        ENGINE_CHECK(std::fabs(w[i]) <= most, ValueError,
                     "quantize {}: element [{}, {}] = {} needs a block scale beyond fp16's largest value 65504 ({})",
                     what, i / cols, i % cols, w[i], qtype_name(type));
    }
}

QWeight QWeight::quantize(const Tensor& W, QType type, const std::string& what) {
    check(W, type, what);
    QWeight q;
    q.type = type;
    q.rows = W.size(0);
    q.cols = W.size(1);
    const int64_t n = qblock_values(type), bb = qblock_bytes(type), nblocks = q.rows * q.cols / n;
    q.blocks = std::make_shared<Storage>(size_t(nblocks * bb), Mem::Quantized);
    const float* w = W.data();
    uint8_t* out = static_cast<uint8_t*>(q.blocks->data());
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < nblocks; k++) quantize_block(type, w + k * n, out + k * bb);
    return q;
}

Shape QWeight::stored_shape(QType type, int64_t rows, int64_t cols, const std::string& what) {
    ENGINE_CHECK(cols % qblock_values(type) == 0, ShapeError,
                 "{} [{}, {}]: its {} columns do not divide into {} blocks of {} values", what, rows, cols, cols,
                 qtype_name(type), qblock_values(type));
    return Shape{rows, cols / qblock_values(type) * qblock_bytes(type)};
}

QWeight QWeight::from_blocks(QType type, int64_t rows, int64_t cols, std::shared_ptr<Storage> blocks,
                             const std::string& what) {
    const Shape s = stored_shape(type, rows, cols, what);
    ENGINE_CHECK(blocks && blocks->bytes() == size_t(s.numel()), ShapeError, "{}: {} bytes of blocks, but {} [{}, {}] needs {}",
                 what, blocks ? blocks->bytes() : 0, qtype_name(type), rows, cols, s.numel());
    const int64_t n = qblock_values(type), bb = qblock_bytes(type), per_row = cols / n;
    const uint8_t* in = static_cast<const uint8_t*>(blocks->data());
    for (int64_t k = 0; k < rows * per_row; k++) {   // the scale leads each block: fp16 d, or nf4's fp32 absmax
        float scale;
        if (type == QType::NF4) std::memcpy(&scale, in + k * bb, 4);
        else {
            uint16_t h;
            std::memcpy(&h, in + k * bb, 2);
            scale = half_to_float(h);
        }
        ENGINE_CHECK(std::isfinite(scale) && (type != QType::NF4 || scale >= 0), NumericError,
                     "{}: the {} block of row {} at column {} has scale {}: a block scale must be finite{}", what,
                     qtype_name(type), k / per_row, k % per_row * n, scale, type == QType::NF4 ? " and not negative" : "");
    }
    QWeight q;
    q.type = type;
    q.rows = rows;
    q.cols = cols;
    q.blocks = std::move(blocks);
    return q;
}

void QWeight::dequantize_rows(int64_t r0, int64_t r1, float* out) const {
    const int64_t n = qblock_values(type), bb = qblock_bytes(type), first = r0 * (cols / n), last = r1 * (cols / n);
    const uint8_t* in = static_cast<const uint8_t*>(blocks->data());
#pragma omp parallel for schedule(static) if ((last - first) * n >= kParallelMin)
    for (int64_t k = first; k < last; k++) dequantize_block(type, in + k * bb, out + (k - first) * n);
}

Tensor QWeight::dequantize() const {
    Tensor W = Tensor::empty({rows, cols});
    dequantize_rows(0, rows, W.data());
    return W;
}

// ---- the op

// Rows of W per panel (a multiple of 16, at least 16): as many as 16 MiB of float32 holds when x
// has many rows (the whole W at GPT-2's sizes: OpenBLAS's sgemm ran 25 % slower on 1 MiB panels,
// 341 of c_attn's 2304 rows, than on all of them), 1 MiB when it has few (a generated token: the
// panel stays in cache between being written and being read once).
static int64_t panel_rows(const QWeight& W, int64_t x_rows) {
    const int64_t floats = x_rows >= 64 ? int64_t(1) << 22 : int64_t(1) << 18;
    const int64_t fit = floats / std::max<int64_t>(W.cols, 1) / 16 * 16;
    return std::min(W.rows, std::max<int64_t>(16, fit));
}

static void check_quant_linear(const Tensor& x, const QWeight& W, const Tensor& b) {
    ENGINE_CHECK(x.ndim() >= 1 && x.shape().back() == W.cols && (!b.defined() || b.shape() == Shape{W.rows}), ShapeError,
                 "quant_linear: x {} and bias {} do not fit a {} weight [{}, {}]", x.shape().str(),
                 b.defined() ? b.shape().str() : "none", qtype_name(W.type), W.rows, W.cols);
}

Tensor quant_linear(const Tensor& x, const QWeight& W, const Tensor& b) {
    check_quant_linear(x, W, b);
    if (reference_ops()) return reference::quant_linear(x, W, b);
    const int64_t in = W.cols, out = W.rows, rows = x.numel() / std::max<int64_t>(in, 1), P = panel_rows(W, rows);
    Tensor y = Tensor::empty(x.shape().with_back(out)), panel = Tensor::empty({P, in});
    float* yp = y.data();
    if (b.defined()) {   // y = b (broadcast over rows), then y += x Wᵀ, as linear()
        const float* bp = b.data();
        map_rows(yp, rows, out, [bp](int64_t, int64_t o) { return bp[o]; });
    }
    for (int64_t o0 = 0; o0 < out; o0 += P) {   // y[:, o0:o1] (+)= x W[o0:o1]ᵀ
        const int64_t o1 = std::min(out, o0 + P);
        W.dequantize_rows(o0, o1, panel.data());
        gemm_ld(Trans::N, Trans::T, rows, o1 - o0, in, 1.f, x.data(), in, panel.data(), in, b.defined() ? 1.f : 0.f,
                yp + o0, out);
    }
    // The closure holds W's blocks (shared, not copied) and nothing else: no activation is saved.
    record(y, "quant_linear", {x, b}, [W, rows, in, out, P](const Tensor& dy, Grads& g) {
        // forward: y = x Wᵀ + b, so dx = dy W (a panel of W's rows at a time), db = Σ_rows dy; W is frozen
        if (g.needs(0)) {
            GradBuf dx = g.buf(0);
            Tensor panel = Tensor::empty({P, in});
            for (int64_t o0 = 0; o0 < out; o0 += P) {   // dx (+)= dy[:, o0:o1] W[o0:o1]
                const int64_t o1 = std::min(out, o0 + P);
                W.dequantize_rows(o0, o1, panel.data());
                gemm_ld(Trans::N, Trans::N, rows, in, o1 - o0, 1.f, dy.data() + o0, out, panel.data(), in,
                        o0 == 0 ? dx.beta : 1.f, dx.p, in);
            }
        }
        if (g.needs(1)) add_column_sums(g.buf(1), dy.data(), rows, out);
    });
    return y;
}

Tensor reference::quant_linear(const Tensor& x, const QWeight& W, const Tensor& b) {
    check_quant_linear(x, W, b);
    return linear(x, W.dequantize(), b);
}
