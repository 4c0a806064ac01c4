// peft/lycoris.h — what LoHa and LoKr share (HF PEFT's lycoris_utils.py): the update is a whole
// matrix ΔW (out, in), rebuilt from small trained factors at every forward, and the target
// Linear computes
//     y = x Wᵀ + b + x ΔWᵀ
// (two GEMMs; W frozen, so the first computes no dW, and ΔW's gradient flows back into the
// factors through the ops that built it). Two regularisers of HF's, both training-only and
// drawn from the model's dropout stream:
//   module_dropout  with this probability a forward skips the whole update of one module
//   rank_dropout    each output row of ΔW is zeroed with this probability; kept rows are scaled
//                   by 1 / (the kept fraction) when `scale` (LoHa always, LoKr: rank_dropout_scale)
// Merge: W ← W + ΔW, computed as the forward computes it.
#pragma once
#include "methods.h"
#include "targets.h"

// The config fields LoHa and LoKr share (HF's LycorisConfig), read and written under HF's names.
struct LycorisConfig {
    int64_t r = 8;                 // rank of the factors, e.g. 8
    double alpha = 8;              // scale numerator, e.g. 8: s = alpha / r
    double rank_dropout = 0;       // drop rows of ΔW while training, e.g. 0.1
    double module_dropout = 0;     // skip a module's update while training, e.g. 0.1
    Targeting targets;             // target_modules, exclude_modules, layers_to_transform, rank_pattern,
                                   // alpha_pattern, modules_to_save (targets.h)

    // The rank and scale of the module `name` (rank_pattern / alpha_pattern may change them).
    int64_t rank(const std::string& name) const { return targets.rank(name, r); }
    float scaling(const std::string& name) const { return float(targets.alpha(name, alpha) / double(rank(name))); }
    void read(ConfigReader& f, const GPTConfig& model);   // r, alpha, the dropouts, the targeting
    void write(json& j) const;
};

class DeltaWeightMethod : public MergeableMethod {
protected:
    struct Dropouts {
        double rank = 0, module = 0;
        bool scale = true;
    };
    DeltaWeightMethod(GPT& model, Dropouts d) : MergeableMethod(model), drop_(d), rng_(&model.dropout_rng) {}
    virtual Tensor delta_weight(size_t i) const = 0;   // ΔW of target i, scale included, built with engine ops

private:
    struct Wrap;
    std::shared_ptr<LinearWrap> make_wrap(size_t i) const override;
    void merge_into(size_t i, Linear& lin) const override;
    Dropouts drop_;
    Rng* rng_;
};

// HF's (LyCORIS's) factorization(dimension, factor): two numbers m ≤ n with m·n = dimension —
// (factor, dimension / factor) when factor > 0 divides it, else the divisor pair nearest the
// square root with m ≤ factor (factor −1: no limit). factorization(128, -1) = (8, 16).
std::pair<int64_t, int64_t> lokr_factorization(int64_t dimension, int64_t factor);

// y = a ⊗ b, the Kronecker product: a (p, q), b (m, n) -> (p·m, q·n) (peft/lokr.cpp).
Tensor kron(const Tensor& a, const Tensor& b);
