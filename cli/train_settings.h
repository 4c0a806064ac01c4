// cli/train_settings.h — what `peft train` is asked to do, and the rules around it: the settings
// a run records in its folder, how --resume keeps and checks them, each method's defaults, and
// which outputs a run may write (never over an input, never over another run by accident).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include "common.h"
#include "method_flags.h"
#include "models/gpt.h"
#include "train/trainer.h"

struct TrainFlags {
    CommonFlags common;
    MethodFlags method;
    std::string data, out, base, prompt;
    GPTConfig model;
    TrainConfig train;
    bool resume = false, overwrite = false, json_out = false, gradient_checkpointing = false;
    std::string quantize;   // --quantize: the frozen base's format ("" = float32)
    nlohmann::json resume_peft_config;   // a resumed PEFT run's recorded adapter config
    int samples = 200;
    int64_t accuracy_examples = 100;
};

// A float as the shortest decimal that reads back as it (0.001, not 0.0010000000474974513).
double shortest(float x);

// The settings a run is started with, keys named like the flags: recorded in the run folder
// ("peft.run_settings", train/run.h), kept and checked by --resume.
nlohmann::json run_settings(const TrainFlags& f);

// --resume: the settings the command line leaves out become the run's own; one it gives must
// equal the recorded value unless a resume may change it. Throws ValueError naming both values.
void continue_settings(TrainFlags& f, const CLI::App& cmd);

// Each method's own learning rate and steps when fine-tuning (train/defaults.h); a warmup that
// scales with the run. Nothing for --resume (the run's own settings).
void apply_defaults(TrainFlags& f, const CLI::App& cmd);

// Refuses (ValueError, before anything is written) outputs over this command's inputs, a
// fine-tune into its base's folder, and a folder holding a run without --resume or --overwrite.
void check_outputs(const TrainFlags& f);
