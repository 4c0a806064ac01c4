// peft/lora.cpp — LoRA: a trainable low-rank update beside each frozen target Linear.
//
//     y = x Wᵀ + b + s · (drop(x) Aᵀ) Bᵀ,   A: (r, in),  B: (out, r),  s = lora_alpha / r
// (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"; s = lora_alpha / √r
// with use_rslora, Kalajdzievski 2023). Only A and B train: r·(in + out) numbers per target
// instead of in·out. Init as HF PEFT: A ~ kaiming-uniform(a = √5) = U(−1/√in, 1/√in), B = 0.
// So at init the branch adds s·(u Bᵀ) = s·0 = an exact zero to every output, and the adapted
// model is bitwise the base model (see the identity test in tests/test_lora.cpp).
//
// The branch runs as one fused op, lora_linear (below), whose backward computes dx, dA and dB
// and never touches the frozen W and b. Dropout acts on the branch's input only. Read first its
// plain version, the same y as composed engine ops: peft/lora_reference.cpp.
//
// Merging folds the update into the base, W ← W + s·(B A), computed exactly as HF PEFT does
// (B A in float32, times s, added to W). Deviation from HF: unmerge restores the copy of W
// taken at merge time instead of subtracting s·B·A again. (W + d) − d is not W in float32
// (each step rounds), so HF's unmerge drifts; the copy costs out·in floats per target while
// merged and makes merge → unmerge a bit-for-bit round trip. While merged the Linear wrap is
// removed, so the forward is the plain base forward on the merged W. (That bookkeeping, shared
// with IA³, is MergeableMethod in peft/method.h; this file says how to wrap and how to merge.)
//
// Variants, each HF's config field: `use_dora` (peft/dora.cpp: a trained magnitude per output
// row), `init_lora_weights` (peft/lora_init.cpp: "gaussian", and PiSSA / OLoRA, which start A
// and B from W's SVD / QR and leave the base the residual W − s·B A). A PiSSA/OLoRA adapter keeps
// its residual while active and puts the original W back when deactivated (both bit for bit),
// so that disabling it gives the base model. Its file holds A and B against the residual; HF's
// conversion to a plain LoRA against the original W is convert_to_plain_lora (methods.h):
//     A' = [A; A₀] (2r, in),  B' = [B, −B₀] (out, 2r),  r' = 2r,  alpha' = 2·alpha (√2·alpha with
//     rsLoRA), so s'·B'A' = s·(B A − B₀A₀) and W + s'·B'A' = W_res + s·B A,
// with A₀, B₀ the initial values (kept in memory, r·(in + out) floats per target).
#include "lora.h"
#include <algorithm>
#include <cmath>
#include "engine/blas.h"
#include "engine/kernels.h"
#include "engine/reference_ops.h"
#include "lora_reference.h"
#include "methods.h"
#include "targets.h"

// ---- the fused op

// The branch's dropout mask comes from draw_dropout_mask (engine/kernels.h), as the engine's
// dropout op draws it, so the same seed gives the same mask.
Tensor lora_linear(const Tensor& x, const Tensor& W, const Tensor& b, const Tensor& A, const Tensor& B, float s,
                   float p, bool training, Rng& rng) {
    ENGINE_CHECK(W.ndim() == 2 && x.ndim() >= 1 && x.shape().back() == W.size(1), ShapeError,
                 "lora_linear: x {} and W {} do not match (W must be (out, {}))", x.shape().str(), W.shape().str(),
                 x.ndim() ? x.shape().back() : 0);
    const int64_t in = W.size(1), out = W.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
    ENGINE_CHECK(!b.defined() || b.shape() == Shape{out}, ShapeError, "lora_linear: bias {} must be [{}] for W {}",
                 b.defined() ? b.shape().str() : "", out, W.shape().str());
    ENGINE_CHECK(A.ndim() == 2 && A.size(1) == in, ShapeError, "lora_linear: A {} must be (r, {}) for W {}",
                 A.shape().str(), in, W.shape().str());
    const int64_t r = A.size(0);
    ENGINE_CHECK(B.shape() == (Shape{out, r}), ShapeError, "lora_linear: B {} must be [{}, {}] for W {} and A {}",
                 B.shape().str(), out, r, W.shape().str(), A.shape().str());
    ENGINE_CHECK(p >= 0.f && p < 1.f, ValueError, "lora_linear: dropout p must be in [0, 1), got {}", p);
    ENGINE_CHECK(!needs_grad(W) && !needs_grad(b), ValueError,
                 "lora_linear: the base weight and bias must be frozen (this op never computes their gradient)");
    if (reference_ops()) return reference::lora_linear(x, W, b, A, B, s, p, training, rng);

    // xd = drop(x), the branch's input; without dropout it is x itself (no copy).
    const bool drop = training && p > 0.f;
    const float keep_scale = 1.f / (1.f - p);
    Tensor xd = x, mask;
    if (drop) {
        mask = draw_dropout_mask(rows * in, p, rng);
        xd = Tensor::empty(x.shape());
        const float* xp = x.data();
        const uint32_t* m = mask_bits(mask);
        map_n(xd.data(), rows * in, [xp, m, keep_scale](int64_t i) { return mask_kept(m, i) * keep_scale * xp[i]; });
    }
    Tensor u = Tensor::empty({rows, r});   // u = xd Aᵀ: (rows, r)
    gemm(Trans::N, Trans::T, rows, r, in, 1.f, xd.data(), A.data(), 0.f, u.data());

    // The base path, exactly as linear() computes it (y = b, then y += x Wᵀ), so that with B = 0
    // the result is bitwise the base output; then y += s · u Bᵀ.
    Tensor y = Tensor::empty(x.shape().with_back(out));
    float* yp = y.data();
    if (b.defined()) {
        const float* bp = b.data();
        map_rows(yp, rows, out, [bp](int64_t, int64_t o) { return bp[o]; });
    }
    gemm(Trans::N, Trans::T, rows, out, in, 1.f, x.data(), W.data(), b.defined() ? 1.f : 0.f, yp);
    gemm(Trans::N, Trans::T, rows, out, r, s, u.data(), B.data(), 1.f, yp);

    // Keep only what a gradient that will be computed needs: xd for dA, u for dB, and for dx
    // W, A and the mask bits (W, A, B are parameters: saving them costs nothing).
    const bool gx = needs_grad(x), gA = needs_grad(A), gB = needs_grad(B);
    Saved xds = gA ? save(xd) : Saved(), us = gB ? save(u) : Saved();
    Saved Ws = gx ? save(W) : Saved(), As = gx ? save(A) : Saved(), Bs = gx || gA ? save(B) : Saved();
    Saved ms = gx && drop ? save(mask) : Saved();
    record(y, "lora_linear", {x, A, B},
           [xds, us, Ws, As, Bs, ms, rows, in, out, r, s, drop, keep_scale](const Tensor& dy, Grads& g) {
        // forward: y = x Wᵀ + b + s · u Bᵀ,  u = xd Aᵀ,  xd = m ⊙ x (m = mask / (1 − p), or 1)
        // so dB = s · dyᵀ u,  du = s · dy B,  dA = duᵀ xd,  dx = dy W + m ⊙ (du A).
        // No dW, no db: W and b are frozen (checked in the forward).
        if (g.needs(2)) {   // dB (out, r) = s · dyᵀ (rows,out)ᵀ u (rows,r)
            GradBuf dB = g.buf(2);
            gemm(Trans::T, Trans::N, out, r, rows, s, dy.data(), us.data(), dB.beta, dB.p);
        }
        if (!g.needs(0) && !g.needs(1)) return;
        Tensor du = Tensor::empty({rows, r});   // du (rows, r) = s · dy (rows,out) B (out,r)
        gemm(Trans::N, Trans::N, rows, r, out, s, dy.data(), Bs.data(), 0.f, du.data());
        if (g.needs(1)) {   // dA (r, in) = duᵀ xd, computed as its transpose xdᵀ du (in, r): a GEMM
            GradBuf dA = g.buf(1);   // with `in` rows is split over threads, one with r rows is not
            Tensor dAt = Tensor::empty({in, r});
            gemm(Trans::T, Trans::N, in, r, rows, 1.f, xds.data(), du.data(), 0.f, dAt.data());
            const float* t = dAt.data();
            for (int64_t k = 0; k < r; k++)
                for (int64_t j = 0; j < in; j++) dA.acc(k * in + j, t[j * r + k]);
        }
        if (g.needs(0)) {   // dx (rows, in) = dy W  +  m ⊙ (du A)
            GradBuf dx = g.buf(0);
            gemm(Trans::N, Trans::N, rows, in, out, 1.f, dy.data(), Ws.data(), dx.beta, dx.p);
            if (!drop) {
                gemm(Trans::N, Trans::N, rows, in, r, 1.f, du.data(), As.data(), 1.f, dx.p);
            } else {
                Tensor t = Tensor::empty({rows, in});
                gemm(Trans::N, Trans::N, rows, in, r, 1.f, du.data(), As.data(), 0.f, t.data());
                const float *tp = t.data(), *d = dx.p;
                const uint32_t* m = mask_bits(*ms);
                map_n(dx.p, rows * in, [d, tp, m, keep_scale](int64_t i) { return d[i] + mask_kept(m, i) * keep_scale * tp[i]; });
            }
        }
    });
    return y;
}

// ---- config

constexpr int64_t kMaxRank = 65536;   // far above any useful rank; keeps r·in from overflowing

struct LoraConfig {
    int64_t r = 8;                 // rank of the update, e.g. 8; r·(in + out) numbers per target
    double lora_alpha = 16;        // scale numerator, e.g. 16: s = lora_alpha / r
    double lora_dropout = 0.05;    // dropout on the branch input while training, e.g. 0.05
    Targeting targets;             // target_modules (default ["q_proj", "v_proj"]), exclude_modules,
                                   // layers_to_transform, rank_pattern, alpha_pattern, ... (targets.h)
    bool fan_in_fan_out = false;   // true on a gpt2 base: HF's Conv1D stores weights (in, out)
    bool use_rslora = false;       // rank-stabilised s = lora_alpha / √r, e.g. true
    std::string task_type = "CAUSAL_LM";
    bool use_dora = false;         // DoRA: a trained magnitude per output row, e.g. true
    json init_lora_weights = true; // true, false, "gaussian", "pissa", "pissa_niter_4", "olora"

    // The rank, alpha and scale of the module `name` (rank_pattern / alpha_pattern may change them).
    int64_t rank(const std::string& name) const { return targets.rank(name, r); }
    float scaling(const std::string& name) const {
        const double a = targets.alpha(name, lora_alpha), rr = double(rank(name));
        return float(use_rslora ? a / std::sqrt(rr) : a / rr);
    }
    // init_lora_weights as one string: "true", "false", "gaussian", ...
    std::string init_kind() const {
        return init_lora_weights.is_boolean() ? (init_lora_weights.get<bool>() ? "true" : "false")
                                              : init_lora_weights.get<std::string>();
    }

    // HF field names and defaults; every bad value is reported in one ValueError (ConfigReader, peft/config_reader.h).
    static LoraConfig from_json(const json& j, const GPTConfig& model) {
        LoraConfig c;
        ConfigReader f(j, "LORA");
        c.fan_in_fan_out = f.fan_in_fan_out(model);
        c.r = f.integer("r", c.r, 1, kMaxRank);
        c.lora_alpha = f.positive_number("lora_alpha", c.lora_alpha);   // checked as the floats the op uses
        c.lora_dropout = f.probability("lora_dropout", c.lora_dropout);
        c.targets = Targeting::read(f, default_targets(model), {});
        c.use_rslora = f.boolean("use_rslora", c.use_rslora);
        c.use_dora = f.boolean("use_dora", c.use_dora);
        if (const json* v = f.field("init_lora_weights")) {
            const std::string k = v->is_string() ? v->get<std::string>() : "";
            const size_t at = k.find("_niter_");
            const bool niter = k.rfind("pissa_niter_", 0) == 0 && k.size() > at + 7 && k.size() <= at + 10 &&
                               k.find_first_not_of("0123456789", at + 7) == std::string::npos;
            if (v->is_boolean() || k == "gaussian" || k == "pissa" || k == "olora" || niter) c.init_lora_weights = *v;
            else f.reject("init_lora_weights", "true, false, \"gaussian\", \"pissa\", \"pissa_niter_[number of iters]\" "
                          "or \"olora\" (loftq, eva, corda and orthogonal are not supported here)");
        }
        f.only("task_type", "CAUSAL_LM", "the models here are \"CAUSAL_LM\"");
        f.done();
        return c;
    }
    json to_json() const {   // what adapter_config.json holds (save_adapter adds peft_type)
        json j = {{"r", r}, {"lora_alpha", lora_alpha}, {"lora_dropout", lora_dropout}, {"use_rslora", use_rslora},
                  {"bias", "none"}, {"fan_in_fan_out", fan_in_fan_out}, {"task_type", task_type}, {"inference_mode", true},
                  {"use_dora", use_dora}, {"init_lora_weights", init_lora_weights}};
        targets.write(j);
        return j;
    }
};

// ---- the method

class Lora : public MergeableMethod {
public:
    Lora(const LoraConfig& c, GPT& model, Rng& init_rng)
        : MergeableMethod(model), cfg_(c), dropout_rng_(&model.dropout_rng) {
        auto matched = resolve_targets(c.targets, model);   // first: a bad name changes nothing
        const std::string kind = c.init_kind();
        // PiSSA / OLoRA rewrite W. Over a quantised base they start, as HF's do over a 4-bit one, from
        // its dequantised values; GPT::quantize stores the residual in blocks again afterwards.
        if (lora_init_mutates_base(kind))
            for (auto& [name, lin] : matched) lin->dequantize();
        std::vector<LoraInit> inits;   // all computed before anything changes (PiSSA can refuse an r)
        for (auto& [name, lin] : matched) {
            try {
                inits.push_back(lora_init(kind, lin->weight, c.rank(name), c.scaling(name), init_rng));
            } catch (const ValueError& e) {
                throw ValueError(fmt::format("{}: {}", name, e.what()));
            }
        }
        model.params.freeze_all();
        for (size_t k = 0; k < matched.size(); k++) {
            const auto& [name, lin] = matched[k];
            LoraInit& init = inits[k];
            Target t{lin, init.A, init.B, c.scaling(name), Tensor(), init.W_res, Tensor(), Tensor()};
            params.add("base_model.model." + name + ".lora_A.weight", t.A);
            params.add("base_model.model." + name + ".lora_B.weight", t.B);
            if (init.W_res.defined()) t.A0 = init.A.clone(), t.B0 = init.B.clone();
            if (c.use_dora) {   // m = ‖W + s·B A‖ of the weight the base will hold (HF: after PiSSA)
                const Tensor W = init.W_res.defined() ? init.W_res : lin->quantized() ? lin->qweight->dequantize() : lin->weight;
                t.m = dora_weight_norm(W, t.A, t.B, t.s);
                params.add("base_model.model." + name + ".lora_magnitude_vector", t.m);
            }
            targets_.push_back(t);
            names_.push_back(name);
            add_target(lin);
        }
        saved_.attach(c.targets, model, names_, params);   // modules_to_save, bias (saved_modules.h)
    }

    std::string peft_type() const override { return "LORA"; }
    json config_json() const override { return cfg_.to_json(); }

    // r·(in + out) for every Linear the targets select (r from rank_pattern where a key matches),
    // and with DoRA one magnitude per output.
    int64_t expected_params(const GPTConfig& g) const override {
        return targeted_count(cfg_.targets, g, [this](const LinearShape& l) {
            return cfg_.rank(l.name) * (l.in + l.out) + (cfg_.use_dora ? l.out : 0);
        });
    }

    // PiSSA / OLoRA: the residual goes in on activation and the original W comes back on
    // deactivation (a swap of the two copies: exact both ways).
    void activate(GPT& model) override {
        MergeableMethod::activate(model);
        if (!residual_in_) swap_residual(model);
    }
    void deactivate(GPT& model) override {
        MergeableMethod::deactivate(model);   // unmerges first if merged
        if (residual_in_) swap_residual(model);
    }
    void merge(GPT& model) override {
        ENGINE_CHECK(residual_in_ || !mutates(), ValueError,
                     "LORA: activate this {} adapter before merging it (its base is the residual W − s·B A)",
                     cfg_.init_kind());
        MergeableMethod::merge(model);
    }

    PlainLora plain_lora() const {
        ENGINE_CHECK(mutates(), ValueError,
                     "only a LoRA initialised with \"pissa\" or \"olora\" changes the base weights and needs converting "
                     "(this one has init_lora_weights {})", cfg_.init_lora_weights.dump());
        PlainLora p;
        LoraConfig c = cfg_;
        c.r = 2 * cfg_.r;
        c.lora_alpha = cfg_.use_rslora ? cfg_.lora_alpha * std::sqrt(2.0) : 2 * cfg_.lora_alpha;
        c.init_lora_weights = true;
        p.config = c.to_json();
        const bool patterns = p.config.contains("rank_pattern") || p.config.contains("alpha_pattern");
        ENGINE_CHECK(!cfg_.use_rslora || !patterns, ValueError,
                     "LORA: a {} adapter with use_rslora and rank_pattern / alpha_pattern cannot be converted to a "
                     "plain LoRA (HF refuses it too)", cfg_.init_kind());
        for (const char* pattern : {"rank_pattern", "alpha_pattern"})   // every rank and alpha doubles, as HF
            if (p.config.contains(pattern))
                for (auto& [key, v] : p.config[pattern].items())
                    v = v.is_number_integer() ? json(2 * v.get<int64_t>()) : json(2 * v.get<double>());
        std::map<std::string, Tensor> converted;   // lora_A / lora_B keys; the other tensors go as they are
        for (size_t k = 0; k < targets_.size(); k++) {
            const Target& t = targets_[k];
            const int64_t r = t.A.size(0), in = t.A.size(1), out = t.B.size(0);
            Tensor A = Tensor::empty({2 * r, in}), B = Tensor::empty({out, 2 * r});
            std::copy(t.A.data(), t.A.data() + r * in, A.data());   // A' = [A; A₀]
            std::copy(t.A0.data(), t.A0.data() + r * in, A.data() + r * in);
            for (int64_t o = 0; o < out; o++)   // B' = [B, −B₀]
                for (int64_t i = 0; i < r; i++) {
                    B.data()[o * 2 * r + i] = t.B.data()[o * r + i];
                    B.data()[o * 2 * r + r + i] = -t.B0.data()[o * r + i];
                }
            converted["base_model.model." + names_[k] + ".lora_A.weight"] = A;
            converted["base_model.model." + names_[k] + ".lora_B.weight"] = B;
        }
        for (const Param& q : params.all()) {   // DoRA magnitudes, modules_to_save, bias
            auto it = converted.find(q.name);
            p.tensors.push_back({q.name, it != converted.end() ? it->second : q.tensor});
        }
        return p;
    }

    // A PiSSA / OLoRA adapter's base is the residual: samples of other adapters would see it.
    std::string cannot_mix() const override {
        return mutates() ? fmt::format("it is initialised with \"{}\" and its base weights are the residual "
                                       "W − s·B A; mix its plain-LoRA conversion instead", cfg_.init_kind())
                         : "";
    }

private:
    struct Target {
        Linear* lin;
        Tensor A, B;     // (r, in), (out, r)
        float s;         // lora_alpha / r (or / √r), of this module
        Tensor m;        // DoRA: (out)
        Tensor W_other;  // PiSSA/OLoRA: the residual while inactive, the original W while active
        Tensor A0, B0;   // PiSSA/OLoRA: A and B at init (for convert_to_plain_lora)
    };
    bool mutates() const { return lora_init_mutates_base(cfg_.init_kind()); }
    void swap_residual(GPT&) {
        if (!mutates()) return;
        for (size_t k = 0; k < targets_.size(); k++) {
            float *w = targets_[k].lin->weight.data(), *o = targets_[k].W_other.data();
            std::swap_ranges(w, w + targets_[k].W_other.numel(), o);
        }
        residual_in_ = !residual_in_;
    }
    // The seam: the target Linear calls lora_linear (or dora_linear) instead of linear.
    struct Wrap : LinearWrap {
        const Lora& m;
        const Target& t;
        Wrap(const Lora& m, const Target& t) : m(m), t(t) {}
        Tensor forward(const Linear& base, const Tensor& x) override {
            const float p = float(m.cfg_.lora_dropout);
            if (base.quantized() && !m.cfg_.use_dora)   // QLoRA: the quantised base's own op plus the branch as composed ops
                return add(base.base_forward(x), reference::lora_branch(x, t.A, t.B, t.s, p, m.training, *m.dropout_rng_));
            // DoRA's magnitude needs the whole W: over a quantised base it is dequantised for the call, as HF does
            const Tensor W = base.quantized() ? base.qweight->dequantize() : base.weight;
            // bias "all" / "lora_only": the bias is a trainable copy, which the fused ops never
            // differentiate, so it is added by an op that does (the same sum, in another order)
            const bool own_bias = needs_grad(base.bias);
            const Tensor b = own_bias ? Tensor() : base.bias;
            Tensor y = m.cfg_.use_dora ? dora_linear(x, W, b, t.A, t.B, t.m, t.s, p, m.training, *m.dropout_rng_)
                                       : lora_linear(x, W, b, t.A, t.B, t.s, p, m.training, *m.dropout_rng_);
            return own_bias ? add_row_vector(y, base.bias) : y;
        }
    };
    std::shared_ptr<LinearWrap> make_wrap(size_t i) const override { return std::make_shared<Wrap>(*this, targets_[i]); }

    // W ← W + s·(B A), as HF: delta = (B @ A) * s, in float32, then W += delta. DoRA: dora_merge.
    void merge_into(size_t i, Linear& lin) const override {
        const Target& t = targets_[i];
        if (cfg_.use_dora) return dora_merge(lin.weight, t.A, t.B, t.m, t.s);
        const int64_t out = lin.out, in = lin.in;
        Tensor BA = Tensor::empty({out, in});
        gemm(Trans::N, Trans::N, out, in, t.A.size(0), 1.f, t.B.data(), t.A.data(), 0.f, BA.data());
        const float *w = lin.weight.data(), *d = BA.data();
        const float s = t.s;
        map_n(lin.weight.data(), out * in, [w, d, s](int64_t k) { return w[k] + d[k] * s; });
    }

    friend std::vector<LoraFactor> lora_factors(const Method& m);
    LoraConfig cfg_;
    std::vector<std::string> names_;   // target i's module name
    Rng* dropout_rng_;          // the model's dropout stream (saved in its checkpoints)
    std::vector<Target> targets_;
    bool residual_in_ = false;  // PiSSA/OLoRA: the model's target weights are the residuals
};

std::unique_ptr<Method> make_lora(const json& config, GPT& model, Rng& rng) {
    return std::make_unique<Lora>(LoraConfig::from_json(config, model.config), model, rng);
}

// Combining needs ΔW = s·B A against the base every adapter shares: DoRA's magnitude and a
// PiSSA / OLoRA residual base have no such form.
std::vector<LoraFactor> lora_factors(const Method& m) {
    const Lora* lora = dynamic_cast<const Lora*>(&m);
    ENGINE_CHECK(lora, ValueError, "a {} adapter has no LoRA factors", m.peft_type());
    ENGINE_CHECK(!lora->cfg_.use_dora, ValueError,
                 "a LORA adapter with use_dora (DoRA) cannot be combined: its update is not s·B A alone");
    ENGINE_CHECK(!lora->mutates(), ValueError,
                 "a LORA adapter with init_lora_weights \"{}\" cannot be combined: its base is the residual W − s·B A "
                 "(combine its plain-LoRA conversion)", lora->cfg_.init_kind());
    std::vector<LoraFactor> out;
    for (size_t i = 0; i < lora->targets_.size(); i++)
        out.push_back({lora->names_[i], lora->targets_[i].A, lora->targets_[i].B, lora->targets_[i].s});
    return out;
}

PlainLora convert_to_plain_lora(const Method& m) {
    const Lora* lora = dynamic_cast<const Lora*>(&m);
    ENGINE_CHECK(lora, ValueError, "only a LORA adapter can be converted to a plain LoRA, not {}", m.peft_type());
    return lora->plain_lora();
}
