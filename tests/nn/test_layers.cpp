// nn/ single layers: CPU backend (float) against the same layer template on the reference
// backend (double) for forward and backward, plus the semantics each layer promises
// (padding row, positions within sequences, dropout determinism, reversal within sequences).
#include <catch2/catch.hpp>

#include "mambatrack/nn/activation.hpp"
#include "mambatrack/nn/dropout.hpp"
#include "mambatrack/nn/embedding.hpp"
#include "mambatrack/nn/linear.hpp"
#include "mambatrack/nn/norm.hpp"
#include "nn/nn_test_mixer.hpp"

using namespace mambatrack;
using namespace mambatrack::nn;
using namespace mambatrack::nn::test;

namespace {

// float32 vs double on rows of ≤ 48 terms: rounding ~1e-6 relative; 2e-5 leaves room.
constexpr double kTol = 2e-5;

// A layer built on both backends with the same parameters.
template <template <class> class L, class... Args>
struct Pair {
  ParameterStore fs;
  ReferenceStore rs;
  L<CpuBackend> f;
  L<ReferenceBackend> r;
  Pair(uint64_t seed, Args... args) : f(args...), r(args...) {
    f.register_params(fs, "layer.");
    r.register_params(rs, "layer.");
    fs.finalize();
    rs.finalize();
    f.init(fs, seed);
    // random norm weights too (init sets them to 1)
    for (const auto& p : fs.params()) {
      View<float> v = fs.param(fs.handle(p.name));
      if (p.name.find("norm") != std::string::npos || p.name.find("bias") != std::string::npos)
        fill_random(v, seed + p.offset, 0.5, 1.5);
    }
    rs.copy_from(fs);
  }
};

}  // namespace

TEST_CASE("nn::Linear matches the reference backend, with and without bias", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(101);
  INFO("seed " << seed);
  for (bool bias : {true, false}) {
    Pair<Linear, int64_t, int64_t, bool> l(seed, 24, 20, bias);
    Tensor<float> x(Shape{7, 24}), dy(Shape{7, 20});
    fill_random(x.view(), seed + 1);
    fill_random(dy.view(), seed + 2);
    Tensor<double> xd = to_double(x.view()), dyd = to_double(dy.view());
    typename Linear<CpuBackend>::Context cf;
    typename Linear<ReferenceBackend>::Context cr;
    CHECK(max_rel(l.f.forward(cf, x.view()), l.r.forward(cr, xd.view())) < kTol);
    View<const float> dx = l.f.backward(cf, dy.view());
    View<const double> dxr = l.r.backward(cr, dyd.view());
    CHECK(max_rel(dx, dxr) < kTol);
    check_grads_match(l.fs, l.rs, kTol);
    CHECK(l.fs.params().size() == (bias ? 2u : 1u));
    // accumulation: a second backward doubles the weight gradient
    const float g0 = l.fs.grad(l.f.weight())[5];
    l.f.backward(cf, dy.view());
    CHECK(l.fs.grad(l.f.weight())[5] == Approx(2 * g0).epsilon(1e-6));  // exact doubling up to rounding
  }
}

TEST_CASE("nn::Norm (RMS and Layer) matches the reference backend", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(102);
  INFO("seed " << seed);
  for (NormKind kind : {NormKind::kRms, NormKind::kLayer}) {
    Pair<Norm, int64_t, NormKind, double> l(seed, 32, kind, 1e-5);
    CHECK(l.fs.params().size() == (kind == NormKind::kLayer ? 2u : 1u));
    Tensor<float> x(Shape{9, 32}), dy(Shape{9, 32});
    fill_random(x.view(), seed + 1, -2, 2);
    fill_random(dy.view(), seed + 2);
    Tensor<double> xd = to_double(x.view()), dyd = to_double(dy.view());
    typename Norm<CpuBackend>::Context cf;
    typename Norm<ReferenceBackend>::Context cr;
    CHECK(max_rel(l.f.forward(cf, x.view()), l.r.forward(cr, xd.view())) < kTol);
    CHECK(max_rel(l.f.backward(cf, dy.view()), l.r.backward(cr, dyd.view())) < kTol);
    check_grads_match(l.fs, l.rs, kTol);
    CHECK(l.fs.info(l.fs.handle("layer.weight")).no_decay);
  }
}

TEST_CASE("nn::Embedding gathers rows, skips the padding row's gradient, matches the reference", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(103);
  INFO("seed " << seed);
  Pair<Embedding, int64_t, int64_t, int64_t, bool> l(seed, 11, 8, 0, true);
  Tensor<int64_t> ids(Shape{6});
  const int64_t values[] = {3, 0, 10, 3, 7, 0};
  for (int i = 0; i < 6; ++i) ids[i] = values[i];
  Tensor<float> dy(Shape{6, 8});
  fill_random(dy.view(), seed + 2);
  Tensor<double> dyd = to_double(dy.view());
  typename Embedding<CpuBackend>::Context cf;
  typename Embedding<ReferenceBackend>::Context cr;
  View<const float> y = l.f.forward(cf, ids.view());
  CHECK(max_rel(y, l.r.forward(cr, ids.view())) < kTol);
  CHECK(y.at(2, 5) == l.fs.param(l.f.weight()).at(10, 5));
  l.f.backward(cf, dy.view());
  l.r.backward(cr, dyd.view());
  check_grads_match(l.fs, l.rs, kTol);
  View<const float> g = l.fs.grad(l.f.weight());
  CHECK(g.at(0, 3) == 0.0f);                                   // padding row: no gradient
  CHECK(g.at(3, 1) == Approx(dy.at(0, 1) + dy.at(3, 1)));      // id 3 twice: summed
  CHECK(l.fs.info(l.f.weight()).no_decay);
  Tensor<int64_t> bad(Shape{2});
  bad[0] = 1;
  bad[1] = 11;
  CHECK_THROWS_AS(l.f.forward(cf, bad.view()), ShapeError);
}

TEST_CASE("nn::PositionEmbedding uses the position within each packed sequence", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(104);
  INFO("seed " << seed);
  Pair<PositionEmbedding, int64_t, int64_t> l(seed, 6, 4);
  const std::vector<int64_t> cu = {0, 3, 3, 8};
  View<const int64_t> cuv(cu.data(), Shape{4});
  typename PositionEmbedding<CpuBackend>::Context cf;
  View<const float> y = l.f.forward(cf, cuv);
  View<const float> table = l.fs.param(l.f.weight());
  const int64_t expect_pos[] = {0, 1, 2, 0, 1, 2, 3, 4};
  for (int t = 0; t < 8; ++t)
    for (int c = 0; c < 4; ++c) CHECK(y.at(t, c) == table.at(expect_pos[t], c));
  Tensor<float> dy(Shape{8, 4});
  fill_random(dy.view(), seed + 1);
  l.f.backward(cf, dy.view());
  CHECK(l.fs.grad(l.f.weight()).at(0, 2) == Approx(dy.at(0, 2) + dy.at(3, 2)));
  CHECK(l.fs.grad(l.f.weight()).at(5, 2) == 0.0f);
  const std::vector<int64_t> too_long = {0, 7};
  CHECK_THROWS_AS(l.f.forward(cf, View<const int64_t>(too_long.data(), Shape{2})), ShapeError);
}

TEST_CASE("nn::Gelu and nn::Silu match the reference backend", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(105);
  INFO("seed " << seed);
  Tensor<float> x(Shape{5, 13}), dy(Shape{5, 13});
  fill_random(x.view(), seed, -4, 4);
  fill_random(dy.view(), seed + 1);
  Tensor<double> xd = to_double(x.view()), dyd = to_double(dy.view());
  {
    Gelu<CpuBackend> f;
    Gelu<ReferenceBackend> r;
    typename Gelu<CpuBackend>::Context cf;
    typename Gelu<ReferenceBackend>::Context cr;
    CHECK(max_rel(f.forward(cf, x.view()), r.forward(cr, xd.view())) < kTol);
    CHECK(max_rel(f.backward(cf, dy.view()), r.backward(cr, dyd.view())) < kTol);
    CHECK(cf.y.view()[0] == Approx(0.5 * x[0] * (1 + std::erf(x[0] / std::sqrt(2.0)))).epsilon(1e-5));
  }
  {
    Silu<CpuBackend> f;
    Silu<ReferenceBackend> r;
    typename Silu<CpuBackend>::Context cf;
    typename Silu<ReferenceBackend>::Context cr;
    CHECK(max_rel(f.forward(cf, x.view()), r.forward(cr, xd.view())) < kTol);
    CHECK(max_rel(f.backward(cf, dy.view()), r.backward(cr, dyd.view())) < kTol);
  }
}

TEST_CASE("nn::Dropout: deterministic per (seed, step, layer), scaled, identity in eval", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(106);
  INFO("seed " << seed);
  Tensor<float> x(Shape{200, 50});
  fill_random(x.view(), seed, 0.5, 1.5);  // no zeros: a zero output means a dropped element
  Dropout<CpuBackend> d(0.25, 3), other_layer(0.25, 4);
  typename Dropout<CpuBackend>::Context c1, c2, c3, c4;
  d.set_mode(true, seed, 7);
  std::vector<float> a(d.forward(c1, x.view()).data, d.forward(c1, x.view()).data + x.numel());
  View<const float> b = d.forward(c2, x.view());
  int64_t dropped = 0, same = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    same += a[i] == b[i];
    if (a[i] == 0) ++dropped;
    else CHECK(a[i] == Approx(x[i] / 0.75f));
  }
  CHECK(same == x.numel());
  // 10000 Bernoulli(0.25): mean 2500, sd 43; ±250 is ~6 sd
  CHECK(std::abs(dropped - 2500) < 250);
  d.set_mode(true, seed, 8);
  View<const float> next_step = d.forward(c3, x.view());
  other_layer.set_mode(true, seed, 7);
  View<const float> next_layer = other_layer.forward(c4, x.view());
  int64_t diff_step = 0, diff_layer = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    diff_step += (next_step[i] == 0) != (a[i] == 0);
    diff_layer += (next_layer[i] == 0) != (a[i] == 0);
  }
  CHECK(diff_step > 1000);  // independent masks differ in 2·0.25·0.75 = 37.5 % of places
  CHECK(diff_layer > 1000);
  // backward applies the same mask
  View<const float> dx = d.backward(c3, x.view());
  for (int64_t i = 0; i < x.numel(); ++i) CHECK(dx[i] == next_step[i]);
  d.set_mode(false, seed, 7);
  View<const float> ev = d.forward(c1, x.view());
  CHECK(ev.data == x.data());
}

TEST_CASE("reverse_within_sequences reverses each packed sequence in its own bounds", "[cpu][nn]") {
  const std::vector<int64_t> cu = {0, 4, 5, 5, 9};
  View<const int64_t> cuv(cu.data(), Shape{5});
  Tensor<float> x(Shape{9, 3}), y(Shape{9, 3}), z(Shape{9, 3});
  fill_random(x.view(), mambatrack::test::test_seed(107));
  CpuBackend::reverse_within_sequences(x.view(), cuv, y.view());
  const int64_t src[] = {3, 2, 1, 0, 4, 8, 7, 6, 5};
  for (int t = 0; t < 9; ++t)
    for (int c = 0; c < 3; ++c) CHECK(y.at(t, c) == x.at(src[t], c));
  CpuBackend::reverse_within_sequences(y.view(), cuv, z.view());  // its own inverse (and its backward)
  for (int64_t i = 0; i < x.numel(); ++i) CHECK(z[i] == x[i]);
  const std::vector<int64_t> bad = {0, 4, 8};
  CHECK_THROWS_AS(CpuBackend::reverse_within_sequences(x.view(), View<const int64_t>(bad.data(), Shape{3}), y.view()),
                  ShapeError);
}
