// tests/test_method_contract.cpp — what every PEFT method promises, checked for each one.
//
// A new method joins by adding one row to method_rows() (tests/peft_helpers.h: its name and an
// adapter_config.json).
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

}  // namespace

TEST_SUITE("peft") {

TEST_CASE("method contract: every method leaves the base untouched, ungraded, unoptimized, and saves what it loads") {
    for (const MethodRow& row : method_rows()) {
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
