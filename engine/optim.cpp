// engine/optim.cpp — AdamW, SGD, their checkpointable state, and gradient clipping.
#include "optim.h"
#include <algorithm>
#include <cmath>
#include <unordered_map>
#include "check.h"

// Below this many elements a parameter is updated on one thread: an OpenMP region costs a
// few microseconds, more than updating a bias. Either way each element is computed by one
// thread with the same instructions, so the result does not depend on it.
static constexpr int64_t kParallelMin = 8192;

static bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool default_decay(const Param& p) {
    const std::string& n = p.name;
    const bool embedding = ends_with(n, "wte.weight") || ends_with(n, "wpe.weight") || n.find("emb") != std::string::npos;
    return p.tensor.ndim() == 2 && !embedding;
}

static void check_hyper(const char* what, double value, double lo, double hi) {
    ENGINE_CHECK(std::isfinite(value) && value >= lo && value <= hi, ValueError,
                 "optimizer: {} must be in [{}, {}], got {}", what, lo, hi, value);
}

// ---- Optimizer: the parameters, their state, checkpoints

Optimizer::Optimizer(const ParamList& params, float lr, std::vector<std::string> kinds, const DecayFn& decay)
    : kinds_(std::move(kinds)) {
    set_lr(lr);
    for (const Param& p : params.all()) {
        if (!p.tensor.requires_grad()) continue;   // frozen: no state, ever
        Slot s{p.name, p.tensor, decay ? decay(p) : false, {}};
        for (size_t k = 0; k < kinds_.size(); k++)
            s.state.push_back(Tensor::zeros(p.tensor.shape(), DType::F32, Mem::Optimizer));
        slots_.push_back(std::move(s));
    }
    ENGINE_CHECK(!slots_.empty(), ValueError,
                 "optimizer: none of the {} parameters is trainable (was everything frozen?)", params.size());
}

void Optimizer::set_lr(float lr) {
    check_hyper("lr", lr, 0, 1e3);
    lr_ = lr;
}

void Optimizer::set_step_count(int64_t t) {
    ENGINE_CHECK(t >= 0, ValueError, "optimizer: step count must be >= 0, got {}", t);
    t_ = t;
}

void Optimizer::zero_grad() {
    for (Slot& s : slots_) s.p.zero_grad();
}

NamedTensors Optimizer::state_tensors() const {
    NamedTensors out;
    for (const Slot& s : slots_)
        for (size_t k = 0; k < kinds_.size(); k++) out.push_back({"optim." + kinds_[k] + "." + s.name, s.state[k]});
    return out;
}

int64_t Optimizer::state_bytes() const {
    int64_t n = 0;
    for (const Slot& s : slots_)
        for (const Tensor& t : s.state) n += int64_t(t.nbytes());
    return n;
}

void Optimizer::load_state(const NamedTensors& tensors) {
    std::unordered_map<std::string, Tensor> given;
    for (const auto& [name, t] : tensors)
        if (name.rfind("optim.", 0) == 0)
            ENGINE_CHECK(given.emplace(name, t).second, ValueError, "optimizer state: tensor '{}' appears twice", name);
    const NamedTensors mine = state_tensors();
    // Validate everything before copying anything: a bad checkpoint leaves the state as it was.
    for (const auto& [name, t] : mine) {
        auto it = given.find(name);
        ENGINE_CHECK(it != given.end(), ValueError,
                     "optimizer state: tensor '{}' is missing (saved with other trainable parameters or another "
                     "optimizer?)", name);
        const Tensor& src = it->second;
        ENGINE_CHECK(src.defined() && src.dtype() == DType::F32 && src.shape() == t.shape(), ValueError,
                     "optimizer state: tensor '{}' is {}, expected F32{}", name, describe(src), t.shape().str());
    }
    if (given.size() != mine.size()) {
        std::unordered_map<std::string, bool> known;
        for (const auto& nt : mine) known[nt.first] = true;
        for (const auto& nt : given)
            ENGINE_CHECK(known.count(nt.first), ValueError,
                         "optimizer state: unexpected tensor '{}' (no trainable parameter here has that state)", nt.first);
    }
    for (const auto& [name, t] : mine) std::copy_n(given.at(name).data(), t.numel(), t.data());
}

// ---- AdamW

AdamW::AdamW(const ParamList& params, AdamWConfig cfg, DecayFn decay)
    : Optimizer(params, cfg.lr, {"m", "v"}, decay), cfg_(cfg) {
    check_hyper("beta1", cfg.beta1, 0, 0.999999);
    check_hyper("beta2", cfg.beta2, 0, 0.999999);
    check_hyper("eps", cfg.eps, 1e-30, 1);
    check_hyper("weight_decay", cfg.weight_decay, 0, 1e3);
}

void AdamW::update(float grad_scale) {
    t_++;
    const float b1 = cfg_.beta1, b2 = cfg_.beta2, eps = cfg_.eps;
    // Bias corrections in double: 1 − β2ᵗ is tiny for small t, and float pow would lose digits.
    const double bc1 = 1.0 - std::pow(double(b1), double(t_)), bc2 = 1.0 - std::pow(double(b2), double(t_));
    const float step_size = float(lr_ / bc1), sqrt_bc2 = float(std::sqrt(bc2));
    for (Slot& s : slots_) {
        const float* g = s.p.grad_data();
        if (!g) continue;   // no gradient this step (as in PyTorch): p, m, v stay as they are
        float *p = s.p.data(), *m = s.state[0].data(), *v = s.state[1].data();
        const float keep = s.decay ? 1.f - lr_ * cfg_.weight_decay : 1.f;   // decoupled decay: p ← p − lr·wd·p
        const int64_t n = s.p.numel();
        // `simd`: p, g, m, v never overlap, which the compiler cannot prove by itself.
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
        for (int64_t i = 0; i < n; i++) {
            const float gi = g[i] * grad_scale;
            m[i] = b1 * m[i] + (1.f - b1) * gi;
            v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
            // lr·m̂/(√v̂ + eps) with m̂ = m/bc1, √v̂ = √v/√bc2
            p[i] = p[i] * keep - step_size * m[i] / (std::sqrt(v[i]) / sqrt_bc2 + eps);
        }
    }
}

// ---- SGD

SGD::SGD(const ParamList& params, SGDConfig cfg, DecayFn decay)
    : Optimizer(params, cfg.lr, cfg.momentum > 0 ? std::vector<std::string>{"momentum"} : std::vector<std::string>{},
                decay),
      cfg_(cfg) {
    check_hyper("momentum", cfg.momentum, 0, 1);
    check_hyper("weight_decay", cfg.weight_decay, 0, 1e3);
}

void SGD::update(float grad_scale) {
    t_++;
    const float mu = cfg_.momentum, lr = lr_;
    for (Slot& s : slots_) {
        const float* g = s.p.grad_data();
        if (!g) continue;
        float* p = s.p.data();
        float* b = s.state.empty() ? nullptr : s.state[0].data();
        const float wd = s.decay ? cfg_.weight_decay : 0.f;
        const int64_t n = s.p.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
        for (int64_t i = 0; i < n; i++) {
            const float d = g[i] * grad_scale + wd * p[i];   // L2 decay enters the gradient (torch's SGD)
            if (b) b[i] = mu * b[i] + d;
            p[i] -= lr * (b ? b[i] : d);
        }
    }
}

// ---- clipping and zeroing

// The gradients as fixed-size chunks, the same for any thread count.
struct GradChunk { float* g; int64_t n; };
static std::vector<GradChunk> grad_chunks(const ParamList& params) {
    constexpr int64_t kChunk = int64_t(1) << 15;
    std::vector<GradChunk> chunks;
    for (const Param& p : params.all()) {
        float* g = p.tensor.requires_grad() ? p.tensor.grad_data() : nullptr;
        if (!g) continue;
        for (int64_t i = 0, n = p.tensor.numel(); i < n; i += kChunk) chunks.push_back({g + i, std::min(kChunk, n - i)});
    }
    return chunks;
}

double grad_norm(const ParamList& params) {
    const std::vector<GradChunk> chunks = grad_chunks(params);
    const int64_t nc = int64_t(chunks.size());
    std::vector<double> partial(chunks.size());
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nc; c++) {
        // Eight running sums, so the adds do not wait on each other; combined in a fixed order.
        const float* g = chunks[size_t(c)].g;
        const int64_t n = chunks[size_t(c)].n;
        double s[8] = {0};
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) s[k] += double(g[i + k]) * g[i + k];
        for (; i < n; i++) s[0] += double(g[i]) * g[i];
        partial[size_t(c)] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    }
    double sq = 0;   // partial sums added in chunk order
    for (double s : partial) sq += s;
    return std::sqrt(sq);
}

static void check_max_norm(double max_norm) {
    ENGINE_CHECK(std::isfinite(max_norm) && max_norm > 0, ValueError,
                 "clip_grad_norm: max_norm must be positive and finite, got {}", max_norm);
}

float clip_coefficient(double norm, double max_norm) {
    check_max_norm(max_norm);
    return std::isfinite(norm) && norm > max_norm ? float(max_norm / (norm + 1e-6)) : 1.f;
}

double clip_grad_norm(const ParamList& params, double max_norm) {
    check_max_norm(max_norm);
    const double norm = grad_norm(params);
    const float k = clip_coefficient(norm, max_norm);
    if (k == 1.f) return norm;
    const std::vector<GradChunk> chunks = grad_chunks(params);
    const int64_t nc = int64_t(chunks.size());
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nc; c++)
        for (int64_t i = 0; i < chunks[size_t(c)].n; i++) chunks[size_t(c)].g[i] *= k;
    return norm;
}

void zero_grad(const ParamList& params) {
    for (const Param& p : params.all()) {
        Tensor t = p.tensor;   // a handle: dropping its buffer drops the parameter's
        t.zero_grad();
    }
}
