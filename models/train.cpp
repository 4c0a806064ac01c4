// models/train.cpp — one optimizer step at a time, with everything needed to resume exactly.
#include "train.h"
#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include "engine/ops.h"

void TrainConfig::validate() const {
    std::vector<std::string> bad;
    if (steps < 0) bad.push_back(fmt::format("--steps must be >= 0, got {}", steps));
    if (batch < 1) bad.push_back(fmt::format("--batch must be >= 1, got {}", batch));
    if (block < 0) bad.push_back(fmt::format("--block must be >= 0, got {}", block));
    if (grad_accum < 1) bad.push_back(fmt::format("--grad_accum must be >= 1, got {}", grad_accum));
    if (warmup < 0) bad.push_back(fmt::format("--warmup must be >= 0, got {}", warmup));
    if (eval_every < 0) bad.push_back(fmt::format("--eval_every must be >= 0, got {}", eval_every));
    if (eval_iters < 1) bad.push_back(fmt::format("--eval_iters must be >= 1, got {}", eval_iters));
    if (!(std::isfinite(lr) && lr > 0)) bad.push_back(fmt::format("--lr must be a finite number > 0, got {}", lr));
    if (!(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= lr))
        bad.push_back(fmt::format("--min_lr must be in [0, lr], got {}", min_lr));
    if (!(std::isfinite(weight_decay) && weight_decay >= 0)) bad.push_back(fmt::format("--weight_decay must be >= 0, got {}", weight_decay));
    if (!(std::isfinite(grad_clip) && grad_clip >= 0)) bad.push_back(fmt::format("--grad_clip must be >= 0, got {}", grad_clip));
    if (!bad.empty()) throw ValueError("invalid training config:\n  " + fmt::format("{}", fmt::join(bad, "\n  ")));
}

Batch TrainData::sample(Split s, int64_t B, int64_t T, Rng& rng) const {
    if (task) return task->sample(s, B, rng, T);
    ENGINE_CHECK(text != nullptr, ValueError, "training data: no dataset given");
    return text->sample(s, B, T, rng);
}

static AdamWConfig adamw_config(const TrainConfig& c) {
    AdamWConfig a;
    a.lr = c.lr;
    a.weight_decay = c.weight_decay;
    return a;
}

Trainer::Trainer(GPT& model, ParamList& trainable, const TrainData& data, const TrainConfig& cfg, Rng* method_rng)
    : model_(model), trainable_(trainable), data_(data), cfg_(cfg), method_rng_(method_rng),
      opt_(trainable, adamw_config(cfg)), data_rng_(cfg.seed) {
    cfg_.validate();
    ENGINE_CHECK(trainable_.count(true) > 0, ValueError, "nothing to train: every parameter is frozen");
    model_.dropout_rng.reseed(cfg.seed + 1);
    T_ = data_block(model, data, cfg.block);
}

int64_t data_block(const GPT& model, const TrainData& data, int64_t requested) {
    const int64_t room = model.config.block_size - (model.hooks ? model.hooks->n_virtual() + model.hooks->n_prefix() : 0);
    if (data.task) {
        ENGINE_CHECK(data.task->max_len() <= room, ValueError,
                     "{}: the longest example needs {} positions but the model has room for {} (block_size {})",
                     data.task->path(), data.task->max_len(), room, model.config.block_size);
        return data.task->max_len();
    }
    const int64_t T = requested ? requested : room;
    ENGINE_CHECK(T <= room, ValueError, "--block {} is larger than the model allows ({}, block_size {})", T, room,
                 model.config.block_size);
    return T;
}

// Linear warmup to lr, then cosine decay to min_lr at the last step.
double Trainer::lr_at(int64_t s) const {
    if (s < cfg_.warmup) return double(cfg_.lr) * double(s + 1) / double(cfg_.warmup);
    const double span = double(std::max<int64_t>(1, cfg_.steps - cfg_.warmup));
    const double progress = std::min(1.0, double(s - cfg_.warmup) / span);
    return cfg_.min_lr + 0.5 * (1.0 + std::cos(M_PI * progress)) * double(cfg_.lr - cfg_.min_lr);
}

// The name of the first trainable tensor whose gradient holds a NaN or Inf ("" if none).
static std::string first_nonfinite_grad(const ParamList& params) {
    for (const Param& p : params.all()) {
        if (!p.tensor.has_grad()) continue;
        const float* g = p.tensor.grad_data();
        for (int64_t i = 0; i < p.tensor.numel(); i++)
            if (!std::isfinite(g[i])) return p.name;
    }
    return "";
}

LogRow Trainer::train_step() {
    const auto t0 = std::chrono::steady_clock::now();
    LogRow row;
    row.step = step_;
    row.lr = lr_at(step_);
    opt_.zero_grad();
    double loss_sum = 0;
    int64_t tokens = 0;
    for (int64_t micro = 0; micro < cfg_.grad_accum; micro++) {
        Batch b = data_.sample(Split::Train, cfg_.batch, T_, data_rng_);
        tokens += b.ids.numel();
        Tensor loss = model_.loss(b.ids, b.targets, true);
        loss_sum += loss.item();
        (cfg_.grad_accum > 1 ? scale(loss, 1.0f / float(cfg_.grad_accum)) : loss).backward();
    }
    row.train_loss = loss_sum / double(cfg_.grad_accum);
    row.grad_norm = grad_norm(trainable_);   // clipping is applied inside the update, below
    if (!std::isfinite(row.train_loss) || !std::isfinite(row.grad_norm)) {
        const std::string where = std::isfinite(row.train_loss)
                                      ? fmt::format("the gradient of '{}'", first_nonfinite_grad(trainable_))
                                      : std::string("the loss");
        if (!cfg_.skip_nonfinite)
            throw NumericError(fmt::format("step {}: non-finite value in {} (loss {}, grad norm {}); stopping "
                                           "(use --skip_nonfinite to skip such batches)",
                                           step_, where, row.train_loss, row.grad_norm));
        opt_.zero_grad();   // skip the update, keep the weights finite
    } else {
        opt_.set_lr(float(row.lr));
        opt_.step(cfg_.grad_clip > 0 ? clip_coefficient(row.grad_norm, cfg_.grad_clip) : 1.f);
    }
    step_++;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    row.tokens_per_s = secs > 0 ? double(tokens) / secs : 0;
    row.ms = 1000 * secs;
    return row;
}

double evaluate(GPT& model, const TrainData& data, int64_t B, int64_t T, int64_t iters, uint64_t seed) {
    NoGradGuard no_grad;
    Rng eval_rng(seed ^ 0x5eed5eedull);
    double total = 0;
    for (int64_t i = 0; i < iters; i++) {
        Batch b = data.sample(Split::Val, B, T, eval_rng);
        total += model.loss(b.ids, b.targets, false).item();
    }
    return total / double(iters);
}

// Note [Exact match in one forward]
// Greedy decoding writes the answer exactly when, at every answer position, the argmax of the
// logits given the prompt and the answer's own earlier tokens is the answer's next token: a
// decoder that got every earlier token right saw exactly that context. So one forward over
// prompt + answer tells whether greedy generation would produce the answer — the same test as
// TaskDataset::exact_match with a greedy generator, without generating token by token. Rows of
// a batch are right-padded; with causal attention the padding never reaches the positions read.
double greedy_exact_match(GPT& model, const TaskDataset& task, Split s, int64_t max_examples, int64_t batch) {
    const std::vector<TaskDataset::Example>& ex = task.examples(s);
    const int64_t n = max_examples > 0 ? std::min<int64_t>(max_examples, int64_t(ex.size())) : int64_t(ex.size());
    ENGINE_CHECK(n > 0, ValueError, "exact match: the {} split has no examples", split_name(s));
    NoGradGuard no_grad;
    int64_t right = 0;
    for (int64_t i0 = 0; i0 < n; i0 += batch) {
        const int64_t B = std::min(batch, n - i0);
        int64_t T = 1;
        for (int64_t i = i0; i < i0 + B; i++) T = std::max<int64_t>(T, int64_t(ex[size_t(i)].tokens.size()) - 1);
        std::vector<int32_t> ids(size_t(B * T), 0);
        for (int64_t b = 0; b < B; b++) {
            const std::vector<int32_t>& t = ex[size_t(i0 + b)].tokens;
            std::copy(t.begin(), t.end() - 1, ids.begin() + b * T);   // the last token is only a target
        }
        Tensor logits = model.forward(Tensor::from_ints(ids, {B, T}));
        const int64_t V = logits.size(2);
        for (int64_t b = 0; b < B; b++) {
            const TaskDataset::Example& e = ex[size_t(i0 + b)];
            bool ok = true;
            for (int64_t p = e.prompt_len; ok && p < int64_t(e.tokens.size()); p++) {   // predict token p at p − 1
                const float* z = logits.data() + (b * T + p - 1) * V;
                ok = std::max_element(z, z + V) - z == e.tokens[size_t(p)];
            }
            right += ok;
        }
    }
    return double(right) / double(n);
}

double Trainer::val_loss() { return evaluate(model_, data_, cfg_.batch, T_, cfg_.eval_iters, cfg_.seed); }

void Trainer::run(const std::function<void(const LogRow&)>& on_log, const std::function<void(const LogRow&)>& on_eval) {
    while (step_ < cfg_.steps) {
        LogRow row = train_step();
        const bool eval_now = step_ == cfg_.steps || (cfg_.eval_every > 0 && step_ % cfg_.eval_every == 0);
        if (eval_now) row.val_loss = val_loss();
        if (on_log) on_log(row);
        if (eval_now && on_eval) on_eval(row);
    }
}

std::map<std::string, std::string> Trainer::state_metadata() const {
    nlohmann::json j = {{"step", step_}, {"data_rng", data_rng_.state()}, {"dropout_rng", model_.dropout_rng.state()},
                        {"optimizer_step", opt_.step_count()}};
    if (method_rng_) j["method_rng"] = method_rng_->state();
    return {{"peft.train_state", j.dump()}};
}

void Trainer::restore(const std::map<std::string, std::string>& meta, const std::map<std::string, Tensor>& optimizer) {
    auto it = meta.find("peft.train_state");
    ENGINE_CHECK(it != meta.end(), ValueError, "resume: the checkpoint holds no training state");
    nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
    ENGINE_CHECK(j.is_object() && j.contains("step") && j["step"].is_number_integer() && j.contains("data_rng") &&
                     j["data_rng"].is_string() && j.contains("dropout_rng") && j["dropout_rng"].is_string() &&
                     j.contains("optimizer_step") && j["optimizer_step"].is_number_integer(),
                 ValueError, "resume: malformed training state '{}'", it->second.substr(0, 200));
    ENGINE_CHECK(data_rng_.set_state(j["data_rng"].get<std::string>()) &&
                     model_.dropout_rng.set_state(j["dropout_rng"].get<std::string>()),
                 ValueError, "resume: malformed RNG state in the training state");
    if (method_rng_ && j.contains("method_rng") && j["method_rng"].is_string())
        ENGINE_CHECK(method_rng_->set_state(j["method_rng"].get<std::string>()), ValueError, "resume: malformed method RNG state");
    NamedTensors opt_state(optimizer.begin(), optimizer.end());
    opt_.load_state(opt_state);
    opt_.set_step_count(j["optimizer_step"].get<int64_t>());
    step_ = j["step"].get<int64_t>();
}
