// SiLU, softplus and GELU: CPU float vs double reference, finite differences of the reference
// backward, hand-computed values, safety at extreme arguments, size errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "mambatrack/ops/cpu/activations.hpp"
#include "mambatrack/ops/reference/activations.hpp"
#include "op_test_util.hpp"

using namespace mambatrack;
using namespace mambatrack::test;

namespace {
struct Act {
  const char* name;
  void (*ref_fwd)(const ActivationFwdArgs<double>&);
  void (*ref_bwd)(const ActivationBwdArgs<double>&);
  void (*cpu_fwd)(const ActivationFwdArgs<float>&);
  void (*cpu_bwd)(const ActivationBwdArgs<float>&);
};
const Act kActs[] = {
    {"silu", reference::silu_fwd, reference::silu_bwd, cpu::silu_fwd, cpu::silu_bwd},
    {"softplus", reference::softplus_fwd, reference::softplus_bwd, cpu::softplus_fwd, cpu::softplus_bwd},
    {"gelu", reference::gelu_fwd, reference::gelu_bwd, cpu::gelu_fwd, cpu::gelu_bwd},
};
}  // namespace

TEST_CASE("activations: CPU forward and backward match the double reference", "[cpu][ops]") {
  const uint64_t seed = test_seed(301);
  INFO("seed " << seed);
  for (const Act& act : kActs)
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{20000}}) {  // 20000: several parallel chunks
      INFO(act.name << " n " << n);
      // Inputs across both branches of softplus (threshold 20) and the saturated tails.
      VecD x = rnd(n, seed, -30, 30), dy = rnd(n, seed + 1), y(n), dx(n);
      act.ref_fwd({cv(x, {n}), mv(y, {n})});
      act.ref_bwd({cv(x, {n}), cv(dy, {n}), mv(dx, {n})});
      VecF xf = to_float(x), dyf = to_float(dy), yf(n), dxf(n);
      act.cpu_fwd({cv(xf, {n}), mv(yf, {n})});
      act.cpu_bwd({cv(xf, {n}), cv(dyf, {n}), mv(dxf, {n})});
      // Elementwise float math (exp, erf, log1p: <= 2 ulp each) on float-rounded inputs: ~1e-7.
      CHECK(rel_err(yf, y) < 1e-6);
      CHECK(rel_err(dxf, dx) < 1e-6);
    }
}

TEST_CASE("activations: reference backward matches central finite differences", "[cpu][ops][grad]") {
  const uint64_t seed = test_seed(302);
  INFO("seed " << seed);
  for (const Act& act : kActs) {
    INFO(act.name);
    // Points away from softplus's threshold at 20 (where its derivative jumps by e^-20).
    VecD x = rnd(40, seed, -8, 8), dy = rnd(40, seed + 1), y(40), dx(40);
    x.push_back(25.0);
    x.push_back(-40.0);
    dy.push_back(0.7);
    dy.push_back(-0.3);
    const int64_t n = static_cast<int64_t>(x.size());
    y.resize(n);
    dx.resize(n);
    auto loss = [&] {
      act.ref_fwd({cv(x, {n}), mv(y, {n})});
      return dot(y, dy);
    };
    act.ref_bwd({cv(x, {n}), cv(dy, {n}), mv(dx, {n})});
    CHECK(rel_err(dx, fd_grad(x, loss)) < 1e-6);  // double central differences, h = 1e-5
  }
}

TEST_CASE("activations: hand-computed values", "[cpu][ops]") {
  VecF x{0.0f, 1.0f, -1.0f, 2.0f}, y(4);
  cpu::silu_fwd({cv(x, {4}), mv(y, {4})});
  CHECK(y[0] == 0.0f);
  CHECK(y[1] == Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));  // 0.7310586
  cpu::softplus_fwd({cv(x, {4}), mv(y, {4})});
  CHECK(y[0] == Approx(std::log(2.0)).epsilon(1e-6));
  CHECK(y[3] == Approx(std::log1p(std::exp(2.0))).epsilon(1e-6));  // 2.126928
  cpu::gelu_fwd({cv(x, {4}), mv(y, {4})});
  CHECK(y[1] == Approx(0.8413447460685429).epsilon(1e-6));  // Φ(1)
  CHECK(y[2] == Approx(-0.15865525393145707).epsilon(1e-6));
}

TEST_CASE("activations: softplus and SiLU stay finite and exact at extreme arguments", "[cpu][ops]") {
  const float big = 1e30f, huge = std::numeric_limits<float>::max();
  VecF x{-huge, -big, -200.0f, -60.0f, 20.5f, 200.0f, big}, y(7), dy(7, 1.0f), dx(7);
  const int64_t n = 7;
  cpu::softplus_fwd({cv(x, {n}), mv(y, {n})});
  for (float v : y) CHECK(std::isfinite(v));
  CHECK(y[0] == 0.0f);
  CHECK(y[3] == Approx(std::exp(-60.0)).epsilon(1e-6));  // log1p(e^-60) = e^-60 = 8.8e-27, not 0
  CHECK(y[4] == 20.5f);                                  // above the threshold: x itself
  CHECK(y[6] == big);
  cpu::softplus_bwd({cv(x, {n}), cv(dy, {n}), mv(dx, {n})});
  for (float v : dx) CHECK(std::isfinite(v));
  CHECK(dx[0] == 0.0f);
  CHECK(dx[4] == 1.0f);
  cpu::silu_fwd({cv(x, {n}), mv(y, {n})});
  cpu::silu_bwd({cv(x, {n}), cv(dy, {n}), mv(dx, {n})});
  for (int i = 0; i < n; ++i) {
    INFO("x = " << x[i]);
    CHECK(std::isfinite(y[i]));
    CHECK(std::isfinite(dx[i]));
  }
  CHECK(y[6] == big);
  CHECK(y[1] == 0.0f);
  // torch's threshold 20 (visible in double: log1p(e^x) − x = e^-x ≈ 2e-9 near 20).
  VecD xd{-1000.0, 1000.0, 20.5, 19.5}, yd(4), dyd(4, 1.0), dxd(4);
  reference::softplus_fwd({cv(xd, {4}), mv(yd, {4})});
  CHECK(yd[0] == 0.0);
  CHECK(yd[1] == 1000.0);
  CHECK(yd[2] == 20.5);
  CHECK(yd[3] == Approx(19.5 + std::exp(-19.5)).epsilon(1e-15));
  CHECK(yd[3] != 19.5);
  reference::softplus_bwd({cv(xd, {4}), cv(dyd, {4}), mv(dxd, {4})});
  CHECK(dxd[2] == 1.0);
  CHECK(dxd[3] < 1.0);
}

TEST_CASE("activations: size mismatch throws ShapeError naming both shapes", "[cpu][ops]") {
  VecF x(6), y(5);
  CHECK_THROWS_WITH(cpu::gelu_fwd({cv(x, {6}), mv(y, {5})}),
                    Catch::Matchers::Contains("gelu: x has 6 elements (6) but y has 5 (5)"));
  CHECK_THROWS_AS(cpu::silu_bwd({cv(x, {2, 3}), cv(x, {6}), mv(y, {5})}), ShapeError);
}
