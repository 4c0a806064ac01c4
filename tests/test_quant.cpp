// tests/test_quant.cpp — the quantised frozen base (engine/quant.h) as a lesson: fp16 scales, the
// q8_0 / q4_0 / nf4 block layouts, each format's error bound, quant_linear against linear() on the
// dequantised weight, and every PEFT method training over a quantised GPT.
#include <cmath>
#include <cstring>
#include "peft_helpers.h"
#include "engine/half.h"
#include "engine/memory.h"
#include "engine/quant.h"
#include "engine/reference_ops.h"
#include "peft/mixed.h"

TEST_SUITE("quant") {

static const QType kTypes[] = {QType::Q8_0, QType::Q4_0, QType::NF4};

static std::vector<double> dbl(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Normal values with an outlier every 37 (the values that set the scales) and one exact zero block.
static Tensor weights(Rng& rng, int64_t rows, int64_t cols) {
    Tensor W = Tensor::randn({rows, cols}, rng, 0.02f);
    for (int64_t i = 0; i < W.numel(); i += 37) W.data()[i] *= 20.f;
    std::fill(W.data(), W.data() + 64, 0.f);
    return W;
}

// The lesson GPT made wide enough for 64-value blocks.
static GPTConfig quant_config() {
    GPTConfig c = lesson_config();
    c.n_embd = 64;
    return c;
}

TEST_CASE("quant: fp16 conversion rounds to nearest even, as the compiler's _Float16 does") {
    Rng rng(1);
    std::vector<float> xs = {0.f, -0.f, 1.f, 65504.f, 65519.f, 65520.f, 1e9f, 5.96e-8f, 2.98e-8f, 2.99e-8f, 1e-10f,
                             6.1e-5f, 1.0009765625f, 1.00048828125f, 1.00146484375f, INFINITY, -INFINITY};
    for (int i = 0; i < 20000; i++) xs.push_back(float(rng.normal()) * std::ldexp(1.f, int(rng.below(50)) - 30));
    for (float x : xs) {
        const _Float16 h = static_cast<_Float16>(x);
        uint16_t bits;
        std::memcpy(&bits, &h, 2);
        CHECK_MESSAGE(float_to_half(x) == bits, x);
        CHECK(half_to_float(bits) == static_cast<float>(h));
    }
    CHECK(std::isnan(half_to_float(float_to_half(NAN))));
}

TEST_CASE("quant: every value is within its format's bound of its block's scale; stored bytes are counted") {
    Rng rng(2);
    const Tensor W = weights(rng, 8, 128);
    const std::array<float, 16>& L = nf4_levels();
    double widest = 0;
    for (int i = 1; i < 16; i++) widest = std::max(widest, double(L[size_t(i)] - L[size_t(i - 1)]));
    CHECK(widest == doctest::Approx(1 - 0.6961928).epsilon(1e-6));   // −1 to the next level
    for (QType t : kTypes) {
        CAPTURE(std::string(qtype_name(t)));
        const int64_t q0 = mem_stats().cur(Mem::Quantized);
        const QWeight q = QWeight::quantize(W, t, "W");
        CHECK(q.nbytes() == size_t(W.numel() / qblock_values(t) * qblock_bytes(t)));
        CHECK(mem_stats().cur(Mem::Quantized) - q0 == int64_t(q.nbytes()));
        const Tensor D = q.dequantize();
        const int64_t n = qblock_values(t);
        for (int64_t b = 0; b < W.numel() / n; b++) {
            const float *x = W.data() + b * n, *y = D.data() + b * n;
            double amax = 0;
            for (int64_t j = 0; j < n; j++) amax = std::max(amax, std::fabs(double(x[j])));
            // q8_0: d/2, d = amax/127. q4_0: |d| = amax/8 (the clamped end). nf4: amax · widest/2.
            // q8_0 and q4_0 round d to fp16: up to 2⁻¹¹ of amax more.
            const double bound = t == QType::Q8_0 ? amax / 127 / 2 + amax * 0x1p-11
                               : t == QType::Q4_0 ? amax / 8 + amax * 0x1p-11
                                                  : amax * widest / 2;
            for (int64_t j = 0; j < n; j++)
                CHECK_MESSAGE(std::fabs(double(x[j]) - y[j]) <= bound * (1 + 1e-6),
                              "block " << b << " value " << j << ": " << x[j] << " -> " << y[j]);
        }
        CHECK(std::all_of(D.data(), D.data() + 64, [](float v) { return v == 0.f; }));   // a zero block stays zero
    }
    CHECK(mem_stats().cur(Mem::Quantized) == 0);
}

TEST_CASE("quant: q4_0 is ggml's block: an fp16 scale, elements 0–15 in the low nibbles, 16–31 in the high ones") {
    std::vector<float> x(32);
    for (int j = 0; j < 16; j++) {
        x[size_t(j)] = float(j - 8);        // q = j:      the low nibble of byte j
        x[size_t(j + 16)] = float(7 - j);   // q = 15 − j: the high nibble of byte j
    }
    const QWeight q = QWeight::quantize(Tensor::from(x, {1, 32}), QType::Q4_0, "x");
    const uint8_t* b = static_cast<const uint8_t*>(q.blocks->data());
    uint16_t d;
    std::memcpy(&d, b, 2);
    CHECK(d == 0x3C00);   // the largest magnitude is x[0] = −8: d = −8 / −8 = 1, fp16 0x3C00
    for (int j = 0; j < 16; j++) CHECK(int(b[2 + j]) == (j | (15 - j) << 4));
    CHECK(q.dequantize().to_vector() == x);   // integers times 1: exact
}

TEST_CASE("quant: q8_0 is ggml's block (fp16 d = amax/127, then int8 values); nf4 packs element 2i high") {
    std::vector<float> x(32);
    for (int j = 0; j < 32; j++) x[size_t(j)] = float(j - 16) / 16 * 127;   // amax 127 at j = 0: d = 1
    const QWeight q8 = QWeight::quantize(Tensor::from(x, {1, 32}), QType::Q8_0, "x");
    const uint8_t* b = static_cast<const uint8_t*>(q8.blocks->data());
    uint16_t d;
    std::memcpy(&d, b, 2);
    CHECK(d == 0x3C00);
    for (int j = 0; j < 32; j++) CHECK(int(int8_t(b[2 + j])) == int(std::lround(x[size_t(j)])));

    const std::array<float, 16>& L = nf4_levels();
    std::vector<float> y(64);
    for (int i = 0; i < 64; i++) y[size_t(i)] = 0.5f * L[size_t((i * 7) % 16)];   // every level, absmax 0.5
    const QWeight q4 = QWeight::quantize(Tensor::from(y, {1, 64}), QType::NF4, "y");
    const uint8_t* c = static_cast<const uint8_t*>(q4.blocks->data());
    float a;
    std::memcpy(&a, c, 4);
    CHECK(a == 0.5f);   // an fp32 absmax
    for (int i = 0; i < 32; i++) CHECK(int(c[4 + i]) == (((2 * i * 7) % 16) << 4 | ((2 * i + 1) * 7) % 16));
    CHECK(q4.dequantize().to_vector() == y);
}

// Φ⁻¹(p) by bisection on Φ(x) = erfc(−x/√2)/2.
static double normal_ppf(double p) {
    double lo = -10, hi = 10;
    for (int i = 0; i < 200; i++) {
        const double mid = (lo + hi) / 2;
        (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
    }
    return (lo + hi) / 2;
}

TEST_CASE("quant: the nf4 levels are QLoRA's: N(0,1) quantiles at 8 positive and 7 negative steps, 0, scaled to ±1") {
    // QLoRA's create_normal_map(offset = 0.9677083): Φ⁻¹ of 8 points from offset down to 1/2 (1/2
    // left out) for the positive levels, of 7 for the negative ones, and 0; divided by the largest.
    const double offset = 0.9677083;
    std::vector<double> v = {0};
    for (int i = 0; i < 8; i++) v.push_back(normal_ppf(offset + (0.5 - offset) * i / 8));
    for (int i = 0; i < 7; i++) v.push_back(-normal_ppf(offset + (0.5 - offset) * i / 7));
    std::sort(v.begin(), v.end());
    for (size_t i = 0; i < 16; i++) CHECK(nf4_levels()[i] == doctest::Approx(v[i] / v[15]).epsilon(1e-6));
}

TEST_CASE("quant: quant_linear equals linear on the dequantised weight (forward, dx, db); the plain version too") {
    Rng rng(3);
    // 4096 columns: for x of few rows, panels of 64 rows, so 70 rows make a full panel and a ragged
    // one; for x of 64 rows or more, one panel of all 70
    for (QType t : kTypes) {
        CAPTURE(std::string(qtype_name(t)));
        const QWeight q = QWeight::quantize(weights(rng, 70, 4096), t, "W");
        const Tensor D = q.dequantize();
        for (const Shape& xs : {Shape{3, 5, 4096}, Shape{1, 4096}, Shape{4, 16, 4096}}) {   // few rows, one (sgemv), many
            Tensor x = Tensor::randn(xs, rng).set_requires_grad(true), b = param({70}, rng);
            const Tensor Rx = Tensor::randn(xs.with_back(70), rng);
            auto run = [&](auto op) {
                x.zero_grad();
                b.zero_grad();
                const Tensor y = op();
                projection_loss(y, Rx).backward();
                return std::array<std::vector<float>, 3>{y.to_vector(), x.grad().to_vector(), b.grad().to_vector()};
            };
            const auto fast = run([&] { return quant_linear(x, q, b); });
            const auto plain = run([&] { return reference::quant_linear(x, q, b); });
            const auto dense = run([&] { return linear(x, D, b); });
            for (int k = 0; k < 3; k++) {
                std::string why;
                CHECK_MESSAGE(allclose(fast[size_t(k)], dbl(dense[size_t(k)]), 1e-5, 1e-5, &why), k << ": " << why);
                CHECK_MESSAGE(allclose(plain[size_t(k)], dbl(dense[size_t(k)]), 1e-5, 1e-5, &why), k << ": " << why);
            }
        }
    }
}

TEST_CASE("quant: quant_linear passes gradcheck in x and b, keeps no activation and makes no weight gradient") {
    Rng rng(4);
    for (QType t : kTypes) {
        CAPTURE(std::string(qtype_name(t)));
        const QWeight q = QWeight::quantize(weights(rng, 24, 64), t, "W");
        GradcheckOptions opt;
        opt.precise = true;
        gradcheck("quant_linear", [&](const std::vector<Tensor>& in) { return quant_linear(in[0], q, in[1]); },
                  {param({2, 3, 64}, rng), param({24}, rng)}, opt);
        Tensor x = param({4, 64}, rng);
        const int64_t saved0 = mem_stats().cur(Mem::Saved), grads0 = mem_stats().cur(Mem::Grads);
        Tensor y = quant_linear(x, q);
        CHECK(mem_stats().cur(Mem::Saved) == saved0);   // the closure holds the blocks, no activation
        sum(y).backward();
        CHECK(mem_stats().cur(Mem::Grads) - grads0 == int64_t(x.nbytes()));   // dx only
    }
}

TEST_CASE("quant: a quantised GPT stores its block Linears as blocks, keeps names and shapes, frees the float32") {
    Rng rng(5);
    GPT m(quant_config(), rng);
    m.params.freeze_all();
    const std::vector<float> before = logits_of(m);
    const int64_t params0 = mem_stats().cur(Mem::Params), q0 = mem_stats().cur(Mem::Quantized), n0 = m.params.count();
    m.quantize(QType::Q4_0);
    int64_t floats = 0, stored = 0;
    for (auto& [name, lin] : m.linears()) {
        REQUIRE(lin->quantized());
        floats += lin->weight.numel();
        stored += int64_t(lin->qweight->nbytes());
        CHECK_THROWS_WITH_AS(lin->weight.data(), doctest::Contains("stored quantised"), ValueError);
    }
    CHECK(stored == floats / 32 * 18);
    CHECK(params0 - mem_stats().cur(Mem::Params) == 4 * floats);
    CHECK(mem_stats().cur(Mem::Quantized) - q0 == stored);
    CHECK(m.params.count() == n0);
    const std::vector<float> after = logits_of(m);
    double moved = 0;
    for (size_t i = 0; i < after.size(); i++) moved = std::max(moved, double(std::fabs(after[i] - before[i])));
    CHECK(moved > 0);      // rounded weights
    CHECK(moved < 0.05);   // but close

    Rng again(5);   // quantising at construction: the same model, never all float32 at once
    GPT built(quant_config(), again, QType::Q4_0);
    CHECK(logits_of(built) == after);
}

// A quantised base and its float32 twin (the same dequantised values), each with a method.
struct Twins {
    std::unique_ptr<GPT> quant, dense;
    PeftModel pq, pd;
    Twins(QType t, const json& config)
        : quant(make(t)), dense(make(t)), pq(*quant), pd(*dense) {
        for (auto& [name, lin] : dense->linears()) lin->dequantize();
        Rng r1(9), r2(9);
        pq.add("default", make_method(config, *quant, r1));
        pd.add("default", make_method(config, *dense, r2));
        for (PeftModel* p : {&pq, &pd}) {   // away from the identity, the same in both
            Rng r(10);
            for (const Param& par : p->active()->params.all())
                for (int64_t i = 0; i < par.tensor.numel(); i++) par.tensor.data()[i] += float(r.normal() * 0.1);
        }
    }
    static std::unique_ptr<GPT> make(QType t) {
        Rng rng(8);
        auto m = std::make_unique<GPT>(quant_config(), rng);
        for (const Param& p : m->params.all())   // larger than the init: logits a prompt can steer
            for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] += float(rng.normal() * 0.2);
        m->params.freeze_all();
        m->quantize(t);
        return m;
    }
};

TEST_CASE("quant: LoRA, DoRA and IA3 over a quantised base equal them over its dequantised float32 twin, gradients too") {
    const json configs[] = {{{"peft_type", "LORA"}, {"r", 4}, {"lora_dropout", 0.2}, {"target_modules", {"q_proj", "v_proj", "fc_in"}}},
                            {{"peft_type", "LORA"}, {"r", 2}, {"bias", "all"}},
                            {{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}},
                            {{"peft_type", "IA3"}}};
    for (const json& cfg : configs)
        for (QType t : kTypes) {
            CAPTURE(cfg.dump());
            CAPTURE(std::string(qtype_name(t)));
            Twins w(t, cfg);
            ToyBatch b = lesson_batch();
            std::vector<std::vector<float>> grads[2];
            int k = 0;
            for (auto* m : {w.quant.get(), w.dense.get()}) {
                m->dropout_rng.reseed(3);
                PeftModel& pm = k == 0 ? w.pq : w.pd;
                pm.active()->training = true;
                m->loss(b.ids, b.targets, true).backward();
                for (const Param& p : pm.active()->params.all()) grads[k].push_back(p.tensor.grad().to_vector());
                CHECK(base_has_no_grads(*m));
                k++;
            }
            for (size_t i = 0; i < grads[0].size(); i++) {
                std::string why;
                CHECK_MESSAGE(allclose(grads[0][i], dbl(grads[1][i]), 1e-4, 1e-6, &why), "tensor " << i << ": " << why);
            }
            std::string why;
            CHECK_MESSAGE(allclose(logits_of(*w.quant), dbl(logits_of(*w.dense)), 1e-5, 1e-5, &why), why);
        }
}

TEST_CASE("quant: every method trains over a quantised base: the loss goes down, the base gets no gradient") {
    int k = 0;
    for (const MethodRow& row : method_rows()) {   // over q4_0 and nf4 in turn
        const QType t = k++ % 2 ? QType::NF4 : QType::Q4_0;
        CAPTURE(std::string(row.name));
        CAPTURE(std::string(qtype_name(t)));
        auto m = Twins::make(t);
        std::vector<std::vector<uint8_t>> blocks;
        for (auto& [name, lin] : m->linears()) {
            const uint8_t* p = static_cast<const uint8_t*>(lin->qweight->blocks->data());
            blocks.emplace_back(p, p + lin->qweight->nbytes());
        }
        PeftModel pm(*m);
        Rng rng(3);
        pm.add("default", make_method(row.config, *m, rng));
        const std::vector<float> losses = train_method(*m, *pm.active(), 8, 3e-2f);
        CHECK_MESSAGE(losses.back() < losses.front() - 0.1f, losses.front() << " -> " << losses.back());
        CHECK(base_has_no_grads(*m));
        size_t i = 0;
        for (auto& [name, lin] : m->linears()) {   // the blocks are unchanged, byte for byte
            const uint8_t* p = static_cast<const uint8_t*>(lin->qweight->blocks->data());
            CHECK(std::equal(p, p + lin->qweight->nbytes(), blocks[i++].begin()));
        }
    }
}

TEST_CASE("quant: a mixed-adapter batch and KV-cached generation over a quantised base equal their plain paths") {
    Twins w(QType::Q8_0, {{"peft_type", "LORA"}, {"r", 4}});
    GPT& m = *w.quant;
    Rng rng(4);
    w.pq.add("ia3", make_method({{"peft_type", "IA3"}}, m, rng));
    for (const Param& p : w.pq.active()->params.all())
        for (int64_t i = 0; i < p.tensor.numel(); i++) p.tensor.data()[i] += float(rng.normal() * 0.2);
    const Tensor ids = lesson_batch().ids;   // two samples: the first through "default", the second through "ia3"
    w.pq.set_active("default");
    std::vector<float> alone = logits_of(m, ids);
    w.pq.set_active("ia3");
    const std::vector<float> second = logits_of(m, ids);
    std::copy(second.begin() + int64_t(second.size() / 2), second.end(), alone.begin() + int64_t(alone.size() / 2));
    {
        MixedBatch mix(w.pq, {"default", "ia3"});
        std::string why;
        CHECK_MESSAGE(allclose(logits_of(m, ids), dbl(alone), 1e-5, 1e-5, &why), why);
    }
    Rng r1(1), r2(1);
    const std::vector<int32_t> cached = m.generate({1, 2, 3}, 10, 0.f, 0, r1, true);
    CHECK(cached == m.generate({1, 2, 3}, 10, 0.f, 0, r2, false));
}

TEST_CASE("quant: merging into a quantised base dequantises, says so once, and keeps the logits") {
    for (const json& cfg : {json{{"peft_type", "LORA"}, {"r", 4}}, json{{"peft_type", "IA3"}}}) {
        Twins w(QType::NF4, cfg);
        const std::vector<float> before = logits_of(*w.quant);
        CapturedWarnings warned;
        w.pq.active()->merge(*w.quant);
        REQUIRE(warned.all.size() == 1);
        CHECK(warned.all[0].find("dequantised to float32") != std::string::npos);
        for (auto& [name, lin] : w.quant->linears())
            if (target_matches(name, cfg["peft_type"] == "LORA" ? std::vector<std::string>{"q_proj", "v_proj"}
                                                                 : std::vector<std::string>{"k_proj", "v_proj", "fc_out"}))
                CHECK_FALSE(lin->quantized());
        std::string why;
        CHECK_MESSAGE(allclose(logits_of(*w.quant), dbl(before), 1e-4, 1e-5, &why), why);
        w.pq.active()->unmerge(*w.quant);
        CHECK_MESSAGE(allclose(logits_of(*w.quant), dbl(before), 1e-5, 1e-5, &why), why);
    }
}

TEST_CASE("quant: bad input is refused, naming the format, tensor or element; nothing is changed") {
    Rng rng(6);
    CHECK_THROWS_WITH_AS(parse_qtype("q3_k"), doctest::Contains("--quantize 'q3_k' is not a known format"), ValueError);
    CHECK_THROWS_WITH_AS(QWeight::quantize(Tensor::randn({4, 48}, rng), QType::NF4, "h.0.fc"),
                         doctest::Contains("h.0.fc [4, 48]: its 48 columns do not divide into nf4 blocks of 64"), ShapeError);
    Tensor W = Tensor::randn({2, 64}, rng);
    W.data()[69] = NAN;
    CHECK_THROWS_WITH_AS(QWeight::quantize(W, QType::Q8_0, "w"), doctest::Contains("element [1, 5] is nan"), NumericError);
    W.data()[69] = -INFINITY;
    CHECK_THROWS_AS(QWeight::quantize(W, QType::Q4_0, "w"), NumericError);
    W.data()[69] = 1e7f;   // q4_0's scale would be 1.25e6: beyond fp16; q8_0's 78740 too; nf4 keeps fp32
    CHECK_THROWS_WITH_AS(QWeight::quantize(W, QType::Q4_0, "w"), doctest::Contains("beyond fp16"), ValueError);
    CHECK_THROWS_AS(QWeight::quantize(W, QType::Q8_0, "w"), ValueError);
    CHECK_NOTHROW(QWeight::quantize(W, QType::NF4, "w"));

    GPT full(quant_config(), rng);   // every weight trains: full fine-tuning cannot run over blocks
    CHECK_THROWS_WITH_AS(full.quantize(QType::Q8_0), doctest::Contains("trains (full fine-tuning?)"), ValueError);
    Linear lin(64, 8, true, rng);
    lin.weight.set_requires_grad(true);
    CHECK_THROWS_WITH_AS(lin.quantize(QType::Q8_0, "lin"), doctest::Contains("a quantised weight cannot"), ValueError);

    full.params.freeze_all();   // a NaN in the last Linear: refused before the first one is touched
    full.linears().back().second->weight.data()[3] = NAN;
    CHECK_THROWS_WITH_AS(full.quantize(QType::NF4), doctest::Contains("transformer.h.1.mlp.fc_out.weight"), NumericError);
    for (auto& [name, l] : full.linears()) CHECK_FALSE(l->quantized());
}

}  // TEST_SUITE
