// peft/mixed.cpp — mixed-adapter batches (see mixed.h).
#include "mixed.h"
#include <algorithm>
#include <cstring>
#include <map>
#include "engine/autograd.h"

namespace {

// The seam a mixed batch puts on one Linear: group g of samples runs through wraps[g] (null: the base).
struct MixedWrap : LinearWrap {
    std::vector<std::shared_ptr<LinearWrap>> wraps;   // one per group (null: the base)
    std::vector<size_t> group;                        // the group of adapter_names[i]
    bool cycle = false;                               // sample b takes adapter_names[b mod n]

    Tensor run(size_t g, const Linear& base, const Tensor& x) {
        return wraps[g] ? wraps[g]->forward(base, x) : base.base_forward(x);
    }
    Tensor forward(const Linear& base, const Tensor& x) override {
        ENGINE_CHECK(!GradMode::enabled(), ValueError,
                     "adapter_names: a mixed-adapter batch is for inference (as HF's); run it without gradients");
        const int64_t n = int64_t(group.size()), B = x.ndim() >= 2 ? x.size(0) : 0;
        ENGINE_CHECK(B >= 1 && (cycle || B == n), ShapeError,
                     "adapter_names: {} names, one per sample, but the batch holds {} samples", n, B);
        std::vector<std::vector<int64_t>> samples(wraps.size());   // the samples of each group, in order
        for (int64_t b = 0; b < B; b++) samples[group[size_t(b % n)]].push_back(b);
        for (size_t g = 0; g < samples.size(); g++)
            if (int64_t(samples[g].size()) == B) return run(g, base, x);   // one group: the whole batch at once
        const int64_t per = x.numel() / B;                 // floats of one sample's input
        Tensor y;
        int64_t per_out = 0;
        for (size_t g = 0; g < samples.size(); g++) {
            const auto& ss = samples[g];
            if (ss.empty()) continue;
            Shape gs = x.shape();
            gs.dims[0] = int64_t(ss.size());
            Tensor xg = Tensor::empty(gs);   // this group's samples, side by side
            for (size_t i = 0; i < ss.size(); i++)
                std::memcpy(xg.data() + int64_t(i) * per, x.data() + ss[i] * per, size_t(per) * sizeof(float));
            Tensor yg = run(g, base, xg);
            if (!y.defined()) {
                Shape ys = yg.shape();
                ys.dims[0] = B;
                y = Tensor::empty(ys);
                per_out = yg.numel() / int64_t(ss.size());
            }
            for (size_t i = 0; i < ss.size(); i++)
                std::memcpy(y.data() + ss[i] * per_out, yg.data() + int64_t(i) * per_out, size_t(per_out) * sizeof(float));
        }
        return y;
    }
};

}  // namespace

MixedBatch::MixedBatch(PeftModel& pm, const std::vector<std::string>& names, bool cycle)
    : pm_(pm), previous_(pm.active_name()) {
    ENGINE_CHECK(!names.empty(), ValueError, "adapter_names is empty: give one name per sample");
    // Check every name first: an error changes nothing.
    std::vector<std::string> distinct;   // group order: first appearance
    std::vector<size_t> group(names.size());
    for (size_t b = 0; b < names.size(); b++) {
        const std::string& n = names[b];
        if (n != kBaseAdapterName) {
            const auto loaded = pm.names();
            ENGINE_CHECK(std::find(loaded.begin(), loaded.end(), n) != loaded.end(), ValueError,
                         "adapter_names: '{}' (sample {}) names no loaded adapter; loaded: [{}] and {}", n, b,
                         fmt::join(loaded, ", "), kBaseAdapterName);
            const Method& m = pm.get(n);
            const auto* mm = dynamic_cast<const MergeableMethod*>(&m);
            ENGINE_CHECK(mm, ValueError,
                         "adapter_names: '{}' is {}, which cannot be mixed in a batch: it changes the sequence or the "
                         "block outputs through the model-wide hooks; only Linear-wrapping methods (LORA, IA3, ...) mix",
                         n, m.peft_type());
            ENGINE_CHECK(!mm->has_saved_modules(), ValueError,
                         "adapter_names: '{}' trains modules_to_save or bias copies, which the whole batch would read; "
                         "it cannot be mixed", n);
            const std::string why = mm->cannot_mix();
            ENGINE_CHECK(why.empty(), ValueError, "adapter_names: '{}' ({}) cannot be mixed in a batch: {}", n,
                         m.peft_type(), why);
            ENGINE_CHECK(!mm->merged(), ValueError, "adapter_names: '{}' is merged into the base weights; unmerge it first", n);
        }
        auto it = std::find(distinct.begin(), distinct.end(), n);
        group[b] = size_t(it - distinct.begin());
        if (it == distinct.end()) distinct.push_back(n);
    }
    pm_.disable();   // no adapter's own seams: the mixed ones below do all
    std::map<Linear*, std::shared_ptr<MixedWrap>> per_linear;
    for (size_t g = 0; g < distinct.size(); g++) {
        if (distinct[g] == kBaseAdapterName) continue;
        const auto& mm = dynamic_cast<const MergeableMethod&>(pm_.get(distinct[g]));
        for (auto& [lin, wrap] : mm.seams()) {
            auto& mw = per_linear[lin];
            if (!mw) {
                mw = std::make_shared<MixedWrap>();
                mw->wraps.assign(distinct.size(), nullptr);
                mw->group = group;
                mw->cycle = cycle;
            }
            mw->wraps[g] = wrap;
        }
    }
    for (auto& [lin, mw] : per_linear) {
        lin->wrap = mw;
        installed_.push_back({lin, mw});
    }
}

MixedBatch::~MixedBatch() {
    for (auto& [lin, wrap] : installed_)
        if (lin->wrap == wrap) lin->wrap = nullptr;
    const auto names = pm_.names();
    if (!previous_.empty() && std::find(names.begin(), names.end(), previous_) != names.end()) pm_.set_active(previous_);
}
