// cli/method_flags.cpp — from flags to an adapter_config.json object.
#include "method_flags.h"
#include <algorithm>
#include <fstream>
#include <sstream>
#include "common.h"
#include "engine/check.h"
#include "engine/fileio.h"

void MethodFlags::add(CLI::App& cmd) {
    cmd.add_option("--method", method, "full | lora | ia3 | adapter | prefix | prompt | ptuning | loha | lokr | vera | oft")
        ->check(CLI::IsMember({"full", "lora", "ia3", "adapter", "prefix", "prompt", "ptuning", "loha", "lokr", "vera", "oft"}))
        ->capture_default_str();
    cmd.add_option("--method_config", method_config, "adapter_config.json-style file with the method's options");
    auto* g = cmd.add_option_group("PEFT options", "named like the HF PEFT config fields");
    add_number(g, "--r", r, "LoRA rank", 1, 1 << 16)->capture_default_str();
    add_number(g, "--lora_alpha", lora_alpha, "LoRA scaling numerator (scale = alpha / r)")->capture_default_str();
    add_number(g, "--lora_dropout", lora_dropout, "dropout on the LoRA branch", 0.0, 0.99)->capture_default_str();
    g->add_flag("--use_rslora", use_rslora, "scale by alpha / sqrt(r)");
    g->add_flag("--use_dora", use_dora, "LoRA: DoRA, a trained magnitude per output row");
    g->add_option("--init_lora_weights", init_lora_weights, "LoRA: true | false | gaussian | pissa | pissa_niter_K | olora");
    add_number(g, "--alpha", alpha, "LoHa / LoKr: scale numerator (scale = alpha / r)");
    add_number(g, "--rank_dropout", rank_dropout, "LoHa / LoKr: drop rows of the update while training", 0.0, 0.99);
    add_number(g, "--module_dropout", module_dropout, "LoHa / LoKr: skip a module's update; OFT: blocks set to I", 0.0, 0.99);
    g->add_flag("--decompose_both", decompose_both, "LoKr: the left Kronecker factor low rank too");
    add_number(g, "--decompose_factor", decompose_factor, "LoKr: factorization limit (-1: near the square root)", -1, 1 << 20);
    add_number(g, "--projection_prng_key", projection_prng_key, "VeRA: seed of the shared random A and B", int64_t(0), int64_t(1) << 62);
    g->add_option("--save_projection", save_projection, "VeRA: store A and B in the adapter file (true | false)");
    add_number(g, "--vera_dropout", vera_dropout, "VeRA: dropout on the branch input", 0.0, 0.99);
    add_number(g, "--d_initial", d_initial, "VeRA: initial value of lambda_d");
    add_number(g, "--oft_block_size", oft_block_size, "OFT: block size of the rotation (0: from --r blocks)", 0, 1 << 16);
    g->add_option("--use_cayley_neumann", use_cayley_neumann, "OFT: truncated Cayley-Neumann series (true) or exact Cayley (false)");
    add_number(g, "--num_cayley_neumann_terms", num_cayley_neumann_terms, "OFT: terms of the series", 1, 64);
    g->add_flag("--block_share", block_share, "OFT: one rotation block for all blocks");
    g->add_flag("--coft", coft, "OFT: constrained OFT, |Q| <= eps");
    add_number(g, "--eps", eps, "OFT: COFT radius");
    g->add_option("--target_modules", target_modules, "module names (default: LoRA and its family q_proj,v_proj, or c_attn on gpt2; IA3 k_proj,v_proj,fc_out)")->delimiter(',');
    g->add_option("--layers_to_transform", layers_to_transform, "LoRA and its family: only these blocks, e.g. 2,3")
        ->delimiter(',')
        ->transform(CLI::Validator([](std::string& text) { return strict_number(text, int64_t(0), int64_t(1) << 20); },
                                   "", "number"));
    g->add_option("--feedforward_modules", feedforward_modules, "IA3: modules scaled on their input")->delimiter(',');
    g->add_option("--placement", placement, "adapters: houlsby | pfeiffer")->check(CLI::IsMember({"houlsby", "pfeiffer"}));
    add_number(g, "--bottleneck_size", bottleneck_size, "adapters: bottleneck width m", 1, 1 << 20);
    add_number(g, "--reduction_factor", reduction_factor, "adapters: m = n_embd / factor", 1, 1 << 20);
    g->add_option("--non_linearity", non_linearity, "adapters: relu | gelu | silu (default: silu for houlsby, relu for pfeiffer)")->check(CLI::IsMember({"relu", "gelu", "silu"}));
    add_number(g, "--num_virtual_tokens", num_virtual_tokens, "prefix / prompt / P-tuning length P", 1, 1 << 16);
    g->add_flag("--prefix_projection", prefix_projection, "prefix tuning: train through an MLP reparametrisation");
    add_number(g, "--encoder_hidden_size", encoder_hidden_size, "prefix projection / P-tuning encoder width", 1, 1 << 20);
    add_number(g, "--encoder_num_layers", encoder_num_layers, "P-tuning LSTM layers", 1, 16);
    g->add_option("--encoder_reparameterization_type", encoder_reparameterization_type, "P-tuning: MLP | LSTM")
        ->check(CLI::IsMember({"MLP", "LSTM"}));
    g->add_option("--prompt_tuning_init", prompt_tuning_init, "prompt tuning: RANDOM | SAMPLE_VOCAB | TEXT")
        ->check(CLI::IsMember({"RANDOM", "SAMPLE_VOCAB", "TEXT"}));
    g->add_option("--prompt_tuning_init_text", prompt_tuning_init_text, "prompt tuning: text whose embeddings start the prompt");
}

// The methods that read each PEFT option; any other --method refuses it by name. A new
// method's flags are a row here.
static const std::vector<std::pair<std::string, std::vector<std::string>>>& flag_owners() {
    static const std::vector<std::pair<std::string, std::vector<std::string>>> owners = {
        {"--r", {"lora", "loha", "lokr", "vera", "oft"}}, {"--lora_alpha", {"lora"}}, {"--lora_dropout", {"lora"}},
        {"--use_rslora", {"lora"}}, {"--use_dora", {"lora"}}, {"--init_lora_weights", {"lora"}},
        {"--target_modules", {"lora", "ia3", "loha", "lokr", "vera", "oft"}},
        {"--layers_to_transform", {"lora", "loha", "lokr", "vera", "oft"}}, {"--feedforward_modules", {"ia3"}},
        {"--alpha", {"loha", "lokr"}}, {"--rank_dropout", {"loha", "lokr"}}, {"--module_dropout", {"loha", "lokr", "oft"}},
        {"--decompose_both", {"lokr"}}, {"--decompose_factor", {"lokr"}},
        {"--projection_prng_key", {"vera"}}, {"--save_projection", {"vera"}}, {"--vera_dropout", {"vera"}},
        {"--d_initial", {"vera"}},
        {"--oft_block_size", {"oft"}}, {"--use_cayley_neumann", {"oft"}}, {"--num_cayley_neumann_terms", {"oft"}},
        {"--block_share", {"oft"}}, {"--coft", {"oft"}}, {"--eps", {"oft"}},
        {"--placement", {"adapter"}}, {"--bottleneck_size", {"adapter"}}, {"--reduction_factor", {"adapter"}},
        {"--non_linearity", {"adapter"}},
        {"--num_virtual_tokens", {"prefix", "prompt", "ptuning"}}, {"--prefix_projection", {"prefix"}},
        {"--encoder_hidden_size", {"prefix", "ptuning"}}, {"--encoder_num_layers", {"ptuning"}},
        {"--encoder_reparameterization_type", {"ptuning"}},
        {"--prompt_tuning_init", {"prompt"}}, {"--prompt_tuning_init_text", {"prompt"}},
        {"--method_config", {"lora", "ia3", "adapter", "prefix", "prompt", "ptuning", "loha", "lokr", "vera", "oft"}},
    };
    return owners;
}

void MethodFlags::check_flags_belong(const CLI::App& cmd) const {
    for (const auto& [flag, methods] : flag_owners()) {
        if (!cmd.count(flag) || std::find(methods.begin(), methods.end(), method) != methods.end()) continue;
        throw ValueError(fmt::format("{} is an option of --method {}; --method {} does not use it", flag,
                                     fmt::join(methods, " or "), method));
    }
}

nlohmann::json MethodFlags::to_config(const CLI::App& cmd, const Tokenizer& tok) const {
    using json = nlohmann::json;
    check_flags_belong(cmd);
    if (method == "full") return json::object();
    json c = json::object();
    if (!method_config.empty()) {
        c = json::parse(read_file(method_config, 1 << 20), nullptr, false);
        ENGINE_CHECK(c.is_object(), FileError, "{}: not a JSON object", method_config);
    }
    auto set = [&](const char* flag, const char* key, const json& value) {
        if (cmd.count(flag) || !c.contains(key)) c[key] = value;
    };
    auto set_if_given = [&](const char* flag, const char* key, const json& value) {
        if (cmd.count(flag)) c[key] = value;
    };
    if (method == "lora") {
        c["peft_type"] = "LORA";
        set("--r", "r", r);
        set("--lora_alpha", "lora_alpha", lora_alpha);
        set("--lora_dropout", "lora_dropout", lora_dropout);
        set("--use_rslora", "use_rslora", use_rslora);
        set_if_given("--target_modules", "target_modules", target_modules);
        set_if_given("--layers_to_transform", "layers_to_transform", layers_to_transform);
        set_if_given("--use_dora", "use_dora", use_dora);
        if (cmd.count("--init_lora_weights"))   // "true"/"false" are JSON booleans, the rest strings
            c["init_lora_weights"] = init_lora_weights == "true" ? json(true) : init_lora_weights == "false" ? json(false)
                                                                                                          : json(init_lora_weights);
    } else if (method == "loha" || method == "lokr" || method == "vera" || method == "oft") {
        c["peft_type"] = method == "loha" ? "LOHA" : method == "lokr" ? "LOKR" : method == "vera" ? "VERA" : "OFT";
        set_if_given("--r", "r", r);
        set_if_given("--target_modules", "target_modules", target_modules);
        set_if_given("--layers_to_transform", "layers_to_transform", layers_to_transform);
        if (method == "loha" || method == "lokr") {
            set_if_given("--alpha", "alpha", alpha);
            set_if_given("--rank_dropout", "rank_dropout", rank_dropout);
        }
        if (method != "vera") set_if_given("--module_dropout", "module_dropout", module_dropout);
        if (method == "lokr") {
            set_if_given("--decompose_both", "decompose_both", decompose_both);
            set_if_given("--decompose_factor", "decompose_factor", decompose_factor);
        }
        if (method == "vera") {
            set_if_given("--projection_prng_key", "projection_prng_key", projection_prng_key);
            set_if_given("--save_projection", "save_projection", save_projection);
            set_if_given("--vera_dropout", "vera_dropout", vera_dropout);
            set_if_given("--d_initial", "d_initial", d_initial);
        }
        if (method == "oft") {
            if (cmd.count("--r") && !cmd.count("--oft_block_size")) c["oft_block_size"] = 0;   // r blocks instead
            set_if_given("--oft_block_size", "oft_block_size", oft_block_size);
            set_if_given("--use_cayley_neumann", "use_cayley_neumann", use_cayley_neumann);
            set_if_given("--num_cayley_neumann_terms", "num_cayley_neumann_terms", num_cayley_neumann_terms);
            set_if_given("--block_share", "block_share", block_share);
            set_if_given("--coft", "coft", coft);
            set_if_given("--eps", "eps", eps);
        }
    } else if (method == "ia3") {
        c["peft_type"] = "IA3";
        set_if_given("--target_modules", "target_modules", target_modules);
        set_if_given("--feedforward_modules", "feedforward_modules", feedforward_modules);
    } else if (method == "adapter") {
        c["peft_type"] = "BOTTLENECK";
        set("--placement", "placement", placement);
        set_if_given("--non_linearity", "non_linearity", non_linearity);
        set("--reduction_factor", "reduction_factor", reduction_factor);
        set_if_given("--bottleneck_size", "bottleneck_size", bottleneck_size);
    } else {
        c["peft_type"] = method == "prefix" ? "PREFIX_TUNING" : method == "prompt" ? "PROMPT_TUNING" : "P_TUNING";
        set("--num_virtual_tokens", "num_virtual_tokens", num_virtual_tokens);
        set_if_given("--encoder_hidden_size", "encoder_hidden_size", encoder_hidden_size);
        if (method == "prefix") set("--prefix_projection", "prefix_projection", prefix_projection);
        if (method == "ptuning") {
            set("--encoder_reparameterization_type", "encoder_reparameterization_type", encoder_reparameterization_type);
            set("--encoder_num_layers", "encoder_num_layers", encoder_num_layers);
        }
        if (method == "prompt") {
            set("--prompt_tuning_init", "prompt_tuning_init", prompt_tuning_init);
            set_if_given("--prompt_tuning_init_text", "prompt_tuning_init_text", prompt_tuning_init_text);
            if (c.value("prompt_tuning_init", "") == "TEXT") {
                ENGINE_CHECK(c.contains("prompt_tuning_init_text") && c["prompt_tuning_init_text"].is_string(), ValueError,
                             "--prompt_tuning_init TEXT needs --prompt_tuning_init_text");
                c["prompt_tuning_init_ids"] = tok.encode(c["prompt_tuning_init_text"].get<std::string>());
            }
        }
    }
    return c;
}

std::unique_ptr<Method> MethodFlags::make(const CLI::App& cmd, const Tokenizer& tok, GPT& model, Rng& rng) const {
    WarnContext in_file(method_config.empty() ? "--method " + method : method_config);
    return make_method(to_config(cmd, tok), model, rng);
}
