// [cuda] nn layers on CudaBackend against the same layer templates on the float64 reference
// backend (nn/reference_backend.hpp + ssm_backend.hpp: plain loops, Eigen-free, so they compile in
// this .cu unit): a Backbone of Mamba mixers (bidirectional with token + position embeddings, and
// causal with checkpointing on the frozen point embedding), dropout in training mode, the MDM (on
// gathered rows), NTP and k-NNN heads; forward outputs and EVERY parameter gradient compared on
// two fresh random varlen batches in a row. Also CudaParameterStore and the task-level ops.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "mambatrack/cuda.cuh"
#include "mambatrack/nn/backbone.hpp"
#include "mambatrack/nn/cuda_backend.cuh"
#include "mambatrack/nn/gather_rows.hpp"
#include "mambatrack/nn/heads.hpp"
#include "mambatrack/nn/mamba.hpp"
#include "mambatrack/nn/point_embedding.hpp"
#include "mambatrack/nn/reference_backend.hpp"
#include "mambatrack/nn/ssm_backend.hpp"
#include "cuda_test_util.cuh"
#include "nn_model_fixture.cuh"
#include "support/test_support.hpp"

using namespace mambatrack;

namespace {

using namespace test::nn_fixture;
using GpuB = nn::CudaBackend;

std::vector<double> doubles(View<const double> v) { return std::vector<double>(v.data, v.data + v.numel()); }
std::vector<double> doubles(View<const float, Cuda> v) { return test::to_doubles<float>(v); }

void compare_model(const Config& cfg, uint64_t seed) {
  INFO("seed " << seed << ", embedded " << cfg.embedded << ", bidirectional " << cfg.bidirectional
                << ", checkpointing " << cfg.checkpointing);
  ModelPair<GpuB> pair(cfg);
  Model<GpuB>& gm = pair.gpu;
  Model<RefB>& rm = pair.ref;
  nn::CudaParameterStore& gs = pair.gs;
  nn::ReferenceStore& rs = pair.rs;

  Contexts<GpuB> gc;
  Contexts<RefB> rc;
  // Two batches of different shapes (workspaces reallocate), a fresh dropout mask each step.
  // Tolerance 1e-4 relative (L2 over each whole tensor): fp32 GEMMs, scans and reductions against
  // float64 on the same float inputs and parameters give ≈1e-6; 1e-4 catches any indexing bug.
  const double tol = 1e-4;
  const std::vector<std::vector<int64_t>> batches = {{37, 5, 64, 1, 20}, {12, 70, 3, 33}};
  for (std::size_t k = 0; k < batches.size(); ++k) {
    INFO("batch " << k);
    const HostBatch hb = make_batch(batches[k], seed + 17 * k);
    Batch<GpuB> gb = on_backend<GpuB>(hb);
    Batch<RefB> rb = on_backend<RefB>(hb);
    gs.zero_grad();
    rs.zero_grad();
    gm.set_step(seed, k);
    rm.set_step(seed, k);
    step(gm, gc, gb);
    step(rm, rc, rb);
    MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());

    if (cfg.embedded) CHECK_CLOSE("point embedding", doubles(gc.emb), doubles(rc.emb), tol);
    CHECK_CLOSE("backbone output", doubles(gc.h), doubles(rc.h), tol);
    CHECK_CLOSE("mdm logits", doubles(gc.logits), doubles(rc.logits), tol);
    CHECK_CLOSE("ntp logits", doubles(gc.pair), doubles(rc.pair), tol);
    CHECK_CLOSE("knn output", doubles(gc.knn_out), doubles(rc.knn_out), tol);
    CHECK_CLOSE("input gradient", doubles(gc.dinput), doubles(rc.dinput), tol);

    // Every parameter gradient, one by one, and the whole vector.
    Tensor<float> g_all = to_host<float>(View<const float, Cuda>(gs.grads()));
    std::vector<double> all_g, all_r;
    int compared = 0;
    for (const nn::ParamInfo& p : gs.params()) {
      INFO("parameter " << p.name);
      std::vector<double> g(g_all.data() + p.offset, g_all.data() + p.offset + p.numel());
      std::vector<double> r = doubles(View<const double>(rs.grad(rs.handle(p.name))));
      REQUIRE(g.size() == r.size());
      if (p.frozen) {
        CHECK(test::rel_err(g, std::vector<double>(g.size(), 0.0)) == 0.0);
        CHECK(test::rel_err(r, std::vector<double>(r.size(), 0.0)) == 0.0);
        continue;
      }
      // Per parameter 1e-3: a small gradient that is a sum of cancelling per-token terms carries a
      // larger relative fp32 rounding error; an indexing bug gives O(1). The whole vector: 1e-4.
      CHECK_CLOSE(p.name, g, r, 10 * tol);
      all_g.insert(all_g.end(), g.begin(), g.end());
      all_r.insert(all_r.end(), r.begin(), r.end());
      ++compared;
    }
    CHECK(compared > 20);
    CHECK_CLOSE("all parameter gradients", all_g, all_r, tol);
  }
}

}  // namespace

TEST_CASE("cuda nn: bidirectional token backbone + MDM/NTP/k-NNN heads match the float64 reference", "[cuda][nn]") {
  Config c;
  c.bidirectional = true;
  compare_model(c, test::test_seed(901));
}

TEST_CASE("cuda nn: causal checkpointed backbone on the frozen point embedding matches the float64 reference",
          "[cuda][nn]") {
  Config c;
  c.embedded = true;
  c.checkpointing = true;
  compare_model(c, test::test_seed(902));
}

TEST_CASE("cuda nn: causal token backbone with the embedding id check off (no sync) matches the float64 reference",
          "[cuda][nn]") {
  struct Restore {
    ~Restore() { GpuB::set_check_ids(true); }
  } restore;
  GpuB::set_check_ids(false);
  Config c;
  compare_model(c, test::test_seed(906));
}

TEST_CASE("cuda nn: CudaParameterStore upload/download, views and zero_grad", "[cuda][nn]") {
  const uint64_t seed = test::test_seed(903);
  INFO("seed " << seed);
  nn::CudaParameterStore s;
  nn::ParamHandle a = s.add("a.weight", Shape{5, 7});
  nn::ParamHandle b = s.add("b.bias", Shape{3}, true);
  nn::ParamHandle f = s.add("f.proj", Shape{2, 2}, true, {}, true);
  s.finalize();
  CHECK(s.flat_size() == s.host().flat_size());
  CHECK(s.num_total() == 35 + 3 + 4);
  CHECK(s.num_trainable() == 35 + 3);
  CHECK(s.find("b.bias").index == b.index);
  CHECK(s.handle("f.proj").index == f.index);
  CHECK(s.info(a).name == "a.weight");
  CHECK(s.param(a).shape == Shape{5, 7});
  CHECK(s.param(b).data == s.values().data + s.info(b).offset);
  CHECK(s.grad(f).data == s.grads().data + s.info(f).offset);

  std::vector<float> v = test::random_uniform<float>(static_cast<std::size_t>(s.flat_size()), seed);
  std::copy(v.begin(), v.end(), s.host().values().data);
  s.upload();
  CHECK(test::to_doubles<float>(View<const float, Cuda>(s.param(a))) ==
        std::vector<double>(v.begin() + s.info(a).offset, v.begin() + s.info(a).offset + 35));
  std::fill(s.host().values().data, s.host().values().data + s.flat_size(), 0.0f);
  s.download();
  CHECK(std::equal(v.begin(), v.end(), s.host().values().data));

  Tensor<float> ones(Shape{s.flat_size()});
  fill(ones.view(), 1.5f);
  MAMBATRACK_CUDA_CHECK(cudaMemcpy(s.grads().data, ones.data(), ones.bytes(), cudaMemcpyHostToDevice));
  s.zero_grad();
  std::vector<double> g = test::to_doubles<float>(View<const float, Cuda>(s.grads()));
  CHECK(std::all_of(g.begin(), g.end(), [](double x) { return x == 0.0; }));
}

TEST_CASE("cuda nn: task-level ops (gather/scatter rows, argmax, losses, transfers) match the host", "[cuda][nn]") {
  using HB = nn::HostBackendBase<float>;
  const uint64_t seed = test::test_seed(904);
  INFO("seed " << seed);
  Philox rng(seed, 3);
  const int64_t n = 300, w = 13, m = 97;
  Tensor<float> x(Shape{n, w});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(rng.uniform(-2.0, 2.0));
  x.at(7, 3) = x.at(7, 9) = 5.0f;  // a tie: the first column wins
  std::vector<int64_t> perm(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<std::size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[static_cast<std::size_t>(i)], perm[rng.below(i + 1)]);
  Tensor<int64_t> idx = host_tensor<int64_t>(std::vector<int64_t>(perm.begin(), perm.begin() + m), Shape{m});

  Tensor<float, Cuda> xd(x.shape());
  Tensor<int64_t, Cuda> idxd(idx.shape());
  GpuB::to_device(x.view(), xd.view());
  GpuB::to_device(idx.view(), idxd.view());

  // gather_rows (float and int64) and scatter_add_rows: pure copies / one add each: exact.
  Tensor<float> g_h(Shape{m, w}), g_back(Shape{m, w});
  HB::gather_rows(x.view(), idx.view(), g_h.view());
  Tensor<float, Cuda> g_d(Shape{m, w});
  GpuB::gather_rows(xd.view(), idxd.view(), g_d.view());
  GpuB::to_host(g_d.view(), g_back.view());
  CHECK(std::equal(g_h.data(), g_h.data() + g_h.numel(), g_back.data()));

  Tensor<int64_t> labels(Shape{n}), lab_h(Shape{m}), lab_back(Shape{m});
  for (int64_t i = 0; i < n; ++i) labels[i] = static_cast<int64_t>(rng.below(w));
  Tensor<int64_t, Cuda> labels_d(labels.shape()), lab_d(Shape{m});
  GpuB::to_device(labels.view(), labels_d.view());
  HB::gather_rows(labels.view(), idx.view(), lab_h.view());
  GpuB::gather_rows(labels_d.view(), idxd.view(), lab_d.view());
  GpuB::to_host(lab_d.view(), lab_back.view());
  CHECK(std::equal(lab_h.data(), lab_h.data() + m, lab_back.data()));

  Tensor<float> s_h(Shape{n, w}), s_back(Shape{n, w});
  copy(View<const float>(x.view()), s_h.view());
  HB::scatter_add_rows(g_h.view(), idx.view(), s_h.view());
  GpuB::scatter_add_rows(g_d.view(), idxd.view(), xd.view());
  GpuB::to_host(xd.view(), s_back.view());
  CHECK(std::equal(s_h.data(), s_h.data() + s_h.numel(), s_back.data()));
  GpuB::to_device(x.view(), xd.view());

  Tensor<int64_t> am_h(Shape{n}), am_back(Shape{n});
  Tensor<int64_t, Cuda> am_d(Shape{n});
  HB::argmax_rows(x.view(), am_h.view());
  GpuB::argmax_rows(xd.view(), am_d.view());
  GpuB::to_host(am_d.view(), am_back.view());
  CHECK(am_h[7] == 3);
  CHECK(std::equal(am_h.data(), am_h.data() + n, am_back.data()));

  // cross_entropy with ignored labels and smoothing, against the CPU op (both fp32; the GPU sums
  // in a different order: 1e-5 relative).
  for (int64_t i = 0; i < n; i += 7) labels[i] = kIgnoreIndex;
  GpuB::to_device(labels.view(), labels_d.view());
  Tensor<float> dl_h(Shape{n, w}), dl_back(Shape{n, w});
  Tensor<float, Cuda> dl_d(Shape{n, w});
  CrossEntropyArgs<float> ce_h{x.view(), labels.view(), dl_h.view()};
  ce_h.label_smoothing = 0.1;
  ce_h.grad_scale = 0.5;
  CrossEntropyArgs<float, Cuda> ce_d{xd.view(), labels_d.view(), dl_d.view()};
  ce_d.label_smoothing = 0.1;
  ce_d.grad_scale = 0.5;
  const LossResult r_h = HB::cross_entropy(ce_h), r_d = GpuB::cross_entropy(ce_d);
  GpuB::to_host(dl_d.view(), dl_back.view());
  CHECK(r_h.count == r_d.count);
  CHECK(std::abs(r_h.loss - r_d.loss) <= 1e-5 * std::abs(r_h.loss));
  CHECK(test::rel_err(std::vector<float>(dl_back.data(), dl_back.data() + n * w),
                      std::vector<float>(dl_h.data(), dl_h.data() + n * w)) <= 1e-5);

  // masked_mse with a mask and −100 padded targets.
  Tensor<float> tgt(Shape{n, w});
  Tensor<uint8_t> mask(Shape{n, w});
  for (int64_t i = 0; i < tgt.numel(); ++i) {
    tgt[i] = rng.uniform(0.0, 1.0) < 0.1 ? static_cast<float>(kMsePadValue) : static_cast<float>(rng.uniform(-1.0, 1.0));
    mask[i] = rng.uniform(0.0, 1.0) < 0.8 ? 1 : 0;
  }
  Tensor<float, Cuda> tgt_d(tgt.shape());
  Tensor<uint8_t, Cuda> mask_d(mask.shape());
  GpuB::to_device(tgt.view(), tgt_d.view());
  GpuB::to_device(mask.view(), mask_d.view());
  MaskedMseArgs<float> mse_h{x.view(), tgt.view(), mask.view(), dl_h.view()};
  MaskedMseArgs<float, Cuda> mse_d{xd.view(), tgt_d.view(), mask_d.view(), dl_d.view()};
  const LossResult m_h = HB::masked_mse(mse_h), m_d = GpuB::masked_mse(mse_d);
  GpuB::to_host(dl_d.view(), dl_back.view());
  CHECK(m_h.count == m_d.count);
  CHECK(std::abs(m_h.loss - m_d.loss) <= 1e-5 * std::abs(m_h.loss));
  CHECK(test::rel_err(std::vector<float>(dl_back.data(), dl_back.data() + n * w),
                      std::vector<float>(dl_h.data(), dl_h.data() + n * w)) <= 1e-5);
}

TEST_CASE("cuda nn: sequence helpers and dropout masks equal the host ones", "[cuda][nn]") {
  using HB = nn::HostBackendBase<float>;
  const uint64_t seed = test::test_seed(905);
  INFO("seed " << seed);
  Philox rng(seed, 4);
  const std::vector<int64_t> cu_v = {0, 9, 9, 40, 41, 77};  // an empty and a length-1 sequence
  const int64_t n = cu_v.back(), d = 6, b = static_cast<int64_t>(cu_v.size()) - 1;
  Tensor<int64_t> cu = host_tensor<int64_t>(cu_v, Shape{b + 1});
  Tensor<int64_t, Cuda> cud = device_tensor<int64_t>(cu_v, Shape{b + 1});
  Tensor<float> x(Shape{n, d});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  Tensor<float, Cuda> xd = to_device<float>(x.view());
  auto same = [](const Tensor<float>& h, const Tensor<float, Cuda>& dv) {
    Tensor<float> back = to_host<float>(dv.view());
    return std::equal(h.data(), h.data() + h.numel(), back.data());
  };

  Tensor<float> rev(Shape{n, d});
  Tensor<float, Cuda> revd(Shape{n, d});
  HB::reverse_within_sequences(x.view(), cu.view(), rev.view());
  GpuB::reverse_within_sequences(xd.view(), cud.view(), revd.view());
  CHECK(same(rev, revd));

  Tensor<int64_t> pos(Shape{n});
  Tensor<int64_t, Cuda> posd(Shape{n});
  HB::sequence_positions(cu.view(), pos.view());
  GpuB::sequence_positions(cud.view(), posd.view());
  Tensor<int64_t> pos_back = to_host<int64_t>(posd.view());
  CHECK(std::equal(pos.data(), pos.data() + n, pos_back.data()));

  Tensor<float> mask(Shape{n, d});
  Tensor<float, Cuda> maskd(Shape{n, d});
  HB::dropout_mask(seed, 3, 5, 0.25, mask.view());
  GpuB::dropout_mask(seed, 3, 5, 0.25, maskd.view());
  CHECK(same(mask, maskd));

  Tensor<float> pooled(Shape{b, d}), dx(Shape{n, d});
  Tensor<float, Cuda> pooledd(Shape{b, d}), dxd(Shape{n, d});
  HB::mean_pool(x.view(), cu.view(), pooled.view());
  GpuB::mean_pool(xd.view(), cud.view(), pooledd.view());
  CHECK(same(pooled, pooledd));
  HB::mean_pool_bwd(pooled.view(), cu.view(), dx.view());
  GpuB::mean_pool_bwd(pooledd.view(), cud.view(), dxd.view());
  CHECK(same(dx, dxd));

  Tensor<float> wide(Shape{n, 2 * d + 3}), part(Shape{n, d}), xt(Shape{d, n});
  Tensor<float, Cuda> wided(Shape{n, 2 * d + 3}), partd(Shape{n, d}), xtd(Shape{d, n});
  HB::fill(wide.view(), 0.5f);
  GpuB::fill(wided.view(), 0.5f);
  HB::copy_columns(x.view(), wide.view(), d + 1);
  GpuB::copy_columns(xd.view(), wided.view(), d + 1);
  CHECK(same(wide, wided));
  HB::take_columns(wide.view(), part.view(), 2);
  GpuB::take_columns(wided.view(), partd.view(), 2);
  CHECK(same(part, partd));
  HB::transpose(x.view(), xt.view());
  GpuB::transpose(xd.view(), xtd.view());
  CHECK(same(xt, xtd));
}

// The column-block and elementwise ops take 16-byte accesses when the pointers, widths and
// offsets allow and element-wise ones otherwise: both paths, and the tail past the last whole
// vector, against plain host loops (float: exact, except y + a·b, which the device may fuse into
// one FMA: within 1e-6 of |y| + |a·b|; bfloat16: also within one rounding of bfloat16, 2^-8
// relative).
template <class T>
static void check_columns_and_elementwise(uint64_t seed) {
  using Gpu = nn::CudaBackendT<T>;
  Philox rng(seed, 5);
  const auto rnd = [&](int64_t n) {
    std::vector<T> v(static_cast<std::size_t>(n));
    for (auto& e : v) e = static_cast<T>(static_cast<float>(rng.uniform(-2.0, 2.0)));
    return v;
  };
  const auto f = [](T v) { return static_cast<float>(v); };
  const double tol = std::is_same_v<T, float> ? 0.0 : 1.0 / 256;
  // scale: the size of the terms (a fused y + a·b differs from the host's by a rounding of them).
  const auto close = [&](float want, T got, double t, double scale) {
    return std::fabs(static_cast<double>(want) - f(got)) <= t * std::fabs(static_cast<double>(want)) + 1e-6 * scale;
  };
  // Columns: widths and offsets that allow 16-byte accesses (multiples of 8 elements) and not.
  for (const int64_t off : {int64_t{8}, int64_t{3}}) {
    const int64_t n = 37, w = 16, W = 40;
    INFO("column offset " << off);
    const std::vector<T> xv = rnd(n * w), wide_v = rnd(n * W);
    Tensor<T, Cuda> x = device_tensor<T>(xv, Shape{n, w}), wide = device_tensor<T>(wide_v, Shape{n, W});
    Gpu::copy_columns(x.view(), wide.view(), off);
    Tensor<T> back = to_host<T>(wide.view());
    bool ok = true;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < W; ++c) {
        const T want = c >= off && c < off + w ? xv[r * w + c - off] : wide_v[r * W + c];
        ok = ok && f(back[r * W + c]) == f(want);
      }
    CHECK(ok);
    Tensor<T, Cuda> part(Shape{n, w});
    Gpu::take_columns(wide.view(), part.view(), off);
    Tensor<T> pb = to_host<T>(part.view());
    ok = true;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < w; ++c) ok = ok && f(pb[r * w + c]) == f(back[r * W + off + c]);
    CHECK(ok);
  }
  // Elementwise: whole tensors (aligned; 1003 is not a multiple of the vector) and views one
  // element in (not aligned).
  const int64_t n = 1003;
  for (const int64_t skip : {int64_t{0}, int64_t{1}}) {
    INFO("view starts " << skip << " element(s) in");
    const std::vector<T> av = rnd(n), bv = rnd(n), yv = rnd(n);
    Tensor<T, Cuda> a = device_tensor<T>(av, Shape{n}), b = device_tensor<T>(bv, Shape{n});
    const int64_t m = n - skip;
    const auto view = [&](Tensor<T, Cuda>& t) { return View<T, Cuda>(t.data() + skip, Shape{m}); };
    const auto cview = [&](Tensor<T, Cuda>& t) { return View<const T, Cuda>(t.data() + skip, Shape{m}); };
    for (int op = 0; op < 4; ++op) {
      INFO("op " << op << " (add, accumulate, multiply, mul_accumulate)");
      Tensor<T, Cuda> y = device_tensor<T>(yv, Shape{n});
      if (op == 0) Gpu::add(cview(a), cview(b), view(y));
      if (op == 1) Gpu::accumulate(cview(a), view(y));
      if (op == 2) Gpu::multiply(cview(a), cview(b), view(y));
      if (op == 3) Gpu::mul_accumulate(cview(a), cview(b), view(y));
      Tensor<T> yb = to_host<T>(y.view());
      bool ok = f(yb[0]) == f(yv[0]) || skip == 0;  // outside the view: untouched
      for (int64_t i = skip; i < n; ++i) {
        const float A = f(av[i]), B = f(bv[i]), Y = f(yv[i]);
        const float want = op == 0 ? A + B : op == 1 ? Y + A : op == 2 ? A * B : Y + A * B;
        ok = ok && close(static_cast<float>(T(want)), yb[i], tol, op == 3 ? std::fabs(Y) + std::fabs(A * B) : 0.0);
      }
      CHECK(ok);
    }
  }
}

TEST_CASE("cuda nn: column blocks and elementwise ops, 16-byte and element paths, equal the host", "[cuda][nn]") {
  const uint64_t seed = test::test_seed(913);
  INFO("seed " << seed);
  check_columns_and_elementwise<float>(seed);
  check_columns_and_elementwise<bfloat16>(seed + 1);
}
