// tests/test_ops_shape.cpp — reshape, concat/slice along time, heads, repeat_batch, embedding,
// sum and mean: gradients, exact values, shape and id errors, and thread independence.
#include <numeric>
#include "helpers.h"
#include "engine/ops.h"

// 0, 1, 2, ... as a tensor of shape s: every element tells where it came from.
static Tensor iota(const Shape& s) {
    std::vector<float> v(size_t(s.numel()));
    std::iota(v.begin(), v.end(), 0.f);
    return Tensor::from(v, s);
}

TEST_SUITE("ops") {

TEST_CASE("ops: shape op gradcheck passes on random input") {
    Rng rng(30);
    Tensor x = param({2, 5, 6}, rng), b = param({2, 3, 6}, rng);
    gradcheck("reshape", [](const std::vector<Tensor>& in) { return reshape(in[0], {10, 6}); }, {x});
    gradcheck("concat_seq", [](const std::vector<Tensor>& in) { return concat_seq(in[0], in[1]); }, {x, b});
    gradcheck("slice_seq", [](const std::vector<Tensor>& in) { return slice_seq(in[0], 1, 3); }, {x});
    gradcheck("slice_last", [](const std::vector<Tensor>& in) { return slice_last(in[0], 2, 3); }, {x});
    // the three column blocks of one tensor, as GPT-2's q|k|v: their gradients land side by side
    gradcheck("slice_last x3", [](const std::vector<Tensor>& in) {
        return add(add(slice_last(in[0], 0, 2), scale(slice_last(in[0], 2, 2), 2.f)), slice_last(in[0], 4, 2));
    }, {x});
    Tensor p = param({1, 4, 3}, rng);
    gradcheck("repeat_batch", [](const std::vector<Tensor>& in) { return repeat_batch(in[0], 5); }, {p});
    gradcheck("sum", [](const std::vector<Tensor>& in) { return sum(in[0]); }, {x});
    gradcheck("mean", [](const std::vector<Tensor>& in) { return mean(in[0]); }, {x});
}

TEST_CASE("ops: embedding gradcheck passes with repeated ids") {
    Rng rng(31);
    Tensor W = param({7, 70}, rng);   // a full and a partial 64-column block
    Tensor ids = Tensor::from_ints({3, 0, 3, 6, 3, 1, 0, 2}, {2, 4});   // id 3 three times, 4 and 5 never
    gradcheck("embedding", [](const std::vector<Tensor>& in) { return embedding(in[0], in[1]); }, {ids, W});
    Tensor flat = Tensor::from_ints({5, 5, 1}, {3});
    gradcheck("embedding (N)", [](const std::vector<Tensor>& in) { return embedding(in[0], in[1]); }, {flat, W});
}

TEST_CASE("ops: embedding adds to the gradient of a table that linear also uses (tied weights)") {
    Rng rng(36);
    Tensor W = param({9, 70}, rng, 0.3f);
    Tensor ids = Tensor::from_ints({8, 1, 1, 4, 0, 8}, {2, 3});
    gradcheck("tied", [](const std::vector<Tensor>& in) { return linear(embedding(in[0], in[1]), in[1]); }, {ids, W});
}

TEST_CASE("ops: embedding rows of unused ids get a zero gradient") {
    Rng rng(32);
    Tensor W = param({5, 3}, rng);
    Tensor y = embedding(Tensor::from_ints({1, 1, 4}, {3}), W);
    projection_loss(y, Tensor::full({3, 3}, 1.f)).backward();
    std::vector<float> g = W.grad().to_vector();
    CHECK(g == std::vector<float>{0, 0, 0, 2, 2, 2, 0, 0, 0, 0, 0, 0, 1, 1, 1});
}

TEST_CASE("ops: embedding names the out-of-range id, its position and V") {
    Tensor W = Tensor::zeros({10, 4});
    CHECK_THROWS_WITH_AS(embedding(Tensor::from_ints({1, 2, 3, 4, 12, 5}, {2, 3}), W),
                         doctest::Contains("embedding: id 12 at position [1, 1] of ids [2, 3] is outside the "
                                           "vocabulary [0, 10)"),
                         ValueError);
    CHECK_THROWS_WITH_AS(embedding(Tensor::from_ints({0, -1}, {2}), W), doctest::Contains("id -1 at position [1]"),
                         ValueError);
    CHECK_THROWS_WITH_AS(embedding(Tensor::zeros({2, 3}), W), doctest::Contains("ids must be int32"), ValueError);
    CHECK_THROWS_WITH_AS(embedding(Tensor::from_ints({0}, {1}), Tensor::zeros({10})),
                         doctest::Contains("embedding: ids [1] and W [10]"), ShapeError);
}

TEST_CASE("ops: embedding looks up the rows of W") {
    Tensor W = iota({4, 2});
    Tensor y = embedding(Tensor::from_ints({2, 0, 3}, {1, 3}), W);
    CHECK(y.shape() == Shape{1, 3, 2});
    CHECK(y.to_vector() == std::vector<float>{4, 5, 0, 1, 6, 7});
}

TEST_CASE("ops: concat_seq and slice_seq move exact values") {
    Tensor a = iota({2, 2, 3}), b = scale(iota({2, 1, 3}), -1.f);
    Tensor y = concat_seq(a, b);
    CHECK(y.shape() == Shape{2, 3, 3});
    CHECK(y.to_vector() == std::vector<float>{0, 1, 2, 3, 4, 5, -0.f, -1, -2,    //
                                              6, 7, 8, 9, 10, 11, -3, -4, -5});
    CHECK(slice_seq(y, 0, 2).to_vector() == a.to_vector());
    CHECK(slice_seq(y, 2, 1).to_vector() == b.to_vector());
    CHECK(slice_seq(y, 1, 0).shape() == Shape{2, 0, 3});
}

TEST_CASE("ops: slice_last moves exact values and names bad columns") {
    Tensor x = iota({2, 2, 6});
    CHECK(slice_last(x, 4, 2).to_vector() == std::vector<float>{4, 5, 10, 11, 16, 17, 22, 23});
    CHECK(slice_last(x, 0, 6).to_vector() == x.to_vector());
    CHECK_THROWS_WITH_AS(slice_last(x, 5, 2), doctest::Contains("columns [5, 7) are outside x [2, 2, 6]"), ShapeError);
}

TEST_CASE("ops: reshape shares storage and repeat_batch copies x B times") {
    Tensor x = iota({2, 6});
    Tensor r = reshape(x, {3, 4});
    CHECK(r.shape() == Shape{3, 4});
    CHECK(r.data() == x.data());
    Tensor p = iota({1, 2, 2});
    CHECK(repeat_batch(p, 3).to_vector() == std::vector<float>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3});
    CHECK(repeat_batch(p, 3).shape() == Shape{3, 2, 2});
}

TEST_CASE("ops: sum and mean accumulate in double") {
    std::vector<float> v(1 << 20, 0.1f);
    v[0] = 1e4f;   // float accumulation would lose the 0.1s next to 1e4
    Tensor x = Tensor::from(v, {int64_t(v.size())});
    double exact = 1e4;
    for (size_t i = 1; i < v.size(); i++) exact += double(0.1f);
    CHECK(sum(x).shape() == Shape{1});
    CHECK(sum(x).item() == float(exact));
    CHECK(mean(x).item() == float(exact / double(v.size())));
    CHECK_THROWS_WITH_AS(mean(Tensor::zeros({0})), doctest::Contains("mean: x [0] has no elements"), ShapeError);
}

TEST_CASE("ops: shape op errors name the op and the shapes") {
    Tensor x = Tensor::zeros({2, 5, 6});
    CHECK_THROWS_WITH_AS(reshape(x, {7, 8}),
                         doctest::Contains("reshape: x [2, 5, 6] (60 elements) cannot become [7, 8]"), ShapeError);
    CHECK_THROWS_WITH_AS(concat_seq(x, Tensor::zeros({2, 3, 5})),
                         doctest::Contains("concat_seq: a [2, 5, 6] and b [2, 3, 5]"), ShapeError);
    CHECK_THROWS_WITH_AS(concat_seq(x, Tensor::zeros({3, 5, 6})), doctest::Contains("b [3, 5, 6]"), ShapeError);
    CHECK_THROWS_WITH_AS(slice_seq(x, 3, 3), doctest::Contains("slice_seq: time steps [3, 6)"), ShapeError);
    CHECK_THROWS_WITH_AS(slice_seq(x, -1, 2), doctest::Contains("x [2, 5, 6] with T = 5"), ShapeError);
    CHECK_THROWS_WITH_AS(slice_seq(Tensor::zeros({5, 6}), 0, 1), doctest::Contains("slice_seq: x [5, 6]"), ShapeError);
    CHECK_THROWS_WITH_AS(repeat_batch(x, 3), doctest::Contains("repeat_batch: x [2, 5, 6]"), ShapeError);
    CHECK_THROWS_AS(repeat_batch(Tensor::zeros({1, 3}), 0), ValueError);
}

TEST_CASE("ops: gradients accumulate into an input used by two shape ops") {
    Rng rng(33);
    Tensor x = param({2, 4, 3}, rng);
    // [x[:, :2], x reshaped and back] along time: dx gets both contributions
    gradcheck("slice+concat", [](const std::vector<Tensor>& in) {
        return concat_seq(slice_seq(in[0], 0, 2), reshape(reshape(in[0], {8, 3}), {2, 4, 3}));
    }, {x});
}

TEST_CASE("ops: embedding keeps only its ids for backward") {
    Rng rng(34);
    Tensor W = param({50, 64}, rng), ids = Tensor::from_ints(std::vector<int32_t>(32, 7), {4, 8});
    int64_t before = mem_stats().cur(Mem::Saved);
    Tensor y = embedding(ids, W);
    CHECK(mem_stats().cur(Mem::Saved) - before == int64_t(ids.nbytes()));
}

TEST_CASE("ops: shape op backwards are bitwise equal on 1 and 2 threads") {
    auto run = [] {
        Rng rng(35);
        const int64_t B = 4, T = 64, C = 256, V = 97;
        std::vector<int32_t> idv(size_t(B * T));
        for (auto& i : idv) i = int32_t(rng.below(V));
        Tensor W = param({V, C}, rng), prompt = param({1, 8, C}, rng);
        Tensor h = concat_seq(repeat_batch(prompt, B), embedding(Tensor::from_ints(idv, {B, T}), W));
        h = slice_seq(h, 4, T);
        Tensor y = reshape(h, {B * T, C});
        Tensor L = add(projection_loss(y, Tensor::randn(y.shape(), rng)), mean(y));
        L.backward();
        return std::vector<std::vector<float>>{y.to_vector(), L.to_vector(), W.grad().to_vector(),
                                               prompt.grad().to_vector()};
    };
    const auto [one, two] = with_1_and_2_threads(run);
    for (size_t k = 0; k < one.size(); k++) CHECK_MESSAGE(one[k] == two[k], "tensor " << k << " differs");
}

}  // TEST_SUITE
