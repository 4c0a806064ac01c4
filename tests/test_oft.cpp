// tests/test_oft.cpp — OFT as a lesson: y = (x R) Wᵀ + b, R block-diagonal and orthogonal, each
// block the Cayley transform of a trained skew-symmetric Q (HF's oft_block_size / r form).
// Bad configs and adapter files that do not fit: tests/test_hardening_methods.cpp.
#include "family_helpers.h"
#include "engine/linalg.h"
#include "peft/oft.h"

TEST_SUITE("peft") {

static const std::string kQ = "base_model.model.transformer.h.0.attn.q_proj";

// max |Rᵀ R − I| over every block of R (n, b, b).
static double orthogonality_error(const Tensor& R) {
    const int64_t b = R.size(1);
    double worst = 0;
    for (int64_t k = 0; k < R.size(0); k++) worst = std::max(worst, orthonormality_error(R.data() + k * b * b, b, b));
    return worst;
}

// The skew-symmetric Q of one row (triu order), and HF's two transforms, in double.
static Mat skew(const float* w, int64_t b) {
    Mat Q(size_t(b * b), 0.0);
    for (int64_t i = 0, t = 0; i < b; i++)
        for (int64_t j = i + 1; j < b; j++, t++) Q[size_t(i * b + j)] = w[t], Q[size_t(j * b + i)] = -w[t];
    return Q;
}
static Mat neumann_ref(const Mat& Q, int64_t b) {   // I + 2Q + 2Q² + 2Q³ + Q⁴ (5 terms)
    Mat R(size_t(b * b), 0.0), P(size_t(b * b), 0.0);
    for (int64_t i = 0; i < b; i++) R[size_t(i * b + i)] = P[size_t(i * b + i)] = 1;
    const double c[] = {0, 2, 2, 2, 1};
    for (int p = 1; p <= 4; p++) {
        P = matmul_ref(P, Q, b, b, b);
        for (size_t e = 0; e < R.size(); e++) R[e] += c[p] * P[e];
    }
    return R;
}

TEST_CASE("oft: the exact Cayley transform is orthogonal to 1e-5; the series approaches it for small Q; both are I at Q = 0") {
    Rng rng(1);
    Tensor w = Tensor::randn({3, 6 * 5 / 2}, rng, 0.5f);
    CHECK(orthogonality_error(oft_rotation(w, 6, 0)) < 1e-5);
    Tensor small = Tensor::randn({3, 15}, rng, 0.005f);
    CHECK(orthogonality_error(oft_rotation(small, 6, 5)) < 1e-5);   // the truncation error is O(‖Q‖⁵)
    CHECK(orthogonality_error(oft_rotation(w, 6, 5)) > 1e-3);        // but not for large Q: it is a series
    for (int64_t terms : {0, 5}) {
        Tensor R = oft_rotation(Tensor::zeros({2, 15}), 6, terms);
        for (int64_t k = 0; k < 2 * 36; k++) CHECK(R.data()[k] == ((k % 36) % 7 == 0 ? 1.f : 0.f));
    }
    // Against HF's formulas in double: I + 2Q + 2Q² + 2Q³ + Q⁴, and (I − Q)(I + Q)⁻¹ checked as R (I + Q) = I − Q.
    Tensor Rn = oft_rotation(w, 6, 5), Rc = oft_rotation(w, 6, 0);
    for (int64_t k = 0; k < 3; k++) {
        const Mat Q = skew(w.data() + k * 15, 6), ref = neumann_ref(Q, 6);
        std::string why;
        CHECK_MESSAGE(allclose(std::vector<float>(Rn.data() + k * 36, Rn.data() + (k + 1) * 36), ref, 1e-5, 1e-5, &why), why);
        Mat IpQ = Q;
        for (int i = 0; i < 6; i++) IpQ[size_t(i * 7)] += 1;
        const Mat lhs = matmul_ref(Mat(Rc.data() + k * 36, Rc.data() + (k + 1) * 36), IpQ, 6, 6, 6);
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 6; j++) CHECK(lhs[size_t(i * 6 + j)] == doctest::Approx((i == j) - Q[size_t(i * 6 + j)]).epsilon(1e-5).scale(1));
    }
}

TEST_CASE("oft: gradcheck of the rotation (series and exact) and of the block rotation") {
    Rng rng(2);
    Tensor w = param({2, 6}, rng, 0.3f);   // b = 4
    GradcheckOptions o;
    o.precise = true;
    for (int64_t terms : {5, 2, 0}) {
        CAPTURE(terms);
        gradcheck("oft_rotation", [terms](const std::vector<Tensor>& in) { return oft_rotation(in[0], 4, terms); }, {w}, o);
    }
    Tensor x = param({3, 8}, rng), R = param({2, 4, 4}, rng), shared = param({1, 4, 4}, rng);
    gradcheck("block_rotate", [](const std::vector<Tensor>& in) { return block_rotate(in[0], in[1]); }, {x, R});
    gradcheck("block_rotate shared", [](const std::vector<Tensor>& in) { return block_rotate(in[0], in[1]); }, {x, shared});
}

TEST_CASE("oft: HF's fields and key; (in / b)·b(b−1)/2 trainable numbers per target; Q starts at zero") {
    const GPTConfig c = lesson_config();
    auto m = lesson_model();
    Rng rng(3);
    auto oft = make_method(peft_config("OFT", {{"oft_block_size", 4}}), *m, rng);
    CHECK(oft->peft_type() == "OFT");
    const json j = oft->config_json();
    CHECK(j["oft_block_size"] == 4);
    CHECK(j["r"] == 0);
    CHECK(j["use_cayley_neumann"] == true);
    CHECK(j["num_cayley_neumann_terms"] == 5);
    CHECK(oft->params.get(kQ + ".oft_R.weight").shape() == (Shape{4, 6}));
    for (float v : oft->params.get(kQ + ".oft_R.weight").to_vector()) CHECK(v == 0.f);
    CHECK(oft->params.count(true) == c.n_layer * 2 * 4 * 6);
    CHECK(oft->expected_params(c) == oft->params.count(true));
    auto m2 = lesson_model();   // r = 2 blocks of 8 on q; block_share: one row for all
    auto by_r = make_method(peft_config("OFT", {{"r", 2}, {"oft_block_size", 0}, {"block_share", true}}), *m2, rng);
    CHECK(by_r->params.get(kQ + ".oft_R.weight").shape() == (Shape{1, 28}));
    CHECK(by_r->expected_params(c) == by_r->params.count(true));
}

TEST_CASE("oft: at init (Q = 0, R = I) the model is the base model, bit for bit") {
    check_identity_at_init(peft_config("OFT", {{"oft_block_size", 4}}));
    check_identity_at_init(peft_config("OFT", {{"oft_block_size", 4}, {"use_cayley_neumann", false}}));
}

TEST_CASE("oft: the module output is x (W Rᵀ)ᵀ + b with HF's block-diagonal R, computed independently") {
    auto m = lesson_model();
    Rng rng(4);
    PeftModel pm(*m);
    pm.add("default", make_method(peft_config("OFT", {{"oft_block_size", 8}}), *m, rng));
    Method& oft = *pm.active();
    randomize(oft, rng, 0.1f);
    const Tensor w = oft.params.get(kQ + ".oft_R.weight");   // (2, 28)
    const Linear& q = m->h[0].attn.q_proj;
    Mat W = to_mat(q.weight), Wp(W.size(), 0.0);
    for (int64_t k = 0; k < 2; k++) {
        const Mat R = neumann_ref(skew(w.data() + k * 28, 8), 8);
        for (int64_t o = 0; o < 16; o++)
            for (int64_t j = 0; j < 8; j++)
                for (int64_t i = 0; i < 8; i++) Wp[size_t(o * 16 + k * 8 + j)] += W[size_t(o * 16 + k * 8 + i)] * R[size_t(j * 8 + i)];
    }
    Tensor x = Tensor::randn({3, 16}, rng);
    std::string why;
    CHECK_MESSAGE(allclose(module_output(q, x), apply_weight(x, Wp, q.bias, 16, 16), 1e-5, 1e-5, &why), why);
}

TEST_CASE("oft: training lowers the loss; the base gets no gradient and stays bit-for-bit the same") {
    check_training(peft_config("OFT", {{"oft_block_size", 4}}), 0.99f);   // 4 × 4 rotations of q and v: a slow learner here
    check_training(peft_config("OFT", {{"oft_block_size", 4}, {"use_cayley_neumann", false}}), 0.99f);
}

TEST_CASE("oft: merge (W ← W Rᵀ) equals the adapted forward, unmerge is exact, and files round-trip") {
    check_merge_and_files(peft_config("OFT", {{"oft_block_size", 4}}));
    check_merge_and_files(peft_config("OFT", {{"oft_block_size", 8}, {"use_cayley_neumann", false}}));
}

TEST_CASE("oft: COFT keeps each block's ‖Q‖ within eps; module_dropout turns whole blocks into I") {
    auto m = lesson_model();
    Rng rng(5);
    PeftModel pm(*m);
    pm.add("default", make_method(peft_config("OFT", {{"oft_block_size", 4}, {"coft", true}, {"eps", 1e-2}}), *m, rng));
    randomize(*pm.active(), rng, 0.5f);
    logits_of(*m);   // a forward projects
    const Tensor w = pm.active()->params.get(kQ + ".oft_R.weight");
    for (int64_t k = 0; k < 4; k++) {
        double ss = 0;
        for (int64_t j = 0; j < 6; j++) ss += 2.0 * w.data()[k * 6 + j] * w.data()[k * 6 + j];
        CHECK(std::sqrt(ss) <= 1e-2 / 2 * 1.0001);   // eps / √(rows = 4)
    }
}

}  // TEST_SUITE
