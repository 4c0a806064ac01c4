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
// and never touches the frozen W and b. Dropout acts on the branch's input only.
//
// Merging folds the update into the base, W ← W + s·(B A), computed exactly as HF PEFT does
// (B A in float32, times s, added to W). Deviation from HF: unmerge restores the copy of W
// taken at merge time instead of subtracting s·B·A again. (W + d) − d is not W in float32
// (each step rounds), so HF's unmerge drifts; the copy costs out·in floats per target while
// merged and makes merge → unmerge a bit-for-bit round trip. While merged the Linear wrap is
// removed, so the forward is the plain base forward on the merged W.
#include "lora.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include "engine/blas.h"
#include "engine/kernels.h"
#include "methods.h"

// ---- the fused op

// The dropout mask as bits (1 = kept), drawn as the engine's dropout op draws it: on this
// thread, word after word (a seed fixes it for any thread count), each rng.next_u64() giving two
// 32-bit draws, an element kept when its draw is >= p·2³². As bits it costs 1/32 of x.
static Tensor draw_mask(int64_t n, float p, Rng& rng) {
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
// 1.0 where element i is kept, else 0.0 (a multiply instead of a branch, so loops vectorise).
static const uint32_t* bits(const Tensor& mask) { return reinterpret_cast<const uint32_t*>(mask.idata()); }
static float kept(const uint32_t* m, int64_t i) { return float((m[i >> 5] >> (i & 31)) & 1u); }

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

    // xd = drop(x), the branch's input; without dropout it is x itself (no copy).
    const bool drop = training && p > 0.f;
    const float keep_scale = 1.f / (1.f - p);
    Tensor xd = x, mask;
    if (drop) {
        mask = draw_mask(rows * in, p, rng);
        xd = Tensor::empty(x.shape());
        const float* xp = x.data();
        const uint32_t* m = bits(mask);
        map_n(xd.data(), rows * in, [xp, m, keep_scale](int64_t i) { return kept(m, i) * keep_scale * xp[i]; });
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
        if (g.needs(1)) {   // dA (r, in) = duᵀ xd
            GradBuf dA = g.buf(1);
            gemm(Trans::T, Trans::N, r, in, rows, 1.f, du.data(), xds.data(), dA.beta, dA.p);
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
                const uint32_t* m = bits(*ms);
                map_n(dx.p, rows * in, [d, tp, m, keep_scale](int64_t i) { return d[i] + kept(m, i) * keep_scale * tp[i]; });
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
    std::vector<std::string> target_modules{"q_proj", "v_proj"};   // Linear names, e.g. ["q_proj", "v_proj"]
    bool use_rslora = false;       // rank-stabilised s = lora_alpha / √r, e.g. true
    std::string bias = "none";     // only "none": the base biases stay frozen
    std::string task_type = "CAUSAL_LM";

    float scaling() const { return float(use_rslora ? lora_alpha / std::sqrt(double(r)) : lora_alpha / double(r)); }

    // HF field names; null means the default; unknown keys are ignored. Every bad value is
    // reported in one ValueError.
    static LoraConfig from_json(const json& j) {
        LoraConfig c;
        std::vector<std::string> bad;
        auto field = [&j](const char* key) -> const json* {
            auto it = j.find(key);
            return it == j.end() || it->is_null() ? nullptr : &*it;
        };
        if (const json* v = field("peft_type"); v && *v != "LORA")
            bad.push_back(fmt::format("`peft_type` is {}, not \"LORA\"", v->dump()));
        if (const json* v = field("r")) {
            if (!v->is_number_integer() || v->get<int64_t>() <= 0)
                bad.push_back(fmt::format("`r` should be a positive integer value but the value passed is {}", v->dump()));
            else if (v->get<int64_t>() > kMaxRank) bad.push_back(fmt::format("`r` = {} is larger than the limit {}", v->dump(), kMaxRank));
            else c.r = v->get<int64_t>();
        }
        // Checked as the floats the op will use: 1e39 is no float, 0.99999999999 rounds to 1.0f.
        if (const json* v = field("lora_alpha")) {
            const double a = v->is_number() ? v->get<double>() : 0;
            if (a > 0 && a <= std::numeric_limits<float>::max()) c.lora_alpha = a;
            else bad.push_back(fmt::format("`lora_alpha` should be a positive number but the value passed is {}", v->dump()));
        }
        if (const json* v = field("lora_dropout")) {
            const double p = v->is_number() ? v->get<double>() : -1;
            if (p >= 0 && p < 1 && float(p) < 1.f) c.lora_dropout = p;
            else bad.push_back(fmt::format("`lora_dropout` should be in [0, 1) but the value passed is {}", v->dump()));
        }
        if (const json* v = field("target_modules")) {
            bool ok = v->is_array() && !v->empty();
            for (const json& e : ok ? *v : json::array()) ok = ok && e.is_string() && !e.get<std::string>().empty();
            if (ok) c.target_modules = v->get<std::vector<std::string>>();
            else bad.push_back(fmt::format("`target_modules` should be a non-empty list of module names (e.g. "
                                           "[\"q_proj\", \"v_proj\"]) but the value passed is {}", v->dump()));
        }
        if (const json* v = field("use_rslora")) {
            if (v->is_boolean()) c.use_rslora = v->get<bool>();
            else bad.push_back(fmt::format("`use_rslora` should be true or false but the value passed is {}", v->dump()));
        }
        if (const json* v = field("bias"); v && *v != "none")
            bad.push_back(fmt::format("`bias` = {} is not supported: only \"none\" (the base biases stay frozen)", v->dump()));
        if (const json* v = field("task_type"); v && *v != "CAUSAL_LM")
            bad.push_back(fmt::format("`task_type` = {} is not supported: the models here are \"CAUSAL_LM\"", v->dump()));
        // HF options that would change the computation: refuse them rather than silently ignore them.
        for (const char* key : {"use_dora", "fan_in_fan_out", "layers_to_transform", "modules_to_save",
                                "rank_pattern", "alpha_pattern"})
            if (const json* v = field(key); v && *v != false && !(v->is_structured() && v->empty()))
                bad.push_back(fmt::format("`{}` = {} is not supported here", key, v->dump()));
        if (!bad.empty()) throw ValueError(fmt::format("invalid LoRA config: {}", fmt::join(bad, "; ")));
        return c;
    }
    json to_json() const {   // what adapter_config.json holds (save_adapter adds peft_type)
        return {{"r", r},           {"lora_alpha", lora_alpha}, {"lora_dropout", lora_dropout},
                {"target_modules", target_modules}, {"use_rslora", use_rslora}, {"bias", bias},
                {"task_type", task_type}, {"inference_mode", true}};
    }
};

// ---- the method

class Lora : public Method {
public:
    Lora(const LoraConfig& c, GPT& model, Rng& init_rng)
        : cfg_(c), s_(c.scaling()), model_(&model), dropout_rng_(&model.dropout_rng) {
        auto matched = match_targets(model, c.target_modules);   // first: a bad name changes nothing
        model.params.freeze_all();
        for (auto& [name, lin] : matched) {
            const float bound = 1.f / std::sqrt(float(lin->in));   // kaiming-uniform, a = √5
            Target t{name, lin, Tensor::uniform({c.r, lin->in}, init_rng, -bound, bound), Tensor::zeros({lin->out, c.r}),
                     Tensor(), nullptr};
            params.add("base_model.model." + name + ".lora_A.weight", t.A);
            params.add("base_model.model." + name + ".lora_B.weight", t.B);
            targets_.push_back(std::move(t));
        }
    }

    std::string peft_type() const override { return "LORA"; }
    json config_json() const override { return cfg_.to_json(); }

    // r·(in + out) for every Linear the targets select: q,k,v,o are C→C, fc_in C→4C, fc_out 4C→C.
    int64_t expected_params(const GPTConfig& g) const override {
        const int64_t C = g.n_embd;
        const std::pair<const char*, int64_t> kinds[] = {{"attn.q_proj", 2 * C}, {"attn.k_proj", 2 * C},
                                                         {"attn.v_proj", 2 * C}, {"attn.o_proj", 2 * C},
                                                         {"mlp.fc_in", 5 * C},   {"mlp.fc_out", 5 * C}};
        int64_t n = 0;
        for (int64_t l = 0; l < g.n_layer; l++)
            for (const auto& [kind, in_plus_out] : kinds)
                for (const std::string& t : cfg_.target_modules)
                    if (target_matches(fmt::format("transformer.h.{}.{}", l, kind), t)) { n += cfg_.r * in_plus_out; break; }
        return n;
    }

    void activate(GPT& model) override {
        check_model(model);
        active_ = true;
        model.hooks = this;   // only to hear set_training; the Linear wraps do the work
        if (!merged_) install(true);
    }
    // Disabling gives exactly the base model back: a merged adapter is unmerged first.
    void deactivate(GPT& model) override {
        check_model(model);
        active_ = false;
        if (merged_) unmerge(model);
        install(false);
        if (model.hooks == this) model.hooks = nullptr;
    }

    bool can_merge() const override { return true; }
    void merge(GPT& model) override {
        check_model(model);
        ENGINE_CHECK(!merged_, ValueError, "LORA: the adapter is already merged into the base weights (unmerge it first)");
        for (Target& t : targets_) {
            Tensor& W = t.lin->weight;
            const int64_t out = W.size(0), in = W.size(1);
            t.W_orig = W.clone(Mem::Params);
            Tensor BA = Tensor::empty({out, in});   // as HF: delta = (B @ A) * s;  W += delta
            gemm(Trans::N, Trans::N, out, in, cfg_.r, 1.f, t.B.data(), t.A.data(), 0.f, BA.data());
            const float *w = W.data(), *d = BA.data();
            const float s = s_;
            map_n(W.data(), out * in, [w, d, s](int64_t i) { return w[i] + d[i] * s; });
        }
        install(false);   // the forward is now the plain base forward on the merged W
        merged_ = true;
    }
    void unmerge(GPT& model) override {
        check_model(model);
        ENGINE_CHECK(merged_, ValueError, "LORA: the adapter is not merged, so there is nothing to unmerge");
        for (Target& t : targets_) {
            std::memcpy(t.lin->weight.data(), t.W_orig.data(), t.W_orig.nbytes());   // exact, see the header
            t.W_orig = Tensor();
        }
        merged_ = false;
        if (active_) install(true);
    }

    void load_state(const std::map<std::string, Tensor>& tensors, const std::string& file) override {
        ENGINE_CHECK(!merged_, ValueError, "{}: cannot load LORA weights while merged (unmerge first)", file);
        Method::load_state(tensors, file);
    }

private:
    struct Target {
        std::string name;   // "transformer.h.0.attn.q_proj"
        Linear* lin;
        Tensor A, B;        // (r, in), (out, r)
        Tensor W_orig;      // the base W while merged
        std::shared_ptr<LinearWrap> wrap;   // the seam, while installed
    };
    // The seam: the target Linear calls lora_linear instead of linear.
    struct Wrap : LinearWrap {
        const Lora& m;
        const Target& t;
        Wrap(const Lora& m, const Target& t) : m(m), t(t) {}
        Tensor forward(const Linear& base, const Tensor& x) override {
            return lora_linear(x, base.weight, base.bias, t.A, t.B, m.s_, float(m.cfg_.lora_dropout), m.training,
                               *m.dropout_rng_);
        }
    };
    // Puts this adapter's seams on its targets, or takes them off (only its own: never another's).
    void install(bool on) {
        for (Target& t : targets_) {
            if (on) t.lin->wrap = t.wrap = std::make_shared<Wrap>(*this, t);
            else if (t.lin->wrap == t.wrap) t.lin->wrap = nullptr;
        }
    }
    void check_model(const GPT& model) const {
        ENGINE_CHECK(&model == model_, ValueError, "LORA: this adapter was attached to another model");
    }

    LoraConfig cfg_;
    float s_;                   // lora_alpha / r, or / √r
    GPT* model_;                // the model the targets belong to
    Rng* dropout_rng_;          // the model's dropout stream (saved in its checkpoints)
    std::vector<Target> targets_;
    bool active_ = false, merged_ = false;
};

std::unique_ptr<Method> make_lora(const json& config, GPT& model, Rng& rng) {
    return std::make_unique<Lora>(LoraConfig::from_json(config), model, rng);
}
