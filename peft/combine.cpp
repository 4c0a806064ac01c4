// peft/combine.cpp — HF's add_weighted_adapter for LoRA adapters (see combine.h for the math).
#include "combine.h"
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include "engine/blas.h"
#include "engine/linalg.h"
#include "lora.h"
#include "methods.h"

// ---- the merge rules of HF's utils/merge_utils.py, on flat tensors

// TIES's trim: keep the int(density · n) entries of largest magnitude (ties broken by position).
static void magnitude_prune_inplace(std::vector<float>& t, double density) {
    if (density >= 1) return;
    const size_t n = t.size(), k = size_t(density * double(n));
    std::vector<size_t> idx(n);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    auto larger = [&t](size_t a, size_t b) {
        const float x = std::fabs(t[a]), y = std::fabs(t[b]);
        return x > y || (x == y && a < b);
    };
    if (k < n) std::nth_element(idx.begin(), idx.begin() + ptrdiff_t(k), idx.end(), larger);
    for (size_t i = k; i < n; i++) t[idx[i]] = 0.f;
}

// DARE's drop and rescale: keep each entry with probability density, divided by density.
static void random_prune_inplace(std::vector<float>& t, double density, Rng& rng) {
    if (density >= 1) return;
    for (float& x : t) x = rng.uniform() < density ? float(double(x) / density) : 0.f;
}

std::vector<float> merge_task_tensors(const std::string& type, const std::vector<std::vector<float>>& ts,
                                      const std::vector<double>& weights, double density,
                                      const std::string& majority_sign_method, Rng& rng) {
    ENGINE_CHECK(!ts.empty() && ts.size() == weights.size(), ValueError, "merge: {} tensors but {} weights", ts.size(),
                 weights.size());
    std::vector<std::vector<float>> t = ts;
    if (type == "ties" || type == "magnitude_prune")
        for (auto& x : t) magnitude_prune_inplace(x, density);
    else if (type == "dare_linear" || type == "dare_ties")
        for (auto& x : t) random_prune_inplace(x, density, rng);
    else
        ENGINE_CHECK(type == "linear", ValueError, "merge: unknown combination_type \"{}\"", type);
    const size_t n = t[0].size();
    std::vector<float> out(n);
    const bool ties = type == "ties" || type == "dare_ties";
    for (size_t j = 0; j < n; j++) {
        if (!ties) {   // task arithmetic: Σ wᵢ tᵢ
            double s = 0;
            for (size_t i = 0; i < t.size(); i++) s += weights[i] * t[i][j];
            out[j] = float(s);
            continue;
        }
        // elect a sign from the (pruned, unweighted) entries: their sum, or the count of each sign
        double mass = 0;
        for (size_t i = 0; i < t.size(); i++)
            mass += majority_sign_method == "frequency" ? double((t[i][j] > 0) - (t[i][j] < 0)) : double(t[i][j]);
        const int elected = mass >= 0 ? 1 : -1;
        // disjoint mean: the weighted entries that carry the elected sign, over how many there are
        double s = 0;
        int agree = 0;
        for (size_t i = 0; i < t.size(); i++)
            if ((t[i][j] > 0 ? 1 : t[i][j] < 0 ? -1 : 0) == elected) { s += weights[i] * t[i][j]; agree++; }
        out[j] = float(s / std::max(agree, 1));
    }
    return out;
}

// ---- combining

namespace {
struct Part {   // one adapter's factor at one module
    size_t adapter;
    LoraFactor f;
};
}  // namespace

static const std::vector<std::string> kTypes = {"cat", "linear", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune"};

std::unique_ptr<Method> combine_adapters(const std::vector<const Method*>& adapters, GPT& model,
                                         const CombineOptions& o, CombineReport* report) {
    const std::string& type = o.combination_type;
    ENGINE_CHECK(std::find(kTypes.begin(), kTypes.end(), type) != kTypes.end(), ValueError,
                 "combination_type \"{}\" is not one of {}", type, fmt::join(kTypes, ", "));
    ENGINE_CHECK(adapters.size() >= 1, ValueError, "combine needs at least one adapter");
    ENGINE_CHECK(o.weights.size() == adapters.size(), ValueError, "weights: {} values for {} adapters", o.weights.size(),
                 adapters.size());
    const bool prunes = type != "cat" && type != "linear" && type != "svd";
    ENGINE_CHECK(!prunes || (o.density > 0 && o.density <= 1), ValueError,
                 "density = {} must be in (0, 1] for combination_type {}", o.density, type);
    ENGINE_CHECK(o.svd_rank >= 0, ValueError, "svd_rank = {} must be a positive rank", o.svd_rank);
    ENGINE_CHECK(o.majority_sign_method == "total" || o.majority_sign_method == "frequency", ValueError,
                 "majority_sign_method = \"{}\" must be \"total\" or \"frequency\"", o.majority_sign_method);

    // Every module's factors, in model order; the input adapters are checked first.
    std::map<std::string, std::vector<Part>> parts;
    for (size_t i = 0; i < adapters.size(); i++) {
        const Method& a = *adapters[i];
        ENGINE_CHECK(a.peft_type() == "LORA", ValueError, "adapter {} is {}: combine takes LORA adapters only", i + 1,
                     a.peft_type());
        const json c = a.config_json();
        ENGINE_CHECK(!c.contains("modules_to_save") && c.value("bias", "none") == "none", ValueError,
                     "adapter {} has modules_to_save or bias: combine merges LoRA factors only", i + 1);
        std::vector<LoraFactor> factors;
        try {
            factors = lora_factors(a);
        } catch (const ValueError& e) {
            throw ValueError(fmt::format("adapter {}: {}", i + 1, e.what()));
        }
        for (LoraFactor& f : factors) {
            const double ws = o.weights[i] * f.scaling;
            ENGINE_CHECK(type == "cat" || type == "svd" || ws >= 0, ValueError,
                         "weights: {} for adapter {} is negative; {} weighs A and B by sqrt(weight · scale)", o.weights[i],
                         i + 1, type);
            parts[f.module].push_back({i, f});
        }
    }
    // The output rank R, and per-module checks of the ranks.
    int64_t R = 0;
    for (auto& [module, ps] : parts) {
        int64_t sum = 0, mx = 0;
        for (const Part& p : ps) {
            sum += p.f.A.size(0);
            mx = std::max(mx, p.f.A.size(0));
            ENGINE_CHECK(type != "linear" && type != "cat" && type != "svd" ? p.f.A.size(0) == ps[0].f.A.size(0) :
                         type != "linear" || p.f.A.size(0) == ps[0].f.A.size(0), ValueError,
                         "{}: adapters {} and {} have ranks {} and {}; {} needs equal ranks (use cat or svd)", module,
                         ps[0].adapter + 1, p.adapter + 1, ps[0].f.A.size(0), p.f.A.size(0), type);
        }
        R = std::max(R, type == "cat" ? sum : mx);
    }
    if (type == "svd" && o.svd_rank > 0) R = o.svd_rank;

    // The output: adapter 1's config with the new rank, a scale of exactly 1, every combined module named.
    json cfg = adapters[0]->config_json();
    for (const char* k : {"rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern", "exclude_modules"}) cfg.erase(k);
    const bool rs = cfg.value("use_rslora", false);
    cfg["peft_type"] = "LORA";
    cfg["r"] = R;
    cfg["lora_alpha"] = rs ? std::sqrt(double(R)) : double(R);   // s = alpha / r (or / √r) = 1
    std::vector<std::string> modules;
    for (const auto& [name, lin] : model.linears())
        if (parts.count(name)) modules.push_back(name);
    cfg["target_modules"] = modules;
    Rng init(0), dare(o.seed);
    std::unique_ptr<Method> out = make_method(cfg, model, init);

    CombineReport rep;
    rep.rank = R;
    double diff2 = 0, exact2 = 0;
    for (const std::string& module : modules) {
        const auto& ps = parts.at(module);
        const int64_t out_f = ps[0].f.B.size(0), in_f = ps[0].f.A.size(1);
        Tensor A2 = out->params.get("base_model.model." + module + ".lora_A.weight");   // (R, in), zeros
        Tensor B2 = out->params.get("base_model.model." + module + ".lora_B.weight");   // (out, R)
        std::memset(A2.data(), 0, A2.nbytes());
        std::memset(B2.data(), 0, B2.nbytes());
        // the exact Σ wᵢ sᵢ Bᵢ Aᵢ
        std::vector<float> exact(size_t(out_f * in_f), 0.f);
        for (const Part& p : ps)
            gemm(Trans::N, Trans::N, out_f, in_f, p.f.A.size(0), float(o.weights[p.adapter] * p.f.scaling), p.f.B.data(),
                 p.f.A.data(), 1.f, exact.data());
        if (type == "cat") {   // rows of A' and columns of B', adapter after adapter
            int64_t row = 0;
            for (const Part& p : ps) {
                const int64_t r = p.f.A.size(0);
                const float ws = float(o.weights[p.adapter] * p.f.scaling);
                for (int64_t k = 0; k < r; k++)
                    for (int64_t j = 0; j < in_f; j++) A2.data()[(row + k) * in_f + j] = ws * p.f.A.data()[k * in_f + j];
                for (int64_t q = 0; q < out_f; q++)
                    for (int64_t k = 0; k < r; k++) B2.data()[q * R + row + k] = p.f.B.data()[q * r + k];
                row += r;
            }
        } else if (type == "svd") {
            const Svd d = svd(Tensor::from(exact, {out_f, in_f}));   // LAPACK's sgesdd (engine/linalg.h)
            const float *U = d.U.data(), *S = d.S.data(), *Vh = d.Vh.data();
            const int64_t k = d.S.numel(), keep = std::min(R, k);
            for (int64_t c = 0; c < keep; c++) {
                for (int64_t q = 0; q < out_f; q++) B2.data()[q * R + c] = U[q * k + c] * S[c];
                for (int64_t j = 0; j < in_f; j++) A2.data()[c * in_f + j] = Vh[c * in_f + j];
            }
        } else {   // linear and the pruning types: A's and B's merged entry by entry, weights √(wᵢsᵢ)
            const int64_t r = ps[0].f.A.size(0);
            std::vector<std::vector<float>> As, Bs;
            std::vector<double> w;
            for (const Part& p : ps) {
                As.push_back(p.f.A.to_vector());
                Bs.push_back(p.f.B.to_vector());
                w.push_back(std::sqrt(o.weights[p.adapter] * p.f.scaling));
            }
            const std::vector<float> a = merge_task_tensors(type, As, w, o.density, o.majority_sign_method, dare);
            const std::vector<float> b = merge_task_tensors(type, Bs, w, o.density, o.majority_sign_method, dare);
            for (int64_t k = 0; k < r; k++)
                for (int64_t j = 0; j < in_f; j++) A2.data()[k * in_f + j] = a[size_t(k * in_f + j)];
            for (int64_t q = 0; q < out_f; q++)
                for (int64_t k = 0; k < r; k++) B2.data()[q * R + k] = b[size_t(q * r + k)];
        }
        // how far B'A' is from the exact sum
        std::vector<float> got(exact.size());
        gemm(Trans::N, Trans::N, out_f, in_f, R, 1.f, B2.data(), A2.data(), 0.f, got.data());
        for (size_t e = 0; e < got.size(); e++) {
            const double d = double(got[e]) - double(exact[e]);
            diff2 += d * d;
            exact2 += double(exact[e]) * exact[e];
            rep.max_abs_error = std::max(rep.max_abs_error, std::fabs(d));
        }
        rep.modules++;
    }
    rep.exact_norm = std::sqrt(exact2);
    rep.relative_error = exact2 > 0 ? std::sqrt(diff2 / exact2) : std::sqrt(diff2);
    if (report) *report = rep;
    return out;
}
