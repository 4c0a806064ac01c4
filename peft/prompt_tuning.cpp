// peft/prompt_tuning.cpp — prompt tuning (Lester et al. 2021, "The Power of Scale for
// Parameter-Efficient Prompt Tuning").
//
// P trainable "virtual token" embeddings E [P, C] go in front of the token embeddings and the
// model runs unchanged on the longer sequence (seam 4, Hooks::virtual_tokens):
//   x = [E ; wte(ids)] + wpe(0 .. P+T-1)                     (B, P+T, C)
// Virtual tokens take positions 0..P-1, real tokens P..P+T-1, so P + T <= block_size. The
// logits of the P virtual positions are dropped (models/gpt.cpp slices them off before the
// LM head), so logits stay (B, T, V) and the loss sees real tokens only. Only E trains: P·C.
//
// Init (`prompt_tuning_init`), as HF PEFT:
//   RANDOM        E ~ N(0, 1) (torch.nn.Embedding's default, what HF uses)
//   SAMPLE_VOCAB  the wte rows of P token ids drawn uniformly from [0, V) with the rng
//   TEXT          the wte rows of the token ids of `prompt_tuning_init_text`, repeated or cut to P
// Not identity at init (the prompt adds context); with P = 0 it is exactly the base model.
//
// Deviation: HF tokenizes prompt_tuning_init_text itself (`tokenizer_name_or_path`). Here the
// library has no tokenizer, so TEXT takes the ids from an extra, non-HF field
// "prompt_tuning_init_ids" (a list of ints), which the CLI fills from the tokenizer; TEXT without
// it is a ValueError. Saved: "prompt_embeddings" [P, C].
#include <cstring>
#include "methods.h"

struct PromptTuningConfig {
    int64_t num_virtual_tokens = 20;              // P, e.g. 20; 0 gives exactly the base model
    std::string prompt_tuning_init = "RANDOM";    // RANDOM | SAMPLE_VOCAB | TEXT, e.g. "TEXT"
    std::string prompt_tuning_init_text;          // e.g. "Classify the sentiment of the review:"
    std::vector<int32_t> prompt_tuning_init_ids;  // the text's token ids (not HF), e.g. [31, 7, 52]
    int64_t token_dim = 0;                        // C, e.g. 128; set from the model's n_embd
};

// ---- config: HF field names (ConfigReader, peft.h); every problem in one ValueError

static PromptTuningConfig parse_config(const json& j, const GPTConfig& model) {
    PromptTuningConfig c;
    ConfigReader f(j, "PROMPT_TUNING");
    c.num_virtual_tokens = f.integer("num_virtual_tokens", c.num_virtual_tokens, 0, kMaxSize);
    f.check(c.num_virtual_tokens < model.block_size,
            fmt::format("`num_virtual_tokens` is {} but the model's block_size {} leaves no room for a real token "
                        "(num_virtual_tokens + sequence length must be <= block_size)",
                        c.num_virtual_tokens, model.block_size));
    c.prompt_tuning_init = f.choice("prompt_tuning_init", c.prompt_tuning_init, {"RANDOM", "SAMPLE_VOCAB", "TEXT"});
    c.prompt_tuning_init_text = f.text("prompt_tuning_init_text", c.prompt_tuning_init_text);
    if (const json* v = f.field("prompt_tuning_init_ids")) {
        bool ok = v->is_array();
        for (const json& id : ok ? *v : json::array())
            ok = ok && id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < model.vocab_size;
        if (ok) c.prompt_tuning_init_ids = v->get<std::vector<int32_t>>();
        else f.reject("prompt_tuning_init_ids", fmt::format("a list of token ids in [0, {})", model.vocab_size));
    }
    f.check(c.prompt_tuning_init != "TEXT" || !c.prompt_tuning_init_ids.empty() || c.num_virtual_tokens == 0,
            "`prompt_tuning_init` is TEXT but no token ids were given: this library has no tokenizer, so put the "
            "token ids of `prompt_tuning_init_text` in \"prompt_tuning_init_ids\" (a list of ints; the peft CLI "
            "fills it from its tokenizer)");
    f.same_as_model("token_dim", "n_embd", model.n_embd);
    c.token_dim = model.n_embd;
    f.done();
    return c;
}

// ---- the method

class PromptTuning : public Method {
public:
    PromptTuning(const PromptTuningConfig& cfg, GPT& model, Rng& rng) : cfg_(cfg) {
        model.params.freeze_all();
        const int64_t P = cfg.num_virtual_tokens, C = cfg.token_dim, V = model.config.vocab_size;
        if (P == 0) return;   // nothing to train: exactly the base model
        if (cfg.prompt_tuning_init == "RANDOM") {
            E_ = Tensor::randn({P, C}, rng);
        } else {   // copies of wte rows: sampled token ids, or the text's ids cycled to length P
            E_ = Tensor::empty({P, C});
            const std::vector<int32_t>& text = cfg.prompt_tuning_init_ids;
            for (int64_t p = 0; p < P; p++) {
                const int64_t id = cfg.prompt_tuning_init == "TEXT" ? text[size_t(p) % text.size()]
                                                                    : int64_t(rng.below(uint64_t(V)));
                std::memcpy(E_.data() + p * C, model.wte.weight.data() + id * C, size_t(C) * sizeof(float));
            }
        }
        params.add("prompt_embeddings", E_);
    }

    std::string peft_type() const override { return "PROMPT_TUNING"; }
    json config_json() const override {
        const std::string& text = cfg_.prompt_tuning_init_text;
        json j = {{"peft_type", "PROMPT_TUNING"},
                  {"task_type", "CAUSAL_LM"},
                  {"num_virtual_tokens", cfg_.num_virtual_tokens},
                  {"token_dim", cfg_.token_dim},
                  {"num_transformer_submodules", 1},
                  {"prompt_tuning_init", cfg_.prompt_tuning_init},
                  {"prompt_tuning_init_text", text.empty() ? json() : json(text)},
                  {"inference_mode", true}};
        if (!cfg_.prompt_tuning_init_ids.empty()) j["prompt_tuning_init_ids"] = cfg_.prompt_tuning_init_ids;
        return j;
    }
    int64_t expected_params(const GPTConfig& c) const override { return cfg_.num_virtual_tokens * c.n_embd; }

    void activate(GPT& model) override { model.hooks = this; }
    void deactivate(GPT& model) override { if (model.hooks == this) model.hooks = nullptr; }

    int64_t n_virtual() const override { return cfg_.num_virtual_tokens; }
    // (B, P, C): the same P rows for every sequence; repeat_batch's backward sums over B.
    Tensor virtual_tokens(int64_t B) override {
        return repeat_batch(reshape(E_, {1, cfg_.num_virtual_tokens, cfg_.token_dim}), B);
    }

private:
    PromptTuningConfig cfg_;
    Tensor E_;   // [P, C], registered as "prompt_embeddings"
};

std::unique_ptr<Method> make_prompt_tuning(const json& config, GPT& model, Rng& rng) {
    return std::make_unique<PromptTuning>(parse_config(config, model.config), model, rng);
}
