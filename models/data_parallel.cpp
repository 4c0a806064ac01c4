// models/data_parallel.cpp — example streams, token-weighted gradient averaging, replica checks.
#include "data_parallel.h"
#include <chrono>
#include <cstring>
#include "engine/dist.h"
#include "engine/memory.h"

uint64_t stream_seed(uint64_t seed, int64_t s) { return seed + 0x9e3779b97f4a7c15ull * uint64_t(s); }

Batch concat_batches(const std::vector<Batch>& parts) {
    if (parts.size() == 1) return parts[0];
    const int64_t T = parts[0].ids.size(1);
    int64_t B = 0;
    std::vector<int32_t> ids, targets;
    for (const Batch& p : parts) {
        ENGINE_CHECK(p.ids.size(1) == T, ShapeError, "concat_batches: widths {} and {} differ", T, p.ids.size(1));
        B += p.ids.size(0);
        ids.insert(ids.end(), p.ids.idata(), p.ids.idata() + p.ids.numel());
        targets.insert(targets.end(), p.targets.idata(), p.targets.idata() + p.targets.numel());
    }
    return {Tensor::from_ints(ids, {B, T}), Tensor::from_ints(targets, {B, T})};
}

int64_t target_tokens(const Batch& b) {
    int64_t n = 0;
    for (int64_t i = 0; i < b.targets.numel(); i++) n += b.targets.idata()[i] != kIgnoreIndex;
    return n;
}

// Gradients travel in buckets of at most this many floats (16 MiB), so full fine-tuning of a
// large model needs no second full-size buffer; LoRA's gradients fit in one.
constexpr int64_t kBucketFloats = int64_t(4) << 20;

double average_gradients(const ParamList& trainable, double loss, int64_t tokens, AllreduceStats& stats) {
    stats = {};
    if (dist::size() == 1) return loss;
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<const Param*> params;
    for (const Param& p : trainable.all())
        if (p.tensor.requires_grad()) params.push_back(&p);

    // 1. loss·n, n and one has-gradient flag per tensor, summed over ranks
    std::vector<double> head(2 + params.size());
    head[0] = loss * double(tokens);
    head[1] = double(tokens);
    for (size_t i = 0; i < params.size(); i++) head[2 + i] = params[i]->tensor.has_grad();
    dist::allreduce_sum(head.data(), int64_t(head.size()));
    stats.bytes += int64_t(head.size() * sizeof(double));
    const double n = head[1];
    ENGINE_CHECK(n > 0, ValueError, "data-parallel step: no rank had a target token in its batch");
    const float weight = float(double(tokens) / n);

    // 2. the gradients of the tensors some rank has one for, weighted, bucket by bucket
    std::vector<float> bucket;
    std::vector<const Param*> in_bucket;
    auto flush = [&]() {
        if (bucket.empty()) return;
        dist::allreduce_sum(bucket.data(), int64_t(bucket.size()));
        stats.bytes += int64_t(bucket.size() * sizeof(float));
        size_t at = 0;
        for (const Param* p : in_bucket) {
            Tensor& t = const_cast<Tensor&>(p->tensor);
            if (!t.has_grad()) t.impl().grad = std::make_shared<Storage>(t.nbytes(), Mem::Grads);
            std::memcpy(t.grad_data(), bucket.data() + at, t.nbytes());
            at += size_t(t.numel());
        }
        bucket.clear();
        in_bucket.clear();
    };
    for (size_t i = 0; i < params.size(); i++) {
        if (head[2 + i] == 0) continue;   // no rank has this gradient: leave it absent everywhere
        const Tensor& t = params[i]->tensor;
        if (!bucket.empty() && int64_t(bucket.size()) + t.numel() > kBucketFloats) flush();
        const size_t at = bucket.size();
        bucket.resize(at + size_t(t.numel()), 0.f);
        if (const float* g = t.grad_data())
            for (int64_t j = 0; j < t.numel(); j++) bucket[at + size_t(j)] = weight * g[j];
        in_bucket.push_back(params[i]);
    }
    flush();
    stats.ms = 1000 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return head[0] / n;
}

static uint64_t hash_tensors(const std::vector<std::pair<std::string, Tensor>>& named, uint64_t h) {
    for (const auto& [name, t] : named) {
        h = dist::hash_bytes(name.data(), name.size(), h);
        h = dist::hash_bytes(t.data(), t.nbytes(), h);
    }
    return h;
}

static std::vector<std::pair<std::string, Tensor>> named(const ParamList& params) {
    std::vector<std::pair<std::string, Tensor>> out;
    for (const Param& p : params.all())
        if (p.tensor.storage_ptr()) out.push_back({p.name, p.tensor});   // a quantised weight: its blocks, below
    return out;
}

void check_replicas(const ParamList& trainable, const Optimizer& opt, const std::string& when) {
    if (dist::size() == 1) return;
    const uint64_t h = hash_tensors(opt.state_tensors(), hash_tensors(named(trainable), 0));
    dist::check_same(fmt::format("the checksum of the trainable parameters and optimizer state {} (the replicas "
                                 "diverged; nothing was saved)", when),
                     fmt::format("{:016x}", h));
}

void check_same_start(GPT& model, const ParamList& trainable) {
    if (dist::size() == 1) return;
    uint64_t h = hash_tensors(named(trainable), hash_tensors(named(model.params), 0));
    for (auto& [name, lin] : model.linears())
        if (lin->quantized()) h = dist::hash_bytes(lin->qweight->blocks->data(), lin->qweight->nbytes(), h);
    dist::check_same("the checksum of the starting weights (load the same base checkpoint on every rank)",
                     fmt::format("{:016x}", h));
}
