// peft/p_tuning.cpp — P-tuning (Liu et al. 2021, "GPT Understands, Too").
//
// As prompt tuning (peft/prompt_tuning.cpp: P virtual embeddings in front of the tokens, their
// logits dropped, P + T <= block_size), but the virtual embeddings are the output of a small
// prompt encoder applied to a trainable E [P, C], computed once per forward:
//   MLP (default)  Linear(C,h) -> ReLU -> Linear(h,h) -> ReLU -> Linear(h,C)
//   LSTM           bidirectional LSTM, C -> h per direction, `encoder_num_layers` layers
//                  (peft/lstm.h), then Linear(2h,2h) -> ReLU -> Linear(2h,C)
// h = `encoder_hidden_size` (default C). The encoder couples the P rows; the paper's point is
// that this optimises more easily than P independent rows. As in HF, `encoder_num_layers` only
// affects the LSTM (the MLP always has two hidden layers).
//
// Init as HF: E ~ N(0, 1) (torch.nn.Embedding); Linears as torch, weight and bias
// ~ U(-1/√in, 1/√in); the LSTM as torch (lstm.h). Not identity at init; P = 0 is exactly the base.
// Trainable: P·C + the encoder:
//   MLP   (C·h + h) + (h·h + h) + (h·C + C)
//   LSTM  LSTM::param_count(C, h, layers, bidirectional) + (2h·2h + 2h) + (2h·C + C)
//
// Saving, as HF: "prompt_embeddings" [P, C] = encoder(E), all inference needs. A method loaded
// from such a file is *folded*: it acts as prompt tuning with those rows (no encoder, P·C
// trainable), as HF does in inference mode. To resume training with the encoder, set the
// non-HF config flag "save_encoder": true; the file then also holds (HF's module names)
//   prompt_encoder.embedding.weight [P, C]        prompt_encoder.mlp_head.{0,2,4}.weight|bias
//   prompt_encoder.lstm_head.{weight_ih,weight_hh,bias_ih,bias_hh}_l{k}[_reverse]  (LSTM;
//   its mlp_head is then {0,2})
// and loading it restores the encoder. Not supported: encoder_dropout != 0 (HF's default is 0).
#include "lstm.h"
#include "methods.h"

struct PTuningConfig {
    int64_t num_virtual_tokens = 20;                          // P, e.g. 20; 0 gives exactly the base model
    std::string encoder_reparameterization_type = "MLP";      // MLP | LSTM, e.g. "LSTM"
    int64_t encoder_hidden_size = 0;                          // h, e.g. 128; 0 = the model's n_embd
    int64_t encoder_num_layers = 2;                           // LSTM layers, e.g. 2
    bool save_encoder = false;                                // not HF: also save the encoder, e.g. true
    int64_t token_dim = 0;                                    // C, e.g. 128; set from the model's n_embd
};

// ---- config: HF field names (ConfigReader, peft.h); every problem in one ValueError

static PTuningConfig parse_config(const json& j, const GPTConfig& model) {
    PTuningConfig c;
    ConfigReader f(j, "P_TUNING");
    c.num_virtual_tokens = f.integer("num_virtual_tokens", c.num_virtual_tokens, 0, kMaxSize);
    c.encoder_hidden_size = f.integer("encoder_hidden_size", c.encoder_hidden_size, 1, kMaxSize);
    c.encoder_num_layers = f.integer("encoder_num_layers", c.encoder_num_layers, 1, kMaxSize);
    f.check(c.num_virtual_tokens < model.block_size,
            fmt::format("`num_virtual_tokens` is {} but the model's block_size {} leaves no room for a real token "
                        "(num_virtual_tokens + sequence length must be <= block_size)",
                        c.num_virtual_tokens, model.block_size));
    c.encoder_reparameterization_type = f.choice("encoder_reparameterization_type", c.encoder_reparameterization_type,
                                                 {"MLP", "LSTM"});
    if (const json* v = f.field("encoder_dropout"))
        f.check(*v == 0.0, fmt::format("`encoder_dropout` {} is not supported (only 0.0)", v->dump()));
    c.save_encoder = f.boolean("save_encoder", c.save_encoder);
    f.same_as_model("token_dim", "n_embd", model.n_embd);
    c.token_dim = model.n_embd;
    if (c.encoder_hidden_size == 0) c.encoder_hidden_size = model.n_embd;
    f.done();
    return c;
}

// ---- the method

class PTuning : public Method {
public:
    PTuning(const PTuningConfig& cfg, GPT& model, Rng& rng) : cfg_(cfg) {
        model.params.freeze_all();
        const int64_t P = cfg.num_virtual_tokens, C = cfg.token_dim, h = cfg.encoder_hidden_size;
        if (P == 0) return;   // nothing to train: exactly the base model
        E_ = Tensor::randn({P, C}, rng);
        params.add("prompt_encoder.embedding.weight", E_);
        if (cfg.encoder_reparameterization_type == "LSTM") {
            lstm_ = LSTM(C, h, cfg.encoder_num_layers, /*bidirectional=*/true, rng);
            lstm_.register_params(params, "prompt_encoder.lstm_head");
            mlp_ = {torch_linear(2 * h, 2 * h, rng), torch_linear(2 * h, C, rng)};
        } else {
            mlp_ = {torch_linear(C, h, rng), torch_linear(h, h, rng), torch_linear(h, C, rng)};
        }
        for (size_t k = 0; k < mlp_.size(); k++)   // torch.nn.Sequential indices: ReLUs sit at 1, 3
            mlp_[k].register_params(params, fmt::format("prompt_encoder.mlp_head.{}", 2 * k));
    }

    std::string peft_type() const override { return "P_TUNING"; }
    json config_json() const override {
        json j = {{"peft_type", "P_TUNING"},
                  {"task_type", "CAUSAL_LM"},
                  {"num_virtual_tokens", cfg_.num_virtual_tokens},
                  {"token_dim", cfg_.token_dim},
                  {"num_transformer_submodules", 1},
                  {"encoder_reparameterization_type", cfg_.encoder_reparameterization_type},
                  {"encoder_hidden_size", cfg_.encoder_hidden_size},
                  {"encoder_num_layers", cfg_.encoder_num_layers},
                  {"encoder_dropout", 0.0},
                  {"inference_mode", true}};
        if (cfg_.save_encoder) j["save_encoder"] = true;
        return j;
    }
    int64_t expected_params(const GPTConfig& c) const override {
        const int64_t P = cfg_.num_virtual_tokens, C = c.n_embd, h = cfg_.encoder_hidden_size;
        if (P == 0 || folded_) return P * C;
        if (cfg_.encoder_reparameterization_type == "MLP") return P * C + (C * h + h) + (h * h + h) + (h * C + C);
        return P * C + LSTM::param_count(C, h, cfg_.encoder_num_layers, true) + (2 * h * 2 * h + 2 * h) +
               (2 * h * C + C);
    }

    void activate(GPT& model) override { model.hooks = this; }
    void deactivate(GPT& model) override { if (model.hooks == this) model.hooks = nullptr; }

    int64_t n_virtual() const override { return cfg_.num_virtual_tokens; }
    // (B, P, C): the encoder runs once per forward on the P rows, then every sequence shares them.
    Tensor virtual_tokens(int64_t B) override {
        return repeat_batch(reshape(encode(), {1, cfg_.num_virtual_tokens, cfg_.token_dim}), B);
    }

    // E [P, C] -> the virtual embeddings [P, C]; a folded method has no encoder left.
    Tensor encode() const {
        if (folded_) return E_;
        Tensor x = lstm_.cells.empty() ? E_ : lstm_(E_);
        for (size_t k = 0; k < mlp_.size(); k++) {
            x = mlp_[k](x);
            if (k + 1 < mlp_.size()) x = relu(x);
        }
        return x;
    }

    NamedTensors state() const override {
        if (cfg_.num_virtual_tokens == 0) return {};
        NamedTensors out;
        {
            NoGradGuard no_grad;
            out.push_back({"prompt_embeddings", encode()});
        }
        if (cfg_.save_encoder && !folded_)
            for (const Param& p : params.all()) out.push_back({p.name, p.tensor});
        return out;
    }

    void load_state(const std::map<std::string, Tensor>& tensors, const std::string& file) override {
        const int64_t P = cfg_.num_virtual_tokens, C = cfg_.token_dim;
        if (P == 0) return Method::load_state(tensors, file);   // expects an empty file
        if (cfg_.save_encoder) {   // the encoder is in the file: restore it, unfolded
            std::map<std::string, Tensor> rest = tensors;
            auto it = rest.find("prompt_embeddings");
            if (it != rest.end()) {   // redundant (it is encoder(E)), but its shape must still fit
                ENGINE_CHECK(it->second.shape() == Shape({P, C}), ValueError,
                             "{}: tensor 'prompt_embeddings' has shape {} but this model needs F32[{}, {}]", file,
                             describe(it->second), P, C);
                rest.erase(it);
            }
            return Method::load_state(rest, file);
        }
        // Folded: the file's prompt_embeddings become the (trainable) virtual tokens, as in
        // prompt tuning. Validate against a list holding just that tensor; on error keep ours.
        ParamList folded;
        Tensor E = Tensor::zeros({P, C});
        folded.add("prompt_embeddings", E);
        std::swap(params, folded);
        try {
            Method::load_state(tensors, file);
        } catch (...) {
            std::swap(params, folded);
            throw;
        }
        E_ = E;
        lstm_ = LSTM();
        mlp_.clear();
        folded_ = true;
        cfg_.save_encoder = false;   // nothing left to save but the embeddings
    }

private:
    PTuningConfig cfg_;
    Tensor E_;                  // [P, C]: the encoder's input, or the virtual tokens once folded
    LSTM lstm_;                 // no cells unless encoder_reparameterization_type is LSTM
    std::vector<Linear> mlp_;   // mlp_head: Linears with ReLU between
    bool folded_ = false;
};

std::unique_ptr<Method> make_p_tuning(const json& config, GPT& model, Rng& rng) {
    return std::make_unique<PTuning>(parse_config(config, model.config), model, rng);
}
