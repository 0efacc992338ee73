// RMSNorm, LayerNorm, residual add and the fused add+norm: CPU float vs double reference, finite
// differences of the reference backward, hand-computed values, accumulate contract, errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "mambatrack/ops/cpu/norm.hpp"
#include "mambatrack/ops/reference/norm.hpp"
#include "op_test_util.hpp"

using namespace mambatrack;
using namespace mambatrack::test;

namespace {
const char* kind_name(NormKind k) { return k == NormKind::kRms ? "rms" : "layer"; }
}  // namespace

TEST_CASE("norm: CPU forward and backward match the double reference", "[cpu][ops]") {
  const uint64_t seed = test_seed(201);
  INFO("seed " << seed);
  for (NormKind kind : {NormKind::kRms, NormKind::kLayer})
    for (auto [n, d] : {std::pair<int64_t, int64_t>{1, 8}, {5, 64}, {200, 192}, {3, 3}}) {
      const bool bias = kind == NormKind::kLayer;
      INFO(kind_name(kind) << " tokens " << n << " dim " << d);
      VecD x = rnd(n * d, seed, -2, 2), w = rnd(d, seed + 1, 0.5, 1.5), b = rnd(d, seed + 2), dy = rnd(n * d, seed + 3);
      VecD y(n * d), dx(n * d), dw = rnd(d, seed + 4), db = rnd(d, seed + 5);
      const Shape s{n, d}, sv{d};
      reference::norm_fwd({cv(x, s), cv(w, sv), bias ? cv(b, sv) : View<const double>(), mv(y, s), kind, 1e-5});
      VecF xf = to_float(x), wf = to_float(w), bf = to_float(b), dyf = to_float(dy), yf(n * d), dxf(n * d),
           dwf = to_float(dw), dbf = to_float(db);
      reference::norm_bwd({cv(x, s), cv(w, sv), cv(dy, s), mv(dx, s), mv(dw, sv), bias ? mv(db, sv) : View<double>(),
                           kind, 1e-5});
      cpu::norm_fwd({cv(xf, s), cv(wf, sv), bias ? cv(bf, sv) : View<const float>(), mv(yf, s), kind, 1e-5});
      cpu::norm_bwd({cv(xf, s), cv(wf, sv), cv(dyf, s), mv(dxf, s), mv(dwf, sv), bias ? mv(dbf, sv) : View<float>(),
                     kind, 1e-5});
      // Row sums over <= 192 channels in float: ~1e-6 relative; dw sums over 200 tokens.
      // (d <= 2 is left out: there dx is O(eps) (RMSNorm d = 1: r·g·eps/(x² + eps); LayerNorm d = 2:
      // xhat = ±1), pure cancellation in float.)
      CHECK(rel_err(yf, y) < 1e-5);
      CHECK(rel_err(dxf, dx) < 1e-5);
      CHECK(rel_err(dwf, dw) < 1e-5);
      if (bias) CHECK(rel_err(dbf, db) < 1e-5);
    }
}

TEST_CASE("norm: reference backward matches central finite differences", "[cpu][ops][grad]") {
  const uint64_t seed = test_seed(202);
  INFO("seed " << seed);
  for (NormKind kind : {NormKind::kRms, NormKind::kLayer})
    for (auto [n, d] : {std::pair<int64_t, int64_t>{1, 5}, {3, 7}}) {
      INFO(kind_name(kind) << " tokens " << n << " dim " << d);
      VecD x = rnd(n * d, seed, -2, 2), w = rnd(d, seed + 1, 0.5, 1.5), b = rnd(d, seed + 2), dy = rnd(n * d, seed + 3);
      const Shape s{n, d}, sv{d};
      VecD y(n * d);
      auto loss = [&] {
        reference::norm_fwd({cv(x, s), cv(w, sv), cv(b, sv), mv(y, s), kind, 1e-5});
        return dot(y, dy);
      };
      VecD dx(n * d), dw(d, 0.0), db(d, 0.0);
      reference::norm_bwd({cv(x, s), cv(w, sv), cv(dy, s), mv(dx, s), mv(dw, sv), mv(db, sv), kind, 1e-5});
      // Double central differences, h = 1e-5: O(h²) truncation ~1e-10 for O(1) curvature.
      CHECK(rel_err(dx, fd_grad(x, loss)) < 1e-6);
      CHECK(rel_err(dw, fd_grad(w, loss)) < 1e-6);
      CHECK(rel_err(db, fd_grad(b, loss)) < 1e-6);
    }
}

TEST_CASE("norm: hand-computed RMSNorm and LayerNorm of one token", "[cpu][ops]") {
  // x = (1, 2, 3, 4): mean(x²) = 7.5; mean 2.5, biased variance 1.25.
  const VecF x{1, 2, 3, 4}, w{1, 2, 1, 0.5f}, b{0, 1, 0, -1};
  VecF y(4);
  cpu::norm_fwd({cv(x, {1, 4}), cv(w, {4}), {}, mv(y, {1, 4}), NormKind::kRms, 1e-5});
  const double r = 1 / std::sqrt(7.5 + 1e-5);
  CHECK(y[1] == Approx(2 * 2 * r).epsilon(1e-6));  // float rounding: a few ulp
  CHECK(y[3] == Approx(4 * 0.5 * r).epsilon(1e-6));
  cpu::norm_fwd({cv(x, {1, 4}), cv(w, {4}), cv(b, {4}), mv(y, {1, 4}), NormKind::kLayer, 1e-5});
  const double rl = 1 / std::sqrt(1.25 + 1e-5);
  CHECK(y[0] == Approx(-1.5 * rl).epsilon(1e-6));
  CHECK(y[1] == Approx(-0.5 * rl * 2 + 1).epsilon(1e-6));
  CHECK(y[3] == Approx(1.5 * rl * 0.5 - 1).epsilon(1e-6));
}

TEST_CASE("norm: fused add+norm equals add then norm, backward sums both paths", "[cpu][ops][grad]") {
  const uint64_t seed = test_seed(203);
  INFO("seed " << seed);
  for (NormKind kind : {NormKind::kRms, NormKind::kLayer}) {
    INFO(kind_name(kind));
    const int64_t n = 4, d = 6;
    const Shape s{n, d}, sv{d};
    VecD x = rnd(n * d, seed), rin = rnd(n * d, seed + 1), w = rnd(d, seed + 2, 0.5, 1.5), b = rnd(d, seed + 3),
         dy = rnd(n * d, seed + 4), dres = rnd(n * d, seed + 5);
    VecD res(n * d), y(n * d), sum(n * d), y2(n * d);
    reference::add_norm_fwd({cv(x, s), cv(rin, s), cv(w, sv), cv(b, sv), mv(res, s), mv(y, s), kind, 1e-5});
    reference::add_fwd({cv(x, s), cv(rin, s), mv(sum, s)});
    reference::norm_fwd({cv(sum, s), cv(w, sv), cv(b, sv), mv(y2, s), kind, 1e-5});
    CHECK(rel_err(res, sum) == 0.0);
    CHECK(rel_err(y, y2) == 0.0);
    // L = Σ y·dy + Σ residual·dres (the residual stream continues to later blocks).
    auto loss = [&] {
      reference::add_norm_fwd({cv(x, s), cv(rin, s), cv(w, sv), cv(b, sv), mv(res, s), mv(y, s), kind, 1e-5});
      return dot(y, dy) + dot(res, dres);
    };
    loss();
    VecD dsum(n * d), dw(d, 0.0), db(d, 0.0);
    reference::add_norm_bwd({cv(res, s), cv(w, sv), cv(dy, s), cv(dres, s), mv(dsum, s), mv(dw, sv), mv(db, sv), kind, 1e-5});
    CHECK(rel_err(dsum, fd_grad(x, loss)) < 1e-6);  // double central differences, h = 1e-5
    CHECK(rel_err(dsum, fd_grad(rin, loss)) < 1e-6);
    CHECK(rel_err(dw, fd_grad(w, loss)) < 1e-6);
    CHECK(rel_err(db, fd_grad(b, loss)) < 1e-6);

    // CPU float, in place (residual written over residual_in) and at the first block (no residual_in).
    loss();
    VecF xf = to_float(x), rf = to_float(rin), wf = to_float(w), bf = to_float(b), dyf = to_float(dy),
         dresf = to_float(dres), yf(n * d), dsumf(n * d), dwf(d, 0.0f), dbf(d, 0.0f);
    cpu::add_norm_fwd({cv(xf, s), cv(rf, s), cv(wf, sv), cv(bf, sv), mv(rf, s), mv(yf, s), kind, 1e-5});
    CHECK(rel_err(rf, res) < 1e-7);  // one float add per element
    CHECK(rel_err(yf, y) < 1e-5);    // float row statistics over 6 channels
    cpu::add_norm_bwd({cv(rf, s), cv(wf, sv), cv(dyf, s), cv(dresf, s), mv(dsumf, s), mv(dwf, sv), mv(dbf, sv), kind, 1e-5});
    CHECK(rel_err(dsumf, dsum) < 1e-5);
    CHECK(rel_err(dwf, dw) < 1e-5);
    CHECK(rel_err(dbf, db) < 1e-5);
    VecF res0(n * d);
    cpu::add_norm_fwd({cv(xf, s), {}, cv(wf, sv), cv(bf, sv), mv(res0, s), mv(yf, s), kind, 1e-5});
    CHECK(rel_err(res0, xf) == 0.0);
  }
}

TEST_CASE("norm: weight gradients accumulate and do not depend on the thread count", "[cpu][ops]") {
  const uint64_t seed = test_seed(204);
  INFO("seed " << seed);
  const int64_t n = 300, d = 32;  // several 64-token partial-sum blocks
  const Shape s{n, d}, sv{d};
  VecF x = to_float(rnd(n * d, seed)), w = to_float(rnd(d, seed + 1)), b = to_float(rnd(d, seed + 2)),
       dy = to_float(rnd(n * d, seed + 3));
  VecF dx(n * d), dw1(d, 0.0f), db1(d, 0.0f), dw2(d, 0.0f), db2(d, 0.0f);
  const int threads = num_threads();
  set_num_threads(1);
  cpu::norm_bwd({cv(x, s), cv(w, sv), cv(dy, s), mv(dx, s), mv(dw1, sv), mv(db1, sv), NormKind::kLayer, 1e-5});
  set_num_threads(2);
  for (int k = 0; k < 2; ++k)
    cpu::norm_bwd({cv(x, s), cv(w, sv), cv(dy, s), mv(dx, s), mv(dw2, sv), mv(db2, sv), NormKind::kLayer, 1e-5});
  set_num_threads(threads);
  for (int64_t i = 0; i < d; ++i) {
    CHECK(dw2[i] == 2 * dw1[i]);  // x + x is exact in float: accumulated twice, same partial order
    CHECK(db2[i] == 2 * db1[i]);
  }
}

TEST_CASE("norm: bad shapes and eps throw errors naming the sizes", "[cpu][ops]") {
  using Catch::Matchers::Contains;
  VecF x(12), w(3), y(12);
  CHECK_THROWS_AS(cpu::norm_fwd({cv(x, {3, 4}), cv(w, {3}), {}, mv(y, {3, 4})}), ShapeError);
  CHECK_THROWS_WITH(cpu::norm_fwd({cv(x, {3, 4}), cv(w, {3}), {}, mv(y, {3, 4})}),
                    Contains("rms_norm: weight has shape (3), expected (4)"));
  VecF w4(4);
  CHECK_THROWS_AS(cpu::norm_fwd({cv(x, {3, 4}), cv(w4, {4}), {}, mv(y, {3, 4}), NormKind::kLayer, 0.0}), ConfigError);
  CHECK_THROWS_WITH(cpu::add_fwd({cv(x, {3, 4}), cv(y, {4, 3}), mv(y, {3, 4})}), Contains("(3, 4) + (4, 3)"));
}
