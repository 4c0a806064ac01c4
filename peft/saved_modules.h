// peft/saved_modules.h — whole base tensors an adapter trains beside its own: HF's
// `modules_to_save` and `bias`.
//
//   modules_to_save: ["ln_f"]   every tensor of the named modules (a name or dotted suffix, as
//                               target_modules: "ln_f", "h.1.ln_2", "mlp.fc_out") gets a trainable
//                               COPY; while the adapter is active the model reads the copy, the
//                               frozen original stays untouched (HF's ModulesToSaveWrapper keeps
//                               `original_module` and `modules_to_save.default` the same way).
//                               The tied embedding transformer.wte is refused: HF would train a
//                               copy for the input side only, here it is the LM head as well.
//   bias: "all"                 every bias of the model (HF: each parameter with "bias" in its
//                               name, LayerNorm biases included) trains, as a copy.
//   bias: "lora_only"           the biases of the adapted Linears only.
//
// Saved keys are HF's: "base_model.model.<module>.<weight|bias>" (HF strips its
// ".modules_to_save.default" from the name on save). Unlike HF, whose bias training changes the
// base biases in place, disabling the adapter gives the base model exactly, biases included.
// Merging copies them into the base tensors (undone bit for bit by unmerge), so a merged
// checkpoint carries them.
#pragma once
#include <string>
#include <vector>
#include "engine/module.h"
#include "models/gpt.h"

class Targeting;

class SavedModules {
public:
    // Finds the tensors, makes the copies and adds them to `params`. `adapted` are the adapter's
    // Linears (for bias "lora_only"). ValueError naming the field and value when a name matches no module.
    void attach(const Targeting& t, GPT& model, const std::vector<std::string>& adapted, ParamList& params);
    void install(bool on);   // the model reads the copies (on) or the originals (off)
    void merge();            // the copies' values into the originals (kept for unmerge)
    void unmerge();
    bool empty() const { return slots_.empty(); }

private:
    struct Slot {
        Tensor* field;            // the module's member the forward reads
        Tensor original, copy, backup;
    };
    std::vector<Slot> slots_;
};

// The number of values modules_to_save and bias add for a model of this config (closed form).
int64_t saved_modules_count(const Targeting& t, const GPTConfig& cfg, const std::vector<std::string>& adapted);
