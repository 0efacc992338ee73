// [cpu] The task-level Backend ops of the host backends (nn/host_backend_base.hpp): gather_rows,
// scatter_add_rows (distinct indices), argmax_rows (first maximum), count_correct, mean_pool_bwd
// (rows outside the sequences get 0), the loss forwards (and their `result`) and the host
// "transfers", on CpuBackend (float) and ReferenceBackend (double), against plain loops.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "mambatrack/nn/cpu_backend.hpp"
#include "mambatrack/nn/reference_backend.hpp"
#include "mambatrack/ops/reference/losses.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;

TEMPLATE_TEST_CASE("host backends: gather/scatter rows, argmax, transfers", "[cpu][nn]", nn::CpuBackend,
                   nn::ReferenceBackend) {
  using T = typename TestType::Scalar;
  const uint64_t seed = test::test_seed(71);
  INFO("seed " << seed);
  Philox rng(seed, 1);
  const int64_t n = 40, w = 5, m = 17;
  Tensor<T> x(Shape{n, w});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<T>(rng.uniform(-1.0, 1.0));
  x.at(3, 1) = x.at(3, 4) = T(9);  // tie: the first column wins
  std::vector<int64_t> perm(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<std::size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[static_cast<std::size_t>(i)], perm[rng.below(static_cast<uint64_t>(i + 1))]);
  Tensor<int64_t> idx(Shape{m});
  for (int64_t i = 0; i < m; ++i) idx[i] = perm[static_cast<std::size_t>(i)];

  Tensor<T> g(Shape{m, w});
  TestType::gather_rows(x.view(), idx.view(), g.view());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 0; c < w; ++c) CHECK(g.at(i, c) == x.at(idx[i], c));

  Tensor<T> s(Shape{n, w}), s0(Shape{n, w});
  TestType::copy(x.view(), s.view());
  TestType::copy(x.view(), s0.view());
  TestType::scatter_add_rows(g.view(), idx.view(), s.view());
  std::vector<int> hit(static_cast<std::size_t>(n), 0);
  for (int64_t i = 0; i < m; ++i) hit[static_cast<std::size_t>(idx[i])] = 1;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < w; ++c) CHECK(s.at(r, c) == (hit[static_cast<std::size_t>(r)] ? T(2) * s0.at(r, c) : s0.at(r, c)));

  Tensor<int64_t> am(Shape{n});
  TestType::argmax_rows(x.view(), am.view());
  CHECK(am[3] == 1);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < w; ++c) CHECK(x.at(r, c) <= x.at(r, am[r]));

  Tensor<int64_t> labels(Shape{n}), labels2(Shape{n});
  for (int64_t i = 0; i < n; ++i) labels[i] = static_cast<int64_t>(rng.below(w));
  TestType::to_device(labels.view(), labels2.view());
  TestType::to_host(labels2.view(), labels.view());
  CHECK(std::equal(labels.data(), labels.data() + n, labels2.data()));
  Tensor<int64_t> lg(Shape{m});
  TestType::gather_rows(labels.view(), idx.view(), lg.view());
  for (int64_t i = 0; i < m; ++i) CHECK(lg[i] == labels[idx[i]]);

  // Out-of-range indices are ShapeErrors on the host.
  idx[2] = n;
  CHECK_THROWS_AS(TestType::gather_rows(x.view(), idx.view(), g.view()), ShapeError);
  CHECK_THROWS_AS(TestType::scatter_add_rows(g.view(), idx.view(), s.view()), ShapeError);

  // Losses forward to the backend's op (float: cpu::, double: reference::), checked against reference in double.
  Tensor<T> dl(Shape{n, w});
  CrossEntropyArgs<T> ce{x.view(), labels.view(), dl.view()};
  const LossResult r = TestType::cross_entropy(ce);
  Tensor<double> xd(Shape{n, w}), dld(Shape{n, w});
  for (int64_t i = 0; i < x.numel(); ++i) xd[i] = static_cast<double>(x[i]);
  const LossResult rr = reference::cross_entropy({xd.view(), labels.view(), dld.view()});
  CHECK(r.count == rr.count);
  CHECK(r.loss == Approx(rr.loss).epsilon(1e-5));  // fp32 softmax sums

  // A `result` view gets {loss, count} as well (the device backends' deferred form).
  Tensor<double> result(Shape{2});
  result[0] = result[1] = -1;
  ce.result = result.view();
  const LossResult r2 = TestType::cross_entropy(ce);
  CHECK(result[0] == r2.loss);
  CHECK(result[1] == static_cast<double>(r2.count));

  // count_correct: labels equal to the argmax on some rows, ignored on others (first maximum wins).
  int64_t want = 0;
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = i % 5 == 0 ? kIgnoreIndex : i % 2 ? am[i] : static_cast<int64_t>(rng.below(w));
    if (i == 3) labels[i] = 4;  // row 3's tie: column 4 holds the maximum too, but column 1 comes first
    want += labels[i] != kIgnoreIndex && labels[i] == am[i];
  }
  Tensor<double> correct(Shape{1});
  TestType::count_correct(x.view(), labels.view(), kIgnoreIndex, correct.view());
  CHECK(correct[0] == static_cast<double>(want));
  CHECK(want >= n / 4);

  // mean_pool_bwd: rows past the last sequence get 0.
  Tensor<int64_t> cu(Shape{3});
  cu[0] = 0, cu[1] = 10, cu[2] = 25;
  Tensor<T> dp(Shape{2, w}), dx(Shape{n, w});
  for (int64_t i = 0; i < dp.numel(); ++i) dp[i] = static_cast<T>(rng.uniform(-1.0, 1.0));
  for (int64_t i = 0; i < dx.numel(); ++i) dx[i] = T(7);
  TestType::mean_pool_bwd(dp.view(), cu.view(), dx.view());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < w; ++c)
      CHECK(dx.at(t, c) == (t < 10 ? dp.at(0, c) / T(10) : t < 25 ? dp.at(1, c) / T(15) : T(0)));
}
