// [cuda] gated grouped RMSNorm: CUDA forward/backward against the float64 reference on fresh
// random inputs (float and bfloat16 storage), ngroups 1, 2 and 4 with group sizes that are and
// are not multiples of a warp, every output written (poisoned first), dweight accumulated and
// bit-identical from run to run, shape errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "mambatrack/cuda.cuh"
#include "mambatrack/ops/cuda/gated_rmsnorm.cuh"
#include "mambatrack/ops/reference/gated_rmsnorm.hpp"
#include "cuda_test_util.cuh"
#include "support/test_support.hpp"

using namespace mambatrack;

namespace {

using test::count_nonfinite;
using test::make;
using test::poisoned;
using test::to_doubles;
using test::values;

template <class T>
void run_case(int64_t tokens, int64_t channels, int64_t ngroups, uint64_t seed, double tol) {
  INFO("seed " << seed << ", tokens " << tokens << ", d_inner " << channels << ", ngroups " << ngroups);
  Philox rng(seed, 31);
  const Shape s{tokens, channels};
  auto y = make<T>(s, rng, -2, 2);
  auto z = make<T>(s, rng, -3, 3);
  auto w = make<T>(Shape{channels}, rng, 0.5, 1.5);
  auto dout = make<T>(s, rng, -1, 1);
  auto dw0 = make<T>(Shape{channels}, rng, -0.1, 0.1);  // small: the gradient dominates the total
  const T eps = T(1e-5f);
  const double eps_d = static_cast<double>(static_cast<float>(eps));

  Tensor<double> r_out(s), r_dy(s), r_dz(s), r_dw(Shape{channels});
  reference::gated_rmsnorm_fwd({y.d.view(), z.d.view(), w.d.view(), ngroups, eps_d, r_out.view()});
  copy<double>(dw0.d.view(), r_dw.view());
  reference::gated_rmsnorm_bwd(
      {y.d.view(), z.d.view(), w.d.view(), dout.d.view(), ngroups, eps_d, r_dy.view(), r_dz.view(), r_dw.view()});

  auto out = poisoned<T>(s);
  cuda::gated_rmsnorm_fwd<T>({y.dev.view(), z.dev.view(), w.dev.view(), ngroups, eps, out.view()});
  CHECK_CLOSE("out", to_doubles(out), values(r_out), tol);

  std::vector<std::vector<double>> runs[2];
  for (int run = 0; run < 2; ++run) {
    auto dy = poisoned<T>(s);
    auto dz = poisoned<T>(s);
    auto dw = to_device<T>(dw0.t.view());
    cuda::gated_rmsnorm_bwd<T>(
        {y.dev.view(), z.dev.view(), w.dev.view(), dout.dev.view(), ngroups, eps, dy.view(), dz.view(), dw.view()});
    runs[run] = {to_doubles(dy), to_doubles(dz), to_doubles(dw)};
  }
  CHECK_CLOSE("dy", runs[0][0], values(r_dy), tol);
  CHECK_CLOSE("dz", runs[0][1], values(r_dz), tol);
  CHECK_CLOSE("dweight (accumulated)", runs[0][2], values(r_dw), tol);
  INFO("backward outputs differing between two identical runs");
  CHECK(runs[0] == runs[1]);
}

// float32: one float sum of <= 512 squares per group and expf/rsqrtf (~2 ulp): ~1e-6; dweight
// sums over up to 300 tokens: ~1e-6. 1e-5 allowed.
constexpr double kTolF32 = 1e-5;
// bfloat16: inputs and outputs rounded to 8 mantissa bits (2^-9 relative): 1e-2.
constexpr double kTolBF16 = 1e-2;

}  // namespace

TEST_CASE("cuda gated_rmsnorm fp32: ngroups 1, 2, 4; group sizes 512, 48, 10", "[cuda]") {
  run_case<float>(300, 512, 1, test::test_seed(711), kTolF32);
  run_case<float>(77, 96, 2, test::test_seed(712), kTolF32);
  run_case<float>(5, 40, 4, test::test_seed(713), kTolF32);
}

// Group sizes that are multiples of 16 bytes of elements run the packed kernels (fp32: 512, 48;
// bf16: 512, 128), the others one element per access (fp32: 10; bf16: 30).
TEST_CASE("cuda gated_rmsnorm bf16: ngroups 1 and 2", "[cuda]") {
  run_case<bfloat16>(300, 512, 1, test::test_seed(721), kTolBF16);
  run_case<bfloat16>(129, 256, 2, test::test_seed(722), kTolBF16);
  run_case<bfloat16>(40, 60, 2, test::test_seed(723), kTolBF16);
}

TEST_CASE("cuda gated_rmsnorm: bad shapes and ngroups throw", "[cuda]") {
  Tensor<float, Cuda> y(Shape{4, 8}), z(Shape{4, 8}), w(Shape{8}), out(Shape{4, 8}), bad(Shape{4, 9}), w9(Shape{9});
  CHECK_THROWS_AS(cuda::gated_rmsnorm_fwd<float>({y.view(), bad.view(), w.view(), 1, 1e-5f, out.view()}), ShapeError);
  CHECK_THROWS_AS(cuda::gated_rmsnorm_fwd<float>({y.view(), z.view(), w9.view(), 1, 1e-5f, out.view()}), ShapeError);
  CHECK_THROWS_AS(cuda::gated_rmsnorm_fwd<float>({y.view(), z.view(), w.view(), 3, 1e-5f, out.view()}), ConfigError);
  CHECK_THROWS_AS(cuda::gated_rmsnorm_bwd<float>({y.view(), z.view(), w.view(), y.view(), 1, 1e-5f, out.view(),
                                                  bad.view(), w.view()}),
                  ShapeError);
}
