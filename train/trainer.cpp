// train/trainer.cpp — one optimizer step at a time, with everything needed to resume exactly.
#include "trainer.h"
#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include "engine/dist.h"
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
      opt_(trainable, adamw_config(cfg)) {
    cfg_.validate();
    ENGINE_CHECK(trainable_.count(true) > 0, ValueError, "nothing to train: every parameter is frozen");
    // Rank r draws from example stream r and drops out with its own mask stream; one process
    // draws from streams 0…data_streams−1.
    first_stream_ = dist::rank();
    for (int64_t s = 0; s < cfg_.data_streams; s++) data_rngs_.emplace_back(stream_seed(cfg.seed, first_stream_ + s));
    model_.dropout_rng.reseed(stream_seed(cfg.seed + 1, dist::rank()));
    T_ = data_block(model, data, cfg.block);
    check_same_start(model_, trainable_);
}

Batch Trainer::draw_batch() {
    const int64_t per_stream = cfg_.batch / int64_t(data_rngs_.size());
    std::vector<Batch> parts;
    for (Rng& rng : data_rngs_) parts.push_back(data_.sample(Split::Train, per_stream, T_, rng));
    return concat_batches(parts);
}

int64_t data_block(const GPT& model, const TrainData& data, int64_t requested) {
    const int64_t room = model.token_room();
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
    int64_t tokens = 0, targets = 0;
    for (int64_t micro = 0; micro < cfg_.grad_accum; micro++) {
        Batch b = draw_batch();
        tokens += b.ids.numel();
        targets += target_tokens(b);
        Tensor loss = model_.loss(b.ids, b.targets, true);
        loss_sum += loss.item();
        (cfg_.grad_accum > 1 ? scale(loss, 1.0f / float(cfg_.grad_accum)) : loss).backward();
    }
    AllreduceStats comm;   // under MPI: every rank now holds the global batch's gradient and loss
    row.train_loss = average_gradients(trainable_, loss_sum / double(cfg_.grad_accum), targets, comm);
    row.allreduce_bytes = comm.bytes;
    row.allreduce_ms = comm.ms;
    tokens *= dist::size();
    if (after_backward) after_backward(trainable_);
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
    // Batch i is evaluated by rank i mod size; every rank draws every batch to keep the stream in
    // step. Each loss lands in its own slot (the others add exact zeros), so the sum below runs
    // in the one-process order and gives its bits.
    std::vector<double> losses(size_t(iters), 0.0);
    for (int64_t i = 0; i < iters; i++) {
        Batch b = data.sample(Split::Val, B, T, eval_rng);
        if (i % dist::size() == dist::rank()) losses[size_t(i)] = model.loss(b.ids, b.targets, false).item();
    }
    dist::allreduce_sum(losses.data(), iters);
    double total = 0;
    for (double l : losses) total += l;
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
    double right = 0;   // a count: exact in a double, summed over ranks below
    for (int64_t i0 = 0; i0 < n; i0 += batch) {
        if ((i0 / batch) % dist::size() != dist::rank()) continue;   // another rank's batch
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
    dist::allreduce_sum(&right, 1);
    return right / double(n);
}

// Under MPI with batch B per rank, validation batches hold the global N·B sequences: the numbers
// of one process with --batch N·B.
double Trainer::val_loss() { return evaluate(model_, data_, cfg_.batch * dist::size(), T_, cfg_.eval_iters, cfg_.seed); }

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
    nlohmann::json j = {{"step", step_}, {"optimizer_step", opt_.step_count()}, {"steps", cfg_.steps}};
    // Every example stream's position and every rank's dropout stream: a resume with any number
    // of ranks continues each stream that still has a reader (a new one starts at its beginning).
    std::vector<std::string> streams;
    for (const Rng& r : data_rngs_) streams.push_back(r.state());
    std::vector<std::string> dropout = dist::allgather(model_.dropout_rng.state()), all_streams;
    for (const std::string& mine : dist::allgather(nlohmann::json(streams).dump()))
        for (const auto& st : nlohmann::json::parse(mine)) all_streams.push_back(st.get<std::string>());
    j["data_rng"] = all_streams[0];
    j["dropout_rng"] = dropout[0];
    if (all_streams.size() > 1) j["data_rngs"] = all_streams;
    if (dropout.size() > 1) j["dropout_rngs"] = dropout;
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
    // Stream s continues from data_rngs[s] (or data_rng for s = 0 alone); a stream the saving run
    // did not have starts fresh. Likewise this rank's dropout stream.
    auto saved = [&j](const char* list, const char* one, int64_t s) -> std::string {
        if (j.contains(list) && j[list].is_array() && s < int64_t(j[list].size()) && j[list][size_t(s)].is_string())
            return j[list][size_t(s)].get<std::string>();
        return s == 0 ? j[one].get<std::string>() : std::string();
    };
    bool ok = true;
    for (size_t i = 0; i < data_rngs_.size(); i++)
        if (std::string st = saved("data_rngs", "data_rng", first_stream_ + int64_t(i)); !st.empty())
            ok = ok && data_rngs_[i].set_state(st);
    if (std::string st = saved("dropout_rngs", "dropout_rng", dist::rank()); !st.empty())
        ok = ok && model_.dropout_rng.set_state(st);
    ENGINE_CHECK(ok, ValueError, "resume: malformed RNG state in the training state");
    if (method_rng_ && j.contains("method_rng") && j["method_rng"].is_string())
        ENGINE_CHECK(method_rng_->set_state(j["method_rng"].get<std::string>()), ValueError, "resume: malformed method RNG state");
    NamedTensors opt_state(optimizer.begin(), optimizer.end());
    opt_.load_state(opt_state);
    opt_.set_step_count(j["optimizer_step"].get<int64_t>());
    step_ = j["step"].get<int64_t>();
}
