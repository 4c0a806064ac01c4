// tests/test_kv_cache.cpp — generation with a key/value cache gives what the plain path gives:
// the same logits step by step, the same tokens at temperature 0, with every kind of method
// seam (LoRA/IA³ on the Linears, adapters on the block outputs, prefix rows, virtual tokens).
#include "hf_helpers.h"

TEST_SUITE("kv_cache") {

// decode() of a prompt then of single tokens, against forward() of the whole sequence so far.
static void check_decode_matches_forward(GPT& m) {
    std::vector<int32_t> seq = {3, 1, 4, 1, 5};
    KVCache cache;
    std::vector<float> got = m.decode(seq, cache);
    for (int32_t next : {9, 2, 6, 5}) {
        std::vector<float> full = logits_of(m, Tensor::from_ints(seq, {1, int64_t(seq.size())}));
        std::vector<double> last(full.end() - m.config.vocab_size, full.end());
        std::string why;
        CHECK_MESSAGE(allclose(got, last, 1e-5, 1e-5, &why), "after " << seq.size() << " tokens: " << why);
        seq.push_back(next);
        got = m.decode({next}, cache);
    }
    CHECK(cache.len == int64_t(seq.size()) + (m.hooks ? m.hooks->n_prefix() + m.hooks->n_virtual() : 0));
}

static void check_same_greedy_tokens(GPT& m, int64_t max_new) {
    Rng a(1), b(1);
    const std::vector<int32_t> prompt = {2, 7, 1};
    CHECK(m.generate(prompt, max_new, 0.f, 0, a, true) == m.generate(prompt, max_new, 0.f, 0, b, false));
}

TEST_CASE("kv_cache: decode equals the full forward, both layouts") {
    auto g = lesson_model(1);
    check_decode_matches_forward(*g);
    auto h = hf::tiny_model(2);
    check_decode_matches_forward(*h);
}

TEST_CASE("kv_cache: greedy generation gives the same tokens as the uncached path, past the window too") {
    auto h = hf::tiny_model(3);
    check_same_greedy_tokens(*h, 12);
    check_same_greedy_tokens(*h, 30);   // block_size 24: the cache stops, the plain path slides on
    auto g = lesson_model(4);
    check_same_greedy_tokens(*g, 10);
}

TEST_CASE("kv_cache: sampling with a seed draws the same tokens with and without the cache") {
    auto h = hf::tiny_model(5);
    Rng a(7), b(7);
    CHECK(h->generate({1, 2}, 15, 0.9f, 5, a, true) == h->generate({1, 2}, 15, 0.9f, 5, b, false));
}

TEST_CASE("kv_cache: every method's seam applies per token in the cache") {
    const std::vector<json> configs = {
        {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"lora_dropout", 0.1}, {"target_modules", {"c_attn", "c_fc"}}},
        {{"peft_type", "IA3"}},
        {{"peft_type", "BOTTLENECK"}, {"bottleneck_size", 4}},
        {{"peft_type", "PREFIX_TUNING"}, {"num_virtual_tokens", 3}},
        {{"peft_type", "PROMPT_TUNING"}, {"num_virtual_tokens", 3}},
        {{"peft_type", "P_TUNING"}, {"num_virtual_tokens", 2}, {"encoder_hidden_size", 8}},
    };
    for (const json& c : configs) {
        CAPTURE(c.dump());
        auto h = hf::tiny_model(6);
        Rng rng(8);
        PeftModel pm(*h);
        pm.add("a", make_method(c, *h, rng));
        train_method(*h, *pm.active(), 3, 5e-2f);   // moves every method away from its identity init
        pm.active()->begin_forward();
        check_decode_matches_forward(*h);
        check_same_greedy_tokens(*h, 8);
    }
}

}  // TEST_SUITE
