// peft/combine.h — several LoRA adapters made into one, as HF PEFT's add_weighted_adapter.
//
// Each input adapter i brings, per target module, ΔWᵢ = sᵢ · Bᵢ Aᵢ (sᵢ = alpha / r or alpha / √r).
// The exact combination is  ΔW = Σ wᵢ · ΔWᵢ.  The output is a plain LoRA adapter whose scale is
// exactly 1 (lora_alpha = r, or √r with use_rslora), so its ΔW = B' A'. How each type gets A', B':
//
//   cat              A' = [w₁s₁A₁; w₂s₂A₂; …] (rows stacked), B' = [B₁ B₂ …] (columns side by
//                    side): B'A' = Σ wᵢsᵢBᵢAᵢ EXACTLY (up to float rounding); rank Σ rᵢ.
//   linear           A' = Σ √(wᵢsᵢ)·Aᵢ, B' = Σ √(wᵢsᵢ)·Bᵢ, same rank r (all rᵢ must be equal).
//                    B'A' = Σᵢ wᵢsᵢBᵢAᵢ + Σᵢ≠ⱼ √(wᵢsᵢwⱼsⱼ)·BᵢAⱼ: the cross terms make it LOSSY,
//                    and the report says how much on the adapters at hand.
//   svd              the exact ΔW, truncated to rank svd_rank (default: the largest rᵢ) by an SVD
//                    (LAPACK sgesdd from OpenBLAS): B' = U·diag(S), A' = Vh. The error left is the
//                    dropped singular values, reported.
//   ties             per factor (A's, then B's), with weights √(wᵢsᵢ) as linear: keep the `density`
//                    fraction of entries of largest |x| in each adapter, elect a sign per entry
//                    (sign of the sum, or of the count with majority_sign_method "frequency"), and
//                    average the weighted entries that agree with it (Yadav et al. 2023).
//   dare_linear      keep each entry with probability `density` and divide by it (Yu et al. 2023),
//                    then the weighted sum; seeded, so the same seed gives the same adapter.
//   dare_ties        DARE's random pruning, then TIES's sign election and disjoint mean.
//   magnitude_prune  TIES's magnitude pruning, then the weighted sum.
//
// Deviations from HF, each a bug HF users have filed, tested in tests/test_combine.cpp:
//  - svd combines Σ wᵢ·ΔWᵢ with each scale once (some HF versions multiply sᵢ in twice);
//  - the output's scale is 1 also with use_rslora (HF sets lora_alpha = r, so √r there);
//  - dare rescales the kept entries by 1/density (one HF version computed it and dropped it);
//  - a negative weight is refused for the √-weighted types (HF fails in math.sqrt).
#pragma once
#include <memory>
#include <string>
#include <vector>
#include "method.h"

struct CombineOptions {
    std::string combination_type;             // one of the seven above
    std::vector<double> weights;              // one per adapter
    double density = -1;                      // ties / dare / magnitude_prune: in (0, 1]
    int64_t svd_rank = 0;                     // svd: the output rank (0: the largest input rank)
    std::string majority_sign_method = "total";   // ties / dare_ties: "total" or "frequency"
    uint64_t seed = 0;                        // dare's random masks
};

// How far the combined ΔW' = B'A' is from the exact Σ wᵢΔWᵢ, over every combined module:
// relative = ‖ΔW' − ΔW‖_F / ‖ΔW‖_F (the Frobenius norms summed over modules), and the largest
// absolute entry difference.
struct CombineReport {
    int64_t rank = 0, modules = 0;
    double relative_error = 0, max_abs_error = 0, exact_norm = 0;
};

// The combined adapter, attached to `model` (frozen, like any method). Throws ValueError naming
// the field and value for: a weights count that is not the adapters count, an adapter that is
// not LORA or carries modules_to_save / bias, unequal ranks where the type needs equal ones,
// svd_rank <= 0, density outside (0, 1], an unknown type. Nothing is changed on error.
std::unique_ptr<Method> combine_adapters(const std::vector<const Method*>& adapters, GPT& model,
                                         const CombineOptions& options, CombineReport* report = nullptr);

// The merge rules on flat task tensors (HF's utils/merge_utils.py), for the tests to check one by
// one: ts[i] has n entries; the result too.
std::vector<float> merge_task_tensors(const std::string& type, const std::vector<std::vector<float>>& ts,
                                      const std::vector<double>& weights, double density,
                                      const std::string& majority_sign_method, Rng& rng);
