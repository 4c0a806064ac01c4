// engine/optim.h — AdamW and SGD over the trainable parameters, and global-norm clipping.
//
// An optimizer takes the parameters that are trainable when it is built and allocates its
// state (AdamW's moments m and v, SGD's momentum) for those only, as Mem::Optimizer: a
// frozen base model costs no optimizer memory. A parameter without a gradient buffer in
// some step is skipped in that step, as in PyTorch. The update loops are elementwise, so
// they run under OpenMP and give bitwise identical results for any thread count.
// References: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (2019);
// torch.optim.AdamW and torch.optim.SGD, whose update formulas these follow exactly.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>
#include "module.h"

// Which parameters get weight decay. The default decays only 2-D weight matrices: biases and
// LayerNorm gains (1-D) and embedding tables ("wte.weight", "wpe.weight", names containing
// "emb", e.g. prompt_embeddings) are not decayed, as in nanoGPT and GPT-2.
bool default_decay(const Param& p);
using DecayFn = std::function<bool(const Param&)>;

// A named state tensor, e.g. {"optim.m.h.0.attn.q_proj.weight", m}.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// What AdamW and SGD share: the trainable parameters, their state, the lr and the step count.
class Optimizer {
public:
    virtual ~Optimizer() = default;
    // One update with the gradients times grad_scale: clipping by a coefficient costs no extra
    // pass over the gradients when it is applied here (see clip_coefficient).
    void step(float grad_scale = 1.f) { update(grad_scale); }
    void zero_grad();                       // drops the gradient buffers of the parameters it updates
    void set_lr(float lr);                  // for a schedule; the config's lr is the initial value
    float lr() const { return lr_; }
    int64_t step_count() const { return t_; }   // steps taken (AdamW's bias correction uses it)
    void set_step_count(int64_t t);

    // For checkpoints: handles onto the live state (not copies), named "optim.<kind>.<param name>".
    NamedTensors state_tensors() const;
    // Copies state back in. Names starting with "optim." must be exactly those state_tensors()
    // gives (a missing one, an unknown one or a shape mismatch throws ValueError naming the
    // tensor); other names are ignored, so a whole checkpoint's tensor list can be passed.
    void load_state(const NamedTensors& tensors);
    int64_t state_bytes() const;

protected:
    struct Slot {
        std::string name;
        Tensor p;
        bool decay;
        std::vector<Tensor> state;   // one per kind, shaped like p
    };
    Optimizer(const ParamList& params, float lr, std::vector<std::string> kinds, const DecayFn& decay);
    virtual void update(float grad_scale) = 0;
    std::vector<Slot> slots_;
    std::vector<std::string> kinds_;   // {"m", "v"} or {"momentum"} or {}
    float lr_;
    int64_t t_ = 0;
};

struct AdamWConfig {
    float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.1f;
};

// Per step t, for each trainable p with gradient g (decay only where the predicate says so):
//   p ← p − lr·wd·p                          (decoupled weight decay)
//   m ← β1 m + (1−β1) g,   v ← β2 v + (1−β2) g²
//   p ← p − lr · m̂ / (√v̂ + eps),   m̂ = m / (1−β1ᵗ),  v̂ = v / (1−β2ᵗ)
class AdamW : public Optimizer {
public:
    AdamW(const ParamList& params, AdamWConfig cfg = {}, DecayFn decay = default_decay);
    const AdamWConfig& config() const { return cfg_; }
private:
    void update(float grad_scale) override;
    AdamWConfig cfg_;
};

struct SGDConfig {
    float lr = 1e-2f, momentum = 0.f, weight_decay = 0.f;
};

// torch.optim.SGD (dampening 0, not Nesterov), with L2 weight decay added to the gradient:
//   g ← g + wd·p;   b ← μ b + g (b starts at 0, so the first step gives b = g);   p ← p − lr·b
// Momentum buffers exist only when momentum > 0.
class SGD : public Optimizer {
public:
    SGD(const ParamList& params, SGDConfig cfg = {}, DecayFn decay = default_decay);
    const SGDConfig& config() const { return cfg_; }
private:
    void update(float grad_scale) override;
    SGDConfig cfg_;
};

// Global L2 norm of the gradients of the trainable parameters, summed in double in a fixed
// order (the same bits for any thread count).
double grad_norm(const ParamList& params);
// What clipping to max_norm multiplies the gradients by: max_norm / (norm + 1e-6) when the norm
// exceeds max_norm, else 1 (also for a NaN or Inf norm: the caller decides what to do then).
float clip_coefficient(double norm, double max_norm);
// torch.nn.utils.clip_grad_norm_: scales the gradients in place by clip_coefficient and returns
// the norm before clipping. A training loop can instead pass the coefficient to step().
double clip_grad_norm(const ParamList& params, double max_norm);

// Drops every parameter's gradient buffer (PyTorch's zero_grad(set_to_none=True)).
void zero_grad(const ParamList& params);
