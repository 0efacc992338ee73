// Cross-entropy (ignore index, MAMBA-PT and torch label smoothing, KL value), BCE with logits and
// masked MSE: CPU float vs double reference, finite differences of the reference gradients,
// hand-computed values, stability at large logits, errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "mambatrack/ops/cpu/losses.hpp"
#include "mambatrack/ops/reference/losses.hpp"
#include "op_test_util.hpp"

using namespace mambatrack;
using namespace mambatrack::test;

namespace {
std::vector<int64_t> random_labels(int64_t n, int64_t v, uint64_t seed, int64_t ignore_every = 4) {
  Philox rng(seed, 9);
  std::vector<int64_t> l(n);
  for (int64_t t = 0; t < n; ++t) l[t] = (ignore_every > 0 && t % ignore_every == 3) ? kIgnoreIndex : rng.range(0, v - 1);
  return l;
}
}  // namespace

TEST_CASE("cross_entropy: CPU loss and gradient match the double reference", "[cpu][ops]") {
  const uint64_t seed = test_seed(501);
  INFO("seed " << seed);
  for (auto [n, v] : {std::pair<int64_t, int64_t>{1, 5}, {37, 20}, {257, 2000}, {64, 2}})
    for (double eps : {0.0, 0.1})
      for (SmoothingForm form : {SmoothingForm::kMambaPt, SmoothingForm::kTorch}) {
        INFO("tokens " << n << " V " << v << " eps " << eps << " form " << (form == SmoothingForm::kTorch ? "torch" : "mamba-pt"));
        const auto labels = random_labels(n, v, seed);
        VecD z = rnd(n * v, seed + 1, -6, 6), g(n * v);
        const Shape s{n, v}, sl{n};
        CrossEntropyArgs<double> a{cv(z, s), cv(labels, sl), mv(g, s), kIgnoreIndex, eps, form, eps > 0, 0.5};
        const LossResult want = reference::cross_entropy(a);
        VecF zf = to_float(z), gf(n * v, 9.0f);
        const LossResult got = cpu::cross_entropy({cv(zf, s), cv(labels, sl), mv(gf, s), kIgnoreIndex, eps, form, eps > 0, 0.5});
        CHECK(got.count == want.count);
        CHECK(got.count == (n == 1 ? 1 : n - n / 4));
        // float log-sum-exp over <= 2000 classes, loss accumulated in double: ~1e-7 relative.
        CHECK(got.loss == Approx(want.loss).epsilon(1e-6));
        CHECK(rel_err(gf, g) < 1e-5);  // softmax − q in float, ~1e-7 per element
      }
}

TEST_CASE("cross_entropy: reference gradient matches central finite differences", "[cpu][ops][grad]") {
  const uint64_t seed = test_seed(502);
  INFO("seed " << seed);
  for (double eps : {0.0, 0.2})
    for (SmoothingForm form : {SmoothingForm::kMambaPt, SmoothingForm::kTorch}) {
      const int64_t n = 6, v = 5;
      const auto labels = random_labels(n, v, seed);
      VecD z = rnd(n * v, seed + 1, -3, 3), g(n * v);
      const Shape s{n, v}, sl{n};
      auto loss = [&] { return reference::cross_entropy({cv(z, s), cv(labels, sl), {}, kIgnoreIndex, eps, form, true}).loss; };
      reference::cross_entropy({cv(z, s), cv(labels, sl), mv(g, s), kIgnoreIndex, eps, form, true});
      CHECK(rel_err(g, fd_grad(z, loss)) < 1e-6);  // double central differences, h = 1e-5
    }
}

TEST_CASE("cross_entropy: hand-computed values, ignore index and label smoothing", "[cpu][ops]") {
  const int64_t v = 4;
  // Uniform logits: loss = log V for any label, and with any smoothing (Σ q = 1).
  VecF z(3 * v, 0.7f), g(3 * v);
  const std::vector<int64_t> labels{2, kIgnoreIndex, 0};
  LossResult r = cpu::cross_entropy({cv(z, {3, v}), cv(labels, {3}), mv(g, {3, v})});
  CHECK(r.count == 2);  // the ignored token is not in the mean
  CHECK(r.loss == Approx(std::log(4.0)).epsilon(1e-6));
  // Gradient (softmax − onehot)/count: row 0 = (0.25, 0.25, −0.75, 0.25)/2; the ignored row is 0.
  CHECK(g[2] == Approx(-0.375).epsilon(1e-6));
  CHECK(g[0] == Approx(0.125).epsilon(1e-6));
  for (int64_t c = 0; c < v; ++c) CHECK(g[v + c] == 0.0f);

  // MAMBA-PT smoothing ε = 0.1: q = 0.9 on the target, 0.1/3 elsewhere; KL value adds Σ q log q.
  r = cpu::cross_entropy({cv(z, {3, v}), cv(labels, {3}), mv(g, {3, v}), kIgnoreIndex, 0.1, SmoothingForm::kMambaPt, true});
  const double qlogq = 0.9 * std::log(0.9) + 3 * (0.1 / 3) * std::log(0.1 / 3);
  CHECK(r.loss == Approx(std::log(4.0) + qlogq).epsilon(1e-6));
  CHECK(g[2] == Approx((0.25 - 0.9) / 2).epsilon(1e-6));
  CHECK(g[0] == Approx((0.25 - 0.1 / 3) / 2).epsilon(1e-6));

  // Non-uniform logits (1, 2, 3), target 0: −log p = (2.40760596, 1.40760596, 0.40760596).
  const VecF z3{1, 2, 3};
  const std::vector<int64_t> l0{0};
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  const double nll0 = lse - 1, nll1 = lse - 2, nll2 = lse - 3;
  r = cpu::cross_entropy({cv(z3, {1, 3}), cv(l0, {1}), {}});
  CHECK(r.loss == Approx(nll0).epsilon(1e-6));
  // torch: (1 − ε)·nll + ε·mean_c(−log p_c) = 2.30760596 at ε = 0.1.
  r = cpu::cross_entropy({cv(z3, {1, 3}), cv(l0, {1}), {}, kIgnoreIndex, 0.1, SmoothingForm::kTorch});
  CHECK(r.loss == Approx(0.9 * nll0 + 0.1 * (nll0 + nll1 + nll2) / 3).epsilon(1e-6));
  CHECK(r.loss == Approx(2.30760596).epsilon(1e-6));
  // MAMBA-PT: 0.9·nll_target + 0.05·(nll_1 + nll_2).
  r = cpu::cross_entropy({cv(z3, {1, 3}), cv(l0, {1}), {}, kIgnoreIndex, 0.1, SmoothingForm::kMambaPt});
  CHECK(r.loss == Approx(0.9 * nll0 + 0.05 * (nll1 + nll2)).epsilon(1e-6));
}

TEST_CASE("cross_entropy: 2-class logits (N, 2), MDM ignore index 0, all ignored", "[cpu][ops]") {
  // NTP head: 2 logits per pair, labels 0/1.
  const VecF z{0.0f, 0.0f, 2.0f, -1.0f};
  const std::vector<int64_t> y{1, 0};
  LossResult r = cpu::cross_entropy({cv(z, {2, 2}), cv(y, {2}), {}});
  CHECK(r.loss == Approx((std::log(2.0) + std::log1p(std::exp(-3.0))) / 2).epsilon(1e-6));
  // MAMBA-PT's MDM ignores label 0 (padding): ignore_index = 0.
  const std::vector<int64_t> y0{0, 0};
  VecF g(4, 5.0f);
  r = cpu::cross_entropy({cv(z, {2, 2}), cv(y0, {2}), mv(g, {2, 2}), 0});
  CHECK(r.count == 0);
  CHECK(r.loss == 0.0);
  CHECK(g == VecF(4, 0.0f));
}

TEST_CASE("cross_entropy: stable for huge logits", "[cpu][ops]") {
  const VecF z{1000.0f, 0.0f, -1000.0f, 80.0f};
  const std::vector<int64_t> y{2};
  VecF g(4);
  const LossResult r = cpu::cross_entropy({cv(z, {1, 4}), cv(y, {1}), mv(g, {1, 4})});
  CHECK(r.loss == Approx(2000.0).epsilon(1e-6));
  CHECK(g[0] == Approx(1.0).epsilon(1e-6));
  CHECK(g[2] == Approx(-1.0).epsilon(1e-6));
  for (float v : g) CHECK(std::isfinite(v));
}

TEST_CASE("bce_with_logits: CPU vs reference, finite differences, hand values", "[cpu][ops][grad]") {
  const uint64_t seed = test_seed(503);
  INFO("seed " << seed);
  for (int64_t n : {int64_t{1}, int64_t{9}, int64_t{10000}}) {
    INFO("n " << n);
    VecD z = rnd(n, seed, -40, 40), y = rnd(n, seed + 1, 0, 1), g(n);
    const LossResult want = reference::bce_with_logits({cv(z, {n}), cv(y, {n}), mv(g, {n})});
    VecF zf = to_float(z), yf = to_float(y), gf(n);
    const LossResult got = cpu::bce_with_logits({cv(zf, {n}), cv(yf, {n}), mv(gf, {n})});
    CHECK(got.loss == Approx(want.loss).epsilon(1e-6));  // float terms, double sum
    CHECK(rel_err(gf, g) < 1e-6);                        // σ(z) − y per element
  }
  VecD z = rnd(12, seed + 2, -4, 4), y = rnd(12, seed + 3, 0, 1), g(12);
  auto loss = [&] { return reference::bce_with_logits({cv(z, {12}), cv(y, {12}), {}}).loss; };
  reference::bce_with_logits({cv(z, {12}), cv(y, {12}), mv(g, {12})});
  CHECK(rel_err(g, fd_grad(z, loss)) < 1e-6);  // double central differences
  const VecF zh{0.0f, 2.0f, -100.0f}, yh{1.0f, 0.0f, 1.0f};
  const LossResult r = cpu::bce_with_logits({cv(zh, {3}), cv(yh, {3}), {}});
  CHECK(r.loss == Approx((std::log(2.0) + 2.0 + std::log1p(std::exp(-2.0)) + 100.0) / 3).epsilon(1e-6));
}

TEST_CASE("masked_mse: FM4NPP's -100 padding and an explicit mask", "[cpu][ops][grad]") {
  const uint64_t seed = test_seed(504);
  INFO("seed " << seed);
  // (tokens, 3k = 9) k-NNN targets with a padded tail (tokens >= 40) and missing neighbours
  // set to −100.
  for (int64_t tokens : {int64_t{1}, int64_t{50}}) {
    INFO("tokens " << tokens);
    const int64_t n = tokens * 9;
    VecD p = rnd(n, seed), t = rnd(n, seed + 1), g(n);
    Philox rng(seed + 2, 1);
    for (int64_t i = 0; i < n; ++i)
      if (i >= 40 * 9 || rng.uniform() < 0.2f) t[i] = kMsePadValue;
    std::vector<uint8_t> mask(n);
    for (auto& m : mask) m = rng.uniform() < 0.9f;
    for (bool use_mask : {false, true}) {
      INFO("explicit mask " << use_mask);
      View<const uint8_t> mk = use_mask ? cv(mask, {n}) : View<const uint8_t>();
      const LossResult want = reference::masked_mse({cv(p, {n}), cv(t, {n}), mk, mv(g, {n})});
      int64_t expect = 0;
      for (int64_t i = 0; i < n; ++i) expect += t[i] != kMsePadValue && (!use_mask || mask[i]);
      CHECK(want.count == expect);
      VecF pf = to_float(p), tf = to_float(t), gf(n, 3.0f);
      const LossResult got = cpu::masked_mse({cv(pf, {n}), cv(tf, {n}), mk, mv(gf, {n})});
      CHECK(got.count == want.count);
      CHECK(got.loss == Approx(want.loss).epsilon(1e-6));  // float differences, double sum
      CHECK(rel_err(gf, g) < 1e-6);
      for (int64_t i = 0; i < n; ++i)
        if (t[i] == kMsePadValue) REQUIRE(gf[i] == 0.0f);
      VecD pp = p;
      auto loss = [&] { return reference::masked_mse({cv(pp, {n}), cv(t, {n}), mk, {}}).loss; };
      CHECK(rel_err(g, fd_grad(pp, loss)) < 1e-6);  // double central differences (quadratic: exact but rounding)
    }
  }
  // Hand value: counted (1 − 0)², (3 − 1)²; the −100 target and the masked element are not.
  const VecF ph{1, 5, 3, 7}, th{0, -100, 1, 2};
  const std::vector<uint8_t> mh{1, 1, 1, 0};
  VecF gh(4);
  const LossResult r = cpu::masked_mse({cv(ph, {4}), cv(th, {4}), cv(mh, {4}), mv(gh, {4})});
  CHECK(r.count == 2);
  CHECK(r.loss == Approx(2.5));
  CHECK(gh == VecF{1.0f, 0.0f, 2.0f, 0.0f});  // 2·(p − t)/2
}

TEST_CASE("losses: bad labels, sizes and smoothing throw errors naming them", "[cpu][ops]") {
  using Catch::Matchers::Contains;
  const VecF z(3 * 4);
  const std::vector<int64_t> bad{1, 4, kIgnoreIndex};
  CHECK_THROWS_AS(cpu::cross_entropy({cv(z, {3, 4}), cv(bad, {3}), {}}), ShapeError);
  CHECK_THROWS_WITH(cpu::cross_entropy({cv(z, {3, 4}), cv(bad, {3}), {}}),
                    Contains("token 1 has label 4, outside [0, 4)"));
  const std::vector<int64_t> ok{1, 2};
  CHECK_THROWS_WITH(cpu::cross_entropy({cv(z, {3, 4}), cv(ok, {2}), {}}), Contains("labels has shape (2), expected (3)"));
  const std::vector<int64_t> ok3{1, 2, 3};
  CHECK_THROWS_AS(cpu::cross_entropy({cv(z, {3, 4}), cv(ok3, {3}), {}, kIgnoreIndex, 1.0}), ConfigError);
  const VecF p(5), t(4);
  CHECK_THROWS_WITH(cpu::masked_mse({cv(p, {5}), cv(t, {4}), {}, {}}), Contains("predictions (5) and targets (4)"));
  CHECK_THROWS_AS(cpu::bce_with_logits({cv(p, {5}), cv(t, {4}), {}}), ShapeError);
}
