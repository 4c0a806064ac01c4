// peft/lycoris.cpp — the shared forward and merge of LoHa and LoKr (see lycoris.h).
#include "lycoris.h"

struct DeltaWeightMethod::Wrap : LinearWrap {
    const DeltaWeightMethod& m;
    size_t i;
    Wrap(const DeltaWeightMethod& m, size_t i) : m(m), i(i) {}
    Tensor forward(const Linear& base, const Tensor& x) override {
        Tensor y = base.base_forward(x);
        const bool train = m.training;
        if (train && m.drop_.module > 0 && !(m.rng_->uniform() > m.drop_.module)) return y;   // HF: kept if rand > p
        Tensor d = linear(x, m.delta_weight(i));
        if (train && m.drop_.rank > 0) {   // drop rows of ΔW = drop outputs of x ΔWᵀ
            Tensor keep = Tensor::empty({base.out});
            int64_t kept = 0;
            for (int64_t o = 0; o < base.out; o++) kept += (keep.data()[o] = m.rng_->uniform() > m.drop_.rank ? 1.f : 0.f) > 0;
            if (m.drop_.scale && kept > 0)
                for (int64_t o = 0; o < base.out; o++) keep.data()[o] *= float(base.out) / float(kept);
            d = mul_row_vector(d, keep);
        }
        return add(y, d);
    }
};

std::shared_ptr<LinearWrap> DeltaWeightMethod::make_wrap(size_t i) const { return std::make_shared<Wrap>(*this, i); }

void DeltaWeightMethod::merge_into(size_t i, Linear& lin) const {
    NoGradGuard no_graph;
    const Tensor d = delta_weight(i);
    float* w = lin.weight.data();
    for (int64_t k = 0; k < d.numel(); k++) w[k] += d.data()[k];
}

void LycorisConfig::read(ConfigReader& f, const GPTConfig& model) {
    r = f.integer("r", r, 1, 65536);
    alpha = f.positive_number("alpha", alpha);
    rank_dropout = f.probability("rank_dropout", rank_dropout);
    module_dropout = f.probability("module_dropout", module_dropout);
    targets = Targeting::read(f, default_targets(model), {true, true, false});   // HF's LyCORIS has no `bias`
    f.boolean("use_effective_conv2d", false);   // for Conv2d layers only: nothing to do on a Linear
    f.only("task_type", "CAUSAL_LM", "the models here are \"CAUSAL_LM\"");
}

void LycorisConfig::write(json& j) const {
    j.update({{"r", r}, {"alpha", alpha}, {"rank_dropout", rank_dropout}, {"module_dropout", module_dropout},
              {"use_effective_conv2d", false}, {"task_type", "CAUSAL_LM"}, {"inference_mode", true}});
    targets.write(j);
}

std::pair<int64_t, int64_t> lokr_factorization(int64_t dimension, int64_t factor) {
    if (factor > 0 && dimension % factor == 0) return {factor, dimension / factor};
    if (factor == -1) factor = dimension;
    int64_t m = 1, n = dimension;
    const int64_t length = m + n;   // as in LyCORIS: never updated, so only `factor` stops the search early
    while (m < n) {
        int64_t new_m = m + 1;
        while (dimension % new_m != 0) new_m++;
        const int64_t new_n = dimension / new_m;
        if (new_m + new_n > length || new_m > factor) break;
        m = new_m, n = new_n;
    }
    if (m > n) std::swap(m, n);
    return {m, n};
}
