// tests/test_autograd.cpp — the tape: recording, backward order, freeing, and frozen tensors.
#include "helpers.h"
#include "engine/ops.h"

TEST_SUITE("autograd") {

TEST_CASE("autograd: an op whose inputs are all frozen records no node") {
    Rng rng(1);
    Tensor x = Tensor::randn({4, 3}, rng), W = Tensor::randn({5, 3}, rng);
    Tensor y = linear(x, W);
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(bool(y.grad_fn()));
}

TEST_CASE("autograd: no-grad scope records nothing even with trainable inputs") {
    Rng rng(2);
    Tensor x = Tensor::randn({4, 3}, rng), W = param({5, 3}, rng);
    NoGradGuard ng;
    Tensor y = linear(x, W);
    CHECK_FALSE(bool(y.grad_fn()));
    CHECK_FALSE(y.requires_grad());
}

TEST_CASE("autograd: a frozen tensor never gets a gradient buffer") {
    Rng rng(3);
    Tensor x = Tensor::randn({4, 3}, rng), W1 = Tensor::randn({6, 3}, rng), W2 = param({2, 6}, rng);
    MemStats before = mem_stats();
    Tensor R = Tensor::randn({4, 2}, rng);
    projection_loss(linear(linear(x, W1), W2), R).backward();
    CHECK_FALSE(W1.has_grad());
    CHECK_FALSE(x.has_grad());
    CHECK(W2.has_grad());
    // the only gradient bytes allocated are W2's
    CHECK(mem_stats().cur(Mem::Grads) - before.cur(Mem::Grads) == int64_t(W2.nbytes()));
}

// dL/dx where x feeds two ops is the SUM of what each path sends back: with
// L = Σ (x W1ᵀ) ⊙ R1 + Σ (x W2ᵀ) ⊙ R2, dL/dx = R1 W1 + R2 W2. If backward overwrote a
// gradient instead of adding to it, x.grad would hold only one of the two terms.
static std::vector<float> two_paths_grad(const Tensor& R1, const Tensor& W1, const Tensor& R2, const Tensor& W2) {
    std::vector<float> g(size_t(R1.shape()[0] * W1.shape()[1]), 0.f);
    const int64_t n = R1.shape()[0], out = W1.shape()[0], in = W1.shape()[1];
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < in; c++)
            for (int64_t o = 0; o < out; o++)
                g[size_t(i * in + c)] += R1.data()[i * out + o] * W1.data()[o * in + c] +
                                         R2.data()[i * out + o] * W2.data()[o * in + c];
    return g;
}

TEST_CASE("autograd: a gradient used twice accumulates (a leaf used by two ops)") {
    Rng rng(4);
    Tensor x = param({3, 2}, rng), W1 = Tensor::randn({4, 2}, rng), W2 = Tensor::randn({4, 2}, rng);
    Tensor R1 = Tensor::randn({3, 4}, rng), R2 = Tensor::randn({3, 4}, rng);
    add(projection_loss(linear(x, W1), R1), projection_loss(linear(x, W2), R2)).backward();
    const std::vector<float> want = two_paths_grad(R1, W1, R2, W2), got = x.grad().to_vector();
    for (size_t i = 0; i < want.size(); i++) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-5));
}

TEST_CASE("autograd: a gradient used twice accumulates (an op's output used by two ops)") {
    // h = x·I is an interior node: its two consumers' gradients must add up in the node's dy
    // before h's own backward runs, and reach x through it.
    Rng rng(14);
    Tensor x = param({3, 2}, rng), I = Tensor::zeros({2, 2});
    I.data()[0] = I.data()[3] = 1.f;
    Tensor W1 = Tensor::randn({4, 2}, rng), W2 = Tensor::randn({4, 2}, rng);
    Tensor R1 = Tensor::randn({3, 4}, rng), R2 = Tensor::randn({3, 4}, rng);
    Tensor h = linear(x, I);
    add(projection_loss(linear(h, W1), R1), projection_loss(linear(h, W2), R2)).backward();
    const std::vector<float> want = two_paths_grad(R1, W1, R2, W2), got = x.grad().to_vector();
    for (size_t i = 0; i < want.size(); i++) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-5));
}

TEST_CASE("autograd: backward twice through the same graph is a clear error") {
    Rng rng(5);
    Tensor x = Tensor::randn({2, 2}, rng), W = param({2, 2}, rng);
    Tensor L = projection_loss(linear(x, W), Tensor::randn({2, 2}, rng));
    L.backward();
    CHECK_THROWS_WITH_AS(L.backward(), doctest::Contains("already run backward"), ValueError);
}

TEST_CASE("autograd: backward needs a one-element loss") {
    Rng rng(6);
    Tensor x = Tensor::randn({2, 2}, rng), W = param({2, 2}, rng);
    Tensor y = linear(x, W);
    CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("one element"), ShapeError);
}

TEST_CASE("autograd: saved tensors are freed as soon as backward has consumed them") {
    Rng rng(7);
    Tensor x = Tensor::randn({64, 32}, rng), W = param({32, 32}, rng);
    int64_t saved0 = mem_stats().cur(Mem::Saved);
    Tensor L;
    {
        Tensor h = linear(x, W);
        L = projection_loss(linear(h, W), Tensor::randn({64, 32}, rng));
    }
    CHECK(mem_stats().cur(Mem::Saved) > saved0);   // x and h kept for dW
    L.backward();
    CHECK(mem_stats().cur(Mem::Saved) == saved0);  // ... and released after backward, while L lives
}

TEST_CASE("autograd: a deep chain runs backward without recursion") {
    Rng rng(8);
    Tensor W = param({2, 2}, rng);
    Tensor h = Tensor::randn({1, 2}, rng);
    Tensor I = Tensor::from({1, 0, 0, 1}, {2, 2});
    h = linear(h, W);
    for (int i = 0; i < 20000; i++) h = linear(h, I);   // 20k nodes deep
    projection_loss(h, Tensor::full({1, 2}, 1.f)).backward();
    CHECK(W.has_grad());
}

}  // TEST_SUITE
