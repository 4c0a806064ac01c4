// peft/methods.cpp — the method factory: peft_type -> the method's own make_*.
#include "methods.h"

std::unique_ptr<Method> make_method(const json& config, GPT& model, Rng& rng) {
    ENGINE_CHECK(config.is_object(), ValueError, "adapter config must be a JSON object");
    ENGINE_CHECK(config.contains("peft_type") && config["peft_type"].is_string(), ValueError,
                 "adapter config has no 'peft_type' string");
    const std::string t = config["peft_type"].get<std::string>();
    if (t == "LORA") return make_lora(config, model, rng);
    if (t == "IA3") return make_ia3(config, model, rng);
    if (t == "BOTTLENECK") return make_bottleneck(config, model, rng);
    if (t == "PREFIX_TUNING") return make_prefix_tuning(config, model, rng);
    if (t == "PROMPT_TUNING") return make_prompt_tuning(config, model, rng);
    if (t == "P_TUNING") return make_p_tuning(config, model, rng);
    if (t == "LOHA") return make_loha(config, model, rng);
    if (t == "LOKR") return make_lokr(config, model, rng);
    if (t == "VERA") return make_vera(config, model, rng);
    if (t == "OFT") return make_oft(config, model, rng);
    throw ValueError(fmt::format("unknown peft_type '{}'; supported: LORA, IA3, BOTTLENECK, PREFIX_TUNING, "
                                 "PROMPT_TUNING, P_TUNING, LOHA, LOKR, VERA, OFT", t));
}
