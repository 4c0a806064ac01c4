// train/defaults.h — each method's default training settings, in one table that `peft train`
// and `peft compare` both read (an explicit --lr / --steps / --warmup still wins).
//
// Why per method: the methods move very different numbers of parameters. Full fine-tuning
// changes every weight and wants a small rate (nanoGPT's 3e-4); LoRA and adapters train small
// matrices initialised so the model starts unchanged and learn well at 1e-2; IA³ and prompt
// tuning train a few vectors that must travel far from their init (ones, random embeddings)
// and need 1e-1 to 3e-1. The rates are the best by validation loss after 600 steps on the
// dates task from the `make train` base model, of 3e-3, 1e-2 and 3e-2 (and 1e-1, 3e-1 and 1 for
// IA³, prefix and prompt tuning); docs/TRAINING.md gives what each reaches with them.
//
// Adding a method is adding a row.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

struct MethodDefaults {
    std::string method;   // --method name: full, lora, ia3, ...
    double lr;            // peak learning rate
    int64_t steps;        // fine-tuning steps (`make train`, `peft compare`)
};

const std::vector<MethodDefaults>& method_defaults_table();
// The row of `method`; ValueError naming the known methods when there is none.
const MethodDefaults& method_defaults(const std::string& method);

// Linear warmup by default: 50 steps, but never more than a tenth of the run, so a short run
// still reaches its learning rate (30 steps: 3 of warmup).
int64_t default_warmup(int64_t steps);
