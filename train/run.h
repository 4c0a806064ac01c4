// train/run.h — a training run's folder: what `peft train --out DIR` writes, and how a run
// continues from it. A library user trains with a Trainer (train/trainer.h) and calls save_run
// after steps and load_run to continue; `peft train` is exactly that, plus printing.
//
// The folder:
//   model.safetensors             pretraining / full fine-tuning: the model (models/checkpoint.h),
//                                 its metadata holding the training state too
//   adapter_config.json           a PEFT run: the adapter, in HF PEFT's format (peft/peft.h)
//   adapter_model.safetensors
//   optimizer.safetensors         what resuming needs beyond the weights:
//       "optim.m.<name>", "optim.v.<name>"   AdamW's moments (engine/optim.h)
//       "train.param.<name>"                 a PEFT run's own tensors under their internal names:
//                                            all of them, also any the adapter file leaves out
//       metadata "peft.train_state"          step, planned steps, RNG streams, optimizer step
//                                            (Trainer::state_metadata): a run is finished when
//                                            its step reached its planned steps
//       metadata "peft.run_settings"         the settings it was started with (JSON, keys named
//                                            like the flags), so a resume can keep and check them
//   log.csv                       one row per step: step,train_loss,val_loss,lr,tokens_per_s
#pragma once
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>
#include "data/tokenizer.h"
#include "models/gpt.h"
#include "train/trainer.h"

class Method;

namespace run_files {
inline std::string model(const std::string& dir) { return dir + "/model.safetensors"; }
inline std::string optimizer(const std::string& dir) { return dir + "/optimizer.safetensors"; }
inline std::string adapter_weights(const std::string& dir) { return dir + "/adapter_model.safetensors"; }
inline std::string log(const std::string& dir) { return dir + "/log.csv"; }
// Which of the files that make a run (weights, adapter, optimizer state) dir holds.
std::vector<std::string> present(const std::string& dir);
}  // namespace run_files

// What a run folder says about its run.
struct RunState {
    bool exists = false;               // optimizer.safetensors (or a model with training state) is there
    int64_t step = 0, steps = -1;      // steps: -1 when the run did not record its plan
    nlohmann::json settings;           // "peft.run_settings", null when not recorded
    bool finished() const { return exists && steps >= 0 && step >= steps; }
};
RunState read_run_state(const std::string& dir);

// Writes the run's weights (model.safetensors, or the adapter files when `method` is given) and
// optimizer.safetensors, each atomically. The folder must exist. Under MPI every rank calls it
// (it checks the replicas agree and gathers every rank's data streams); rank 0 writes.
void save_run(const std::string& dir, const Trainer& trainer, const GPT& model, const Tokenizer& tok,
              const Method* method, const nlohmann::json& settings = nullptr);

// Continues a run: restores the trainer's step, RNG streams and optimizer moments, and the
// method's tensors, from dir's optimizer.safetensors. The model and the method must already be
// built as the run built them (a full run's model: load_checkpoint(run_files::model(dir))).
void load_run(const std::string& dir, Trainer& trainer, Method* method);

// log.csv: the header, then one row per step (val_loss empty where not evaluated). Continuing
// a run at `resume_step` (−1: a new run) first cuts the log back to that step — rows written
// after the last checkpoint are trained again — and keeps its points, so the plot covers the
// whole run. Under MPI only rank 0 writes it.
class RunLog {
public:
    RunLog(const std::string& dir, int64_t resume_step);
    void add(const LogRow& r);
    void flush() { csv_.flush(); }
    const std::vector<std::pair<double, double>>& train_points() const { return train_; }
    const std::vector<std::pair<double, double>>& val_points() const { return val_; }

private:
    std::ofstream csv_;
    std::vector<std::pair<double, double>> train_, val_;
};
