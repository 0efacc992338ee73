// [cuda] Linear through cuBLASLt vs the double reference: forward with and without the fused
// bias, backward dx (overwritten), dW and db (accumulated onto random values), in fp32 (fp32,
// tf32 and bf16 compute) and bf16 storage; every output written (NaN-poisoned first); two
// backward runs bit-identical; bad shapes throw ShapeError.
#include <catch2/catch.hpp>

#include "cuda_test_util.cuh"
#include "mambatrack/ops/cuda/linear.cuh"
#include "mambatrack/ops/reference/linear.hpp"

using namespace mambatrack;
using namespace mambatrack::test;
namespace mc = mambatrack::cuda;

namespace {

struct LinearCase {
  int64_t n, in, out;
  bool bias;
};

template <class T>
void run_linear(const LinearCase& c, uint64_t seed, mc::GemmCompute compute, double tol) {
  INFO("seed " << seed << ", tokens " << c.n << ", in " << c.in << ", out " << c.out << ", bias " << c.bias);
  const auto x = rounded_uniform<T>(c.n * c.in, seed);
  const auto w = rounded_uniform<T>(c.out * c.in, seed + 1, -0.5, 0.5);
  const auto b = rounded_uniform<T>(c.out, seed + 2);
  const auto dy = rounded_uniform<T>(c.n * c.out, seed + 3);
  const auto dw0 = rounded_uniform<T>(c.out * c.in, seed + 4);
  const auto db0 = rounded_uniform<T>(c.out, seed + 5);

  // reference
  std::vector<double> y_ref(c.n * c.out), dx_ref(c.n * c.in), dw_ref = dw0, db_ref = db0;
  const Shape sx{c.n, c.in}, sw{c.out, c.in}, sb{c.out}, sy{c.n, c.out};
  View<const double> rb = c.bias ? View<const double>(b.data(), sb) : View<const double>();
  reference::linear_fwd({View<const double>(x.data(), sx), View<const double>(w.data(), sw), rb, View<double>(y_ref.data(), sy)});
  reference::linear_bwd({View<const double>(x.data(), sx), View<const double>(w.data(), sw), View<const double>(dy.data(), sy),
                         View<double>(dx_ref.data(), sx), View<double>(dw_ref.data(), sw),
                         c.bias ? View<double>(db_ref.data(), sb) : View<double>()});

  mambatrack::CudaContext ctx;
  auto dx_ = device_from<T>(x, sx), dw_ = device_from<T>(w, sw), db_ = device_from<T>(b, sb), ddy = device_from<T>(dy, sy);
  auto y = poisoned<T>(sy), gx = poisoned<T>(sx);
  auto gw = device_from<T>(dw0, sw), gb = device_from<T>(db0, sb);
  View<const T, Cuda> bias = c.bias ? View<const T, Cuda>(db_.view()) : View<const T, Cuda>();
  LinearFwdArgs<T, Cuda> fa{dx_.view(), dw_.view(), bias, y.view()};
  LinearBwdArgs<T, Cuda> ba{dx_.view(), dw_.view(), ddy.view(), gx.view(), gw.view(),
                            c.bias ? View<T, Cuda>(gb.view()) : View<T, Cuda>()};
  if constexpr (std::is_same_v<T, float>) {
    mc::linear_fwd(fa, ctx, compute);
    mc::linear_bwd(ba, ctx, compute);
  } else {
    mc::linear_fwd(fa, ctx);
    mc::linear_bwd(ba, ctx);
  }
  const auto yg = to_doubles<T>(y.view()), dxg = to_doubles<T>(gx.view());
  const auto dwg = to_doubles<T>(gw.view()), dbg = to_doubles<T>(gb.view());
  CHECK(count_nonfinite(yg) == 0);
  CHECK(count_nonfinite(dxg) == 0);
  CHECK(rel_err(yg, y_ref) <= tol);
  CHECK(rel_err(dxg, dx_ref) <= tol);
  CHECK(rel_err(dwg, dw_ref) <= tol);
  if (c.bias) CHECK(rel_err(dbg, db_ref) <= op_tolerance<T>());  // db: a plain fp32 column sum
}

}  // namespace

TEST_CASE("cuda linear fp32 matches the double reference", "[cuda]") {
  const uint64_t seed = test_seed(101);
  // fp32 compute: fp32 sums over ≤ 1000 terms, relative error ~1e-7 ≪ 1e-5.
  run_linear<float>({300, 48, 40, true}, seed, mc::GemmCompute::kFp32, 1e-5);
  run_linear<float>({1000, 64, 256, false}, seed + 10, mc::GemmCompute::kFp32, 1e-5);
  run_linear<float>({7, 3, 5, true}, seed + 20, mc::GemmCompute::kFp32, 1e-5);
  // tf32 rounds the inputs to 10 mantissa bits (2^-11 ≈ 5e-4 per product): 3e-3.
  run_linear<float>({512, 64, 256, true}, seed + 30, mc::GemmCompute::kTf32, 3e-3);
  // bf16-rounded inputs (2^-8 ≈ 4e-3 per product, averaging down over the sums): 1e-2.
  run_linear<float>({512, 64, 256, true}, seed + 40, mc::GemmCompute::kBf16, 1e-2);
}

TEST_CASE("cuda linear bf16 matches the double reference", "[cuda]") {
  const uint64_t seed = test_seed(102);
  // bf16 outputs: each rounded to 8 mantissa bits, ≈4e-3 relative, the stated 1e-2 bound.
  run_linear<bfloat16>({300, 48, 40, true}, seed, mc::GemmCompute::kFp32, 1e-2);
  run_linear<bfloat16>({2048, 256, 1024, true}, seed + 10, mc::GemmCompute::kFp32, 1e-2);
}

TEST_CASE("cuda linear backward is bit-identical across runs", "[cuda]") {
  const uint64_t seed = test_seed(103);
  INFO("seed " << seed);
  const int64_t n = 40960, in = 64, out = 256;
  mambatrack::CudaContext ctx;
  auto x = device_from<float>(random_uniform<double>(n * in, seed), {n, in});
  auto w = device_from<float>(random_uniform<double>(out * in, seed + 1), {out, in});
  auto dy = device_from<float>(random_uniform<double>(n * out, seed + 2), {n, out});
  Tensor<float, Cuda> dx[2] = {Tensor<float, Cuda>({n, in}), Tensor<float, Cuda>({n, in})};
  Tensor<float, Cuda> dw[2] = {Tensor<float, Cuda>({out, in}), Tensor<float, Cuda>({out, in})};
  Tensor<float, Cuda> db[2] = {Tensor<float, Cuda>({out}), Tensor<float, Cuda>({out})};
  for (int r = 0; r < 2; ++r) {
    MAMBATRACK_CUDA_CHECK(cudaMemset(dw[r].data(), 0, dw[r].bytes()));
    MAMBATRACK_CUDA_CHECK(cudaMemset(db[r].data(), 0, db[r].bytes()));
    mc::linear_bwd({x.view(), w.view(), dy.view(), dx[r].view(), dw[r].view(), db[r].view()}, ctx);
  }
  CHECK(bit_identical<float>(dx[0].view(), dx[1].view()));
  CHECK(bit_identical<float>(dw[0].view(), dw[1].view()));
  CHECK(bit_identical<float>(db[0].view(), db[1].view()));
}

TEST_CASE("cuda linear rejects mismatched shapes", "[cuda]") {
  mambatrack::CudaContext ctx;
  Tensor<float, Cuda> x({8, 4}), w({3, 5}), w_ok({3, 4}), y({8, 3}), y_bad({8, 2}), b_bad({4});
  CHECK_THROWS_AS(mc::linear_fwd({x.view(), w.view(), {}, y.view()}, ctx), ShapeError);
  CHECK_THROWS_AS(mc::linear_fwd({x.view(), w_ok.view(), {}, y_bad.view()}, ctx), ShapeError);
  CHECK_THROWS_AS(mc::linear_fwd({x.view(), w_ok.view(), b_bad.view(), y.view()}, ctx), ShapeError);
  Tensor<float, Cuda> dy_bad({8, 4}), dx({8, 4}), dw({3, 4});
  CHECK_THROWS_AS(mc::linear_bwd({x.view(), w_ok.view(), dy_bad.view(), dx.view(), dw.view(), {}}, ctx), ShapeError);
}

TEST_CASE("cuda linear bf16 backward into fp32 gradients matches the double reference", "[cuda]") {
  const uint64_t seed = test_seed(104);
  INFO("seed " << seed);
  const int64_t n = 1000, in = 64, out = 96;
  const Shape sx{n, in}, sw{out, in}, sb{out}, sy{n, out};
  const auto x = rounded_uniform<bfloat16>(n * in, seed);
  const auto w = rounded_uniform<bfloat16>(out * in, seed + 1);
  const auto dy = rounded_uniform<bfloat16>(n * out, seed + 2);
  const auto dw0 = random_uniform<double>(out * in, seed + 3);
  const auto db0 = random_uniform<double>(out, seed + 4);
  std::vector<double> dx_ref(n * in), dw_ref(dw0.size()), db_ref(db0.size());
  for (std::size_t i = 0; i < dw0.size(); ++i) dw_ref[i] = static_cast<float>(dw0[i]);
  for (std::size_t i = 0; i < db0.size(); ++i) db_ref[i] = static_cast<float>(db0[i]);
  reference::linear_bwd({View<const double>(x.data(), sx), View<const double>(w.data(), sw),
                         View<const double>(dy.data(), sy), View<double>(dx_ref.data(), sx),
                         View<double>(dw_ref.data(), sw), View<double>(db_ref.data(), sb)});
  mambatrack::CudaContext ctx;
  auto gx = device_from<bfloat16>(x, sx), gw = device_from<bfloat16>(w, sw), gdy = device_from<bfloat16>(dy, sy);
  auto gdx = poisoned<bfloat16>(sx);
  auto dw32 = device_from<float>(dw0, sw), db32 = device_from<float>(db0, sb);
  mc::linear_bwd({gx.view(), gw.view(), gdy.view(), gdx.view(), {}, {}}, dw32.view(), db32.view(), ctx);
  const auto dxg = to_doubles<bfloat16>(gdx.view());
  CHECK(count_nonfinite(dxg) == 0);
  CHECK(rel_err(dxg, dx_ref) <= 1e-2);  // bf16 output rounding
  // fp32 accumulation of exact bf16 products: fp32 rounding only.
  CHECK(rel_err(to_doubles<float>(dw32.view()), dw_ref) <= 1e-5);
  CHECK(rel_err(to_doubles<float>(db32.view()), db_ref) <= 1e-5);
  Tensor<float, Cuda> bad({out, in + 1});
  CHECK_THROWS_AS(mc::linear_bwd({gx.view(), gw.view(), gdy.view(), {}, {}, {}}, bad.view(), {}, ctx), ShapeError);
}
