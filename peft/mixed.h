// peft/mixed.h — one batch, several adapters: each sample chooses its own (HF's `adapter_names=`,
// the serving idea of S-LoRA / Punica). While a MixedBatch lives, every Linear that any of the
// named adapters wraps splits its input by sample: the rows of the samples that chose adapter a
// go through a's seam, those of `__base__` (or of an adapter that does not target this Linear)
// through the plain linear(), and the outputs are put back in place. Every other op of the GPT
// (embeddings, LayerNorm, attention, the head) works sample by sample already, so the batch
// gives each sample exactly what running it alone with its adapter gives (tested to 1e-6).
//
// What can mix: the methods that wrap Linears (MergeableMethod: LoRA, IA³ and the LoRA family).
// What cannot, refused by name: prefix tuning, prompt tuning and P-tuning change the sequence
// (virtual tokens, prefix keys) and bottleneck adapters the block outputs, all through the
// model-wide Hooks that hold one adapter at a time. A merged adapter cannot mix either (its
// update is in the shared weights): unmerge it first.
//
// Inference only, as in HF: a forward with gradients on is refused. The adapter that was active
// before is active again when the MixedBatch ends, also after an exception.
#pragma once
#include <memory>
#include <string>
#include <vector>
#include "peft_model.h"

constexpr const char* kBaseAdapterName = "__base__";

class MixedBatch {
public:
    // adapter_names[b] is sample b's adapter (or "__base__"); the batch must have that many samples,
    // or, with `cycle`, any number: sample b takes adapter_names[b mod n] (for batches of any size,
    // as evaluation draws them). ValueError naming the entry for a name no adapter has, or an
    // adapter that cannot mix.
    MixedBatch(PeftModel& pm, const std::vector<std::string>& adapter_names, bool cycle = false);
    ~MixedBatch();
    MixedBatch(const MixedBatch&) = delete;
    MixedBatch& operator=(const MixedBatch&) = delete;

private:
    PeftModel& pm_;
    std::string previous_;                      // the adapter active before
    std::vector<std::pair<Linear*, std::shared_ptr<LinearWrap>>> installed_;   // what we put on each Linear
};
