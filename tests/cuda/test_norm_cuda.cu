// [cuda] RMSNorm / LayerNorm and the fused residual-add + norm vs the double reference, fp32 and
// bf16: forward y and residual, backward dx/dsum (overwritten, NaN-poisoned first) and dw/db
// (accumulated onto random values); two backward runs bit-identical; bad shapes throw.
#include <catch2/catch.hpp>

#include "cuda_test_util.cuh"
#include "mambatrack/ops/cuda/norm.cuh"
#include "mambatrack/ops/reference/norm.hpp"

using namespace mambatrack;
using namespace mambatrack::test;
namespace mc = mambatrack::cuda;

namespace {

template <class T>
void run_add_norm(int64_t n, int64_t d, NormKind kind, bool bias, bool with_residual, uint64_t seed) {
  INFO("seed " << seed << ", tokens " << n << ", dim " << d << ", " << norm_name(kind) << ", bias " << bias
                << ", residual_in " << with_residual);
  const double tol = op_tolerance<T>();
  const Shape sm{n, d}, sv{d};
  const auto x = rounded_uniform<T>(n * d, seed, -2, 2);
  const auto rin = rounded_uniform<T>(n * d, seed + 1, -2, 2);
  const auto w = rounded_uniform<T>(d, seed + 2, 0.5, 1.5);
  const auto b = rounded_uniform<T>(d, seed + 3);
  const auto dy = rounded_uniform<T>(n * d, seed + 4);
  const auto dres = rounded_uniform<T>(n * d, seed + 5);
  const auto dw0 = rounded_uniform<T>(d, seed + 6), db0 = rounded_uniform<T>(d, seed + 7);

  mambatrack::CudaContext ctx;
  auto gx = device_from<T>(x, sm), grin = device_from<T>(rin, sm), gw = device_from<T>(w, sv), gb = device_from<T>(b, sv);
  auto res = poisoned<T>(sm), y = poisoned<T>(sm);
  View<const T, Cuda> vb = bias ? View<const T, Cuda>(gb.view()) : View<const T, Cuda>();
  View<const T, Cuda> vrin = with_residual ? View<const T, Cuda>(grin.view()) : View<const T, Cuda>();
  AddNormFwdArgs<T, Cuda> fa{gx.view(), vrin, gw.view(), vb, res.view(), y.view(), kind, 1e-5};
  mc::add_norm_fwd(fa, ctx.stream());
  const auto res_g = to_doubles<T>(res.view()), y_g = to_doubles<T>(y.view());
  CHECK(count_nonfinite(res_g) == 0);
  CHECK(count_nonfinite(y_g) == 0);

  // Reference on the residual as stored (bf16: the rounded sum), which the CUDA norm also uses.
  std::vector<double> res_ref(n * d), y_ref(n * d);
  for (int64_t i = 0; i < n * d; ++i) res_ref[i] = x[i] + (with_residual ? rin[i] : 0.0);
  CHECK(rel_err(res_g, res_ref) <= tol);
  View<const double> rb = bias ? View<const double>(b.data(), sv) : View<const double>();
  reference::norm_fwd({View<const double>(res_g.data(), sm), View<const double>(w.data(), sv), rb,
                       View<double>(y_ref.data(), sm), kind, 1e-5});
  CHECK(rel_err(y_g, y_ref) <= tol);

  // Backward through the add: dsum = norm backward + dresidual.
  std::vector<double> dsum_ref(n * d), dw_ref = dw0, db_ref = db0;
  reference::add_norm_bwd({View<const double>(res_g.data(), sm), View<const double>(w.data(), sv),
                           View<const double>(dy.data(), sm), View<const double>(dres.data(), sm),
                           View<double>(dsum_ref.data(), sm), View<double>(dw_ref.data(), sv),
                           bias ? View<double>(db_ref.data(), sv) : View<double>(), kind, 1e-5});
  auto gdy = device_from<T>(dy, sm), gdres = device_from<T>(dres, sm);
  Tensor<T, Cuda> dsum[2] = {poisoned<T>(sm), poisoned<T>(sm)};
  Tensor<T, Cuda> gdw[2] = {device_from<T>(dw0, sv), device_from<T>(dw0, sv)};
  Tensor<T, Cuda> gdb[2] = {device_from<T>(db0, sv), device_from<T>(db0, sv)};
  for (int r = 0; r < 2; ++r)
    mc::add_norm_bwd<T>({res.view(), gw.view(), gdy.view(), gdres.view(), dsum[r].view(), gdw[r].view(),
                         bias ? View<T, Cuda>(gdb[r].view()) : View<T, Cuda>(), kind, 1e-5},
                        ctx);
  const auto dsum_g = to_doubles<T>(dsum[0].view());
  CHECK(count_nonfinite(dsum_g) == 0);
  CHECK(rel_err(dsum_g, dsum_ref) <= tol);
  CHECK(rel_err(to_doubles<T>(gdw[0].view()), dw_ref) <= tol);
  if (bias) CHECK(rel_err(to_doubles<T>(gdb[0].view()), db_ref) <= tol);
  CHECK(bit_identical<T>(dsum[0].view(), dsum[1].view()));
  CHECK(bit_identical<T>(gdw[0].view(), gdw[1].view()));
  CHECK(bit_identical<T>(gdb[0].view(), gdb[1].view()));

  // Plain norm backward, dx overwriting dy in place (the aliasing path).
  std::vector<double> dx_ref(n * d), dw2_ref = dw0;
  reference::norm_bwd({View<const double>(res_g.data(), sm), View<const double>(w.data(), sv),
                       View<const double>(dy.data(), sm), View<double>(dx_ref.data(), sm),
                       View<double>(dw2_ref.data(), sv), View<double>(), kind, 1e-5});
  auto gdw2 = device_from<T>(dw0, sv);
  mc::norm_bwd<T>({res.view(), gw.view(), gdy.view(), gdy.view(), gdw2.view(), {}, kind, 1e-5}, ctx);
  CHECK(rel_err(to_doubles<T>(gdy.view()), dx_ref) <= tol);
  CHECK(rel_err(to_doubles<T>(gdw2.view()), dw2_ref) <= tol);

  // Plain norm forward.
  auto y2 = poisoned<T>(sm);
  mc::norm_fwd<T>({res.view(), gw.view(), vb, y2.view(), kind, 1e-5}, ctx.stream());
  CHECK(bit_identical<T>(y2.view(), y.view()));
}

}  // namespace

TEST_CASE("cuda add+norm fp32 matches the double reference", "[cuda]") {
  const uint64_t seed = test_seed(201);
  for (NormKind kind : {NormKind::kRms, NormKind::kLayer}) {
    run_add_norm<float>(517, 64, kind, kind == NormKind::kLayer, true, seed);
    run_add_norm<float>(300, 256, kind, true, false, seed + 10);
    run_add_norm<float>(33, 1000, kind, false, true, seed + 20);
  }
}

TEST_CASE("cuda add+norm bf16 matches the double reference", "[cuda]") {
  const uint64_t seed = test_seed(202);
  for (NormKind kind : {NormKind::kRms, NormKind::kLayer}) {
    run_add_norm<bfloat16>(517, 64, kind, true, true, seed);
    run_add_norm<bfloat16>(129, 1024, kind, false, true, seed + 10);
  }
}

TEST_CASE("cuda norm rejects mismatched shapes", "[cuda]") {
  mambatrack::CudaContext ctx;
  Tensor<float, Cuda> x({8, 4}), w({5}), w_ok({4}), y({8, 4}), y_bad({4, 8});
  CHECK_THROWS_AS(mc::norm_fwd<float>({x.view(), w.view(), {}, y.view()}, nullptr), ShapeError);
  CHECK_THROWS_AS(mc::norm_fwd<float>({x.view(), w_ok.view(), {}, y_bad.view()}, nullptr), ShapeError);
  CHECK_THROWS_AS(mc::add_norm_fwd<float>({x.view(), y_bad.view(), w_ok.view(), {}, y.view(), y.view()}, nullptr),
                  ShapeError);
  CHECK_THROWS_AS(mc::norm_bwd<float>({x.view(), w_ok.view(), y_bad.view(), y.view(), {}, {}}, ctx), ShapeError);
}
