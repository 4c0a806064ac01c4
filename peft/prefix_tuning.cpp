// peft/prefix_tuning.cpp — prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing
// Continuous Prompts for Generation"), with HF PEFT's parameters and saved format.
//
// Every layer's attention gets P trainable keys and values in front of its own:
//     k_l = [K_l ; k_proj(x)],   v_l = [V_l ; v_proj(x)],   K_l, V_l: (H, P, D) per sequence
// Query i attends to all P prefix rows and to the real keys 0..i (causal_attention's n_prefix).
// The prefix acts as a cached past of length P, so real tokens take positions P..P+T−1 (what
// HF GPT-2 does with past_key_values) and P + T ≤ block_size (the model throws ShapeError).
//
// Parameters: E [P, 2·L·C], init N(0, 1) like HF's nn.Embedding. Row p, reshaped to [2L, H, D],
// holds layer l's key in slot 2l and its value in slot 2l+1 (HF's past_key_values layout).
// With prefix_projection (the paper's reparametrisation, which trains more stably):
//     E' [P, C] ~ N(0, 1)  →  Linear(C, h)  →  tanh  →  Linear(h, 2·L·C)  =  the [P, 2LC] table,
// the Linears with torch's default init U(±1/√in) as in HF, evaluated once per forward.
// Trainable: 2·L·P·C; with the projection P·C + C·h + h + h·2LC + 2LC.
//
// Saved: only "prompt_embeddings" [P, 2LC], the table; with a projection, its output (folded,
// as HF does). Saved configs say inference_mode: true and, as in HF, a method built with
// inference_mode has no projection, so loading a folded adapter gives a plain E.
// Identity: not at init (the prefix adds attention context). P = 0 is allowed and gives the
// base model exactly: the model then asks for no prefix rows at all.
#include <cstring>
#include "methods.h"

namespace {

struct PrefixTuningConfig {
    int64_t num_virtual_tokens = 20;   // P, e.g. 20; 0 adds nothing (the base model exactly)
    bool prefix_projection = false;    // e.g. true: train E' [P, C] through an MLP instead of E
    int64_t encoder_hidden_size = 0;   // h of that MLP, e.g. 128; 0 = not given: n_embd
    bool inference_mode = false;       // true in saved configs: no MLP, the table is E itself

    // Reads HF's fields (ConfigReader, peft.h). num_layers / token_dim / num_attention_heads,
    // when present, must describe `model`.
    static PrefixTuningConfig from_json(const json& j, const GPTConfig& model) {
        PrefixTuningConfig c;
        ConfigReader f(j, "PREFIX_TUNING");
        c.num_virtual_tokens = f.integer("num_virtual_tokens", c.num_virtual_tokens, 0, kMaxSize);
        f.check(c.num_virtual_tokens < model.block_size,
                fmt::format("`num_virtual_tokens` {} leaves no room for a token in block_size {}", c.num_virtual_tokens,
                            model.block_size));
        c.prefix_projection = f.boolean("prefix_projection", c.prefix_projection);
        c.inference_mode = f.boolean("inference_mode", c.inference_mode);
        c.encoder_hidden_size = f.integer("encoder_hidden_size", c.encoder_hidden_size, 1, kMaxSize);
        f.same_as_model("num_layers", "n_layer", model.n_layer);
        f.same_as_model("token_dim", "n_embd", model.n_embd);
        f.same_as_model("num_attention_heads", "n_head", model.n_head);
        f.done();
        return c;
    }
};

class PrefixTuning : public Method {
public:
    PrefixTuning(const PrefixTuningConfig& cfg, GPT& model, Rng& rng)
        : cfg_(cfg), L_(model.config.n_layer), H_(model.config.n_head), C_(model.config.n_embd),
          P_(cfg.num_virtual_tokens), h_(cfg.encoder_hidden_size > 0 ? cfg.encoder_hidden_size : C_),
          projection_(cfg.prefix_projection && !cfg.inference_mode) {
        model.params.freeze_all();
        if (!projection_) {
            E_ = Tensor::randn({P_, 2 * L_ * C_}, rng);
            params.add("prompt_embeddings", E_);
        } else {   // HF's names: prompt_encoder.{embedding, transform.0 = Linear, transform.2 = Linear}
            E_ = Tensor::randn({P_, C_}, rng);
            enc_in_ = torch_linear(C_, h_, rng);
            enc_out_ = torch_linear(h_, 2 * L_ * C_, rng);
            params.add("prompt_encoder.embedding.weight", E_);
            enc_in_.register_params(params, "prompt_encoder.transform.0");
            enc_out_.register_params(params, "prompt_encoder.transform.2");
        }
    }

    std::string peft_type() const override { return "PREFIX_TUNING"; }
    json config_json() const override {
        json enc = cfg_.encoder_hidden_size > 0 ? json(cfg_.encoder_hidden_size) : json(nullptr);
        return {{"num_virtual_tokens", P_}, {"prefix_projection", cfg_.prefix_projection},
                {"encoder_hidden_size", enc}, {"num_layers", L_}, {"token_dim", C_}, {"num_attention_heads", H_},
                {"inference_mode", true}, {"task_type", "CAUSAL_LM"}};
    }
    int64_t expected_params(const GPTConfig& c) const override {
        const int64_t P = cfg_.num_virtual_tokens, C = c.n_embd, LC2 = 2 * c.n_layer * c.n_embd;
        const int64_t h = cfg_.encoder_hidden_size > 0 ? cfg_.encoder_hidden_size : C;
        return projection_ ? P * C + C * h + h + h * LC2 + LC2 : P * LC2;
    }

    void activate(GPT& model) override {
        const GPTConfig& c = model.config;
        ENGINE_CHECK(c.n_layer == L_ && c.n_head == H_ && c.n_embd == C_, ValueError,
                     "prefix tuning built for n_layer {} n_head {} n_embd {} cannot attach to a model with n_layer {} "
                     "n_head {} n_embd {}", L_, H_, C_, c.n_layer, c.n_head, c.n_embd);
        model.hooks = this;
        table_ = Tensor();
    }
    void deactivate(GPT& model) override {
        if (model.hooks == this) model.hooks = nullptr;
        table_ = Tensor();   // drops the last forward's graph
    }

    int64_t n_prefix() const override { return P_; }

    // Layer l's prefix keys and values, each (B,P,C) with the heads side by side as attention
    // reads them: slots 2l and 2l+1 of every row of the table, repeated over the batch. Engine ops only, so the gradient
    // reaches E (and the projection). Layer 0 starts a new forward: the table is recomputed
    // there, once, and layers 1..L-1 reuse it (the projection runs once per forward).
    std::pair<Tensor, Tensor> prefix_kv(int64_t layer, int64_t B) override {
        if (layer == 0 || !table_.defined()) table_ = reshape(table(), {P_, 2 * L_, C_});
        auto slot = [&](int64_t s) {   // (P, 2L, C) -> (P, 1, C) -> (1, P, C) -> (B, P, C)
            return repeat_batch(reshape(slice_seq(table_, s, 1), {1, P_, C_}), B);
        };
        return {slot(2 * layer), slot(2 * layer + 1)};
    }

    NamedTensors state() const override {
        NoGradGuard no_grad;
        return {{"prompt_embeddings", table()}};
    }

    // Expects exactly "prompt_embeddings" [P, 2LC]. A method with a projection is folded: it
    // becomes a plain E holding the loaded table (the projection cannot be recovered from it).
    void load_state(const std::map<std::string, Tensor>& tensors, const std::string& file) override {
        std::vector<std::string> problems;
        const Shape want{P_, 2 * L_ * C_};
        auto it = tensors.find("prompt_embeddings");
        if (it == tensors.end()) problems.push_back("missing tensor 'prompt_embeddings'");
        else if (it->second.shape() != want || it->second.dtype() != DType::F32)
            problems.push_back(fmt::format("Invalid `prompt_embeddings` shape. Expected [P, 2LC] = {}, got {} "
                                           "(P = {}, L = {}, C = {})", want.str(), describe(it->second), P_, L_, C_));
        for (const auto& [name, t] : tensors)
            if (name != "prompt_embeddings") problems.push_back(fmt::format("unexpected tensor '{}'", name));
        if (!problems.empty())
            throw ValueError(fmt::format("{}: the tensors do not match adapter_config.json (PREFIX_TUNING as built on "
                                         "this base model):\n  {}", file, fmt::join(problems, "\n  ")));
        if (projection_) {   // fold
            projection_ = false;
            enc_in_ = enc_out_ = Linear();
            E_ = Tensor::zeros(want);
            params = ParamList();
            params.add("prompt_embeddings", E_);
        }
        std::memcpy(E_.data(), it->second.data(), E_.nbytes());
        table_ = Tensor();
    }

private:
    // The [P, 2LC] table: E, or the projection of E'.
    Tensor table() const { return projection_ ? enc_out_(tanh(enc_in_(E_))) : E_; }

    PrefixTuningConfig cfg_;
    int64_t L_, H_, C_, P_, h_;
    bool projection_;
    Tensor E_;                  // [P, 2LC], or E' [P, C] with the projection
    Linear enc_in_, enc_out_;   // the projection: C -> h -> 2LC (unused without it)
    Tensor table_;              // this forward's table as (P, 2L, C), set at layer 0
};

}  // namespace

std::unique_ptr<Method> make_prefix_tuning(const json& config, GPT& model, Rng& rng) {
    return std::make_unique<PrefixTuning>(PrefixTuningConfig::from_json(config, model.config), model, rng);
}
