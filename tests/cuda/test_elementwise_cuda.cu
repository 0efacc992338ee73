// [cuda] SiLU / softplus / GELU forward and backward and the embedding gather / scatter-add vs
// the double reference, fp32 and bf16, outputs NaN-poisoned first; the scatter-add (repeated
// ids, a padding index) bit-identical across runs; bad ids and shapes throw ShapeError.
#include <catch2/catch.hpp>

#include "cuda_test_util.cuh"
#include "mambatrack/ops/cuda/activations.cuh"
#include "mambatrack/ops/cuda/embedding.cuh"
#include "mambatrack/ops/reference/activations.hpp"
#include "mambatrack/ops/reference/embedding.hpp"

using namespace mambatrack;
using namespace mambatrack::test;
namespace mc = mambatrack::cuda;

namespace {

template <class T>
void run_activations(int64_t n, uint64_t seed) {
  INFO("seed " << seed << ", n " << n);
  const double tol = op_tolerance<T>();
  // Wide range, crossing the softplus threshold 20 and the saturation of σ.
  const auto x = rounded_uniform<T>(n, seed, -30, 30);
  const auto dy = rounded_uniform<T>(n, seed + 1);
  const Shape s{n / 4, 4};
  auto gx = device_from<T>(x, s), gdy = device_from<T>(dy, s);
  using RefF = void (*)(const ActivationFwdArgs<double>&);
  using RefB = void (*)(const ActivationBwdArgs<double>&);
  using CuF = void (*)(const ActivationFwdArgs<T, Cuda>&, cudaStream_t);
  using CuB = void (*)(const ActivationBwdArgs<T, Cuda>&, cudaStream_t);
  struct Op {
    const char* name;
    RefF rf;
    RefB rb;
    CuF cf;
    CuB cb;
  };
  const Op ops[] = {{"silu", reference::silu_fwd, reference::silu_bwd, mc::silu_fwd<T>, mc::silu_bwd<T>},
                    {"softplus", reference::softplus_fwd, reference::softplus_bwd, mc::softplus_fwd<T>,
                     mc::softplus_bwd<T>},
                    {"gelu", reference::gelu_fwd, reference::gelu_bwd, mc::gelu_fwd<T>, mc::gelu_bwd<T>}};
  for (const Op& op : ops) {
    INFO(op.name);
    std::vector<double> y_ref(n), dx_ref(n);
    op.rf({View<const double>(x.data(), s), View<double>(y_ref.data(), s)});
    op.rb({View<const double>(x.data(), s), View<const double>(dy.data(), s), View<double>(dx_ref.data(), s)});
    auto y = poisoned<T>(s), dx = poisoned<T>(s);
    op.cf({gx.view(), y.view()}, nullptr);
    op.cb({gx.view(), gdy.view(), dx.view()}, nullptr);
    const auto yg = to_doubles<T>(y.view()), dxg = to_doubles<T>(dx.view());
    CHECK(count_nonfinite(yg) == 0);
    CHECK(count_nonfinite(dxg) == 0);
    CHECK(rel_err(yg, y_ref) <= tol);
    CHECK(rel_err(dxg, dx_ref) <= tol);
  }
}

template <class T>
void run_embedding(int64_t n, int64_t vocab, int64_t d, int64_t padding, uint64_t seed) {
  INFO("seed " << seed << ", tokens " << n << ", vocab " << vocab << ", dim " << d << ", padding " << padding);
  const double tol = op_tolerance<T>();
  Philox rng(seed, 3);
  Tensor<int64_t> ids({n});
  for (int64_t t = 0; t < n; ++t) ids[t] = static_cast<int64_t>(rng.below(static_cast<uint64_t>(vocab)));
  if (padding >= 0) ids[0] = padding;
  const auto table = rounded_uniform<T>(vocab * d, seed + 1);
  const auto dy = rounded_uniform<T>(n * d, seed + 2);
  const auto dt0 = rounded_uniform<T>(vocab * d, seed + 3);
  const Shape st{vocab, d}, sy{n, d};
  std::vector<double> y_ref(n * d), dt_ref = dt0;
  reference::embedding_fwd({ids.view(), View<const double>(table.data(), st), View<double>(y_ref.data(), sy), padding});
  reference::embedding_bwd({ids.view(), View<const double>(dy.data(), sy), View<double>(dt_ref.data(), st), padding});

  mambatrack::CudaContext ctx;
  auto gids = to_device<int64_t>(ids.view());
  auto gtable = device_from<T>(table, st), gdy = device_from<T>(dy, sy);
  auto y = poisoned<T>(sy);
  mc::embedding_fwd<T>({gids.view(), gtable.view(), y.view(), padding}, ctx);
  const auto yg = to_doubles<T>(y.view());
  CHECK(count_nonfinite(yg) == 0);
  CHECK(rel_err(yg, y_ref) == 0.0);  // a copy: exact
  Tensor<T, Cuda> dt[2] = {device_from<T>(dt0, st), device_from<T>(dt0, st)};
  for (int r = 0; r < 2; ++r) mc::embedding_bwd<T>({gids.view(), gdy.view(), dt[r].view(), padding}, ctx);
  CHECK(rel_err(to_doubles<T>(dt[0].view()), dt_ref) <= tol);
  CHECK(bit_identical<T>(dt[0].view(), dt[1].view()));
}

}  // namespace

TEST_CASE("cuda activations fp32 and bf16 match the double reference", "[cuda]") {
  const uint64_t seed = test_seed(301);
  run_activations<float>(4 * 25000, seed);
  run_activations<bfloat16>(4 * 25000, seed + 10);
}

TEST_CASE("cuda activations reject mismatched sizes", "[cuda]") {
  Tensor<float, Cuda> x({10}), y({11});
  CHECK_THROWS_AS(mc::silu_fwd<float>({x.view(), y.view()}), ShapeError);
  CHECK_THROWS_AS(mc::gelu_bwd<float>({x.view(), x.view(), y.view()}), ShapeError);
}

TEST_CASE("cuda embedding fp32 and bf16 match the double reference, deterministically", "[cuda]") {
  const uint64_t seed = test_seed(302);
  run_embedding<float>(5000, 37, 64, 5, seed);        // many repeats of each id
  run_embedding<float>(3000, 20000, 33, kNoPadding, seed + 10);
  run_embedding<bfloat16>(5000, 100, 256, 0, seed + 20);
}

TEST_CASE("cuda embedding rejects bad ids and shapes", "[cuda]") {
  mambatrack::CudaContext ctx;
  Tensor<int64_t> ids({4});
  ids[0] = 1;
  ids[1] = 2;
  ids[2] = 9;  // vocab 5
  ids[3] = -1;
  auto gids = to_device<int64_t>(ids.view());
  Tensor<float, Cuda> table({5, 3}), y({4, 3}), y_bad({4, 2});
  CHECK_THROWS_AS(mc::embedding_fwd<float>({gids.view(), table.view(), y.view()}, ctx), ShapeError);
  CHECK_THROWS_AS(mc::embedding_bwd<float>({gids.view(), y.view(), table.view()}, ctx), ShapeError);
  CHECK_THROWS_AS(mc::embedding_fwd<float>({gids.view(), table.view(), y_bad.view()}, ctx), ShapeError);
}
