// tests/test_method_contract.cpp — what every PEFT method promises, checked for each one.
//
// A new method joins by adding one row to kMethods (its name and an adapter_config.json).
// The contract, for every row:
//   1. training changes no base parameter: the base's checksum is the same bit for bit;
//   2. no base parameter gets a gradient buffer (or even asks for one);
//   3. the optimizer holds exactly two float moments (AdamW's m and v) per trainable number of
//      the method, nothing for the base;
//   4. save → load into a fresh copy of the base → the same logits, bit for bit.
// Each method's own lesson (its formula, init, parameter count, merge) is its own test file.
#include "peft_helpers.h"

namespace {

constexpr int kTrainSteps = 2;
constexpr int64_t kMomentsPerNumber = 2;   // AdamW keeps m and v
constexpr int64_t kBytesPerFloat = 4;

struct MethodRow {
    const char* name;
    json config;
};

const std::vector<MethodRow>& methods() {
    static const std::vector<MethodRow> rows = {
        {"lora", {{"peft_type", "LORA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}}}},
        {"ia3", {{"peft_type", "IA3"}, {"target_modules", {"k_proj", "v_proj", "fc_out"}},
                 {"feedforward_modules", {"fc_out"}}}},
        {"adapter-houlsby", {{"peft_type", "BOTTLENECK"}, {"placement", "houlsby"}, {"bottleneck_size", 4}}},
        {"adapter-pfeiffer", {{"peft_type", "BOTTLENECK"}, {"placement", "pfeiffer"}, {"bottleneck_size", 4}}},
        {"prefix", {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 4}}},
        {"prefix-projection", {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 4}, {"prefix_projection", true}}},
        {"prompt", {{"peft_type", "PROMPT_TUNING"}, {"num_virtual_tokens", 4}}},
        {"ptuning-mlp", {{"peft_type", "P_TUNING"}, {"num_virtual_tokens", 4}, {"encoder_hidden_size", 8}}},
        {"ptuning-lstm", {{"peft_type", "P_TUNING"}, {"num_virtual_tokens", 4}, {"encoder_hidden_size", 8},
                          {"encoder_reparameterization_type", "LSTM"}}},
        // The LoRA family. (PiSSA / OLoRA are not here: they put the residual W − s·BA into the
        // base while active, by design; tests/test_lora_init.cpp checks that deactivating restores W.)
        {"dora", {{"peft_type", "LORA"}, {"r", 4}, {"use_dora", true}}},
        {"loha", {{"peft_type", "LOHA"}, {"r", 2}}},
        {"lokr", {{"peft_type", "LOKR"}, {"r", 1}, {"decompose_both", true}}},
        {"vera", {{"peft_type", "VERA"}, {"r", 8}}},
        {"vera-regenerated", {{"peft_type", "VERA"}, {"r", 8}, {"save_projection", false}}},
        {"oft", {{"peft_type", "OFT"}, {"oft_block_size", 4}}},
        {"oft-cayley", {{"peft_type", "OFT"}, {"r", 2}, {"oft_block_size", 0}, {"use_cayley_neumann", false}}},
    };
    return rows;
}

}  // namespace

TEST_SUITE("peft") {

TEST_CASE("method contract: every method leaves the base untouched, ungraded, unoptimized, and saves what it loads") {
    for (const MethodRow& row : methods()) {
        CAPTURE(row.name);
        auto m = lesson_model();
        Rng rng(3);
        const uint64_t base_before = base_checksum(*m);
        PeftModel pm(*m);
        pm.add("default", make_method(row.config, *m, rng));
        Method& method = *pm.active();

        const int64_t optimizer_before = mem_stats().cur(Mem::Optimizer);
        {
            AdamWConfig oc;
            oc.lr = 1e-2f;
            AdamW opt(method.params, oc);
            method.training = true;
            ToyBatch b = lesson_batch();
            for (int s = 0; s < kTrainSteps; s++) {
                opt.zero_grad();
                method.begin_forward();
                m->loss(b.ids, b.targets, true).backward();
                CHECK(base_has_no_grads(*m));                                             // 2
                opt.step();
            }
            method.training = false;
            CHECK(mem_stats().cur(Mem::Optimizer) - optimizer_before ==                    // 3
                  kMomentsPerNumber * kBytesPerFloat * method.params.count(true));
        }
        CHECK(base_checksum(*m) == base_before);                                          // 1
        CHECK(method.params.count(true) == method.expected_params(m->config));

        TempDir dir;                                                                      // 4
        save_adapter(dir.path, method, *m);
        const std::vector<float> trained = logits_of(*m);
        auto fresh = lesson_model();
        PeftModel loaded(*fresh);
        loaded.add("default", load_adapter(dir.path, *fresh, rng));
        CHECK(logits_of(*fresh) == trained);
    }
}

}  // TEST_SUITE
