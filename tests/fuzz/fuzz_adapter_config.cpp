// tests/fuzz/fuzz_adapter_config.cpp — libFuzzer target: arbitrary bytes as adapter_config.json,
// parsed and handed to the method factory on a tiny model. Only the project's Error types may
// come out (a bad value is a ValueError naming the field).
#include <cstdint>
#include <string>
#include "peft/peft.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    set_warn_sink([](const std::string&) {});   // unknown keys are the rule here, not news
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    json cfg = json::parse(std::string(reinterpret_cast<const char*>(data), size), nullptr, false);
    if (cfg.is_discarded()) return 0;
    GPTConfig c;
    c.n_layer = 1; c.n_head = 2; c.n_embd = 8; c.block_size = 8; c.vocab_size = 5;
    Rng rng(1);
    GPT model(c, rng);
    try {
        std::unique_ptr<Method> m = make_method(cfg, model, rng);
        PeftModel peft(model);
        peft.add("fuzz", std::move(m));
        NoGradGuard ng;
        model.forward(Tensor::from_ints({1, 2}, {1, 2}));
    } catch (const Error&) {
    }
    return 0;
}
