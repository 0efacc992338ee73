// nn::Mamba2Mixer / Mamba2: parameter names and initialisation as the reference, the CPU float
// layer against the same layer on the double reference ops, finite differences of the double
// layer, packed batches vs sequences alone, chunk-size independence, the recurrent step() (and
// prefill()) against the full forward at every position, Block integration, and config errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "mambatrack/nn/block.hpp"
#include "mambatrack/nn/mamba2.hpp"
#include "mambatrack/nn/mamba2_backend.hpp"
#include "mambatrack/nn/reference_backend.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::nn;
using mambatrack::test::rel_err;

namespace {

using Cpu2 = Mamba2CpuBackend;                      // float, mambatrack::cpu::
using Ref2 = WithMamba2Ops<ReferenceBackend>;       // double, mambatrack::reference::

struct Cfg {
  int64_t d_model;
  int d_state, d_conv, expand, headdim;
  int64_t ngroups;
  int64_t chunk;
};

Mamba2Options options(const Cfg& c) {
  Mamba2Options o;
  o.ngroups = c.ngroups;
  o.chunk_size = c.chunk;
  return o;
}

// A layer and its store, kept together (the layer points into the store).
template <class Backend>
struct Model {
  typename Backend::Store store;
  Mamba2Mixer<Backend> mixer;
  explicit Model(const Cfg& c, const std::string& prefix = "mixer.")
      : mixer(c.d_model, c.d_state, c.d_conv, c.expand, c.headdim, options(c)) {
    mixer.register_params(store, prefix);
    store.finalize();
  }
};

// Random parameters in ranges that exercise every path: dt = softplus(dt_raw + dt_bias) ≈ 0.1..1,
// A = −exp(A_log) in −[0.5, 4], D and norm weights away from 1, weights of GEMM-sized scale.
void randomize(ParameterStore& s, const Mamba2Mixer<Cpu2>& m, uint64_t seed, const std::string& prefix = "mixer.") {
  const double wi = 1.0 / std::sqrt(double(m.d_model())), wo = 1.0 / std::sqrt(double(m.d_inner()));
  const std::pair<const char*, std::pair<double, double>> ranges[] = {
      {"in_proj.weight", {-wi, wi}}, {"conv1d.weight", {-0.6, 0.6}}, {"conv1d.bias", {-0.3, 0.3}},
      {"dt_bias", {-1.5, 0.0}},      {"A_log", {-0.7, 1.4}},          {"D", {0.5, 1.5}},
      {"norm.weight", {0.5, 1.5}},   {"out_proj.weight", {-wo, wo}}};
  uint64_t k = 0;
  for (const auto& r : ranges) {
    View<float> p = s.param(s.handle(prefix + r.first));
    const auto v = mambatrack::test::random_uniform<float>(p.numel(), seed + 31 * ++k, r.second.first, r.second.second);
    for (int64_t i = 0; i < p.numel(); ++i) p[i] = v[i];
  }
}

std::vector<int64_t> cu_of(const std::vector<int64_t>& lens) {
  std::vector<int64_t> cu{0};
  for (auto l : lens) cu.push_back(cu.back() + l);
  return cu;
}

template <class T>
std::vector<double> dbl(View<T> v) {
  return std::vector<double>(v.data, v.data + v.numel());
}

const char* const kNames[] = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias",
                              "A_log",          "D",             "norm.weight", "out_proj.weight"};

// The same input and output gradient for a float and a double model.
struct Batch {
  std::vector<int64_t> cu;
  int64_t tokens;
  std::vector<float> x, dout;
  std::vector<double> xd, doutd;
  Batch(const std::vector<int64_t>& lens, int64_t d_model, uint64_t seed) : cu(cu_of(lens)), tokens(cu.back()) {
    x = mambatrack::test::random_uniform<float>(tokens * d_model, seed + 1);
    dout = mambatrack::test::random_uniform<float>(tokens * d_model, seed + 2);
    xd.assign(x.begin(), x.end());
    doutd.assign(dout.begin(), dout.end());
  }
  View<const int64_t> cu_view() const { return View<const int64_t>(cu.data(), Shape{int64_t(cu.size())}); }
};

}  // namespace

TEST_CASE("mamba2: parameter names, shapes and decay flags are the reference's", "[cpu][nn][mamba2]") {
  using M = Mamba2<16, 4, 2, 8, Cpu2>;
  STATIC_REQUIRE(M::kDState == 16);
  STATIC_REQUIRE(M::kDConv == 4);
  STATIC_REQUIRE(M::kExpand == 2);
  STATIC_REQUIRE(M::kHeadDim == 8);
  Mamba2Options opt;
  opt.ngroups = 2;
  M m(24, opt);  // d_inner 48, nheads 6, conv_dim 48 + 2·2·16 = 112, d_in_proj 2·48 + 64 + 6 = 166
  ParameterStore s;
  m.register_params(s, "backbone.layers.3.mixer.");
  s.finalize();
  struct Want {
    const char* name;
    Shape shape;
    std::vector<int64_t> disk;
    bool no_decay;
  };
  const Want want[] = {{"in_proj.weight", Shape{166, 24}, {166, 24}, false},
                       {"conv1d.weight", Shape{112, 4}, {112, 1, 4}, false},
                       {"conv1d.bias", Shape{112}, {112}, true},
                       {"dt_bias", Shape{6}, {6}, true},
                       {"A_log", Shape{6}, {6}, true},
                       {"D", Shape{6}, {6}, true},
                       {"norm.weight", Shape{48}, {48}, true},
                       {"out_proj.weight", Shape{24, 48}, {24, 48}, false}};
  REQUIRE(s.params().size() == 8);
  for (std::size_t i = 0; i < 8; ++i) {
    const ParamInfo& p = s.params()[i];
    INFO(want[i].name);
    CHECK(p.name == std::string("backbone.layers.3.mixer.") + want[i].name);  // the reference's order too
    CHECK(p.shape == want[i].shape);
    CHECK(p.disk_shape == want[i].disk);
    CHECK(p.no_decay == want[i].no_decay);
    CHECK(!p.frozen);
  }
  CHECK(m.nheads() == 6);
  CHECK(m.sizes().conv_dim() == 112);
  CHECK(m.sizes().d_in_proj() == 166);
  // The typed dispatch picks the instantiation whose constants equal the run-time values.
  const int hd = with_mamba2<Cpu2, ValueList<16>, ValueList<4>, ValueList<2>, ValueList<8, 16>>(
      16, 4, 2, 16, 32, Mamba2Options{}, [](const auto& layer) {
        return std::decay_t<decltype(layer)>::kHeadDim * 100 + static_cast<int>(layer.nheads());
      });
  CHECK(hd == 16 * 100 + 4);
}

TEST_CASE("mamba2: initialisation follows the reference", "[cpu][nn][mamba2]") {
  const uint64_t seed = mambatrack::test::test_seed(501);
  INFO("seed " << seed);
  // d_model 256, expand 2, headdim 8: 64 heads for the per-head statistics.
  const Cfg c{256, 16, 4, 2, 8, 1, 64};
  Model<Cpu2> a(c), b(c), other(c);
  const int n_layer = 4;
  a.mixer.init(a.store, seed, n_layer);
  b.mixer.init(b.store, seed, n_layer);
  other.mixer.init(other.store, seed + 1, n_layer);
  auto P = [](Model<Cpu2>& m, const char* n) { return m.store.param(m.store.handle(std::string("mixer.") + n)); };
  for (const char* n : kNames) {
    INFO(n);
    CHECK(dbl(P(a, n)) == dbl(P(b, n)));  // the seed fixes every value
  }
  CHECK(dbl(P(a, "in_proj.weight")) != dbl(P(other, "in_proj.weight")));
  CHECK(dbl(P(a, "A_log")) != dbl(P(other, "A_log")));
  // A = exp(A_log) ~ U[1, 16]: in range; mean 8.5 ± 4.33/sqrt(64) = 0.54 (4σ bound below).
  View<float> A_log = P(a, "A_log");
  double mean_A = 0;
  for (int64_t h = 0; h < A_log.numel(); ++h) {
    const double A = std::exp(double(A_log[h]));
    CHECK(A >= 1.0 * (1 - 1e-6));  // float rounding of log(A)
    CHECK(A <= 16.0 * (1 + 1e-6));
    mean_A += A / A_log.numel();
  }
  CHECK(std::fabs(mean_A - 8.5) < 2.2);
  // dt = softplus(dt_bias) log-uniform in [1e-3, 0.1]: ln dt mean −4.61 ± 1.33/sqrt(64) = 0.17.
  View<float> dt_bias = P(a, "dt_bias");
  double mean_log_dt = 0;
  for (int64_t h = 0; h < dt_bias.numel(); ++h) {
    const double dt = std::log1p(std::exp(double(dt_bias[h])));
    CHECK(dt >= 1e-3 * (1 - 1e-5));  // inverse softplus rounded to float: ~1e-6 relative
    CHECK(dt <= 0.1 * (1 + 1e-5));
    mean_log_dt += std::log(dt) / dt_bias.numel();
  }
  CHECK(std::fabs(mean_log_dt - 0.5 * (std::log(1e-3) + std::log(0.1))) < 0.7);
  for (const char* n : {"D", "norm.weight"})
    for (double v : dbl(P(a, n))) CHECK(v == 1.0);
  // U(±bound) weights: inside the bound, reaching close to it, variance bound²/3 (±5% for
  // >= 12288 samples: the variance estimate's relative sd is ~1.3%).
  auto check_uniform = [&](const char* n, double bound) {
    INFO(n << " bound " << bound);
    const auto v = dbl(P(a, n));
    double mx = 0, var = 0;
    for (double w : v) mx = std::max(mx, std::fabs(w)), var += w * w / v.size();
    CHECK(mx <= bound * (1 + 1e-6));
    CHECK(mx >= bound * 0.99);
    CHECK(var == Approx(bound * bound / 3).epsilon(0.05));
  };
  check_uniform("in_proj.weight", 1 / std::sqrt(256.0));
  check_uniform("out_proj.weight", 1 / std::sqrt(512.0) / std::sqrt(double(n_layer)));  // rescaled
  // conv: U(±1/sqrt(d_conv)) for weight and bias (PyTorch Conv1d default, fan_in = d_conv)
  for (const char* n : {"conv1d.weight", "conv1d.bias"}) {
    for (double w : dbl(P(a, n))) CHECK(std::fabs(w) <= 0.5 * (1 + 1e-6));
  }
  check_uniform("conv1d.weight", 0.5);
  // rescale_out_proj = false keeps the plain fan-in bound.
  const Cfg c2 = c;
  Mamba2Options o = options(c2);
  o.rescale_out_proj = false;
  Mamba2Mixer<Cpu2> m2(c2.d_model, c2.d_state, c2.d_conv, c2.expand, c2.headdim, o);
  ParameterStore s2;
  m2.register_params(s2, "mixer.");
  s2.finalize();
  m2.init(s2, seed, n_layer);
  View<float> w2 = s2.param(s2.handle("mixer.out_proj.weight")), w1 = P(a, "out_proj.weight");
  for (int64_t i = 0; i < w2.numel(); i += 97) CHECK(w1[i] == Approx(w2[i] / 2.0).epsilon(1e-6));
}

TEST_CASE("mamba2: the cpu float layer matches the double reference layer", "[cpu][nn][mamba2]") {
  const uint64_t seed = mambatrack::test::test_seed(502);
  INFO("seed " << seed);
  for (const Cfg& c : {Cfg{32, 16, 4, 2, 16, 1, 16}, Cfg{24, 8, 3, 2, 8, 2, 7}, Cfg{16, 4, 2, 1, 8, 2, 64}}) {
    INFO("d_model " << c.d_model << " d_state " << c.d_state << " d_conv " << c.d_conv << " headdim " << c.headdim
                    << " ngroups " << c.ngroups << " chunk " << c.chunk);
    Model<Cpu2> f(c);
    Model<Ref2> r(c);
    f.mixer.init(f.store, seed, 2);
    randomize(f.store, f.mixer, seed);
    r.store.copy_from(f.store);
    // parameter gradients accumulate: start them from a random value and subtract it afterwards
    const auto start = mambatrack::test::random_uniform<float>(f.store.flat_size(), seed + 5);
    for (int64_t i = 0; i < f.store.flat_size(); ++i) f.store.grads()[i] = start[i];
    const Batch in({9, 1, 23, 0, 12}, c.d_model, seed);
    Mamba2Mixer<Cpu2>::Context cf;
    Mamba2Mixer<Ref2>::Context cr;
    const View<const int64_t> cu = in.cu_view();
    const auto of = f.mixer.forward(cf, View<const float>(in.x.data(), Shape{in.tokens, c.d_model}), cu);
    const auto orf = r.mixer.forward(cr, View<const double>(in.xd.data(), Shape{in.tokens, c.d_model}), cu);
    // float32 through two GEMMs of <= 64 terms, the conv, a scan over <= 23 tokens, the norm: ~3e-7
    // measured on the golden cases; 1e-5.
    CHECK(rel_err(dbl(of), dbl(orf)) < 1e-5);
    const auto dxf = f.mixer.backward(cf, View<const float>(in.dout.data(), Shape{in.tokens, c.d_model}));
    const auto dxr = r.mixer.backward(cr, View<const double>(in.doutd.data(), Shape{in.tokens, c.d_model}));
    CHECK(rel_err(dbl(dxf), dbl(dxr)) < 1e-5);
    for (const char* n : kNames) {
      const std::string name = std::string("mixer.") + n;
      const ParamInfo& p = f.store.info(f.store.handle(name));
      std::vector<double> g(p.numel());
      for (int64_t i = 0; i < p.numel(); ++i) g[i] = double(f.store.grads()[p.offset + i]) - double(start[p.offset + i]);
      INFO("gradient of " << name);
      // Sums over <= 45 tokens, then the subtraction of the O(1) start value: ~1e-6; 2e-5.
      CHECK(rel_err(g, dbl(r.store.grad(r.store.handle(name)))) < 2e-5);
    }
  }
}

TEST_CASE("mamba2: the double layer's backward matches central finite differences", "[grad][nn][mamba2]") {
  const uint64_t seed = mambatrack::test::test_seed(503);
  INFO("seed " << seed);
  // d_inner 16, 2 heads of 8 in 2 groups, d_state 4, d_conv 3, chunk 2: small enough for
  // ~800 perturbed parameters, and every part (groups, chunk boundaries, sequence resets) is used.
  const Cfg c{8, 4, 3, 2, 8, 2, 2};
  Model<Cpu2> f(c);
  Model<Ref2> r(c);
  f.mixer.init(f.store, seed, 1);
  randomize(f.store, f.mixer, seed);
  r.store.copy_from(f.store);
  Batch in({4, 1, 6}, c.d_model, seed);
  const View<const int64_t> cu = in.cu_view();
  const Shape xs{in.tokens, c.d_model};
  Mamba2Mixer<Ref2>::Context ctx;
  auto loss = [&] {
    const auto out = r.mixer.forward(ctx, View<const double>(in.xd.data(), xs), cu);
    double l = 0;
    for (int64_t i = 0; i < out.numel(); ++i) l += out[i] * in.doutd[i];
    return l;
  };
  loss();
  r.store.zero_grad();
  const std::vector<double> dx = dbl(r.mixer.backward(ctx, View<const double>(in.doutd.data(), xs)));
  auto fd = [&](double* v, int64_t n) {
    std::vector<double> g(n);
    const double h = 1e-5;  // central differences: O(h²)·|f'''| ~ 1e-10 truncation, ~1e-11 round-off
    for (int64_t i = 0; i < n; ++i) {
      const double keep = v[i];
      v[i] = keep + h;
      const double lp = loss();
      v[i] = keep - h;
      const double lm = loss();
      v[i] = keep;
      g[i] = (lp - lm) / (2 * h);
    }
    return g;
  };
  {
    INFO("gradient of x");
    CHECK(rel_err(dx, fd(in.xd.data(), int64_t(in.xd.size()))) < 1e-6);
  }
  for (const char* n : kNames) {
    const auto h = r.store.handle(std::string("mixer.") + n);
    const std::vector<double> g = dbl(r.store.grad(h));
    View<double> p = r.store.param(h);
    INFO("gradient of " << n);
    CHECK(rel_err(g, fd(p.data, p.numel())) < 1e-6);
  }
}

TEST_CASE("mamba2: a packed batch equals each sequence alone", "[cpu][nn][mamba2]") {
  const uint64_t seed = mambatrack::test::test_seed(504);
  INFO("seed " << seed);
  const Cfg c{32, 16, 4, 2, 16, 2, 8};
  Model<Cpu2> m(c);
  m.mixer.init(m.store, seed, 1);
  randomize(m.store, m.mixer, seed);
  const std::vector<int64_t> lens{7, 1, 30, 2, 16};
  const Batch in(lens, c.d_model, seed);
  Mamba2Mixer<Cpu2>::Context ctx;
  const auto out = dbl(m.mixer.forward(ctx, View<const float>(in.x.data(), Shape{in.tokens, c.d_model}), in.cu_view()));
  const auto dx = dbl(m.mixer.backward(ctx, View<const float>(in.dout.data(), Shape{in.tokens, c.d_model})));
  const std::vector<float> packed_grads(m.store.grads().data, m.store.grads().data + m.store.flat_size());
  m.store.zero_grad();
  for (std::size_t b = 0; b < lens.size(); ++b) {
    INFO("sequence " << b << " of length " << lens[b]);
    const int64_t t0 = in.cu[b], n = lens[b];
    const std::vector<int64_t> cu1{0, n};
    Mamba2Mixer<Cpu2>::Context c1;
    const View<const int64_t> cu1v(cu1.data(), Shape{2});
    const auto o1 = dbl(m.mixer.forward(c1, View<const float>(in.x.data() + t0 * c.d_model, Shape{n, c.d_model}), cu1v));
    const auto d1 = dbl(m.mixer.backward(c1, View<const float>(in.dout.data() + t0 * c.d_model, Shape{n, c.d_model})));
    const std::vector<double> want_o(out.begin() + t0 * c.d_model, out.begin() + (t0 + n) * c.d_model);
    const std::vector<double> want_d(dx.begin() + t0 * c.d_model, dx.begin() + (t0 + n) * c.d_model);
    // The same arithmetic per sequence up to GEMM blocking: float rounding only (~1e-7).
    CHECK(rel_err(o1, want_o) < 1e-6);
    CHECK(rel_err(d1, want_d) < 1e-6);
  }
  // Parameter gradients summed sequence by sequence vs all at once: float rounding (~1e-7).
  std::vector<double> sum(m.store.grads().data, m.store.grads().data + m.store.flat_size());
  CHECK(rel_err(sum, std::vector<double>(packed_grads.begin(), packed_grads.end())) < 1e-5);
}

TEST_CASE("mamba2: the result does not depend on the chunk size", "[cpu][nn][mamba2]") {
  const uint64_t seed = mambatrack::test::test_seed(505);
  INFO("seed " << seed);
  const Cfg c{16, 8, 4, 2, 8, 1, 64};
  Model<Cpu2> m(c);
  m.mixer.init(m.store, seed, 1);
  randomize(m.store, m.mixer, seed);
  const Batch in({70, 5, 33}, c.d_model, seed);
  const Shape xs{in.tokens, c.d_model};
  auto run = [&](int64_t chunk) {
    m.mixer.set_chunk_size(chunk);
    m.store.zero_grad();
    Mamba2Mixer<Cpu2>::Context ctx;
    std::vector<double> all = dbl(m.mixer.forward(ctx, View<const float>(in.x.data(), xs), in.cu_view()));
    const auto dx = dbl(m.mixer.backward(ctx, View<const float>(in.dout.data(), xs)));
    all.insert(all.end(), dx.begin(), dx.end());
    all.insert(all.end(), m.store.grads().data, m.store.grads().data + m.store.flat_size());
    return all;
  };
  const auto base = run(64);
  for (int64_t chunk : {int64_t(1), int64_t(5), int64_t(16), int64_t(256)}) {
    INFO("chunk " << chunk << " vs 64");
    // Different float summation orders over <= 70 tokens: ~1e-7 relative.
    CHECK(rel_err(run(chunk), base) < 1e-5);
  }
}

TEST_CASE("mamba2: step() and prefill() + step() equal the full forward at every position",
          "[cpu][nn][mamba2]") {
  const uint64_t seed = mambatrack::test::test_seed(506);
  INFO("seed " << seed);
  const Cfg c{16, 8, 4, 2, 8, 2, 4};
  Model<Cpu2> f(c);
  Model<Ref2> r(c);
  f.mixer.init(f.store, seed, 1);
  randomize(f.store, f.mixer, seed);
  r.store.copy_from(f.store);
  const int64_t dm = c.d_model;
  const std::vector<int64_t> lens{19, 9, 15};
  const int64_t B = int64_t(lens.size());
  const Batch in(lens, dm, seed);

  auto check_backend = [&](auto& model, const auto& x, double tol) {
    using M = std::decay_t<decltype(model.mixer)>;
    using T = typename M::T;
    typename M::Context ctx;
    const auto full = dbl(model.mixer.forward(ctx, View<const T>(x.data(), Shape{in.tokens, dm}), in.cu_view()));
    auto row = [&](int64_t b, int64_t t) { return in.cu[b] + t; };
    // (1) step from a zero state over the first 9 positions of every sequence.
    typename M::State st = model.mixer.new_state(B);
    std::vector<T> tok(B * dm);
    for (int64_t t = 0; t < 9; ++t) {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < dm; ++i) tok[b * dm + i] = x[row(b, t) * dm + i];
      const auto out = model.mixer.step(st, View<const T>(tok.data(), Shape{B, dm}));
      for (int64_t b = 0; b < B; ++b) {
        INFO("step from zero, sequence " << b << " position " << t);
        const std::vector<double> got(out.data + b * dm, out.data + (b + 1) * dm);
        const std::vector<double> want(full.begin() + row(b, t) * dm, full.begin() + (row(b, t) + 1) * dm);
        CHECK(rel_err(got, want) < tol);
      }
    }
    // (2) prefill with sequences of different lengths (one shorter than d_conv − 1), then step on.
    const std::vector<int64_t> pre{11, 1, 7};
    std::vector<int64_t> cu_pre{0};
    std::vector<T> xp;
    for (int64_t b = 0; b < B; ++b) {
      cu_pre.push_back(cu_pre.back() + pre[b]);
      xp.insert(xp.end(), x.begin() + in.cu[b] * dm, x.begin() + (in.cu[b] + pre[b]) * dm);
    }
    typename M::Context cp;
    typename M::State st2;
    const auto pout = dbl(model.mixer.prefill(cp, st2, View<const T>(xp.data(), Shape{cu_pre.back(), dm}),
                                              View<const int64_t>(cu_pre.data(), Shape{B + 1})));
    for (int64_t b = 0; b < B; ++b) {
      INFO("prefill output, sequence " << b);
      const std::vector<double> got(pout.begin() + cu_pre[b] * dm, pout.begin() + cu_pre[b + 1] * dm);
      const std::vector<double> want(full.begin() + in.cu[b] * dm, full.begin() + (in.cu[b] + pre[b]) * dm);
      CHECK(rel_err(got, want) < tol);
    }
    for (int64_t k = 0; k < 8; ++k) {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < dm; ++i) tok[b * dm + i] = x[row(b, pre[b] + k) * dm + i];
      const auto out = model.mixer.step(st2, View<const T>(tok.data(), Shape{B, dm}));
      for (int64_t b = 0; b < B; ++b) {
        INFO("step after prefill, sequence " << b << " position " << pre[b] + k);
        const std::vector<double> got(out.data + b * dm, out.data + (b + 1) * dm);
        const auto at = row(b, pre[b] + k);
        const std::vector<double> want(full.begin() + at * dm, full.begin() + (at + 1) * dm);
        CHECK(rel_err(got, want) < tol);
      }
    }
  };
  {
    INFO("double reference backend");
    check_backend(r, in.xd, 1e-12);  // the same math in another order, double rounding only
  }
  {
    INFO("cpu float backend");
    // float recurrence vs the chunked float scan (and vectorised vs libm SiLU): ~1e-6 relative.
    check_backend(f, in.x, 2e-5);
  }
}

TEST_CASE("mamba2: inside a Block (bidirectional) the cpu and reference backends agree", "[cpu][nn][mamba2]") {
  const uint64_t seed = mambatrack::test::test_seed(507);
  INFO("seed " << seed);
  const Cfg c{16, 8, 2, 2, 8, 1, 8};
  using FB = Block<CpuBackend, Mamba2Mixer<Cpu2>>;
  using RB = Block<ReferenceBackend, Mamba2Mixer<Ref2>>;
  FB fb(c.d_model, NormKind::kRms, 1e-5, make_mamba2<Cpu2>(8, 2, 2, 8, c.d_model, options(c)), true, 0.0, 0);
  RB rb(c.d_model, NormKind::kRms, 1e-5, make_mamba2<Ref2>(8, 2, 2, 8, c.d_model, options(c)), true, 0.0, 0);
  ParameterStore fs;
  ReferenceStore rs;
  fb.register_params(fs, "backbone.layers.0.");
  rb.register_params(rs, "backbone.layers.0.");
  fs.finalize();
  rs.finalize();
  fb.init(fs, seed, 2);
  CHECK(fs.find("backbone.layers.0.mixer_rev.A_log").valid());
  // the two directions get different values (named streams)
  CHECK(fs.param(fs.handle("backbone.layers.0.mixer.A_log"))[0] !=
        fs.param(fs.handle("backbone.layers.0.mixer_rev.A_log"))[0]);
  rs.copy_from(fs);
  const Batch in({6, 3, 11}, c.d_model, seed);
  const Shape xs{in.tokens, c.d_model};
  FB::Context cf;
  RB::Context cr;
  // layer 0: residual_in absent
  const auto hf = dbl(fb.forward(cf, View<const float>(in.x.data(), xs), View<const float>(), in.cu_view()));
  const auto hr = dbl(rb.forward(cr, View<const double>(in.xd.data(), xs), View<const double>(), in.cu_view()));
  // float vs double through a norm and two Mamba2 mixers: ~1e-6; 2e-5.
  CHECK(rel_err(hf, hr) < 2e-5);
  const auto dres = mambatrack::test::random_uniform<float>(in.tokens * c.d_model, seed + 9);
  const std::vector<double> dresd(dres.begin(), dres.end());
  const auto gf = dbl(fb.backward(cf, View<const float>(in.dout.data(), xs), View<const float>(dres.data(), xs)));
  const auto gr = dbl(rb.backward(cr, View<const double>(in.doutd.data(), xs), View<const double>(dresd.data(), xs)));
  CHECK(rel_err(gf, gr) < 2e-5);
  for (const auto& name : rs.names()) {
    INFO("gradient of " << name);
    CHECK(rel_err(dbl(fs.grad(fs.handle(name))), dbl(rs.grad(rs.handle(name)))) < 5e-5);
  }
}

TEST_CASE("mamba2: workspaces are reused and the context counts its bytes", "[cpu][nn][mamba2]") {
  const uint64_t seed = mambatrack::test::test_seed(508);
  INFO("seed " << seed);
  const Cfg c{16, 8, 4, 2, 8, 1, 8};
  Model<Cpu2> m(c);
  m.mixer.init(m.store, seed, 1);
  const Batch in({5, 9}, c.d_model, seed);
  const Shape xs{in.tokens, c.d_model};
  Mamba2Mixer<Cpu2>::Context ctx;
  const auto o1 = m.mixer.forward(ctx, View<const float>(in.x.data(), xs), in.cu_view());
  const auto d1 = m.mixer.backward(ctx, View<const float>(in.dout.data(), xs));
  const std::size_t bytes = ctx.bytes();
  // forward saves at least zx (14 × 202) and the SSD input/output; backward adds its gradients.
  CHECK(bytes >= sizeof(float) * std::size_t(in.tokens) * (202 + 2 * 32 + 2 * 32));
  const auto first = dbl(o1);
  const auto o2 = m.mixer.forward(ctx, View<const float>(in.x.data(), xs), in.cu_view());
  const auto d2 = m.mixer.backward(ctx, View<const float>(in.dout.data(), xs));
  CHECK(o2.data == o1.data);  // the same buffers, no reallocation
  CHECK(d2.data == d1.data);
  CHECK(ctx.bytes() == bytes);
  CHECK(dbl(o2) == first);  // and the same values
}

TEST_CASE("mamba2: unsupported or inconsistent sizes are ConfigErrors that say what is allowed",
          "[cpu][nn][mamba2]") {
  auto make = [](int n, int k, int e, int p, int64_t d_model, int64_t groups = 1) {
    Mamba2Options o;
    o.ngroups = groups;
    return make_mamba2<Cpu2>(n, k, e, p, d_model, o);
  };
  REQUIRE_NOTHROW(make(16, 4, 2, 8, 16));
  CHECK_THROWS_AS(make(17, 4, 2, 8, 16), ConfigError);
  CHECK_THROWS_WITH(make(17, 4, 2, 8, 16),
                    Catch::Contains("d_state = 17") && Catch::Contains("4, 8, 12, 16, 32, 48, 64, 96, 128"));
  CHECK_THROWS_WITH(make(16, 5, 2, 8, 16), Catch::Contains("d_conv = 5") && Catch::Contains("2, 3, 4"));
  CHECK_THROWS_WITH(make(16, 4, 3, 8, 16), Catch::Contains("expand = 3") && Catch::Contains("1, 2, 4"));
  CHECK_THROWS_WITH(make(16, 4, 2, 10, 16), Catch::Contains("headdim = 10") && Catch::Contains("8, 12, 16, 32, 64"));
  // d_inner = 1·12 is not a multiple of headdim 8
  CHECK_THROWS_WITH(make(16, 4, 1, 8, 12), Catch::Contains("d_inner = expand·d_model = 1·12 = 12") &&
                                               Catch::Contains("headdim = 8"));
  // nheads = 32/8 = 4 is not a multiple of ngroups 3
  CHECK_THROWS_WITH(make(16, 4, 2, 8, 16, 3), Catch::Contains("nheads = d_inner/headdim = 4") &&
                                                  Catch::Contains("ngroups = 3"));
  CHECK_THROWS_AS(make(16, 4, 2, 8, 0), ConfigError);
  // the typed dispatch names the value too, even with narrowed lists
  CHECK_THROWS_WITH((with_mamba2<Cpu2, ValueList<16>, ValueList<4>, ValueList<2>, ValueList<8>>(
                        16, 4, 2, 12, 16, Mamba2Options{}, [](const auto& l) { return l.nheads(); })),
                    Catch::Contains("headdim = 12"));
  // a wrong input width is a ShapeError naming d_model
  const Cfg c{16, 8, 4, 2, 8, 1, 8};
  Model<Cpu2> m(c);
  std::vector<float> x(3 * 12, 0.5f);
  const std::vector<int64_t> cu{0, 3};
  Mamba2Mixer<Cpu2>::Context ctx;
  CHECK_THROWS_WITH(m.mixer.forward(ctx, View<const float>(x.data(), Shape{3, 12}), View<const int64_t>(cu.data(), Shape{2})),
                    Catch::Contains("d_model = 16"));
  auto st = m.mixer.new_state(2);
  CHECK_THROWS_AS(m.mixer.step(st, View<const float>(x.data(), Shape{3, 12})), ShapeError);
}

// ---- One CPU backend for both mixers, as a program building Mamba and Mamba2 models uses it.
#include "mambatrack/nn/backbone.hpp"
#include "mambatrack/nn/dispatch.hpp"
#include "mambatrack/nn/ssm_backend.hpp"

TEST_CASE("mamba2: a Backbone of Mamba2 blocks on the combined backend, with and without checkpointing",
          "[cpu][nn][mamba2]") {
  const uint64_t seed = mambatrack::test::test_seed(509);
  INFO("seed " << seed);
  using Both = WithMamba2Ops<WithSsmOps<CpuBackend>>;  // Mamba (v1) and Mamba2 ops on one policy
  BackboneConfig bc;
  bc.d_model = 16;
  bc.n_layer = 2;
  bc.vocab = 11;
  Mamba2Options o;
  o.ngroups = 2;
  o.chunk_size = 4;
  Backbone<Both, Mamba2Mixer<Both>> net(bc, make_mamba2<Both>(8, 4, 2, 8, bc.d_model, o));
  ParameterStore s;
  net.register_params(s);
  s.finalize();
  net.init(s, seed);
  const ParamInfo& cw = s.info(s.handle("backbone.layers.1.mixer.conv1d.weight"));
  CHECK(cw.disk_shape == std::vector<int64_t>{64, 1, 4});  // conv_dim = 32 + 2·2·8
  CHECK(s.find("backbone.layers.0.mixer.dt_bias").valid());
  CHECK(s.find("backbone.layers.1.mixer.norm.weight").valid());
  const std::vector<int64_t> cu{0, 5, 6, 13};
  std::vector<int64_t> ids(13);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t((seed + 7 * i) % 11);
  const auto dy = mambatrack::test::random_uniform<float>(13 * 16, seed + 3);
  auto run = [&](bool checkpointing) {
    net.set_checkpointing(checkpointing);
    s.zero_grad();
    Backbone<Both, Mamba2Mixer<Both>>::Context ctx;
    const View<const int64_t> cuv(cu.data(), Shape{4});
    std::vector<double> all = dbl(net.forward_tokens(ctx, View<const int64_t>(ids.data(), Shape{13}), cuv));
    net.backward(ctx, View<const float>(dy.data(), Shape{13, 16}));
    all.insert(all.end(), s.grads().data, s.grads().data + s.flat_size());
    return all;
  };
  const auto plain = run(false), recomputed = run(true);
  // Checkpointing recomputes each block's mixer forward in backward: the same arithmetic.
  CHECK(plain == recomputed);
  double gsum = 0;
  for (std::size_t i = 13 * 16; i < plain.size(); ++i) gsum += std::fabs(plain[i]);
  CHECK(gsum > 0);
  // The stacked policy still runs the Mamba (v1) mixer exactly as WithSsmOps<CpuBackend> does.
  auto mamba1 = [&](auto backend_tag) {
    using B = typename decltype(backend_tag)::type;
    auto m = make_mamba<B>(8, 4, 2, 16);
    ParameterStore ms;
    m.register_params(ms, "mixer.");
    ms.finalize();
    m.init(ms, seed, 1);
    typename decltype(m)::Context ctx;
    const auto x = mambatrack::test::random_uniform<float>(13 * 16, seed + 4);
    return dbl(m.forward(ctx, View<const float>(x.data(), Shape{13, 16}),
                         View<const int64_t>(cu.data(), Shape{4})));
  };
  struct TagBoth { using type = Both; };
  struct TagSsm { using type = WithSsmOps<CpuBackend>; };
  CHECK(mamba1(TagBoth{}) == mamba1(TagSsm{}));
}
