// train/trainer.h — the training loop: AdamW, warmup + cosine decay, clipping, accumulation,
// periodic validation, NaN/Inf detection, and exact resume.
//
// One loop for pretraining and for fine-tuning: it trains whatever ParamList it is given —
// every model parameter (full fine-tuning) or a PEFT method's tensors.
//
// Exact resume: everything that decides the next losses is state here — the step, the data
// Rng, the model's dropout Rng, the method's Rng, the optimizer moments — and
// state_metadata()/restore() carry all of it, so N steps + save + load + M steps gives the
// same losses as N+M steps, bit for bit (same thread count).
#pragma once
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include "data/dataset.h"
#include "models/data_parallel.h"
#include "engine/optim.h"
#include "models/gpt.h"

struct TrainConfig {
    int64_t steps = 1000;       // optimizer steps, e.g. 1000
    int64_t batch = 16;         // sequences per micro-batch, e.g. 16
    int64_t block = 0;          // tokens per sequence; 0 = as many as the model allows
    int64_t grad_accum = 1;     // micro-batches per optimizer step, e.g. 4
    int64_t warmup = 50;        // linear warmup steps, e.g. 50
    int64_t eval_every = 100;   // validation every N steps (0 = only at the end)
    int64_t eval_iters = 10;    // validation batches, e.g. 10
    float lr = 1e-3f;           // peak learning rate, e.g. 1e-3
    float min_lr = 1e-4f;       // end of the cosine decay, e.g. 1e-4
    float weight_decay = 0.1f;  // AdamW decoupled decay (not on biases, norms, embeddings)
    float grad_clip = 1.0f;     // global-norm clipping (0 = off)
    uint64_t seed = 1337;       // data order and dropout
    bool skip_nonfinite = false;   // on a NaN/Inf loss or gradient: skip the batch instead of stopping
    // One process drawing each batch as N equal parts from example streams 0…N−1: the same
    // examples as `mpirun -np N` with batch/N per rank (models/data_parallel.h). Under MPI, 1:
    // rank r draws from stream r.
    int64_t data_streams = 1;
    void validate() const;      // ValueError listing every problem
};

// What the loop samples from: text windows or prompt/answer examples.
struct TrainData {
    const TextDataset* text = nullptr;
    const TaskDataset* task = nullptr;
    Batch sample(Split s, int64_t B, int64_t T, Rng& rng) const;
};

// Mean validation loss over `iters` batches drawn from Rng(seed): the same batches every call.
// Under MPI the batches are shared out over the ranks and the result is the same on every rank,
// bit for bit the one-process number (each rank calls it).
double evaluate(GPT& model, const TrainData& data, int64_t B, int64_t T, int64_t iters, uint64_t seed);
// Greedy exact match on the first max_examples (0 = all) examples of split s, teacher-forced and
// batched (Note [Exact match in one forward]). Returns the fraction answered right. Under MPI the
// batches are shared out over the ranks (each rank calls it).
double greedy_exact_match(GPT& model, const TaskDataset& task, Split s, int64_t max_examples = 0, int64_t batch = 32);
// The sequence length the data needs (task) or allows (text: block_size minus virtual tokens).
int64_t data_block(const GPT& model, const TrainData& data, int64_t requested);

struct LogRow {
    int64_t step = 0;
    double train_loss = 0, lr = 0, tokens_per_s = 0, grad_norm = 0, ms = 0;   // ms: wall time of the step
    double val_loss = std::numeric_limits<double>::quiet_NaN();   // NaN when not evaluated
    int64_t allreduce_bytes = 0;   // under MPI: gradient bytes all-reduced this step
    double allreduce_ms = 0;       //           and the time it took
};

class Trainer {
public:
    Trainer(GPT& model, ParamList& trainable, const TrainData& data, const TrainConfig& cfg, Rng* method_rng = nullptr);

    int64_t step() const { return step_; }
    double lr_at(int64_t step) const;
    // One optimizer step (grad_accum micro-batches). Returns the row to log (val_loss NaN).
    LogRow train_step();
    // Mean loss over cfg.eval_iters validation batches drawn from a fixed stream (the same
    // batches every time, so evaluations are comparable and do not disturb training).
    double val_loss();
    // Run until cfg.steps, calling on_log after every step and on_eval after each validation.
    void run(const std::function<void(const LogRow&)>& on_log, const std::function<void(const LogRow&)>& on_eval);

    // Resume: the training state as checkpoint metadata, plus the optimizer's tensors.
    std::map<std::string, std::string> state_metadata() const;
    std::vector<std::pair<std::string, Tensor>> optimizer_tensors() const { return opt_.state_tensors(); }
    void restore(const std::map<std::string, std::string>& meta, const std::map<std::string, Tensor>& optimizer);

    int64_t block() const { return T_; }
    AdamW& optimizer() { return opt_; }
    const AdamW& optimizer() const { return opt_; }
    const TrainConfig& config() const { return cfg_; }

    // Called in every step after the backward pass, before the gradient norm, clipping and the
    // optimizer update, with the trainable parameters whose gradients now hold this step's
    // (accumulated) gradient. Data-parallel training averages them across processes here.
    // Empty: nothing happens.
    std::function<void(ParamList& trainable)> after_backward;

private:
    GPT& model_;
    ParamList& trainable_;
    TrainData data_;
    TrainConfig cfg_;
    Rng* method_rng_;
    AdamW opt_;
    std::vector<Rng> data_rngs_;   // the example streams this process draws from
    int64_t first_stream_ = 0;     // the number of data_rngs_[0]: the rank under MPI, else 0
    int64_t step_ = 0, T_ = 0;
    Batch draw_batch();
};
