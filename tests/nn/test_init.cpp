// Initialisation follows the reference's recipes: ranges and exact values where they are fixed,
// statistics where they are random, and independence of the registration order.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "mambatrack/nn/init.hpp"

using namespace mambatrack;
using namespace mambatrack::nn;

TEST_CASE("init: reference recipes", "[cpu][nn]") {
  Tensor<float> a(Shape{8, 16});
  init_s4d_real_A_log(a.view());
  CHECK(a.at(3, 0) == 0.0f);
  CHECK(a.at(5, 15) == Approx(std::log(16.0)));

  Philox rng = param_rng(42, "backbone.layers.0.mixer.dt_proj.bias");
  Tensor<float> dt(Shape{20000});
  init_dt_bias(dt.view(), 1e-3, 0.1, 1e-4, rng);
  double log_sum = 0;
  for (int64_t i = 0; i < dt.numel(); ++i) {
    const double softplus = std::log1p(std::exp(static_cast<double>(dt[i])));
    REQUIRE(softplus >= 1e-3 * (1 - 1e-5));
    REQUIRE(softplus <= 0.1 * (1 + 1e-5));
    log_sum += std::log(softplus);
  }
  // log(dt) uniform in [ln 1e-3, ln 0.1]: mean ln(1e-2) = -4.605, sd of the mean 1.33/sqrt(2e4) ≈ 0.009.
  CHECK(log_sum / dt.numel() == Approx(std::log(1e-2)).margin(0.05));

  Tensor<float> w(Shape{64, 32});
  Philox r2 = param_rng(42, "w");
  init_fan_in_uniform(w.view(), 32, r2);
  float lo = 1, hi = -1;
  for (int64_t i = 0; i < w.numel(); ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  const float bound = 1.0f / std::sqrt(32.0f);
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(hi > 0.95f * bound);  // 2048 uniform draws reach the edges
  CHECK(lo < -0.95f * bound);

  Tensor<float> A(Shape{1000});
  Philox r3 = param_rng(1, "A_log");
  init_mamba2_A_log(A.view(), 1, 16, r3);
  for (int64_t i = 0; i < A.numel(); ++i) {
    REQUIRE(std::exp(A[i]) >= 1.0f - 1e-6f);
    REQUIRE(std::exp(A[i]) <= 16.0f * (1 + 1e-6f));
  }
}

TEST_CASE("init: each parameter's values depend on its name and the seed only", "[cpu][nn]") {
  auto draw = [](uint64_t seed, const std::string& name) {
    Philox rng = param_rng(seed, name);
    std::vector<float> v(16);
    for (auto& x : v) x = static_cast<float>(rng.normal());
    return v;
  };
  CHECK(draw(7, "a.weight") == draw(7, "a.weight"));
  CHECK(draw(7, "a.weight") != draw(7, "b.weight"));
  CHECK(draw(7, "a.weight") != draw(8, "a.weight"));
}
