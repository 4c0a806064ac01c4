// models/gpt.h — a GPT-2 style transformer, in nanoGPT's reading order.
//
// Token + learned position embeddings; n_layer pre-LayerNorm blocks, each causal multi-head
// self-attention with separate q/k/v/o projections and an MLP (Linear -> GELU(tanh) ->
// Linear, hidden 4C); a final LayerNorm; the LM head tied to the token embedding.
//
// Parameter names are a contract (checkpoints, adapters and target_modules use them):
//   transformer.wte.weight [V,C]   transformer.wpe.weight [block_size,C]
//   transformer.h.{i}.ln_1.weight|bias           transformer.h.{i}.ln_2.weight|bias
//   transformer.h.{i}.attn.{q,k,v,o}_proj.weight [C,C] .bias [C]
//   transformer.h.{i}.mlp.fc_in.weight [4C,C] .bias [4C]  mlp.fc_out.weight [C,4C] .bias [C]
//   transformer.ln_f.weight|bias   (lm_head = wte, not stored twice)
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
#include <cstdint>
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
    void validate() const;      // throws ValueError listing every problem
    std::string to_json() const;
    static GPTConfig from_json(const std::string& text);   // throws ValueError on bad fields
};

enum class Site { Attn, Mlp };

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

struct Attention {
    Linear q_proj, k_proj, v_proj, o_proj;
};
struct MLP {
    Linear fc_in, fc_out;
};
struct Block {
    LayerNorm ln_1, ln_2;
    Attention attn;
    MLP mlp;
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

    GPT(const GPTConfig& config, Rng& init_rng);
    GPT(const GPT&) = delete;
    GPT& operator=(const GPT&) = delete;

    // ids: int32 (B,T) -> the final LayerNorm's output (B,T,C) for the real tokens. Dropout only when training.
    Tensor hidden(const Tensor& ids, bool training = false);
    // ids: int32 (B,T) -> logits (B,T,V) = hidden(ids) wteᵀ (the LM head is tied to the embedding).
    Tensor forward(const Tensor& ids, bool training = false);
    // Mean cross-entropy of forward(ids) against targets (B,T), -1 ignored. Fused with the LM head,
    // so the (B,T,V) logits and their gradient share one buffer (linear_cross_entropy).
    Tensor loss(const Tensor& ids, const Tensor& targets, bool training = false);
    // Every Linear with its dotted module name ("transformer.h.0.attn.q_proj"), in order.
    std::vector<std::pair<std::string, Linear*>> linears();
    // Sample max_new tokens after `prompt` (no grad). temperature 0 = greedy; top_k 0 = all.
    std::vector<int32_t> generate(std::vector<int32_t> prompt, int64_t max_new, float temperature, int64_t top_k,
                                  Rng& rng);

private:
    Tensor attention(int64_t l, const Tensor& x, bool training);
    Tensor mlp(int64_t l, const Tensor& x, bool training);
};
