// [cuda] Losses vs the double reference: cross-entropy (ignore index; MAMBA-PT and torch
// smoothing; the KL value), BCE with logits, masked MSE (mask and −100 padding): loss, count and
// the gradient (NaN-poisoned first); two runs give bit-identical losses; a caller's host count
// gives the same bits; masked MSE of bf16 predictions against fp32 targets; bad labels throw.
#include <catch2/catch.hpp>

#include "cuda_test_util.cuh"
#include "mambatrack/ops/cuda/losses.cuh"
#include "mambatrack/ops/reference/losses.hpp"

using namespace mambatrack;
using namespace mambatrack::test;
namespace mc = mambatrack::cuda;

namespace {

template <class T>
void run_cross_entropy(int64_t n, int64_t v, double eps, SmoothingForm form, bool kl, uint64_t seed, double tol) {
  INFO("seed " << seed << ", tokens " << n << ", classes " << v << ", smoothing " << eps << ", kl " << kl);
  Philox rng(seed, 5);
  Tensor<int64_t> labels({n});
  for (int64_t t = 0; t < n; ++t)
    labels[t] = rng.uniform() < 0.2 ? kIgnoreIndex : static_cast<int64_t>(rng.below(static_cast<uint64_t>(v)));
  const auto z = rounded_uniform<T>(n * v, seed + 1, -6, 6);
  const Shape s{n, v};
  std::vector<double> g_ref(n * v);
  CrossEntropyArgs<double> ra{View<const double>(z.data(), s), labels.view(), View<double>(g_ref.data(), s)};
  ra.label_smoothing = eps;
  ra.form = form;
  ra.kl_divergence = kl;
  ra.grad_scale = 0.7;
  const LossResult want = reference::cross_entropy(ra);

  mambatrack::CudaContext ctx;
  auto gz = device_from<T>(z, s);
  auto gl = to_device<int64_t>(labels.view());
  auto g = poisoned<T>(s);
  CrossEntropyArgs<T, Cuda> ca{gz.view(), gl.view(), g.view()};
  ca.label_smoothing = eps;
  ca.form = form;
  ca.kl_divergence = kl;
  ca.grad_scale = 0.7;
  const LossResult got = mc::cross_entropy(ca, ctx);
  const LossResult again = mc::cross_entropy(ca, ctx);
  CHECK(got.count == want.count);
  // fp32 log-sum-exp per row: |error| ~1e-7 of the row loss, far under 1e-5 relative.
  CHECK(std::abs(got.loss - want.loss) <= 1e-5 * std::abs(want.loss));
  CHECK(got.loss == again.loss);  // deterministic reduction
  const auto gg = to_doubles<T>(g.view());
  CHECK(count_nonfinite(gg) == 0);
  CHECK(rel_err(gg, g_ref) <= tol);
  // The caller's host count (no counting pass, no sync) gives the same loss and gradient bits.
  auto g2 = poisoned<T>(s);
  CrossEntropyArgs<T, Cuda> hc = ca;
  hc.dlogits = g2.view();
  hc.host_count = want.count;
  const LossResult counted = mc::cross_entropy(hc, ctx);
  CHECK(counted.count == got.count);
  CHECK(counted.loss == got.loss);
  CHECK(bit_identical<T>(g.view(), g2.view()));
}

}  // namespace

TEST_CASE("cuda cross_entropy matches the double reference", "[cuda]") {
  const uint64_t seed = test_seed(401);
  run_cross_entropy<float>(1000, 37, 0.1, SmoothingForm::kMambaPt, true, seed, 1e-5);
  run_cross_entropy<float>(300, 2000, 0.05, SmoothingForm::kTorch, false, seed + 10, 1e-5);
  run_cross_entropy<float>(257, 2, 0.0, SmoothingForm::kMambaPt, false, seed + 20, 1e-5);
  // bf16 logits: the gradient is rounded to bf16 (≈4e-3 relative).
  run_cross_entropy<bfloat16>(500, 300, 0.1, SmoothingForm::kMambaPt, false, seed + 30, 1e-2);
}

TEST_CASE("cuda cross_entropy rejects bad labels and shapes", "[cuda]") {
  mambatrack::CudaContext ctx;
  Tensor<int64_t> labels({3});
  labels[0] = 1;
  labels[1] = kIgnoreIndex;
  labels[2] = 4;  // 4 classes: out of range
  auto gl = to_device<int64_t>(labels.view());
  Tensor<float, Cuda> z({3, 4}), z_bad({2, 4});
  CHECK_THROWS_AS(mc::cross_entropy({z.view(), gl.view(), {}}, ctx), ShapeError);
  CHECK_THROWS_AS(mc::cross_entropy({z_bad.view(), gl.view(), {}}, ctx), ShapeError);
}

TEST_CASE("cuda bce_with_logits and masked_mse match the double reference", "[cuda]") {
  const uint64_t seed = test_seed(402);
  INFO("seed " << seed);
  const int64_t n = 100003;
  const Shape s{n};
  const auto z = rounded_uniform<float>(n, seed, -8, 8);
  const auto y = rounded_uniform<float>(n, seed + 1, 0, 1);
  auto gz = device_from<float>(z, s), gy = device_from<float>(y, s);
  mambatrack::CudaContext ctx;
  {
    std::vector<double> g_ref(n);
    const LossResult want = reference::bce_with_logits({View<const double>(z.data(), s), View<const double>(y.data(), s),
                                                        View<double>(g_ref.data(), s), 2.0});
    auto g = poisoned<float>(s);
    const LossResult got = mc::bce_with_logits({gz.view(), gy.view(), g.view(), 2.0}, ctx);
    const LossResult again = mc::bce_with_logits({gz.view(), gy.view(), g.view(), 2.0}, ctx);
    CHECK(got.count == want.count);
    CHECK(std::abs(got.loss - want.loss) <= 1e-5 * want.loss);  // fp32 terms, double sum
    CHECK(got.loss == again.loss);
    const auto gg = to_doubles<float>(g.view());
    CHECK(count_nonfinite(gg) == 0);
    CHECK(rel_err(gg, g_ref) <= 1e-5);
  }
  {
    // targets with −100 padding and a mask
    std::vector<double> t = y;
    Philox rng(seed + 2, 1);
    Tensor<uint8_t> mask({n});
    for (int64_t i = 0; i < n; ++i) {
      if (rng.uniform() < 0.1) t[i] = kMsePadValue;
      mask[i] = rng.uniform() < 0.8;
    }
    auto gt = device_from<float>(t, s);
    auto gm = to_device<uint8_t>(mask.view());
    std::vector<double> g_ref(n);
    const LossResult want = reference::masked_mse({View<const double>(z.data(), s), View<const double>(t.data(), s),
                                                   mask.view(), View<double>(g_ref.data(), s), true, kMsePadValue, 0.5});
    auto g = poisoned<float>(s);
    const LossResult got = mc::masked_mse({gz.view(), gt.view(), gm.view(), g.view(), true, kMsePadValue, 0.5}, ctx);
    CHECK(got.count == want.count);
    CHECK(std::abs(got.loss - want.loss) <= 1e-5 * want.loss);
    const auto gg = to_doubles<float>(g.view());
    CHECK(count_nonfinite(gg) == 0);
    CHECK(rel_err(gg, g_ref) <= 1e-5);
    // bf16 predictions (what the reference sees: their rounded values) against the same fp32
    // targets: the loss in fp32/double, the gradient stored in bf16 (1e-2).
    {
      std::vector<double> zb(z.size());
      for (std::size_t i = 0; i < z.size(); ++i) zb[i] = static_cast<float>(bfloat16(static_cast<float>(z[i])));
      auto gzb = device_from<bfloat16>(zb, s);
      std::vector<double> gb_ref(n);
      const LossResult want_b = reference::masked_mse({View<const double>(zb.data(), s), View<const double>(t.data(), s),
                                                       mask.view(), View<double>(gb_ref.data(), s), true, kMsePadValue,
                                                       0.5});
      auto gb = poisoned<bfloat16>(s);
      const LossResult got_b =
          mc::masked_mse({gzb.view(), gt.view(), gm.view(), gb.view(), true, kMsePadValue, 0.5}, ctx);
      CHECK(got_b.count == want_b.count);
      CHECK(std::abs(got_b.loss - want_b.loss) <= 1e-5 * want_b.loss);
      const auto ggb = to_doubles<bfloat16>(gb.view());
      CHECK(count_nonfinite(ggb) == 0);
      CHECK(rel_err(ggb, gb_ref) <= 1e-2);
    }
    Tensor<float, Cuda> short_t({n - 1});
    CHECK_THROWS_AS(mc::masked_mse({gz.view(), short_t.view(), {}, {}}, ctx), ShapeError);
    CHECK_THROWS_AS(mc::bce_with_logits({gz.view(), short_t.view(), {}}, ctx), ShapeError);
  }
}
