// AdamW: float CPU step vs the double reference over several steps, a hand-computed step that
// pins eps outside the sqrt and the bias corrections, no-decay ranges, argument errors.
// (The golden file shared/golden/adamw.safetensors is checked by golden_runner's "adamw" handler.)
#include <catch2/catch.hpp>

#include <cmath>

#include "mambatrack/optim/adamw.hpp"
#include "op_test_util.hpp"

using namespace mambatrack;
using namespace mambatrack::test;
using optim::AdamWArgs;
using optim::AdamWConfig;
using optim::ParamRange;

TEST_CASE("adamw: CPU float step matches the double reference over 10 steps", "[cpu][optim]") {
  const uint64_t seed = test_seed(601);
  INFO("seed " << seed);
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{70001}}) {  // 70001: several parallel chunks
    INFO("n " << n);
    const AdamWConfig cfg{3e-3, 0.9, 0.95, 1e-8, 0.1};
    const std::vector<ParamRange> nd = n > 10 ? std::vector<ParamRange>{{n - 7, n}, {3, 10}} : std::vector<ParamRange>{};
    VecD p = rnd(n, seed), m(n, 0.0), v(n, 0.0);
    VecF pf = to_float(p), mf(n, 0.0f), vf(n, 0.0f);
    for (int64_t s = 1; s <= 10; ++s) {
      const VecD g = rnd(n, seed + 100 + s, -0.1, 0.1);
      const VecF gf = to_float(g);
      optim::reference::adamw_step({mv(p, {n}), cv(g, {n}), mv(m, {n}), mv(v, {n}), s, cfg, nd});
      optim::adamw_step({mv(pf, {n}), cv(gf, {n}), mv(mf, {n}), mv(vf, {n}), s, cfg, nd});
    }
    // Float rounding of inputs (3e-8) and ~6 float operations per element per step: ~1e-7.
    CHECK(rel_err(pf, p) < 1e-6);
    CHECK(rel_err(mf, m) < 1e-6);
    CHECK(rel_err(vf, v) < 1e-6);
  }
}

TEST_CASE("adamw: one hand-computed step (decoupled decay, bias correction, eps outside sqrt)", "[cpu][optim]") {
  // p = 1, g = 0.5, lr 0.1, wd 0.1, β = (0.9, 0.99), eps 0.1 (large, so its placement shows):
  // p ← 1·(1 − 0.01) = 0.99; m = 0.05, v = 0.0025; m̂ = 0.5, sqrt(v̂) = 0.5;
  // p ← 0.99 − 0.1·0.5/(0.5 + 0.1) = 0.90666…  (eps inside the sqrt would give 0.9055).
  const AdamWConfig cfg{0.1, 0.9, 0.99, 0.1, 0.1};
  VecD p{1.0}, g{0.5}, m{0.0}, v{0.0};
  optim::reference::adamw_step({mv(p, {1}), cv(g, {1}), mv(m, {1}), mv(v, {1}), 1, cfg, {}});
  CHECK(p[0] == Approx(0.99 - 0.05 / 0.6).epsilon(1e-14));
  CHECK(m[0] == Approx(0.05).epsilon(1e-14));
  CHECK(v[0] == Approx(0.0025).epsilon(1e-14));
  VecF pf{1.0f}, gf{0.5f}, mf{0.0f}, vf{0.0f};
  optim::adamw_step({mv(pf, {1}), cv(gf, {1}), mv(mf, {1}), mv(vf, {1}), 1, cfg, {}});
  CHECK(pf[0] == Approx(0.99 - 0.05 / 0.6).epsilon(1e-6));  // float arithmetic
  // Step 2 with g = −0.5: m = 0.045 − 0.05 = −0.005... check against the closed form.
  g[0] = -0.5;
  const double p1 = p[0];
  optim::reference::adamw_step({mv(p, {1}), cv(g, {1}), mv(m, {1}), mv(v, {1}), 2, cfg, {}});
  const double m2 = 0.9 * 0.05 - 0.1 * 0.5, v2 = 0.99 * 0.0025 + 0.01 * 0.25;
  const double want = p1 * 0.99 - 0.1 / (1 - 0.81) * m2 / (std::sqrt(v2) / std::sqrt(1 - 0.9801) + 0.1);
  CHECK(p[0] == Approx(want).epsilon(1e-14));
}

TEST_CASE("adamw: no-decay ranges skip weight decay and nothing else", "[cpu][optim]") {
  const uint64_t seed = test_seed(602);
  INFO("seed " << seed);
  const int64_t n = 50;
  const std::vector<ParamRange> nd{{40, 50}, {5, 12}, {20, 20}};  // unsorted, one empty
  VecD p0 = rnd(n, seed), g = rnd(n, seed + 1);
  AdamWConfig with{1e-2, 0.9, 0.999, 1e-8, 0.3}, without = with;
  without.weight_decay = 0;
  VecD pa = p0, pb = p0, pc = p0, m(n, 0.0), v(n, 0.0);
  optim::reference::adamw_step({mv(pa, {n}), cv(g, {n}), mv(m, {n}), mv(v, {n}), 1, with, nd});
  std::fill(m.begin(), m.end(), 0.0), std::fill(v.begin(), v.end(), 0.0);
  optim::reference::adamw_step({mv(pb, {n}), cv(g, {n}), mv(m, {n}), mv(v, {n}), 1, with, {}});
  std::fill(m.begin(), m.end(), 0.0), std::fill(v.begin(), v.end(), 0.0);
  optim::reference::adamw_step({mv(pc, {n}), cv(g, {n}), mv(m, {n}), mv(v, {n}), 1, without, {}});
  VecF pf = to_float(p0), gf = to_float(g), mf(n, 0.0f), vf(n, 0.0f);
  optim::adamw_step({mv(pf, {n}), cv(gf, {n}), mv(mf, {n}), mv(vf, {n}), 1, with, nd});
  for (int64_t i = 0; i < n; ++i) {
    const bool no_decay = (i >= 5 && i < 12) || i >= 40;
    INFO("element " << i << (no_decay ? " (no decay)" : " (decay)"));
    CHECK(pa[i] == (no_decay ? pc[i] : pb[i]));
    CHECK(pa[i] != (no_decay ? pb[i] : pc[i]));     // the decay of 0.3% is visible
    CHECK(pf[i] == Approx(pa[i]).epsilon(1e-6));    // float step
  }
}

TEST_CASE("adamw: bad ranges, sizes and hyper-parameters are named in the error", "[cpu][optim]") {
  using Catch::Matchers::Contains;
  VecF p(10), g(10), m(10), v(9);
  const AdamWConfig cfg;
  CHECK_THROWS_AS(optim::adamw_step({mv(p, {10}), cv(g, {10}), mv(m, {10}), mv(v, {9}), 1, cfg, {}}), ShapeError);
  CHECK_THROWS_WITH(optim::adamw_step({mv(p, {10}), cv(g, {10}), mv(m, {10}), mv(v, {9}), 1, cfg, {}}),
                    Contains("param has 10 elements but grad has 10, exp_avg 10, exp_avg_sq 9"));
  VecF v10(10);
  CHECK_THROWS_WITH(optim::adamw_step({mv(p, {10}), cv(g, {10}), mv(m, {10}), mv(v10, {10}), 1, cfg, {{4, 11}}}),
                    Contains("no-decay range [4, 11) outside the parameter buffer of 10 elements"));
  CHECK_THROWS_AS(optim::adamw_step({mv(p, {10}), cv(g, {10}), mv(m, {10}), mv(v10, {10}), 1, cfg, {{2, 6}, {5, 8}}}),
                  ConfigError);
  CHECK_THROWS_AS(optim::adamw_step({mv(p, {10}), cv(g, {10}), mv(m, {10}), mv(v10, {10}), 0, cfg, {}}), ConfigError);
  AdamWConfig bad = cfg;
  bad.beta2 = 1.0;
  CHECK_THROWS_WITH(optim::adamw_step({mv(p, {10}), cv(g, {10}), mv(m, {10}), mv(v10, {10}), 1, bad, {}}),
                    Contains("beta2 must be in [0, 1), got 1"));
}
