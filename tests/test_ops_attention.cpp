// tests/test_ops_attention.cpp — causal_attention: gradients, values, the mask, prefixes, shapes, threads.
#include <cmath>
#include "helpers.h"
#include "engine/ops.h"
#include "engine/memory.h"
#include "engine/parallel.h"

TEST_SUITE("ops") {

// Plain loops in double with an explicit mask: query i sees key j iff j < P + i + 1. Head h of
// row (b, t) is the D numbers at (b·rows + t)·C + h·D, as the op reads them.
static std::vector<double> attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H,
                                               int64_t P, double scale) {
    const int64_t B = q.size(0), T = q.size(1), C = q.size(2), D = C / H, S = P + T;
    std::vector<double> y(size_t(q.numel()), 0.0);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++) {
                std::vector<double> s(size_t(S), -INFINITY);
                double m = -INFINITY, z = 0;
                for (int64_t j = 0; j < S; j++) {
                    const bool visible = j < P + i + 1;
                    if (!visible) continue;
                    const float *qi = q.data() + (b * T + i) * C + h * D, *kj = k.data() + (b * S + j) * C + h * D;
                    double dot = 0;
                    for (int64_t d = 0; d < D; d++) dot += double(qi[d]) * kj[d];
                    s[size_t(j)] = dot * scale;
                    m = std::max(m, s[size_t(j)]);
                }
                for (int64_t j = 0; j < S; j++) z += std::exp(s[size_t(j)] - m);   // exp(-inf) = 0 for masked keys
                for (int64_t j = 0; j < S; j++)
                    for (int64_t d = 0; d < D; d++)
                        y[size_t((b * T + i) * C + h * D + d)] +=
                            std::exp(s[size_t(j)] - m) / z * v.data()[(b * S + j) * C + h * D + d];
            }
    return y;
}

struct Qkv { Tensor q, k, v; };   // (B,T,H·D) and (B,P+T,H·D)
static Qkv random_qkv(Rng& rng, int64_t B, int64_t H, int64_t T, int64_t D, int64_t P, bool trainable = true) {
    Qkv r{Tensor::randn({B, T, H * D}, rng), Tensor::randn({B, P + T, H * D}, rng), Tensor::randn({B, P + T, H * D}, rng)};
    for (Tensor* t : {&r.q, &r.k, &r.v}) t->set_requires_grad(trainable);
    return r;
}

static void check_gradients(int64_t B, int64_t H, int64_t T, int64_t D, int64_t P, uint64_t seed, int max_elems) {
    Rng rng(seed);
    Qkv a = random_qkv(rng, B, H, T, D, P);
    GradcheckOptions opt;
    opt.precise = true;
    opt.max_elems = max_elems;
    const float scale = 1.f / std::sqrt(float(D));
    gradcheck("causal_attention P=" + std::to_string(P),
              [=](const std::vector<Tensor>& in) { return causal_attention(in[0], in[1], in[2], H, P, scale); },
              {a.q, a.k, a.v}, opt);
}

TEST_CASE("ops: causal_attention gradcheck passes for q, k and v without a prefix") {
    check_gradients(2, 2, 5, 3, 0, 51, 2000);
}

TEST_CASE("ops: causal_attention gradcheck passes for q, k and v with a prefix of 3") {
    check_gradients(2, 2, 5, 3, 3, 52, 2000);
}

TEST_CASE("ops: causal_attention gradcheck passes over several row blocks (T = 70)") {
    check_gradients(1, 2, 70, 4, 3, 53, 150);   // a random subset of each input's elements
}

TEST_CASE("ops: causal_attention gradients accumulate into existing buffers (over several row blocks)") {
    Rng rng(59);
    Qkv a = random_qkv(rng, 1, 2, 70, 4, 3);
    Tensor R = Tensor::randn({1, 70, 8}, rng);
    check_gradients_accumulate({a.q, a.k, a.v},
                               [&] { return projection_loss(causal_attention(a.q, a.k, a.v, 2, 3, 0.5f), R); });
}

TEST_CASE("ops: causal_attention computes only the gradients of trainable inputs, and they are right") {
    Rng rng(54);
    GradcheckOptions opt;
    opt.precise = true;
    for (int which = 0; which < 3; which++) {
        Qkv a = random_qkv(rng, 1, 2, 6, 3, 2, false);
        Tensor* t[] = {&a.q, &a.k, &a.v};
        t[which]->set_requires_grad(true);
        gradcheck("causal_attention one input", [](const std::vector<Tensor>& in) {
            return causal_attention(in[0], in[1], in[2], 2, 2, 0.5f);
        }, {a.q, a.k, a.v}, opt);
        for (int j = 0; j < 3; j++)
            if (j != which) CHECK_FALSE(t[j]->has_grad());
    }
}

TEST_CASE("ops: causal_attention forward matches a naive masked reference, with and without grad mode") {
    Rng rng(55);
    for (int64_t P : {0, 3}) {
        for (int64_t T : {1, 7, 130}) {   // 130: three row blocks, the last one short
            Qkv a = random_qkv(rng, 2, 3, T, 8, P);
            const std::vector<double> want = attention_reference(a.q, a.k, a.v, 3, P, 0.3);
            std::string why;
            CHECK_MESSAGE(allclose(causal_attention(a.q, a.k, a.v, 3, P, 0.3f).to_vector(), want, 1e-4, 1e-5, &why), why);
            NoGradGuard ng;
            CHECK_MESSAGE(allclose(causal_attention(a.q, a.k, a.v, 3, P, 0.3f).to_vector(), want, 1e-4, 1e-5, &why), why);
        }
    }
}

TEST_CASE("ops: a future key or value never changes earlier outputs; prefix rows reach every query") {
    Rng rng(56);
    const int64_t T = 80, P = 3, D = 4;
    Qkv a = random_qkv(rng, 1, 1, T, D, P, false);
    const std::vector<float> y0 = causal_attention(a.q, a.k, a.v, 1, P, 0.5f).to_vector();
    for (int64_t j : {0, 5, 70}) {   // change key and value of sequence position j (row P + j of k and v)
        Tensor k2 = a.k.clone(), v2 = a.v.clone();
        for (int64_t d = 0; d < D; d++) { k2.data()[(P + j) * D + d] += 3.f; v2.data()[(P + j) * D + d] -= 2.f; }
        const std::vector<float> y = causal_attention(a.q, k2, v2, 1, P, 0.5f).to_vector();
        for (int64_t i = 0; i < T; i++) {
            bool same = true;
            for (int64_t d = 0; d < D; d++) same = same && y[size_t(i * D + d)] == y0[size_t(i * D + d)];
            if (i < j) CHECK_MESSAGE(same, "query " << i << " saw future position " << j);
            else CHECK_MESSAGE(!same, "query " << i << " did not see position " << j);
        }
    }
    // a prefix row (row 1 of k and v) is seen by every query, the first one included
    Tensor k2 = a.k.clone(), v2 = a.v.clone();
    for (int64_t d = 0; d < D; d++) { k2.data()[1 * D + d] += 3.f; v2.data()[1 * D + d] -= 2.f; }
    const std::vector<float> y = causal_attention(a.q, k2, v2, 1, P, 0.5f).to_vector();
    for (int64_t i = 0; i < T; i++) {
        bool same = true;
        for (int64_t d = 0; d < D; d++) same = same && y[size_t(i * D + d)] == y0[size_t(i * D + d)];
        CHECK_MESSAGE(!same, "query " << i << " did not see prefix row 1");
    }
}

TEST_CASE("ops: causal_attention rejects mismatched shapes, naming all of them") {
    Rng rng(57);
    Tensor q = Tensor::randn({2, 4, 24}, rng), k = Tensor::randn({2, 6, 24}, rng);
    CHECK_THROWS_WITH_AS(causal_attention(q, k, k, 3, 0, 1.f),
                         doctest::Contains("q [2, 4, 24], k [2, 6, 24] and v [2, 6, 24] with n_head 3 and n_prefix 0"),
                         ShapeError);
    CHECK_NOTHROW(causal_attention(q, k, k, 3, 2, 1.f));
    CHECK_THROWS_AS(causal_attention(q, k, Tensor::randn({2, 6, 23}, rng), 3, 2, 1.f), ShapeError);   // v differs
    CHECK_THROWS_AS(causal_attention(q, Tensor::randn({2, 6, 16}, rng), Tensor::randn({2, 6, 16}, rng), 3, 2, 1.f),
                    ShapeError);   // widths differ
    CHECK_THROWS_AS(causal_attention(q, k, k, 5, 2, 1.f), ShapeError);   // 24 is not divisible by 5 heads
    CHECK_THROWS_AS(causal_attention(q, k, k, 0, 2, 1.f), ShapeError);
    CHECK_THROWS_AS(causal_attention(Tensor::randn({3, 4, 8, 3}, rng), k, k, 3, 2, 1.f), ShapeError);   // q is 4-d
    CHECK_THROWS_AS(causal_attention(q, k, k, 3, -2, 1.f), ShapeError);
}

// OpenBLAS splits a GEMM differently for another thread count (at these sizes the 1- and 2-thread
// results do differ in the last bits), so across thread counts they need only agree closely; at a
// fixed thread count they must be bitwise equal run to run. The op's own loops (softmax and its
// backward) are thread-independent by construction, like every row-wise op.
TEST_CASE("ops: causal_attention is bitwise reproducible at a fixed thread count and close across counts") {
    Rng rng(58);
    Qkv a0 = random_qkv(rng, 1, 2, 200, 64, 3, false);   // GEMMs big enough for OpenBLAS to thread
    Tensor R = Tensor::randn({1, 200, 128}, rng);
    auto run = [&] {
        Tensor q = a0.q.clone().set_requires_grad(true), k = a0.k.clone().set_requires_grad(true),
               v = a0.v.clone().set_requires_grad(true);
        Tensor y = causal_attention(q, k, v, 2, 3, 0.25f);
        projection_loss(y, R).backward();
        return std::vector<std::vector<float>>{y.to_vector(), q.grad().to_vector(), k.grad().to_vector(),
                                               v.grad().to_vector()};
    };
    const int prev = num_threads();
    set_num_threads(2);
    auto first = run(), second = run();
    CHECK(first == second);
    set_num_threads(1);
    auto one = run();
    set_num_threads(prev);
    for (size_t t = 0; t < one.size(); t++) {
        std::vector<double> ref(first[t].begin(), first[t].end());
        std::string why;
        CHECK_MESSAGE(allclose(one[t], ref, 1e-5, 1e-6, &why), why);
    }
}


// The fast op keeps one log-sum-exp per row and head and rebuilds the probabilities in backward;
// the op that keeps them all is the reference: same forward and same gradients to float rounding.
TEST_CASE("ops: causal_attention equals the attention that keeps its probabilities, forward and gradients") {
    Rng rng(60);
    struct Case { int64_t B, H, T, D, P; };
    for (Case c : {Case{2, 3, 1, 4, 0}, Case{1, 2, 7, 8, 3}, Case{2, 2, 130, 16, 0}, Case{1, 3, 200, 8, 5}}) {
        for (int which = -1; which < 3; which++) {   // -1: all three inputs train; else only that one
            Qkv a = random_qkv(rng, c.B, c.H, c.T, c.D, c.P, which < 0);
            if (which >= 0) (which == 0 ? a.q : which == 1 ? a.k : a.v).set_requires_grad(true);
            Tensor R = Tensor::randn({c.B, c.T, c.H * c.D}, rng);
            auto run = [&](bool fast) {
                for (Tensor* t : {&a.q, &a.k, &a.v}) t->zero_grad();
                const float sc = 1.f / std::sqrt(float(c.D));
                Tensor y = fast ? causal_attention(a.q, a.k, a.v, c.H, c.P, sc)
                                : causal_attention_saved_probs(a.q, a.k, a.v, c.H, c.P, sc);
                projection_loss(y, R).backward();
                std::vector<std::vector<float>> out{y.to_vector()};
                for (Tensor* t : {&a.q, &a.k, &a.v}) out.push_back(t->has_grad() ? t->grad().to_vector() : std::vector<float>());
                return out;
            };
            auto fast = run(true), ref = run(false);
            for (size_t t = 0; t < ref.size(); t++) {
                REQUIRE(fast[t].size() == ref[t].size());
                std::string why;
                CHECK_MESSAGE(allclose(fast[t], std::vector<double>(ref[t].begin(), ref[t].end()), 1e-5, 1e-5, &why),
                              "T " << c.T << " P " << c.P << " output " << t << ": " << why);
            }
        }
    }
}

TEST_CASE("ops: causal_attention keeps no (T, P+T) matrix for backward: one float per row and head") {
    Rng rng(61);
    const int64_t B = 1, H = 4, T = 256, D = 8, P = 2;
    Qkv a = random_qkv(rng, B, H, T, D, P);
    const int64_t s0 = mem_stats().cur(Mem::Saved);
    Tensor y = causal_attention(a.q, a.k, a.v, H, P, 0.3f);
    const int64_t qkv = int64_t(a.q.nbytes() + a.k.nbytes() + a.v.nbytes());
    CHECK(mem_stats().cur(Mem::Saved) - s0 == qkv + B * H * T * 4);   // q, k, v and L
    Tensor y2 = causal_attention_saved_probs(a.q, a.k, a.v, H, P, 0.3f);   // q, k, v again (not twice) and A
    CHECK(mem_stats().cur(Mem::Saved) - s0 == qkv + B * H * T * 4 + B * H * T * (P + T) * 4);
}

}  // TEST_SUITE
