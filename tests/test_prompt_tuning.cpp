// tests/test_prompt_tuning.cpp — prompt tuning as a lesson: P learned embeddings in front of
// the tokens (peft/prompt_tuning.cpp), read top to bottom.
// Bad configs and adapter files that do not fit: tests/test_hardening_methods.cpp.
#include <algorithm>
#include "peft_helpers.h"

static json prompt_config(int64_t P, const std::string& init = "RANDOM") {
    return {{"peft_type", "PROMPT_TUNING"}, {"num_virtual_tokens", P}, {"prompt_tuning_init", init}};
}

TEST_SUITE("peft") {

TEST_CASE("prompt tuning: with P = 0 virtual tokens the model is exactly the base model") {
    auto model = lesson_model();
    ToyBatch b = lesson_batch();
    std::vector<float> base = logits_of(*model, b.ids);
    Rng rng(1);
    PeftModel pm(*model);
    pm.add("default", make_method(prompt_config(0), *model, rng));
    CHECK(pm.active()->params.count() == 0);
    CHECK(logits_of(*model, b.ids) == base);   // no seam runs: bitwise the same
}

TEST_CASE("prompt tuning: the only trainable tensor is prompt_embeddings, P·C numbers") {
    auto model = lesson_model();
    Rng rng(2);
    auto m = make_method(prompt_config(4), *model, rng);
    CHECK(m->params.size() == 1);
    CHECK(m->params.get("prompt_embeddings").shape() == Shape({4, 16}));
    CHECK(m->params.count(true) == 4 * 16);
    CHECK(m->expected_params(model->config) == 4 * 16);
    CHECK(model->params.count(true) == 0);   // the base is frozen
}

TEST_CASE("prompt tuning: RANDOM init is N(0, 1), as HF's torch.nn.Embedding") {
    auto model = lesson_model();
    Rng rng(3);
    auto m = make_method(prompt_config(12), *model, rng);
    double s = 0, s2 = 0;
    std::vector<float> e = m->params.get("prompt_embeddings").to_vector();
    for (float v : e) { s += v; s2 += double(v) * v; }
    const double mean = s / double(e.size()), var = s2 / double(e.size()) - mean * mean;
    CHECK(std::fabs(mean) < 0.2);
    CHECK(std::fabs(var - 1.0) < 0.25);
}

TEST_CASE("prompt tuning: SAMPLE_VOCAB init copies rows of the token embedding") {
    auto model = lesson_model();
    Rng rng(4);
    auto m = make_method(prompt_config(6, "SAMPLE_VOCAB"), *model, rng);
    const Tensor& E = m->params.get("prompt_embeddings");
    const float* wte = model->wte.weight.data();
    for (int64_t p = 0; p < 6; p++) {
        bool found = false;
        for (int64_t v = 0; v < model->config.vocab_size && !found; v++)
            found = std::equal(E.data() + p * 16, E.data() + (p + 1) * 16, wte + v * 16);
        CHECK_MESSAGE(found, "row " << p << " is not a row of wte");
    }
}

TEST_CASE("prompt tuning: TEXT init is the text's wte rows, and acts like prepending the text") {
    // With E = wte rows of the text, [E ; wte(ids)] is exactly wte([text ; ids]): the prompted
    // model on ids gives the base model's logits on text + ids, at the real positions.
    // This is also why the loss ignores the virtual positions: logits come only for real tokens.
    auto model = lesson_model();
    const std::vector<int32_t> text = {7, 2, 11};   // P = 5 cycles it: 7 2 11 7 2
    json cfg = prompt_config(5, "TEXT");
    cfg["prompt_tuning_init_text"] = "a text of three tokens";
    cfg["prompt_tuning_init_ids"] = text;
    ToyBatch b = lesson_batch();   // B = 2, T = 8

    std::vector<int32_t> joined;   // the base model's input: text then ids, for each sequence
    for (int64_t s = 0; s < 2; s++) {
        for (int32_t t : {7, 2, 11, 7, 2}) joined.push_back(t);
        for (int64_t t = 0; t < 8; t++) joined.push_back(b.ids.idata()[s * 8 + t]);
    }
    std::vector<float> full = logits_of(*model, Tensor::from_ints(joined, {2, 13}));

    Rng rng(5);
    PeftModel pm(*model);
    pm.add("default", make_method(cfg, *model, rng));
    const Tensor& E = pm.active()->params.get("prompt_embeddings");
    for (int64_t p = 0; p < 5; p++) {
        const float* row = model->wte.weight.data() + text[size_t(p % 3)] * 16;
        CHECK(std::equal(row, row + 16, E.data() + p * 16));
    }
    Tensor logits;
    {
        NoGradGuard no_grad;
        logits = model->forward(b.ids);
    }
    CHECK(logits.shape() == Shape({2, 8, 13}));   // (B, T, V): the virtual positions are gone
    std::vector<double> expect;
    for (int64_t s = 0; s < 2; s++)
        for (int64_t i = 5 * 13; i < 13 * 13; i++) expect.push_back(full[size_t(s * 13 * 13 + i)]);
    std::string why;
    CHECK_MESSAGE(allclose(logits.to_vector(), expect, 1e-5, 1e-5, &why), why);
    // The loss pairs logits[t] with targets[t] of the real tokens.
    NoGradGuard no_grad;
    CHECK(model->loss(b.ids, b.targets).item() == cross_entropy(logits, b.targets).item());
}

TEST_CASE("prompt tuning: TEXT without token ids explains what to pass") {
    auto model = lesson_model();
    Rng rng(6);
    json cfg = prompt_config(4, "TEXT");
    cfg["prompt_tuning_init_text"] = "hello";
    CHECK_THROWS_WITH_AS(make_method(cfg, *model, rng), doctest::Contains("\"prompt_tuning_init_ids\""), ValueError);
    CHECK(model->params.count(true) == model->params.count());   // nothing frozen on error
}

TEST_CASE("prompt tuning: P + T longer than block_size is a ShapeError") {
    auto model = lesson_model();   // block_size 16
    Rng rng(8);
    PeftModel pm(*model);
    pm.add("default", make_method(prompt_config(9), *model, rng));
    ToyBatch b = lesson_batch();   // T = 8, 9 + 8 > 16
    CHECK_THROWS_WITH_AS(model->forward(b.ids), doctest::Contains("plus 9 virtual tokens is longer than block_size 16"),
                         ShapeError);
    CHECK(model->forward(Tensor::from_ints({1, 2, 3, 4, 5, 6, 7}, {1, 7})).shape() == Shape({1, 7, 13}));
}

TEST_CASE("prompt tuning: only the prompt gets a gradient, and only it gets optimizer state") {
    auto model = lesson_model();
    Rng rng(9);
    PeftModel pm(*model);
    pm.add("default", make_method(prompt_config(4), *model, rng));
    Method& m = *pm.active();
    const int64_t opt0 = mem_stats().cur(Mem::Optimizer);
    AdamW opt(m.params);
    CHECK(mem_stats().cur(Mem::Optimizer) - opt0 == 2 * 4 * 16 * int64_t(sizeof(float)));
    ToyBatch b = lesson_batch();
    model->loss(b.ids, b.targets).backward();
    CHECK(m.params.get("prompt_embeddings").has_grad());
    CHECK(base_has_no_grads(*model));
}

TEST_CASE("prompt tuning: gradcheck of the prompt through the whole model") {
    auto model = lesson_model();
    Rng rng(10);
    PeftModel pm(*model);
    pm.add("default", make_method(prompt_config(3), *model, rng));
    ToyBatch b = lesson_batch();
    GradcheckOptions opt;
    opt.precise = true;
    opt.max_elems = 12;
    gradcheck("prompt_embeddings", [&](const std::vector<Tensor>&) { return model->forward(b.ids); },
              {pm.active()->params.get("prompt_embeddings")}, opt);
}

TEST_CASE("prompt tuning: training lowers the loss and leaves the base weights bit-for-bit unchanged") {
    auto model = lesson_model();
    const uint64_t before = base_checksum(*model);
    Rng rng(11);
    PeftModel pm(*model);
    pm.add("default", make_method(prompt_config(4, "SAMPLE_VOCAB"), *model, rng));
    // The base is random and frozen, with the LM head tied to wte ~ N(0, 0.02): its logits are
    // nearly flat whatever the prompt does, so the loss can only move from about ln 13 = 2.565
    // by a few hundredths. Falling by 0.01 is still far above float noise (~1e-6).
    std::vector<float> losses = train_method(*model, *pm.active(), 40, 3e-2f);
    CHECK_MESSAGE(losses.back() < losses.front() - 0.01f, losses.front() << " -> " << losses.back());
    CHECK(base_checksum(*model) == before);
    CHECK(base_has_no_grads(*model));
}

TEST_CASE("prompt tuning: save then load into a fresh base gives identical logits") {
    auto model = lesson_model();
    Rng rng(12);
    PeftModel pm(*model);
    pm.add("default", make_method(prompt_config(4), *model, rng));
    train_method(*model, *pm.active(), 5);
    ToyBatch b = lesson_batch();
    std::vector<float> trained = logits_of(*model, b.ids);
    TempDir dir;
    save_adapter(dir.path, *pm.active(), *model);

    auto fresh = lesson_model();
    PeftModel pm2(*fresh);
    pm2.add("default", load_adapter(dir.path, *fresh, rng));
    CHECK(logits_of(*fresh, b.ids) == trained);
    CHECK(pm2.active()->config_json()["num_virtual_tokens"].get<int64_t>() == 4);
}

}  // TEST_SUITE
