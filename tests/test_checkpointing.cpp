// tests/test_checkpointing.cpp — gradient checkpointing: the same gradients, bit for bit, for full
// fine-tuning and every method (dropout on, so the masks must be replayed), less memory kept.
#include "peft_helpers.h"
#include "engine/memory.h"
#include "engine/profile_hook.h"

TEST_SUITE("checkpointing") {

struct StepResult {
    float loss;
    std::vector<std::vector<float>> grads;   // every trainable tensor's gradient
    uint64_t rng_after;                      // the dropout stream after the step
    int64_t peak_saved;
};

// One forward + backward of a fresh dropout-0.1 model (+ method), checkpointing on or off.
static StepResult step(const json* method_config, bool checkpointing) {
    GPTConfig c = lesson_config();
    c.dropout = 0.1f;
    Rng rng(7);
    GPT m(c, rng);
    m.dropout_rng.reseed(11);
    m.gradient_checkpointing = checkpointing;
    PeftModel pm(m);
    Method* method = nullptr;
    std::vector<Tensor> trainable;
    if (method_config) {
        Rng mrng(3);
        pm.add("default", make_method(*method_config, m, mrng));
        method = pm.active();
        method->training = true;
        for (const Param& p : method->params.all()) {   // start away from the identity so every path carries signal
            for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] += float(mrng.normal() * 0.05);
            trainable.push_back(p.tensor);
        }
        method->begin_forward();
    } else {
        for (const Param& p : m.params.all()) trainable.push_back(p.tensor);   // registered trainable
    }
    ToyBatch b = lesson_batch();
    mem_reset_peak();
    const int64_t saved0 = mem_stats().cur(Mem::Saved);
    Tensor loss = m.loss(b.ids, b.targets, true);
    loss.backward();
    StepResult r{loss.item(), {}, m.dropout_rng.next_u64(), mem_stats().pk(Mem::Saved) - saved0};
    for (Tensor& t : trainable) r.grads.push_back(t.has_grad() ? t.grad().to_vector() : std::vector<float>());
    return r;
}

static void check_same(const json* config, const char* what) {
    const StepResult plain = step(config, false), ckpt = step(config, true);
    CHECK_MESSAGE(plain.loss == ckpt.loss, what);
    CHECK_MESSAGE(plain.rng_after == ckpt.rng_after, what << ": the replay moved the dropout stream");
    REQUIRE(plain.grads.size() == ckpt.grads.size());
    for (size_t i = 0; i < plain.grads.size(); i++) {
        CHECK_MESSAGE(!plain.grads[i].empty(), what << ": tensor " << i << " got no gradient");
        CHECK_MESSAGE(plain.grads[i] == ckpt.grads[i], what << ": gradient of tensor " << i << " differs");
    }
}

TEST_CASE("checkpointing: full fine-tuning gets bit-identical gradients with dropout") {
    check_same(nullptr, "full");
}

TEST_CASE("checkpointing: every method gets bit-identical gradients with dropout") {
    const json configs[] = {
        {{"peft_type", "LORA"}, {"r", 4}, {"lora_dropout", 0.2}, {"target_modules", {"q_proj", "v_proj", "fc_in"}}},
        {{"peft_type", "IA3"}},
        {{"peft_type", "BOTTLENECK"}, {"bottleneck_size", 4}},
        {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 3}, {"prefix_projection", true}},
        {{"peft_type", "PROMPT_TUNING"}, {"num_virtual_tokens", 3}},
        {{"peft_type", "P_TUNING"}, {"num_virtual_tokens", 3}},
    };
    for (const json& c : configs) {
        INFO(c.dump());
        check_same(&c, c["peft_type"].get<std::string>().c_str());
    }
}

TEST_CASE("checkpointing: the activations kept for backward shrink to the blocks' inputs") {
    const json lora = {{"peft_type", "LORA"}, {"r", 4}};
    const StepResult plain = step(&lora, false), ckpt = step(&lora, true);
    CHECK(ckpt.peak_saved < plain.peak_saved / 2);
}

// Counts the ops an engine call records (forward work, replays included), by name.
struct OpCounter : ProfileHook {
    std::map<std::string, int> forward;
    void op(const char* name, Phase phase) override {
        if (phase == Forward) forward[name]++;
    }
    void gemm_flop(double) override {}
};

static std::map<std::string, int> ops_of_step(const json& config, bool checkpointing) {
    OpCounter counter;
    profile_hook = &counter;
    step(&config, checkpointing);
    profile_hook = nullptr;
    return counter.forward;
}

TEST_CASE("checkpointing: backward replays each block but the frozen, unwrapped fc_out, whose output it never reads") {
    const int64_t L = lesson_config().n_layer;
    // LoRA on q and v: k, o, fc_in and fc_out are plain frozen Linears; the replay runs k, o and fc_in.
    const json lora = {{"peft_type", "LORA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}}};
    const auto plain = ops_of_step(lora, false), ckpt = ops_of_step(lora, true);
    CHECK(plain.at("linear") == 4 * L);   // (the LM head is linear_cross_entropy's)
    CHECK(ckpt.at("linear") - plain.at("linear") == 3 * L);
    CHECK(ckpt.at("gelu") - plain.at("gelu") == L);
    // IA3 wraps fc_out (its feed-forward scaling): then the whole MLP runs again, fc_out included.
    const json ia3 = {{"peft_type", "IA3"}};
    const auto ia3_plain = ops_of_step(ia3, false), ia3_ckpt = ops_of_step(ia3, true);
    CHECK(ia3_plain.at("linear") == 6 * L);
    CHECK(ia3_ckpt.at("linear") - ia3_plain.at("linear") == 6 * L);
}

TEST_CASE("checkpointing: off in evaluation and without grad mode: the same logits") {
    auto m = lesson_model();
    const std::vector<float> before = logits_of(*m);
    m->gradient_checkpointing = true;
    CHECK(logits_of(*m) == before);
}

}  // TEST_SUITE
