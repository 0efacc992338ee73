// Gated grouped RMSNorm (Mamba2, norm_before_gate = false): float CPU against the double
// reference, finite differences of the reference backward, accumulation into dweight, errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "mambatrack/ops/cpu/gated_rmsnorm.hpp"
#include "mambatrack/ops/reference/gated_rmsnorm.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using mambatrack::test::rel_err;

namespace {

template <class T>
struct NormData {
  int64_t tokens = 0, channels = 0, ngroups = 1;
  std::vector<T> y, z, w, dout;
  Shape s() const { return Shape{tokens, channels}; }
  template <class U>
  NormData<U> cast() const {
    NormData<U> o;
    o.tokens = tokens, o.channels = channels, o.ngroups = ngroups;
    o.y.assign(y.begin(), y.end()), o.z.assign(z.begin(), z.end());
    o.w.assign(w.begin(), w.end()), o.dout.assign(dout.begin(), dout.end());
    return o;
  }
};

NormData<double> make_norm(int64_t tokens, int64_t channels, int64_t ngroups, uint64_t seed) {
  NormData<double> d;
  d.tokens = tokens, d.channels = channels, d.ngroups = ngroups;
  const auto n = static_cast<std::size_t>(tokens * channels);
  d.y = test::random_uniform<double>(n, seed + 1, -2.0, 2.0);
  d.z = test::random_uniform<double>(n, seed + 2, -3.0, 3.0);
  d.w = test::random_uniform<double>(static_cast<std::size_t>(channels), seed + 3, 0.5, 1.5);
  d.dout = test::random_uniform<double>(n, seed + 4);
  return d;
}

template <class T, class Fn>
std::vector<T> fwd(const NormData<T>& d, Fn&& fn) {
  std::vector<T> out(d.y.size(), T(-7));
  GatedRmsNormFwdArgs<T> a;
  a.y = View<const T>(d.y.data(), d.s());
  a.z = View<const T>(d.z.data(), d.s());
  a.weight = View<const T>(d.w.data(), Shape{d.channels});
  a.ngroups = d.ngroups;
  a.out = View<T>(out.data(), d.s());
  fn(a);
  return out;
}

template <class T>
struct NormGrads {
  std::vector<T> dy, dz, dw;
};

template <class T, class Fn>
NormGrads<T> bwd(const NormData<T>& d, Fn&& fn, std::vector<T> dw_start = {}) {
  NormGrads<T> g;
  g.dy.assign(d.y.size(), T(-7));
  g.dz.assign(d.y.size(), T(-7));
  g.dw = dw_start.empty() ? std::vector<T>(d.w.size(), T(0)) : dw_start;
  GatedRmsNormBwdArgs<T> a;
  a.y = View<const T>(d.y.data(), d.s());
  a.z = View<const T>(d.z.data(), d.s());
  a.weight = View<const T>(d.w.data(), Shape{d.channels});
  a.dout = View<const T>(d.dout.data(), d.s());
  a.ngroups = d.ngroups;
  a.dy = View<T>(g.dy.data(), d.s());
  a.dz = View<T>(g.dz.data(), d.s());
  a.dweight = View<T>(g.dw.data(), Shape{d.channels});
  fn(a);
  return g;
}

const auto ref_fwd = [](const GatedRmsNormFwdArgs<double>& a) { reference::gated_rmsnorm_fwd(a); };
const auto ref_bwd = [](const GatedRmsNormBwdArgs<double>& a) { reference::gated_rmsnorm_bwd(a); };
const auto cpu_fwd = [](const GatedRmsNormFwdArgs<float>& a) { cpu::gated_rmsnorm_fwd(a); };
const auto cpu_bwd = [](const GatedRmsNormBwdArgs<float>& a) { cpu::gated_rmsnorm_bwd(a); };

}  // namespace

TEST_CASE("gated rmsnorm: the reference matches the formula on one token", "[cpu][norm]") {
  const uint64_t seed = test::test_seed(2001);
  INFO("seed " << seed);
  const auto d = make_norm(3, 6, 2, seed);
  const auto out = fwd(d, ref_fwd);
  // token 1, group 1 = channels 3..5, written out by hand.
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  double ss = 0;
  for (int i = 3; i < 6; ++i) ss += std::pow(d.y[6 + i] * silu(d.z[6 + i]), 2);
  const double r = 1 / std::sqrt(ss / 3 + 1e-5);
  for (int i = 3; i < 6; ++i)
    CHECK(out[6 + i] == Approx(d.y[6 + i] * silu(d.z[6 + i]) * r * d.w[i]).epsilon(1e-14));
}

TEST_CASE("gated rmsnorm: cpu forward and backward match the double reference",
          "[cpu][grad][norm]") {
  const uint64_t seed = test::test_seed(2002);
  INFO("seed " << seed);
  struct Case { int64_t tokens, channels, ngroups; };
  for (const Case c : {Case{1, 16, 1}, Case{37, 64, 2}, Case{300, 128, 1}, Case{600, 96, 4}}) {
    INFO("tokens " << c.tokens << " d_inner " << c.channels << " ngroups " << c.ngroups);
    const auto d = make_norm(c.tokens, c.channels, c.ngroups, seed + c.tokens);
    const auto df = d.cast<float>();
    const auto start = test::random_uniform<double>(d.w.size(), seed + 9);
    const auto want = fwd(d, ref_fwd);
    const auto got = fwd(df, cpu_fwd);
    // float32, a group sum of <= 128 squares: ~1e-7 relative.
    CHECK(rel_err(got, want) < 1e-6);
    const auto gw = bwd(d, ref_bwd);
    auto gg = bwd(df, cpu_bwd, std::vector<float>(start.begin(), start.end()));
    for (std::size_t i = 0; i < gg.dw.size(); ++i) gg.dw[i] -= static_cast<float>(start[i]);
    CHECK(rel_err(gg.dy, gw.dy) < 1e-5);  // float32 per-token sums: ~1e-6
    CHECK(rel_err(gg.dz, gw.dz) < 1e-5);
    // dweight: a float32 sum over up to 600 tokens, minus the O(1) start value: ~1e-6.
    CHECK(rel_err(gg.dw, gw.dw) < 1e-5);
  }
}

TEST_CASE("gated rmsnorm: reference backward matches central finite differences",
          "[grad][norm]") {
  const uint64_t seed = test::test_seed(2003);
  INFO("seed " << seed);
  auto d = make_norm(4, 6, 2, seed);
  const auto g = bwd(d, ref_bwd);
  auto loss = [&] {
    const auto out = fwd(d, ref_fwd);
    double l = 0;
    for (std::size_t i = 0; i < out.size(); ++i) l += out[i] * d.dout[i];
    return l;
  };
  auto check = [&](std::vector<double>& v, const std::vector<double>& grad, const char* name) {
    std::vector<double> fd(v.size());
    const double h = 1e-5;  // central differences: ~1e-10 truncation, ~1e-11 round-off
    for (std::size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i];
      v[i] = keep + h;
      const double lp = loss();
      v[i] = keep - h;
      const double lm = loss();
      v[i] = keep;
      fd[i] = (lp - lm) / (2 * h);
    }
    INFO("gradient of " << name);
    CHECK(rel_err(grad, fd) < 1e-6);
  };
  check(d.y, g.dy, "y");
  check(d.z, g.dz, "z");
  check(d.w, g.dw, "weight");
}

TEST_CASE("gated rmsnorm: results do not depend on the thread count", "[cpu][norm]") {
  const uint64_t seed = test::test_seed(2004);
  INFO("seed " << seed);
  const auto d = make_norm(1000, 64, 2, seed).cast<float>();
  const int before = num_threads();
  set_num_threads(1);
  const auto g1 = bwd(d, cpu_bwd);
  set_num_threads(2);
  const auto g2 = bwd(d, cpu_bwd);
  set_num_threads(before);
  CHECK(g1.dw == g2.dw);  // fixed token blocks summed in order: bitwise equal
  CHECK(g1.dy == g2.dy);
}

TEST_CASE("gated rmsnorm: bad arguments throw errors that name the problem", "[cpu][norm]") {
  const uint64_t seed = test::test_seed(2005);
  INFO("seed " << seed);
  const auto d = make_norm(4, 6, 2, seed).cast<float>();
  std::vector<float> out(d.y.size());
  GatedRmsNormFwdArgs<float> a;
  a.y = View<const float>(d.y.data(), d.s());
  a.z = View<const float>(d.z.data(), d.s());
  a.weight = View<const float>(d.w.data(), Shape{6});
  a.ngroups = 2;
  a.out = View<float>(out.data(), d.s());
  REQUIRE_NOTHROW(cpu::gated_rmsnorm_fwd(a));
  auto bad = a;
  bad.z = View<const float>(d.z.data(), Shape{6, 4});
  CHECK_THROWS_AS(cpu::gated_rmsnorm_fwd(bad), ShapeError);
  CHECK_THROWS_WITH(cpu::gated_rmsnorm_fwd(bad), Catch::Contains("gate z has shape (6, 4), expected (4, 6)"));
  bad = a;
  bad.weight = View<const float>(d.w.data(), Shape{5});
  CHECK_THROWS_WITH(cpu::gated_rmsnorm_fwd(bad), Catch::Contains("norm weight has shape (5), expected (6)"));
  bad = a;
  bad.ngroups = 4;
  CHECK_THROWS_AS(cpu::gated_rmsnorm_fwd(bad), ConfigError);
  CHECK_THROWS_WITH(cpu::gated_rmsnorm_fwd(bad), Catch::Contains("ngroups = 4 must be >= 1 and divide d_inner = 6"));
}
