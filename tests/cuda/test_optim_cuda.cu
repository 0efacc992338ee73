// [cuda] AdamW over the flat buffer (with no-decay ranges) and gradient clipping (global norm,
// by value) vs the double references on random inputs; clipping's norm bit-identical across
// runs; size mismatches throw ShapeError.
#include <catch2/catch.hpp>

#include "cuda_test_util.cuh"
#include "mambatrack/optim/cuda/adamw.cuh"
#include "mambatrack/optim/cuda/clip.cuh"

using namespace mambatrack;
using namespace mambatrack::test;
namespace mc = mambatrack::cuda;

TEST_CASE("cuda adamw matches the double reference", "[cuda]") {
  const uint64_t seed = test_seed(501);
  INFO("seed " << seed);
  const int64_t n = 200001;
  const Shape s{n};
  auto p = rounded_uniform<float>(n, seed);
  const auto g = rounded_uniform<float>(n, seed + 1, -0.1, 0.1);
  auto m = rounded_uniform<float>(n, seed + 2, -0.01, 0.01);
  auto v = rounded_uniform<float>(n, seed + 3, 1e-6, 1e-4);
  optim::AdamWConfig cfg;
  cfg.lr = 3e-3;
  cfg.weight_decay = 0.1;
  const std::vector<optim::ParamRange> nd = {{100, 5000}, {0, 10}, {190000, 200001}, {7000, 7001}};
  mambatrack::CudaContext ctx;
  auto gp = device_from<float>(p, s), gg = device_from<float>(g, s), gm = device_from<float>(m, s), gv = device_from<float>(v, s);
  for (int64_t step = 1; step <= 3; ++step) {
    optim::AdamWArgs<double> ra{View<double>(p.data(), s), View<const double>(g.data(), s), View<double>(m.data(), s),
                                View<double>(v.data(), s), step, cfg, nd};
    optim::reference::adamw_step(ra);
    optim::AdamWArgs<float, Cuda> ca{gp.view(), gg.view(), gm.view(), gv.view(), step, cfg, nd};
    mc::adamw_step(ca, ctx);
  }
  // fp32 updates of O(lr) on O(1) parameters: error ~1e-7 relative.
  CHECK(rel_err(to_doubles<float>(gp.view()), p) <= 1e-6);
  CHECK(rel_err(to_doubles<float>(gm.view()), m) <= 1e-5);
  CHECK(rel_err(to_doubles<float>(gv.view()), v) <= 1e-5);
  Tensor<float, Cuda> short_g({n - 1});
  CHECK_THROWS_AS(mc::adamw_step({gp.view(), short_g.view(), gm.view(), gv.view(), 1, cfg, {}}, ctx), ShapeError);
}

TEST_CASE("cuda gradient clipping matches the double reference", "[cuda]") {
  const uint64_t seed = test_seed(502);
  INFO("seed " << seed);
  const int64_t n = 300007;
  const Shape s{n};
  mambatrack::CudaContext ctx;
  auto g = rounded_uniform<float>(n, seed, -1, 1);
  auto gd = device_from<float>(g, s);
  // squares of floats summed in double: exact to ~1e-15.
  const double norm0 = mc::grad_norm(gd.view(), ctx);
  CHECK(norm0 == mc::grad_norm(gd.view(), ctx));
  auto ref = g;
  const double want = optim::reference::clip_grad_norm(View<double>(ref.data(), s), 10.0);
  CHECK(std::abs(norm0 - want) <= 1e-12 * want);
  const double got = mc::clip_grad_norm(gd.view(), 10.0, ctx);
  CHECK(got == norm0);
  CHECK(rel_err(to_doubles<float>(gd.view()), ref) <= 1e-6);  // one fp32 multiply
  auto g2 = device_from<float>(g, s);
  auto ref2 = g;
  optim::reference::clip_grad_value(View<double>(ref2.data(), s), 0.25);
  mc::clip_grad_value(g2.view(), 0.25);
  CHECK(rel_err(to_doubles<float>(g2.view()), ref2) == 0.0);  // clamping is exact
  CHECK_THROWS_AS(mc::clip_grad_norm(gd.view(), -1.0, ctx), ConfigError);
}
