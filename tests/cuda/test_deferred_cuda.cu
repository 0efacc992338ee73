// [cuda] Deferred results (a training step with one read-back at its end, capturable in CUDA
// graphs): cross-entropy and masked MSE with a device `result` give the same loss and gradient
// bits as the synchronising ops, and an invalid label makes the loss NaN; count_correct counts
// what argmax_rows and a host comparison count; mean_pool_bwd gives rows past the last sequence
// no gradient; CudaFlatOptimizer::step_deferred (eager, then captured, then replayed) updates
// the parameters bit for bit as grad_norm + clip_value + step do, and skips on a NaN statistic.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "cuda_test_util.cuh"
#include "mambatrack/nn/cuda_backend.cuh"
#include "mambatrack/nn/cuda_parameter_store.cuh"
#include "mambatrack/ops/cuda/losses.cuh"
#include "mambatrack/train/cuda_optimizer.cuh"

using namespace mambatrack;
using namespace mambatrack::test;
namespace mc = mambatrack::cuda;

namespace {

std::vector<double> read(const Tensor<double, Cuda>& t) {
  std::vector<double> h(static_cast<std::size_t>(t.numel()));
  MAMBATRACK_CUDA_CHECK(cudaMemcpy(h.data(), t.data(), t.bytes(), cudaMemcpyDeviceToHost));
  return h;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

template <class T>
void check_cross_entropy(uint64_t seed) {
  INFO("seed " << seed);
  const int64_t n = 777, v = 301;
  Philox rng(seed, 3);
  Tensor<int64_t> labels({n});
  for (int64_t t = 0; t < n; ++t)
    labels[t] = rng.uniform() < 0.3 ? kIgnoreIndex : static_cast<int64_t>(rng.below(static_cast<uint64_t>(v)));
  const Shape s{n, v};
  auto z = device_from<T>(rounded_uniform<T>(n * v, seed + 1, -5, 5), s);
  auto gl = to_device<int64_t>(labels.view());
  mambatrack::CudaContext ctx;
  auto g_sync = poisoned<T>(s), g_def = poisoned<T>(s);
  CrossEntropyArgs<T, Cuda> a{z.view(), gl.view(), g_sync.view()};
  a.label_smoothing = 0.1;
  a.kl_divergence = true;
  a.grad_scale = 0.35;
  const LossResult want = mc::cross_entropy(a, ctx);
  Tensor<double, Cuda> result({2});
  CrossEntropyArgs<T, Cuda> d = a;
  d.dlogits = g_def.view();
  d.result = result.view();
  CHECK(mc::cross_entropy(d, ctx).count == -1);  // nothing read back
  const std::vector<double> r = read(result);
  CHECK(same_bits(r[0], want.loss));
  CHECK(r[1] == static_cast<double>(want.count));
  CHECK(bit_identical<T>(g_sync.view(), g_def.view()));
  // A label outside [0, V): no exception (nothing is read back), a NaN loss instead.
  labels[5] = v + 3;
  auto bad = to_device<int64_t>(labels.view());
  d.labels = bad.view();
  mc::cross_entropy(d, ctx);
  CHECK(std::isnan(read(result)[0]));
}

template <class T>
void check_masked_mse(uint64_t seed) {
  INFO("seed " << seed);
  const int64_t n = 9001;
  std::vector<double> t = rounded_uniform<float>(n, seed + 1, -2, 2);
  Philox rng(seed, 4);
  for (auto& x : t)
    if (rng.uniform() < 0.25) x = kMsePadValue;
  auto p = device_from<T>(rounded_uniform<T>(n, seed, -2, 2), Shape{n});
  auto tg = device_from<mse_target_t<T>>(t, Shape{n});
  mambatrack::CudaContext ctx;
  auto g_sync = poisoned<T>(Shape{n}), g_def = poisoned<T>(Shape{n});
  MaskedMseArgs<T, Cuda> a;
  a.predictions = p.view();
  a.targets = tg.view();
  a.dpredictions = g_sync.view();
  a.grad_scale = 0.5;
  const LossResult want = mc::masked_mse(a, ctx);
  Tensor<double, Cuda> result({2});
  MaskedMseArgs<T, Cuda> d = a;
  d.dpredictions = g_def.view();
  d.result = result.view();
  CHECK(mc::masked_mse(d, ctx).count == -1);
  const std::vector<double> r = read(result);
  CHECK(same_bits(r[0], want.loss));
  CHECK(r[1] == static_cast<double>(want.count));
  CHECK(bit_identical<T>(g_sync.view(), g_def.view()));
}

template <class T>
void check_count_correct(uint64_t seed) {
  INFO("seed " << seed);
  using B = nn::CudaBackendT<T>;
  const int64_t n = 1025, v = 77;
  std::vector<double> z = rounded_uniform<T>(n * v, seed, -3, 3);
  Philox rng(seed, 6);
  // Ties: some rows repeat their maximum in a later column (the first one counts).
  for (int64_t r = 0; r < n; r += 7) {
    int64_t best = 0;
    for (int64_t c = 1; c < v; ++c)
      if (z[r * v + c] > z[r * v + best]) best = c;
    z[r * v + (best + 5) % v] = z[r * v + best];
  }
  Tensor<int64_t> labels({n});
  auto zd = device_from<T>(z, Shape{n, v});
  Tensor<int64_t, Cuda> pred({n});
  B::argmax_rows(zd.view(), pred.view());
  std::vector<int64_t> ph(static_cast<std::size_t>(n));
  B::to_host(View<const int64_t, Cuda>(pred.view()), View<int64_t>(ph.data(), Shape{n}));
  int64_t want = 0;
  for (int64_t r = 0; r < n; ++r) {
    const double u = rng.uniform();
    labels[r] = u < 0.2 ? kIgnoreIndex : u < 0.6 ? ph[r] : static_cast<int64_t>(rng.below(static_cast<uint64_t>(v)));
    want += labels[r] != kIgnoreIndex && labels[r] == ph[r];
  }
  auto ld = to_device<int64_t>(labels.view());
  Tensor<double, Cuda> out({1});
  B::count_correct(zd.view(), ld.view(), kIgnoreIndex, out.view());
  CHECK(read(out)[0] == static_cast<double>(want));
  CHECK(want > n / 4);  // the labels above make a good share correct
}

}  // namespace

TEST_CASE("cuda deferred cross-entropy gives the synchronising op's bits", "[cuda][deferred]") {
  check_cross_entropy<float>(test_seed(8101));
  check_cross_entropy<bfloat16>(test_seed(8102));
}

TEST_CASE("cuda deferred masked MSE gives the synchronising op's bits", "[cuda][deferred]") {
  check_masked_mse<float>(test_seed(8103));
  check_masked_mse<bfloat16>(test_seed(8104));
}

TEST_CASE("cuda count_correct counts what argmax_rows finds", "[cuda][deferred]") {
  check_count_correct<float>(test_seed(8105));
  check_count_correct<bfloat16>(test_seed(8106));
}

TEST_CASE("cuda mean_pool_bwd gives rows past the last sequence no gradient", "[cuda][deferred]") {
  const uint64_t seed = test_seed(8107);
  INFO("seed " << seed);
  using B = nn::CudaBackend;
  const int64_t d = 5, rows = 40;
  const std::vector<int64_t> cu = {0, 7, 7, 19, 30};  // an empty sequence, 10 rows of padding after
  Tensor<int64_t> cu_h({static_cast<int64_t>(cu.size())});
  for (std::size_t i = 0; i < cu.size(); ++i) cu_h[static_cast<int64_t>(i)] = cu[i];
  auto cu_d = to_device<int64_t>(cu_h.view());
  const int64_t b = static_cast<int64_t>(cu.size()) - 1;
  const std::vector<double> dp = rounded_uniform<float>(b * d, seed, -1, 1);
  auto dp_d = device_from<float>(dp, Shape{b, d});
  auto dx = poisoned<float>(Shape{rows, d});
  B::mean_pool_bwd(dp_d.view(), cu_d.view(), dx.view());
  const std::vector<double> got = to_doubles<float>(dx.view());
  for (int64_t s = 0; s < b; ++s)
    for (int64_t t = cu[s]; t < cu[s + 1]; ++t)
      for (int64_t c = 0; c < d; ++c)
        CHECK(got[t * d + c] == static_cast<double>(static_cast<float>(dp[s * d + c]) / static_cast<float>(cu[s + 1] - cu[s])));
  for (int64_t t = cu.back(); t < rows; ++t)
    for (int64_t c = 0; c < d; ++c) CHECK(got[t * d + c] == 0.0);
}

TEST_CASE("cuda deferred optimizer step equals the eager step bit for bit, and skips on NaN", "[cuda][deferred]") {
  const uint64_t seed = test_seed(8108);
  INFO("seed " << seed);
  nn::CudaBackend::use_capture_stream();  // so the deferred step captures and replays its graph
  auto make_store = [](nn::CudaParameterStore& st) {
    st.add("w", Shape{300, 41});
    st.add("b", Shape{41}, /*no_decay=*/true);
    st.add("frozen", Shape{17}, false, {}, /*frozen=*/true);
    st.add("v", Shape{1000});
    st.finalize();
  };
  nn::CudaParameterStore eager_store, deferred_store;
  make_store(eager_store);
  make_store(deferred_store);
  const int64_t n = eager_store.flat_size();
  const std::vector<double> p0 = rounded_uniform<float>(static_cast<std::size_t>(n), seed, -1, 1);
  auto set = [&](View<float, Cuda> dst, const std::vector<double>& v) {
    auto t = device_from<float>(v, Shape{n});
    MAMBATRACK_CUDA_CHECK(cudaMemcpy(dst.data, t.data(), t.bytes(), cudaMemcpyDeviceToDevice));
  };
  set(eager_store.values(), p0);
  set(deferred_store.values(), p0);
  train::CudaFlatOptimizer eager(eager_store), deferred(deferred_store);
  Tensor<double, Cuda> stats({3});
  const std::vector<double> stats_h = {0.25, 17.0, 3.0};
  MAMBATRACK_CUDA_CHECK(cudaMemcpy(stats.data(), stats_h.data(), 3 * sizeof(double), cudaMemcpyHostToDevice));
  optim::AdamWConfig c;
  c.weight_decay = 0.05;
  const double clip_norm = 2.0, clip_value = 0.02;
  for (int64_t step = 1; step <= 4; ++step) {  // the 1st eager, the 2nd captured, then replays
    INFO("step " << step);
    c.lr = 1e-3 * static_cast<double>(step);  // a new learning rate each step reaches the graph
    // Gradients large enough that clipping by norm applies on odd steps only.
    const double scale = step % 2 ? 0.05 : 0.001;
    const std::vector<double> g = rounded_uniform<float>(static_cast<std::size_t>(n), seed + 10 + step, -scale, scale);
    set(eager_store.grads(), g);
    set(deferred_store.grads(), g);
    const double norm = eager.grad_norm(clip_norm);
    eager.clip_value(clip_value);
    eager.step(step, c);
    deferred.step_deferred(step, c, clip_norm, clip_value, train::DeviceStats{stats.data(), 3});
    const train::DeferredOutcome out = deferred.deferred_outcome();
    CHECK(out.applied);
    CHECK(same_bits(out.grad_norm, norm));
    CHECK(bit_identical<float>(eager_store.values(), deferred_store.values()));
    CHECK(bit_identical<float>(eager_store.grads(), deferred_store.grads()));
  }
  // A NaN statistic (a loss): the update is skipped on the device; weights and moments unchanged.
  Tensor<float, Cuda> before({n});
  MAMBATRACK_CUDA_CHECK(cudaMemcpy(before.data(), deferred_store.values().data, before.bytes(), cudaMemcpyDeviceToDevice));
  nn::TrainState s0, s1;
  deferred.save(s0);
  const double nan = std::nan("");
  MAMBATRACK_CUDA_CHECK(cudaMemcpy(stats.data() + 1, &nan, sizeof nan, cudaMemcpyHostToDevice));
  deferred.step_deferred(5, c, clip_norm, clip_value, train::DeviceStats{stats.data(), 3});
  const train::DeferredOutcome skipped = deferred.deferred_outcome();
  CHECK_FALSE(skipped.applied);
  CHECK(std::isfinite(skipped.grad_norm));
  CHECK(bit_identical<float>(View<const float, Cuda>(before.view()), deferred_store.values()));
  deferred.save(s1);
  CHECK(s0.buffers.at("exp_avg") == s1.buffers.at("exp_avg"));
  CHECK(s0.buffers.at("exp_avg_sq") == s1.buffers.at("exp_avg_sq"));
}
