// models/gpt.h — a GPT-2 style transformer, in nanoGPT's reading order.
//
// Token + learned position embeddings; n_layer pre-LayerNorm blocks, each causal multi-head
// self-attention and an MLP (Linear -> GELU(tanh) -> Linear, hidden 4C); a final LayerNorm;
// the LM head tied to the token embedding.
//
// Parameter names are a contract (checkpoints, adapters and target_modules use them). Two
// layouts compute the same function and differ in how the attention's input projection is
// stored and what the modules are called (GPTConfig::model_type):
//   both:   transformer.wte.weight [V,C]   transformer.wpe.weight [block_size,C]
//           transformer.h.{i}.ln_1.weight|bias   transformer.h.{i}.ln_2.weight|bias
//           transformer.ln_f.weight|bias   (lm_head = wte, not stored twice)
//   "gpt":  transformer.h.{i}.attn.{q,k,v,o}_proj.weight [C,C] .bias [C]
//           transformer.h.{i}.mlp.fc_in.weight [4C,C] .bias [4C]  mlp.fc_out.weight [C,4C] .bias [C]
//   "gpt2": Hugging Face GPT-2's module names:
//           transformer.h.{i}.attn.c_attn.weight [3C,C] .bias [3C]   (rows 0..C-1 make q, then k, then v)
//           transformer.h.{i}.attn.c_proj.weight [C,C]  mlp.c_fc.weight [4C,C]  mlp.c_proj.weight [C,4C]
//           Weights are stored as our Linear's (out, in); HF's Conv1D stores (in, out), so the
//           importer and exporter (models/hf_gpt2.h) transpose them.
//
// The seams where PEFT methods attach (see peft/ and Note [Seams]):
//   1. every Linear, by its dotted name (Linear::wrap)           LoRA, IA³
//   2. each block's attention and MLP output (Hooks::block_output) bottleneck adapters
//   3. extra key/value rows in attention (Hooks::prefix_kv)        prefix tuning
//   4. extra embeddings in front of the input (Hooks::virtual_tokens) prompt and P-tuning
//
// Note [Seams]
// With no method attached, `hooks` is null and every Linear's `wrap` is null: the forward
// pays one pointer test per seam and records exactly the nodes of the plain GPT.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>
#include "engine/module.h"

struct GPTConfig {
    int64_t n_layer = 4;        // transformer blocks, e.g. 4
    int64_t n_head = 4;         // attention heads, e.g. 4 (n_embd must divide by it)
    int64_t n_embd = 128;       // width C, e.g. 128
    int64_t block_size = 64;    // longest sequence (including virtual tokens / prefix), e.g. 64
    int64_t vocab_size = 96;    // V, from the tokenizer, e.g. 96
    float dropout = 0.0f;       // after embeddings, attention output and MLP output, e.g. 0.1
    bool bias = true;           // biases in Linears and LayerNorms
    std::string model_type = "gpt";     // parameter layout: "gpt" (q/k/v/o_proj) or "gpt2" (HF's c_attn ...)
    float layer_norm_epsilon = 1e-5f;   // every LayerNorm's eps, e.g. 1e-5 (GPT-2's)
    void validate() const;      // throws ValueError listing every problem
    std::string to_json() const;
    static GPTConfig from_json(const std::string& text);   // throws ValueError on bad fields
};

enum class Site { Attn, Mlp };

// One Linear of a block under the config's layout: its name inside the block ("attn.c_attn"),
// its shape, where it sits, and whether it is a residual projection (GPT-2 scales their init).
struct BlockLinear {
    std::string name;
    int64_t in, out;
    Site site;
    bool residual;
};
std::vector<BlockLinear> block_linears(const GPTConfig& cfg);

// What a PEFT method may change in the forward. Defaults change nothing.
struct Hooks {
    virtual ~Hooks() = default;
    // Prompt / P-tuning: P virtual-token embeddings (B,P,C) placed before the tokens.
    virtual int64_t n_virtual() const { return 0; }
    virtual Tensor virtual_tokens(int64_t /*B*/) { return Tensor(); }
    // Prefix tuning: P extra keys and values (each (B,P,C), heads side by side) in front of layer l's own.
    virtual int64_t n_prefix() const { return 0; }
    virtual std::pair<Tensor, Tensor> prefix_kv(int64_t /*layer*/, int64_t /*B*/) { return {}; }
    // Adapters: the sub-layer output f (B,T,C) before the residual add; return f + g(f).
    virtual Tensor block_output(Site /*site*/, int64_t /*layer*/, const Tensor& f) { return f; }
    // Told at the start of every forward whether it trains (LoRA's dropout is on only then).
    virtual void set_training(bool /*on*/) {}
};

// The fields are roles; model_type decides which exist and their names (see above):
// "gpt" uses q_proj, k_proj, v_proj; "gpt2" uses the fused c_attn instead.
struct Attention {
    Linear q_proj, k_proj, v_proj;   // "gpt": attn.q_proj, attn.k_proj, attn.v_proj
    Linear c_attn;                   // "gpt2": attn.c_attn, q|k|v in one (3C, C) Linear
    Linear o_proj;                   // attn.o_proj / attn.c_proj
};
struct MLP {
    Linear fc_in, fc_out;            // mlp.fc_in, mlp.fc_out / mlp.c_fc, mlp.c_proj
};
struct Block {
    LayerNorm ln_1, ln_2;
    Attention attn;
    MLP mlp;
};

// Generation's memory of the past: every layer's keys and values of the positions seen so far
// (prefix rows and virtual tokens included), so each new token costs one token's forward.
// k[l], v[l]: (capacity, C) row-major, rows 0..len-1 filled. See models/generate.cpp.
struct KVCache {
    std::vector<std::vector<float>> k, v;
    int64_t len = 0;
};

class GPT {
public:
    GPTConfig config;
    Embedding wte, wpe;
    std::vector<Block> h;
    LayerNorm ln_f;
    ParamList params;          // every parameter, by its contract name
    Hooks* hooks = nullptr;    // set by an attached PEFT method (not owned)
    Rng dropout_rng;           // the dropout masks' stream (saved in checkpoints)
    // HF's gradient_checkpointing: when training, keep only each block's input and run the block
    // again during backward (Note [Gradient checkpointing], engine/autograd.h). Same gradients, bit
    // for bit; the activations of one block at a time instead of all of them, for one more forward.
    bool gradient_checkpointing = false;
    // The plain versions of two memory cures, to measure what each saves (`peft bench`): the loss as
    // cross_entropy of the whole (B,T,V) logits instead of linear_cross_entropy's chunks, and
    // attention keeping its (B,H,T,P+T) probabilities (causal_attention_saved_probs). Same values.
    bool unfused_loss = false, attention_saved_probs = false;

    // `quantize` set: every block Linear's weight is frozen and stored quantised as soon as it is
    // initialised (quantize() below), so the float32 weights never exist all at once.
    GPT(const GPTConfig& config, Rng& init_rng, std::optional<QType> quantize = std::nullopt);
    // Every weight zero, nothing drawn at random: for a loader to fill (models/checkpoint.h). With
    // `quantize`, the block Linears hold neither floats nor blocks until the loader sets them.
    explicit GPT(const GPTConfig& config, std::optional<QType> quantize = std::nullopt);
    GPT(const GPT&) = delete;
    GPT& operator=(const GPT&) = delete;

    // ids: int32 (B,T) -> the final LayerNorm's output (B,T,C) for the real tokens. Dropout only when training.
    Tensor hidden(const Tensor& ids, bool training = false);
    // ids: int32 (B,T) -> logits (B,T,V) = hidden(ids) wteᵀ (the LM head is tied to the embedding).
    Tensor forward(const Tensor& ids, bool training = false);
    // Mean cross-entropy of forward(ids) against targets (B,T), -1 ignored. Fused with the LM head a
    // chunk of rows at a time (linear_cross_entropy), so no (B,T,V) logits exist (unless unfused_loss).
    Tensor loss(const Tensor& ids, const Tensor& targets, bool training = false);
    // Positions left for real tokens: block_size minus the virtual tokens and prefix rows an
    // attached method puts in front of them.
    int64_t token_room() const;
    // QLoRA's frozen base: stores every block Linear's weight in blocks of `type` (engine/quant.h).
    // Each must be frozen: ValueError if one trains (full fine-tuning: a quantised weight gets no
    // gradient). Every weight is checked before any changes. A Linear whose forward reads a trainable
    // copy (modules_to_save) keeps its float32 weight. The token embedding (also the tied LM head),
    // positions and LayerNorms stay float32, as HF keeps embeddings and the head in 16/32 bits.
    void quantize(QType type);
    // The format every quantised block Linear shares, nothing if none is quantised (ValueError if
    // they differ). dequantize(): every block Linear float32 again (the dequantised values).
    std::optional<QType> quantized_as();
    void dequantize();
    // The block Linear whose weight is the parameter `param_name` ("transformer.h.0.attn.c_attn.weight"),
    // else nullptr.
    Linear* linear_of(const std::string& param_name);
    // Every Linear with its dotted module name ("transformer.h.0.attn.q_proj"), in order.
    std::vector<std::pair<std::string, Linear*>> linears();
    // Sample max_new tokens after `prompt` (no grad). temperature 0 = greedy; top_k 0 = all.
    // With use_cache (models/generate.cpp) each new token runs one token's forward against the
    // KV cache; without it, every step runs the whole context again (the plain version, tested
    // equal). on_token, if given, sees each new token as it is chosen.
    std::vector<int32_t> generate(std::vector<int32_t> prompt, int64_t max_new, float temperature, int64_t top_k,
                                  Rng& rng, bool use_cache = true,
                                  const std::function<void(int32_t)>& on_token = nullptr);
    // No grad: runs `ids` after the cache's len positions, appends their keys and values, and
    // returns the logits of the last of them (V). An empty cache starts with the method's
    // prefix rows and virtual tokens, as forward() does.
    std::vector<float> decode(const std::vector<int32_t>& ids, KVCache& cache);

private:
    void build(Rng* init_rng, std::optional<QType> quantize);   // init_rng null: zeros
    // q, k, v (B,T,C) of layer l from its LayerNorm'd input: three Linears or the fused c_attn.
    std::array<Tensor, 3> project_qkv(int64_t l, const Tensor& x);
    Tensor block(int64_t l, const Tensor& x, const std::pair<Tensor, Tensor>& prefix, bool training);
    Tensor attn_residual(int64_t l, const Tensor& x, const std::pair<Tensor, Tensor>& prefix, bool training);
    Tensor mlp_hidden(int64_t l, const Tensor& x1);
    Tensor mlp_residual(int64_t l, const Tensor& x1, Tensor g, bool training);
    Tensor attention(int64_t l, const Tensor& x, const std::pair<Tensor, Tensor>& prefix, bool training);
    Tensor replayed(const std::function<Tensor()>& fn);
    Tensor checkpointed_block(int64_t l, const Tensor& x, const std::pair<Tensor, Tensor>& prefix, bool training);
};
