// tests/test_ops_norm.cpp — layernorm and softmax: gradients, values, extremes, shapes, threads.
#include <cmath>
#include "helpers.h"
#include "engine/ops.h"
#include "engine/row_kernels.h"

TEST_SUITE("ops") {

// ---- layernorm

static std::vector<double> layernorm_reference(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
    const int64_t C = x.shape().back(), rows = x.numel() / C;
    std::vector<double> y(size_t(x.numel()));
    for (int64_t r = 0; r < rows; r++) {
        double m = 0, v = 0;
        for (int64_t c = 0; c < C; c++) m += x.data()[r * C + c];
        m /= double(C);
        for (int64_t c = 0; c < C; c++) v += std::pow(x.data()[r * C + c] - m, 2);
        v /= double(C);
        for (int64_t c = 0; c < C; c++)
            y[size_t(r * C + c)] = (x.data()[r * C + c] - m) / std::sqrt(v + eps) * w.data()[c] +
                                   (b.defined() ? b.data()[c] : 0.0);
    }
    return y;
}

TEST_CASE("ops: layernorm gradcheck passes for x, w and b") {
    Rng rng(21);
    Tensor x = param({2, 3, 7}, rng), w = param({7}, rng), b = param({7}, rng);
    GradcheckOptions opt;
    opt.precise = true;
    gradcheck("layernorm", [](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], in[2]); }, {x, w, b},
              opt);
}

TEST_CASE("ops: layernorm gradcheck passes without a bias and with only some inputs trainable") {
    Rng rng(22);
    Tensor x = param({5, 6}, rng), w = Tensor::randn({6}, rng), b = param({6}, rng);
    GradcheckOptions opt;
    opt.precise = true;
    gradcheck("layernorm no bias", [](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], Tensor()); },
              {x, w}, opt);
    Tensor xf = Tensor::randn({5, 6}, rng), wt = param({6}, rng);   // frozen x: only dw and db
    gradcheck("layernorm frozen x", [](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], in[2]); },
              {xf, wt, b}, opt);
}

TEST_CASE("ops: layernorm gradients accumulate into existing gradient buffers") {
    Rng rng(20);
    Tensor x = param({6, 40}, rng), w = param({40}, rng), b = param({40}, rng), R = Tensor::randn({6, 40}, rng);
    check_gradients_accumulate({x, w, b}, [&] { return projection_loss(layernorm(x, w, b), R); });
}

TEST_CASE("ops: layernorm forward matches a double reference") {
    Rng rng(23);
    Tensor x = Tensor::randn({4, 33}, rng, 3.f), w = Tensor::randn({33}, rng), b = Tensor::randn({33}, rng);
    for (int i = 0; i < 33; i++) x.data()[i] += 100.f;   // a row with a large mean
    std::string why;
    CHECK_MESSAGE(allclose(layernorm(x, w, b).to_vector(), layernorm_reference(x, w, b, 1e-5), 1e-5, 1e-5, &why), why);
    CHECK_MESSAGE(allclose(layernorm(x, w, Tensor()).to_vector(), layernorm_reference(x, w, Tensor(), 1e-5), 1e-5,
                           1e-5, &why), why);
}

TEST_CASE("ops: layernorm on constant rows gives finite outputs and gradients") {
    Rng rng(24);
    for (float c : {0.f, 3.f, -1e6f, 1e-30f}) {
        Tensor x = Tensor::full({3, 8}, c).set_requires_grad(true), w = param({8}, rng), b = param({8}, rng);
        Tensor y = layernorm(x, w, b);
        for (int64_t i = 0; i < y.numel(); i++) CHECK(y.data()[i] == doctest::Approx(b.data()[i % 8]));   // xhat = 0
        projection_loss(y, Tensor::randn({3, 8}, rng)).backward();
        for (const Tensor& g : {x.grad(), w.grad(), b.grad()})
            for (float v : g.to_vector()) CHECK(std::isfinite(v));
    }
}

TEST_CASE("ops: layernorm rejects mismatched shapes, naming them") {
    Rng rng(25);
    Tensor x = Tensor::randn({2, 5}, rng);
    CHECK_THROWS_WITH_AS(layernorm(x, Tensor::randn({4}, rng), Tensor::randn({5}, rng)),
                         doctest::Contains("layernorm: x [2, 5], w [4] and b [5]"), ShapeError);
    CHECK_THROWS_WITH_AS(layernorm(x, Tensor::randn({5}, rng), Tensor::randn({6}, rng)),
                         doctest::Contains("b [6]"), ShapeError);
    CHECK_THROWS_WITH_AS(layernorm(x, Tensor::randn({1, 5}, rng), Tensor()), doctest::Contains("w [1, 5]"), ShapeError);
    CHECK_THROWS_AS(layernorm(x, Tensor::randn({5}, rng), Tensor(), 0.f), ValueError);
}

TEST_CASE("ops: layernorm's dw and db match double sums over many rows and a ragged last column block") {
    // 37 rows: two full groups of 16 and a short one; 100 columns: three blocks of 32 and one of 4.
    Rng rng(27);
    const int64_t N = 37, C = 100;
    Tensor x = Tensor::randn({N, C}, rng), w = param({C}, rng), b = param({C}, rng), R = Tensor::randn({N, C}, rng);
    projection_loss(layernorm(x, w, b), R).backward();   // dy = R
    std::vector<double> dw(C), db(C);
    for (int64_t r = 0; r < N; r++) {
        const float* xr = x.data() + r * C;
        double m = 0, v = 0;
        for (int64_t c = 0; c < C; c++) m += xr[c] / double(C);
        for (int64_t c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m) / double(C);
        for (int64_t c = 0; c < C; c++) {
            dw[size_t(c)] += R.data()[r * C + c] * (xr[c] - m) / std::sqrt(v + 1e-5);
            db[size_t(c)] += R.data()[r * C + c];
        }
    }
    std::string why;
    CHECK_MESSAGE(allclose(w.grad().to_vector(), dw, 1e-4, 1e-4, &why), why);
    CHECK_MESSAGE(allclose(b.grad().to_vector(), db, 1e-4, 1e-4, &why), why);
}

TEST_CASE("ops: layernorm forward and backward are bitwise equal on 1 and 2 threads") {
    Rng rng(26);
    Tensor x0 = Tensor::randn({37, 100}, rng), w0 = Tensor::randn({100}, rng), b0 = Tensor::randn({100}, rng);
    Tensor R = Tensor::randn({37, 100}, rng);
    auto run = [&] {
        Tensor x = x0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true),
               b = b0.clone().set_requires_grad(true);
        Tensor y = layernorm(x, w, b);
        projection_loss(y, R).backward();
        return std::vector<std::vector<float>>{y.to_vector(), x.grad().to_vector(), w.grad().to_vector(),
                                               b.grad().to_vector()};
    };
    auto [one, two] = with_1_and_2_threads(run);
    CHECK(one == two);
}

// ---- the row kernels under softmax (engine/row_kernels.h)

TEST_CASE("ops: exp_nonpos is within one ulp of exp on [-87, 0], and 0 at -inf") {
    double worst = 0;
    for (int i = 0; i <= 1000000; i++) {
        const float x = -87.f * float(i) / 1e6f;
        const double want = std::exp(double(x));
        worst = std::max(worst, std::fabs(exp_nonpos(x) - want) / want);
    }
    CHECK(worst < 1.2e-7);   // 2^-23: one ulp at the bottom of a binade
    CHECK(exp_nonpos(0.f) == 1.f);
    CHECK(exp_nonpos(-100.f) == 0.f);
    CHECK(exp_nonpos(-INFINITY) == 0.f);
    CHECK(std::isnan(exp_nonpos(NAN)));
}

TEST_CASE("ops: row max, sum and dot agree with plain loops at every length") {
    Rng rng(30);
    Tensor a = Tensor::randn({37}, rng), b = Tensor::randn({37}, rng);
    for (int64_t n : {0, 1, 7, 8, 9, 16, 37}) {
        double s = 0, d = 0, se = 0;
        float m = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            s += a.data()[i];
            d += double(a.data()[i]) * b.data()[i];
            m = std::max(m, a.data()[i]);
        }
        for (int64_t i = 0; i < n; i++) se += std::exp(double(a.data()[i]) - m);
        CHECK(row_max(a.data(), n) == m);
        CHECK(row_sum(a.data(), n) == doctest::Approx(s).epsilon(1e-12));
        CHECK(row_dot(a.data(), b.data(), n) == doctest::Approx(d).epsilon(1e-12));
        CHECK(row_sum_exp(a.data(), n, m) == doctest::Approx(se).epsilon(1e-6));
    }
}

// ---- softmax

TEST_CASE("ops: softmax gradcheck passes on random input") {
    Rng rng(31);
    Tensor x = param({3, 4, 9}, rng, 2.f);
    GradcheckOptions opt;
    opt.precise = true;
    gradcheck("softmax", [](const std::vector<Tensor>& in) { return softmax(in[0]); }, {x}, opt);
}

TEST_CASE("ops: softmax gradients accumulate into an existing gradient buffer") {
    Rng rng(34);
    Tensor x = param({6, 40}, rng), R = Tensor::randn({6, 40}, rng);
    check_gradients_accumulate({x}, [&] { return projection_loss(softmax(x), R); });
}

TEST_CASE("ops: softmax forward matches a double reference") {
    Rng rng(32);
    Tensor x = Tensor::randn({5, 17}, rng, 4.f);
    std::vector<double> ref(85);
    for (int r = 0; r < 5; r++) {
        double s = 0;
        for (int c = 0; c < 17; c++) s += std::exp(double(x.data()[r * 17 + c]));
        for (int c = 0; c < 17; c++) ref[size_t(r * 17 + c)] = std::exp(double(x.data()[r * 17 + c])) / s;
    }
    std::string why;
    CHECK_MESSAGE(allclose(softmax(x).to_vector(), ref, 1e-5, 1e-7, &why), why);
}

TEST_CASE("ops: softmax of extreme logits is finite and sums to one") {
    Tensor x = Tensor::from({1e4f, -1e4f, 0.f,          //
                             1e30f, -1e30f, 1e30f,      //
                             -INFINITY, 2.f, -INFINITY,  //
                             5.f, 5.f, 5.f},
                            {4, 3});
    std::vector<float> y = softmax(x).to_vector();
    const std::vector<double> want = {1, 0, 0, 0.5, 0, 0.5, 0, 1, 0, 1 / 3., 1 / 3., 1 / 3.};
    std::string why;
    CHECK_MESSAGE(allclose(y, want, 1e-6, 1e-7, &why), why);
    // a row that is entirely -inf (nothing to attend to) gives zeros, not NaN
    std::vector<float> z = softmax(Tensor::full({1, 4}, -INFINITY)).to_vector();
    for (float v : z) CHECK(v == 0.f);
}

TEST_CASE("ops: softmax rejects a tensor without a last dimension") {
    CHECK_THROWS_WITH_AS(softmax(Tensor::zeros({3, 0})), doctest::Contains("softmax: x [3, 0]"), ShapeError);
    CHECK_THROWS_WITH_AS(softmax(Tensor::zeros({})), doctest::Contains("softmax: x []"), ShapeError);
}

TEST_CASE("ops: softmax forward and backward are bitwise equal on 1 and 2 threads") {
    Rng rng(33);
    Tensor x0 = Tensor::randn({41, 50}, rng, 3.f), R = Tensor::randn({41, 50}, rng);
    auto run = [&] {
        Tensor x = x0.clone().set_requires_grad(true);
        Tensor y = softmax(x);
        projection_loss(y, R).backward();
        return std::make_pair(y.to_vector(), x.grad().to_vector());
    };
    auto [one, two] = with_1_and_2_threads(run);
    CHECK(one == two);
}

}  // TEST_SUITE
