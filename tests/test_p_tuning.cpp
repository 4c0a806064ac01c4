// tests/test_p_tuning.cpp — P-tuning as a lesson: prompt tuning whose P virtual embeddings come
// out of a small trainable encoder (peft/p_tuning.cpp), read top to bottom.
// Bad configs and adapter files that do not fit: tests/test_hardening_methods.cpp.
#include "peft_helpers.h"

namespace {
json ptuning_config(int64_t P, const std::string& type = "MLP", int64_t h = 8) {
    return {{"peft_type", "P_TUNING"}, {"num_virtual_tokens", P}, {"encoder_reparameterization_type", type},
            {"encoder_hidden_size", h}};
}
}  // namespace

TEST_SUITE("peft") {

TEST_CASE("p-tuning: with P = 0 virtual tokens the model is exactly the base model (MLP and LSTM)") {
    for (std::string type : {"MLP", "LSTM"}) {
        auto model = lesson_model();
        ToyBatch b = lesson_batch();
        std::vector<float> base = logits_of(*model, b.ids);
        Rng rng(1);
        PeftModel pm(*model);
        pm.add("default", make_method(ptuning_config(0, type), *model, rng));
        CHECK(pm.active()->params.count() == 0);
        CHECK(logits_of(*model, b.ids) == base);
    }
}

TEST_CASE("p-tuning: the MLP encoder's parameters, in closed form and under HF's names") {
    auto model = lesson_model();   // C = 16
    Rng rng(2);
    auto m = make_method(ptuning_config(4, "MLP", 8), *model, rng);
    // E: P·C = 64; Linear(16,8): 136; Linear(8,8): 72; Linear(8,16): 144.
    CHECK(m->params.count(true) == 64 + 136 + 72 + 144);
    CHECK(m->expected_params(model->config) == m->params.count(true));
    CHECK(m->params.get("prompt_encoder.embedding.weight").shape() == Shape({4, 16}));
    CHECK(m->params.get("prompt_encoder.mlp_head.0.weight").shape() == Shape({8, 16}));
    CHECK(m->params.get("prompt_encoder.mlp_head.2.bias").shape() == Shape({8}));
    CHECK(m->params.get("prompt_encoder.mlp_head.4.weight").shape() == Shape({16, 8}));
    // encoder_hidden_size defaults to C
    json cfg = ptuning_config(4);
    cfg.erase("encoder_hidden_size");
    auto d = make_method(cfg, *model, rng);
    CHECK(d->params.count(true) == 64 + (16 * 16 + 16) * 3);
    CHECK(d->config_json()["encoder_hidden_size"].get<int64_t>() == 16);
}

TEST_CASE("p-tuning: the LSTM encoder's parameters match torch.nn.LSTM's parameterisation") {
    auto model = lesson_model();
    Rng rng(3);
    auto m = make_method(ptuning_config(4, "LSTM", 8), *model, rng);
    // E 64; LSTM(16 -> 8, 2 layers, bidirectional): 4 · (4·8·(16+8) + 8·8) = 3328
    // (layer 1 reads 2·8 = 16 wide too); mlp_head Linear(16,16) + Linear(16,16): 272 + 272.
    CHECK(m->params.count(true) == 64 + 3328 + 272 + 272);
    CHECK(m->expected_params(model->config) == m->params.count(true));
    CHECK(m->params.get("prompt_encoder.lstm_head.weight_ih_l0").shape() == Shape({32, 16}));
    CHECK(m->params.get("prompt_encoder.lstm_head.bias_hh_l1_reverse").shape() == Shape({32}));
    CHECK(m->params.get("prompt_encoder.mlp_head.2.weight").shape() == Shape({16, 16}));
    json cfg = ptuning_config(4, "LSTM", 8);
    cfg["encoder_num_layers"] = 1;
    CHECK(make_method(cfg, *model, rng)->params.count(true) == 64 + 2 * 832 + 272 + 272);
}

TEST_CASE("p-tuning: the encoder and E get gradients, the base gets none") {
    for (std::string type : {"MLP", "LSTM"}) {
        auto model = lesson_model();
        Rng rng(5);
        PeftModel pm(*model);
        pm.add("default", make_method(ptuning_config(4, type), *model, rng));
        Method& m = *pm.active();
        const int64_t opt0 = mem_stats().cur(Mem::Optimizer);
        AdamW opt(m.params);
        CHECK(mem_stats().cur(Mem::Optimizer) - opt0 == 2 * m.params.count(true) * int64_t(sizeof(float)));
        ToyBatch b = lesson_batch();
        model->loss(b.ids, b.targets).backward();
        for (const Param& p : m.params.all()) CHECK_MESSAGE(p.tensor.has_grad(), p.name << " got no gradient");
        CHECK(base_has_no_grads(*model));
    }
}

TEST_CASE("p-tuning: gradcheck of E and of encoder weights through the whole model") {
    ToyBatch b = lesson_batch();
    GradcheckOptions opt;
    opt.precise = true;
    opt.max_elems = 8;
    SUBCASE("MLP") {
        auto model = lesson_model();
        Rng rng(6);
        PeftModel pm(*model);
        pm.add("default", make_method(ptuning_config(3, "MLP"), *model, rng));
        ParamList& p = pm.active()->params;
        gradcheck("p-tuning mlp", [&](const std::vector<Tensor>&) { return model->forward(b.ids); },
                  {p.get("prompt_encoder.embedding.weight"), p.get("prompt_encoder.mlp_head.2.weight")}, opt);
    }
    SUBCASE("LSTM") {
        auto model = lesson_model();
        Rng rng(7);
        PeftModel pm(*model);
        pm.add("default", make_method(ptuning_config(3, "LSTM", 4), *model, rng));
        ParamList& p = pm.active()->params;
        gradcheck("p-tuning lstm", [&](const std::vector<Tensor>&) { return model->forward(b.ids); },
                  {p.get("prompt_encoder.embedding.weight"), p.get("prompt_encoder.lstm_head.weight_hh_l0_reverse"),
                   p.get("prompt_encoder.mlp_head.0.bias")},
                  opt);
    }
}

TEST_CASE("p-tuning: training lowers the loss and leaves the base weights bit-for-bit unchanged") {
    for (std::string type : {"MLP", "LSTM"}) {
        auto model = lesson_model();
        const uint64_t before = base_checksum(*model);
        Rng rng(8);
        PeftModel pm(*model);
        pm.add("default", make_method(ptuning_config(4, type), *model, rng));
        // A random frozen base leaves a prompt little to steer (see test_prompt_tuning.cpp): the
        // loss can move only a few hundredths, far above float noise (~1e-6) all the same.
        std::vector<float> losses = train_method(*model, *pm.active(), 40, 1e-2f);
        CHECK_MESSAGE(losses.back() < losses.front() - 0.01f, type << ": " << losses.front() << " -> " << losses.back());
        CHECK(base_checksum(*model) == before);
        CHECK(base_has_no_grads(*model));
    }
}

TEST_CASE("p-tuning: the saved file holds encoder(E) only, and loads as prompt tuning with the same logits") {
    for (std::string type : {"MLP", "LSTM"}) {
        auto model = lesson_model();
        Rng rng(9);
        PeftModel pm(*model);
        pm.add("default", make_method(ptuning_config(4, type), *model, rng));
        train_method(*model, *pm.active(), 5);
        ToyBatch b = lesson_batch();
        std::vector<float> trained = logits_of(*model, b.ids);
        NamedTensors state = pm.active()->state();
        REQUIRE(state.size() == 1);
        CHECK(state[0].first == "prompt_embeddings");
        CHECK(state[0].second.shape() == Shape({4, 16}));
        TempDir dir;
        save_adapter(dir.path, *pm.active(), *model);

        auto fresh = lesson_model();
        PeftModel pm2(*fresh);
        pm2.add("default", load_adapter(dir.path, *fresh, rng));
        CHECK(logits_of(*fresh, b.ids) == trained);   // the same rows, so the same bits
        // Folded: no encoder left; the P·C rows are what trains now, as in prompt tuning.
        CHECK(pm2.active()->params.count(true) == 4 * 16);
        CHECK(pm2.active()->expected_params(fresh->config) == 4 * 16);
    }
}

TEST_CASE("p-tuning: with save_encoder the encoder is saved too and loading resumes it") {
    auto model = lesson_model();
    Rng rng(10);
    json cfg = ptuning_config(4, "LSTM", 4);
    cfg["save_encoder"] = true;
    PeftModel pm(*model);
    pm.add("default", make_method(cfg, *model, rng));
    train_method(*model, *pm.active(), 3);
    ToyBatch b = lesson_batch();
    std::vector<float> trained = logits_of(*model, b.ids);
    CHECK(pm.active()->state().size() == 1 + pm.active()->params.size());
    TempDir dir;
    save_adapter(dir.path, *pm.active(), *model);

    auto fresh = lesson_model();
    PeftModel pm2(*fresh);
    pm2.add("default", load_adapter(dir.path, *fresh, rng));
    Method& m2 = *pm2.active();
    CHECK(m2.params.count(true) == pm.active()->params.count(true));
    for (const Param& p : pm.active()->params.all())
        CHECK_MESSAGE(m2.params.get(p.name).to_vector() == p.tensor.to_vector(), p.name);
    CHECK(logits_of(*fresh, b.ids) == trained);
    train_method(*fresh, m2, 2);   // and it trains on
}

}  // TEST_SUITE
