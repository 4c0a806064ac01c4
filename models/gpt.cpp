// models/gpt.cpp — the GPT forward, seams included, and sampling.
#include "gpt.h"
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>

// ---- config

void GPTConfig::validate() const {
    std::vector<std::string> bad;
    if (n_layer < 1) bad.push_back(fmt::format("n_layer must be >= 1, got {}", n_layer));
    if (n_head < 1) bad.push_back(fmt::format("n_head must be >= 1, got {}", n_head));
    if (n_embd < 1) bad.push_back(fmt::format("n_embd must be >= 1, got {}", n_embd));
    if (n_head >= 1 && n_embd >= 1 && n_embd % n_head != 0)
        bad.push_back(fmt::format("n_embd {} is not divisible by n_head {}", n_embd, n_head));
    if (block_size < 1) bad.push_back(fmt::format("block_size must be >= 1, got {}", block_size));
    if (vocab_size < 1) bad.push_back(fmt::format("vocab_size must be >= 1, got {}", vocab_size));
    if (!(dropout >= 0.f && dropout < 1.f)) bad.push_back(fmt::format("dropout must be in [0, 1), got {}", dropout));
    if (model_type != "gpt" && model_type != "gpt2")
        bad.push_back(fmt::format("model_type must be \"gpt\" or \"gpt2\", got \"{}\"", model_type));
    if (!(layer_norm_epsilon > 0.f && layer_norm_epsilon < 1.f))
        bad.push_back(fmt::format("layer_norm_epsilon must be in (0, 1), got {}", layer_norm_epsilon));
    const int64_t kMax = int64_t(1) << 24;   // keeps every size product far from overflow
    for (int64_t v : {n_layer, n_head, n_embd, block_size, vocab_size})
        if (v > kMax) bad.push_back(fmt::format("model size {} is larger than the limit {}", v, kMax));
    if (!bad.empty()) {
        std::string msg = "invalid model config:";
        for (auto& b : bad) msg += "\n  " + b;
        throw ValueError(msg);
    }
}

std::string GPTConfig::to_json() const {
    // floats as their shortest decimal (1e-05, not 9.999999747378752e-06); they read back exactly
    auto shortest = [](float x) { return std::strtod(fmt::format("{}", x).c_str(), nullptr); };
    nlohmann::json j = {{"n_layer", n_layer},       {"n_head", n_head},     {"n_embd", n_embd},
                        {"block_size", block_size}, {"vocab_size", vocab_size}, {"dropout", shortest(dropout)},
                        {"bias", bias}, {"model_type", model_type}, {"layer_norm_epsilon", shortest(layer_norm_epsilon)}};
    return j.dump();
}

GPTConfig GPTConfig::from_json(const std::string& text) {
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    ENGINE_CHECK(j.is_object(), ValueError, "model config is not a JSON object: '{}'", text.substr(0, 80));
    GPTConfig c;
    auto get_int = [&](const char* key, int64_t& field) {
        ENGINE_CHECK(j.contains(key) && j[key].is_number_integer(), ValueError,
                     "model config: '{}' missing or not an integer", key);
        field = j[key].get<int64_t>();
    };
    get_int("n_layer", c.n_layer);
    get_int("n_head", c.n_head);
    get_int("n_embd", c.n_embd);
    get_int("block_size", c.block_size);
    get_int("vocab_size", c.vocab_size);
    if (j.contains("dropout")) {
        ENGINE_CHECK(j["dropout"].is_number(), ValueError, "model config: 'dropout' is not a number");
        c.dropout = j["dropout"].get<float>();
    }
    if (j.contains("bias")) {
        ENGINE_CHECK(j["bias"].is_boolean(), ValueError, "model config: 'bias' is not true/false");
        c.bias = j["bias"].get<bool>();
    }
    if (j.contains("model_type")) {   // absent in checkpoints written before there were two layouts
        ENGINE_CHECK(j["model_type"].is_string(), ValueError, "model config: 'model_type' is not a string");
        c.model_type = j["model_type"].get<std::string>();
    }
    if (j.contains("layer_norm_epsilon")) {
        ENGINE_CHECK(j["layer_norm_epsilon"].is_number(), ValueError, "model config: 'layer_norm_epsilon' is not a number");
        c.layer_norm_epsilon = j["layer_norm_epsilon"].get<float>();
    }
    c.validate();
    return c;
}

// ---- layout

std::vector<BlockLinear> block_linears(const GPTConfig& c) {
    const int64_t C = c.n_embd;
    if (c.model_type == "gpt2")
        return {{"attn.c_attn", C, 3 * C, Site::Attn, false}, {"attn.c_proj", C, C, Site::Attn, true},
                {"mlp.c_fc", C, 4 * C, Site::Mlp, false},     {"mlp.c_proj", 4 * C, C, Site::Mlp, true}};
    return {{"attn.q_proj", C, C, Site::Attn, false}, {"attn.k_proj", C, C, Site::Attn, false},
            {"attn.v_proj", C, C, Site::Attn, false}, {"attn.o_proj", C, C, Site::Attn, true},
            {"mlp.fc_in", C, 4 * C, Site::Mlp, false}, {"mlp.fc_out", 4 * C, C, Site::Mlp, true}};
}

// The field of a block that holds the Linear called `name` (a name block_linears gives).
static Linear& block_linear(Block& b, const std::string& name) {
    if (name == "attn.q_proj") return b.attn.q_proj;
    if (name == "attn.k_proj") return b.attn.k_proj;
    if (name == "attn.v_proj") return b.attn.v_proj;
    if (name == "attn.c_attn") return b.attn.c_attn;
    if (name == "attn.o_proj" || name == "attn.c_proj") return b.attn.o_proj;
    if (name == "mlp.fc_in" || name == "mlp.c_fc") return b.mlp.fc_in;
    return b.mlp.fc_out;   // "mlp.fc_out", "mlp.c_proj"
}

// ---- construction: GPT-2 init, N(0, 0.02); residual projections scaled by 1/sqrt(2 n_layer)

GPT::GPT(const GPTConfig& cfg, Rng& rng, std::optional<QType> quantize) : config(cfg), dropout_rng(0) {
    build(&rng, quantize);
}

GPT::GPT(const GPTConfig& cfg, std::optional<QType> quantize) : config(cfg), dropout_rng(0) { build(nullptr, quantize); }

void GPT::build(Rng* rng, std::optional<QType> quantize) {
    const GPTConfig& cfg = config;
    config.validate();
    const int64_t C = cfg.n_embd;
    const float std_resid = 0.02f / std::sqrt(2.0f * float(cfg.n_layer));
    wte = rng ? Embedding(cfg.vocab_size, C, *rng) : Embedding::zeros(cfg.vocab_size, C);
    wpe = rng ? Embedding(cfg.block_size, C, *rng) : Embedding::zeros(cfg.block_size, C);
    wte.register_params(params, "transformer.wte");
    wpe.register_params(params, "transformer.wpe");
    h.resize(size_t(cfg.n_layer));
    for (int64_t l = 0; l < cfg.n_layer; l++) {
        Block& b = h[size_t(l)];
        const std::string p = fmt::format("transformer.h.{}.", l);
        b.ln_1 = LayerNorm(C, cfg.bias, cfg.layer_norm_epsilon);
        b.ln_1.register_params(params, p + "ln_1");
        b.ln_2 = LayerNorm(C, cfg.bias, cfg.layer_norm_epsilon);
        for (const BlockLinear& s : block_linears(cfg)) {
            if (s.site == Site::Mlp && !params.find(p + "ln_2.weight")) b.ln_2.register_params(params, p + "ln_2");
            Linear& lin = block_linear(b, s.name);
            lin = rng ? Linear(s.in, s.out, cfg.bias, *rng, s.residual ? std_resid : 0.02f) : Linear::zeros(s.in, s.out, cfg.bias);
            lin.register_params(params, p + s.name);
            if (quantize) {
                lin.weight.set_requires_grad(false);
                if (rng) lin.quantize(*quantize, p + s.name);
                else lin.weight.impl().storage.reset();   // no values yet: the loader sets the blocks
            }
        }
    }
    ln_f = LayerNorm(C, cfg.bias, cfg.layer_norm_epsilon);
    ln_f.register_params(params, "transformer.ln_f");
}

void GPT::quantize(QType type) {
    std::vector<std::pair<std::string, Linear*>> todo;
    for (auto& [name, lin] : linears()) {
        const Tensor& registered = params.get(name + ".weight");
        ENGINE_CHECK(!registered.requires_grad(), ValueError,
                     "quantize {}: {}.weight trains (full fine-tuning?), and quantised weights cannot: they get no "
                     "gradient; train a PEFT method over them instead", qtype_name(type), name);
        if (lin->weight.impl_ptr() != registered.impl_ptr() || lin->quantized()) continue;   // a copy trains; or done
        QWeight::check(lin->weight, type, name + ".weight");
        todo.push_back({name, lin});
    }
    for (auto& [name, lin] : todo) lin->quantize(type, name);
}

std::optional<QType> GPT::quantized_as() {
    std::optional<QType> type;
    for (auto& [name, lin] : linears()) {
        if (!lin->quantized()) continue;
        ENGINE_CHECK(!type || *type == lin->qweight->type, ValueError, "{} is {} but another block Linear is {}", name,
                     qtype_name(lin->qweight->type), qtype_name(*type));
        type = lin->qweight->type;
    }
    return type;
}

void GPT::dequantize() {
    for (auto& [name, lin] : linears()) lin->dequantize();
}

Linear* GPT::linear_of(const std::string& param_name) {
    const std::string suffix = ".weight";
    if (param_name.size() <= suffix.size() || param_name.compare(param_name.size() - suffix.size(), suffix.size(), suffix))
        return nullptr;
    const std::string module = param_name.substr(0, param_name.size() - suffix.size());
    for (auto& [name, lin] : linears())
        if (name == module) return lin;
    return nullptr;
}

std::vector<std::pair<std::string, Linear*>> GPT::linears() {
    std::vector<std::pair<std::string, Linear*>> out;
    const std::vector<BlockLinear> specs = block_linears(config);
    for (size_t l = 0; l < h.size(); l++)
        for (const BlockLinear& s : specs)
            out.push_back({fmt::format("transformer.h.{}.{}", l, s.name), &block_linear(h[l], s.name)});
    return out;
}

// ---- forward

// q, k, v (B,T,C) of layer l: three Linears, or GPT-2's fused c_attn and its three column blocks.
std::array<Tensor, 3> GPT::project_qkv(int64_t l, const Tensor& x) {
    Attention& a = h[size_t(l)].attn;
    if (config.model_type != "gpt2") return {a.q_proj(x), a.k_proj(x), a.v_proj(x)};
    const int64_t C = config.n_embd;   // one (B,T,3C) projection, then its three column blocks
    Tensor qkv = a.c_attn(x);
    return {slice_last(qkv, 0, C), slice_last(qkv, C, C), slice_last(qkv, 2 * C, C)};
}

// x: (B,T,C) -> (B,T,C). Multi-head causal self-attention; prefix rows (seam 3, (B,P,C) each, or
// undefined) in front of k, v. Head h is columns h·D..(h+1)·D of q, k and v; attention reads the heads in place.
Tensor GPT::attention(int64_t l, const Tensor& x, const std::pair<Tensor, Tensor>& prefix, bool training) {
    Attention& a = h[size_t(l)].attn;
    const int64_t H = config.n_head, D = config.n_embd / H;
    auto [q, k, v] = project_qkv(l, x);   // (B,T,C) each
    const int64_t P = prefix.first.defined() ? prefix.first.size(1) : 0;
    if (P > 0) {   // k, v: (B,P,C) ++ (B,T,C) along the sequence axis
        k = concat_seq(prefix.first, k);
        v = concat_seq(prefix.second, v);
    }
    Tensor y = (attention_saved_probs ? causal_attention_saved_probs : causal_attention)(q, k, v, H, P,
                                                                                          1.0f / std::sqrt(float(D)));   // (B,T,C)
    return dropout(a.o_proj(y), config.dropout, training, dropout_rng);
}

// x: (B,T,C) -> (B,T,C). fc_in -> GELU -> fc_out (gpt2: c_fc -> GELU -> c_proj).
// One pre-LayerNorm block, x: (B,T,C) -> (B,T,C): x1 = x + attn(ln_1(x)), then x1 + mlp(ln_2(x1)),
// where mlp(y) = dropout(fc_out(g)), g = gelu(fc_in(y)); adapters act on each sub-layer's output
// (seam 2). In three parts, so that checkpointing can cut the block between them (hidden()).
Tensor GPT::attn_residual(int64_t l, const Tensor& x, const std::pair<Tensor, Tensor>& prefix, bool training) {
    Tensor f = attention(l, h[size_t(l)].ln_1(x), prefix, training);
    if (hooks) f = hooks->block_output(Site::Attn, l, f);      // seam 2
    return add(x, f);
}

Tensor GPT::mlp_hidden(int64_t l, const Tensor& x1) {   // g = gelu(fc_in(ln_2(x1))): (B,T,4C)
    Block& b = h[size_t(l)];
    return gelu(b.mlp.fc_in(b.ln_2(x1)));
}

Tensor GPT::mlp_residual(int64_t l, const Tensor& x1, Tensor g, bool training) {
    Tensor m = dropout(h[size_t(l)].mlp.fc_out(g), config.dropout, training, dropout_rng);
    g = Tensor();   // (B,T,4C) floats: gone before the adapter and the add allocate
    if (hooks) m = hooks->block_output(Site::Mlp, l, m);
    return add(x1, m);
}

Tensor GPT::block(int64_t l, const Tensor& x, const std::pair<Tensor, Tensor>& prefix, bool training) {
    const Tensor x1 = attn_residual(l, x, prefix, training);
    return mlp_residual(l, x1, mlp_hidden(l, x1), training);
}

// Note [Gradient checkpointing] (engine/autograd.h): fn's region keeps only its inputs and runs
// again in backward. The replay must draw the same dropout masks: it starts the stream where this
// forward did, and then puts it back where it was, so the replay leaves the stream as it found it.
Tensor GPT::replayed(const std::function<Tensor()>& fn) {
    auto again = std::make_shared<bool>(false);
    return checkpoint([this, fn, at_start = dropout_rng, again] {
        const Rng now = dropout_rng;
        dropout_rng = at_start;
        Tensor y = fn();
        if (*again) dropout_rng = now;
        *again = true;
        return y;
    });
}

// A checkpointed block is two regions: the attention sub-layer (x -> x1) and the MLP up to its
// GELU (x1 -> g). fc_out then runs outside them when its backward needs nothing but W (a frozen
// base Linear no method wraps: dx = dy W keeps no activation), so backward never recomputes the
// block's last GEMM, whose output it does not read: a third of the block's GEMM work at GPT-2's
// shapes. Otherwise (fc_out trains, or a method wraps it) the whole MLP sub-layer is the second
// region. Kept per block: x and x1.
Tensor GPT::checkpointed_block(int64_t l, const Tensor& x, const std::pair<Tensor, Tensor>& prefix, bool training) {
    const Tensor x1 = replayed([this, l, x, prefix, training] { return attn_residual(l, x, prefix, training); });
    const Linear& fc_out = h[size_t(l)].mlp.fc_out;
    if (!fc_out.wrap && !fc_out.weight.requires_grad())
        return mlp_residual(l, x1, replayed([this, l, x1] { return mlp_hidden(l, x1); }), training);
    return replayed([this, l, x1, training] { return mlp_residual(l, x1, mlp_hidden(l, x1), training); });
}

Tensor GPT::hidden(const Tensor& ids, bool training) {
    ENGINE_CHECK(ids.dtype() == DType::I32 && ids.ndim() == 2, ShapeError,
                 "gpt: token ids must be int32 (B,T), got {}", describe(ids));
    const int64_t B = ids.size(0), T = ids.size(1);
    const int64_t Pv = hooks ? hooks->n_virtual() : 0, Pp = hooks ? hooks->n_prefix() : 0;
    ENGINE_CHECK(T >= 1, ShapeError, "gpt: empty sequence {}", ids.shape().str());
    ENGINE_CHECK(Pv + Pp + T <= config.block_size, ShapeError,
                 "gpt: sequence of {} tokens{} is longer than block_size {}", T,
                 Pv + Pp ? fmt::format(" plus {} virtual tokens", Pv + Pp) : std::string(), config.block_size);

    if (hooks) hooks->set_training(training);
    Tensor x = wte(ids);                                           // (B,T,C)
    if (Pv > 0) x = concat_seq(hooks->virtual_tokens(B), x);       // seam 4: (B,Pv+T,C)
    // Positions: a prefix acts as a cached past of length Pp, so tokens start at Pp.
    std::vector<int32_t> pos(size_t(B * (Pv + T)));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < Pv + T; t++) pos[size_t(b * (Pv + T) + t)] = int32_t(Pp + t);
    x = add(x, wpe(Tensor::from_ints(pos, {B, Pv + T})));
    x = dropout(x, config.dropout, training, dropout_rng);

    for (int64_t l = 0; l < config.n_layer; l++) {
        std::pair<Tensor, Tensor> prefix = Pp > 0 ? hooks->prefix_kv(l, B) : std::pair<Tensor, Tensor>();   // seam 3
        x = gradient_checkpointing && training && GradMode::enabled() ? checkpointed_block(l, x, prefix, training)
                                                                       : block(l, x, prefix, training);
    }
    x = ln_f(x);
    if (Pv > 0) x = slice_seq(x, Pv, T);                           // the real tokens only
    return x;
}

Tensor GPT::forward(const Tensor& ids, bool training) {
    return linear(hidden(ids, training), wte.weight);              // tied LM head: (B,T,V)
}

Tensor GPT::loss(const Tensor& ids, const Tensor& targets, bool training) {
    if (unfused_loss) return cross_entropy(forward(ids, training), targets);
    return linear_cross_entropy(hidden(ids, training), wte.weight, targets);
}

int64_t GPT::token_room() const { return config.block_size - (hooks ? hooks->n_virtual() + hooks->n_prefix() : 0); }
