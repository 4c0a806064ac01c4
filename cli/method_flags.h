// cli/method_flags.h — `--method` and the PEFT options as flags named like HF's config fields.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include "data/tokenizer.h"
#include "peft/peft.h"

struct MethodFlags {
    std::string method = "full";      // full | lora | ia3 | adapter | prefix | prompt | ptuning | loha | lokr | vera | oft
    std::string method_config;        // a JSON file with HF field names (adapter_config.json style)
    // LoRA
    int r = 8; double lora_alpha = 16, lora_dropout = 0.05; bool use_rslora = false;
    std::vector<std::string> target_modules, feedforward_modules;
    std::vector<int> layers_to_transform;   // LoRA: only these blocks (peft/targets.h)
    bool use_dora = false; std::string init_lora_weights = "true";
    // LoHa, LoKr (alpha, dropouts), VeRA, OFT: sent only when given (each method has its own defaults)
    double alpha = 8, rank_dropout = 0, module_dropout = 0, vera_dropout = 0, d_initial = 0.1, eps = 6e-5;
    bool decompose_both = false, save_projection = true, use_cayley_neumann = true, block_share = false, coft = false;
    int decompose_factor = -1, oft_block_size = 32, num_cayley_neumann_terms = 5; int64_t projection_prng_key = 0;
    // bottleneck adapters
    std::string placement = "houlsby", non_linearity; int bottleneck_size = 0, reduction_factor = 16;
    // prompt learning
    int num_virtual_tokens = 8, encoder_hidden_size = 0, encoder_num_layers = 2;
    bool prefix_projection = false;
    std::string prompt_tuning_init = "RANDOM", prompt_tuning_init_text, encoder_reparameterization_type = "MLP";

    void add(CLI::App& cmd);
    // ValueError when the command line gives an option --method does not read, naming the
    // method(s) it belongs to.
    void check_flags_belong(const CLI::App& cmd) const;
    // The adapter_config.json object for --method (HF field names), from the flags the user set
    // (and --method_config); "full" gives an empty object. Unknown method -> ValueError.
    nlohmann::json to_config(const CLI::App& cmd, const Tokenizer& tok) const;
    // The method of that config, attached to `model`; warnings about its keys name --method_config.
    std::unique_ptr<Method> make(const CLI::App& cmd, const Tokenizer& tok, GPT& model, Rng& rng) const;
};
