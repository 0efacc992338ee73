// [cuda] causal conv1d (+ SiLU): CUDA forward/backward against the float64 reference on fresh
// random inputs (float and bfloat16 storage), packed varlen batches (lengths 1, 2, 3, 7, 64, ...),
// d_conv 2, 3 and 4, one and two channels per thread, with and without bias and SiLU, poisoned outputs, accumulated dweight/dbias,
// bit-identical backward runs, and shape errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "mambatrack/cuda.cuh"
#include "mambatrack/ops/cuda/causal_conv1d.cuh"
#include "mambatrack/ops/reference/causal_conv1d.hpp"
#include "cuda_test_util.cuh"
#include "support/test_support.hpp"

using namespace mambatrack;

namespace {

using test::count_nonfinite;
using test::make;
using test::Pair;
using test::poisoned;
using test::to_doubles;
using test::values;

template <class T>
void run_conv(const std::vector<int64_t>& lens, int64_t channels, int64_t K, bool with_bias, bool silu, uint64_t seed,
              double tol) {
  INFO("seed " << seed << ", channels " << channels << ", d_conv " << K << ", bias " << with_bias << ", silu " << silu);
  Philox rng(seed, 5);
  const int64_t batch = static_cast<int64_t>(lens.size());
  Tensor<int64_t> cu(Shape{batch + 1});
  cu[0] = 0;
  for (int64_t b = 0; b < batch; ++b) cu[b + 1] = cu[b] + lens[static_cast<std::size_t>(b)];
  const int64_t L = cu[batch];
  auto cu_dev = to_device<int64_t>(cu.view());
  auto x = make<T>(Shape{L, channels}, rng, -2, 2);
  auto w = make<T>(Shape{channels, K}, rng, -1, 1);
  auto bias = make<T>(Shape{channels}, rng, -1, 1);
  auto dout = make<T>(Shape{L, channels}, rng, -1, 1);
  auto dw0 = make<T>(Shape{channels, K}, rng, -1, 1);
  auto db0 = make<T>(Shape{channels}, rng, -1, 1);

  CausalConv1dInputs<double> rin;
  rin.x = x.d.view();
  rin.weight = w.d.view();
  if (with_bias) rin.bias = bias.d.view();
  rin.cu_seqlens = cu.view();
  rin.silu = silu;
  Tensor<double> r_out(Shape{L, channels}), r_dx(Shape{L, channels}), r_dw(Shape{channels, K}), r_db(Shape{channels});
  reference::causal_conv1d_fwd({rin, r_out.view()});
  copy<double>(dw0.d.view(), r_dw.view());
  copy<double>(db0.d.view(), r_db.view());
  reference::causal_conv1d_bwd({rin, dout.d.view(), r_dx.view(), r_dw.view(), with_bias ? r_db.view() : View<double>()});

  CausalConv1dInputs<T, Cuda> in;
  in.x = x.dev.view();
  in.weight = w.dev.view();
  if (with_bias) in.bias = bias.dev.view();
  in.cu_seqlens = cu_dev.view();
  in.silu = silu;
  auto out = poisoned<T>(Shape{L, channels});
  cuda::causal_conv1d_fwd<T>({in, out.view()});
  MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
  {
    const auto got = to_doubles(out);
    const double e = test::rel_err(got, values(r_out));
    INFO("out: relative error " << e << " (tolerance " << tol << ")");
    CHECK(count_nonfinite(got) == 0);
    CHECK(e <= tol);
  }
  std::vector<double> first[3];
  for (int run = 0; run < 2; ++run) {
    auto dx = poisoned<T>(Shape{L, channels});
    auto dw = to_device<T>(dw0.t.view());
    auto db = to_device<T>(db0.t.view());
    cuda::causal_conv1d_bwd<T>({in, dout.dev.view(), dx.view(), dw.view(), with_bias ? db.view() : View<T, Cuda>()});
    MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<double> got[3] = {to_doubles(dx), to_doubles(dw), to_doubles(db)};
    if (run == 0) {
      const std::vector<double> want[3] = {values(r_dx), values(r_dw), values(r_db)};
      const char* names[3] = {"dx", "dweight (accumulated)", "dbias (accumulated)"};
      for (int i = 0; i < (with_bias ? 3 : 2); ++i) {
        const double e = test::rel_err(got[i], want[i]);
        INFO(names[i] << ": relative error " << e << " (tolerance " << tol << ")");
        CHECK(count_nonfinite(got[i]) == 0);
        CHECK(e <= tol);
      }
      for (int i = 0; i < 3; ++i) first[i] = got[i];
    } else {
      INFO("two identical backward runs must give bit-identical gradients");
      for (int i = 0; i < 3; ++i) CHECK(got[i] == first[i]);
    }
  }
}

// float32: K ≤ 4 products and one expf per element; sums of up to 130 tokens in dweight: 1e-5.
constexpr double kTolF32 = 1e-5;
// bfloat16 storage rounds every input and output to 8 mantissa bits: 1e-2.
constexpr double kTolBF16 = 1e-2;

}  // namespace

// Even channel counts run two channels per thread, odd ones one.
TEST_CASE("cuda causal_conv1d fp32: packed varlen, d_conv 4, bias, SiLU", "[cuda]") {
  run_conv<float>({1, 2, 3, 7, 64, 130, 0, 5}, 160, 4, true, true, test::test_seed(11), kTolF32);
  run_conv<float>({1, 2, 3, 7, 64, 130, 0, 5}, 131, 4, true, true, test::test_seed(16), kTolF32);
  // Empty first and last sequences, sequence ends on tile (64-token) edges, several block columns.
  run_conv<float>({0, 64, 63, 1, 0, 2, 0}, 514, 4, true, true, test::test_seed(17), kTolF32);
  run_conv<float>({3}, 6, 4, true, true, test::test_seed(18), kTolF32);  // fewer tokens than d_conv
}

TEST_CASE("cuda causal_conv1d fp32: d_conv 2 and 3, no bias, no SiLU", "[cuda]") {
  run_conv<float>({3, 70, 1}, 40, 2, false, false, test::test_seed(12), kTolF32);
  run_conv<float>({65, 2, 9}, 33, 3, true, false, test::test_seed(13), kTolF32);
  run_conv<float>({65, 2, 9}, 34, 3, true, false, test::test_seed(19), kTolF32);
  run_conv<float>({3, 70, 1}, 41, 2, false, true, test::test_seed(20), kTolF32);
}

TEST_CASE("cuda causal_conv1d bf16: many short tracks", "[cuda]") {
  run_conv<bfloat16>(std::vector<int64_t>(300, 12), 256, 4, true, true, test::test_seed(14), kTolBF16);
  run_conv<bfloat16>({5, 70, 1, 130, 0, 9}, 37, 4, true, true, test::test_seed(15), kTolBF16);
}

TEST_CASE("cuda causal_conv1d: bad shapes and unsupported d_conv throw", "[cuda]") {
  const int64_t L = 10, Cn = 8;
  Tensor<float, Cuda> x(Shape{L, Cn}), w(Shape{Cn, 4}), w5(Shape{Cn, 5}), out(Shape{L, Cn}), bad(Shape{L, Cn + 1});
  Tensor<int64_t> cu_h(Shape{2});
  cu_h[0] = 0;
  cu_h[1] = L;
  auto cu = to_device<int64_t>(cu_h.view());
  CausalConv1dInputs<float, Cuda> in;
  in.x = x.view();
  in.weight = w.view();
  in.cu_seqlens = cu.view();
  CHECK_THROWS_AS(cuda::causal_conv1d_fwd<float>({in, bad.view()}), ShapeError);
  auto in5 = in;
  in5.weight = w5.view();
  CHECK_THROWS_AS(cuda::causal_conv1d_fwd<float>({in5, out.view()}), ConfigError);
  auto inw = in;
  inw.weight = bad.view();
  CHECK_THROWS_AS(cuda::causal_conv1d_fwd<float>({inw, out.view()}), ShapeError);
}
