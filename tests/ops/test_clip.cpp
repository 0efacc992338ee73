// Gradient clipping (torch clip_grad_norm_ incl. its 1e-6, clip_grad_value_): hand-checked
// values, float CPU vs double reference, thread-count independence, non-finite gradients.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "mambatrack/optim/clip.hpp"
#include "op_test_util.hpp"

using namespace mambatrack;
using namespace mambatrack::test;

TEST_CASE("clip: hand-checked global-norm and value clipping", "[cpu][optim]") {
  VecF g{3.0f, -4.0f};
  double norm = optim::clip_grad_norm(mv(g, {2}), 1.0);
  CHECK(norm == 5.0);
  const double coef = 1.0 / (5.0 + 1e-6);                // torch: max_norm / (norm + 1e-6)
  CHECK(g[0] == 3.0f * static_cast<float>(coef));  // float grads times the float coefficient
  CHECK(g[1] == -4.0f * static_cast<float>(coef));
  CHECK(g[0] == Approx(0.6).epsilon(3e-7));
  VecF h{3.0f, -4.0f};
  norm = optim::clip_grad_norm(mv(h, {2}), 5.0);         // coef = 5/(5 + 1e-6) < 1: still scaled
  CHECK(norm == 5.0);
  CHECK(h[0] == 3.0f * static_cast<float>(5.0 / (5.0 + 1e-6)));
  CHECK(h[0] < 3.0f);
  VecF k{3.0f, -4.0f};
  optim::clip_grad_norm(mv(k, {2}), 10.0);               // below the limit: untouched
  CHECK(k == VecF{3.0f, -4.0f});
  VecF c{-2.0f, 0.5f, 3.0f, -0.25f};
  optim::clip_grad_value(mv(c, {4}), 1.0);
  CHECK(c == VecF{-1.0f, 0.5f, 1.0f, -0.25f});
}

TEST_CASE("clip: CPU float matches the double reference, for any thread count", "[cpu][optim]") {
  const uint64_t seed = test_seed(701);
  INFO("seed " << seed);
  for (int64_t n : {int64_t{1}, int64_t{100000}}) {
    INFO("n " << n);
    VecD g = rnd(n, seed, -0.01, 0.01);
    VecD gd = g;
    const double want = optim::reference::clip_grad_norm(mv(gd, {n}), 0.1);
    VecF g1 = to_float(g), g2 = to_float(g);
    const int threads = num_threads();
    set_num_threads(1);
    const double n1 = optim::clip_grad_norm(mv(g1, {n}), 0.1);
    set_num_threads(2);
    const double n2 = optim::clip_grad_norm(mv(g2, {n}), 0.1);
    set_num_threads(threads);
    CHECK(n1 == n2);  // fixed chunks summed in order: bit-identical
    CHECK(g1 == g2);
    CHECK(n1 == Approx(want).epsilon(1e-7));  // float inputs (3e-8 each), double sum
    CHECK(rel_err(g1, gd) < 1e-6);            // plus one float multiply
    VecD vd = g;
    VecF vf = to_float(g);
    optim::reference::clip_grad_value(mv(vd, {n}), 0.005);
    optim::clip_grad_value(mv(vf, {n}), 0.005);
    CHECK(rel_err(vf, vd) < 1e-7);  // clamping only rounds the bound to float
  }
}

TEST_CASE("clip: a non-finite norm is returned and the gradients are left alone", "[cpu][optim]") {
  VecF g{1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f};
  const double norm = optim::clip_grad_norm(mv(g, {3}), 1.0);
  CHECK(std::isnan(norm));
  CHECK(g[0] == 1.0f);
  CHECK(g[2] == 2.0f);
  VecF inf{1.0f, std::numeric_limits<float>::infinity()};
  CHECK(std::isinf(optim::clip_grad_norm(mv(inf, {2}), 1.0)));
  CHECK(inf[0] == 1.0f);
}

TEST_CASE("clip: a non-positive limit is a ConfigError naming it", "[cpu][optim]") {
  VecF g{1.0f};
  CHECK_THROWS_AS(optim::clip_grad_norm(mv(g, {1}), 0.0), ConfigError);
  CHECK_THROWS_WITH(optim::clip_grad_value(mv(g, {1}), -1.0), Catch::Matchers::Contains("clip value must be a positive finite number, got -1"));
}
