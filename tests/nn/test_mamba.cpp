// The Mamba v1 mixer (nn/mamba.hpp): finite differences of the whole mixer in double, packed vs
// per-sequence equivalence, step() vs the full forward, the reference initialisation, the
// reference's parameter names/shapes/decay flags, and the dispatch table's ConfigErrors.
// (The float64 golden vectors are checked by golden_runner, tests/golden/golden_mamba1.cpp.)
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "mambatrack/nn/backbone.hpp"
#include "mambatrack/nn/dispatch.hpp"
#include "mambatrack/nn/mamba.hpp"
#include "nn/mamba_host_backend.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::nn;
using test::DoubleBackend;
using test::FloatBackend;

namespace {

const char* kNames[] = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                        "dt_proj.bias",   "A_log",         "D",           "out_proj.weight"};

std::vector<int64_t> offsets(const std::vector<int64_t>& lens) {
  std::vector<int64_t> cu{0};
  for (int64_t l : lens) cu.push_back(cu.back() + l);
  return cu;
}

// A float model initialised by the reference recipe, plus a random perturbation of every
// parameter (so D != 1, A_log off the S4D grid, biases non-trivial).
struct FloatModel {
  ParameterStore store;
  MambaMixer<FloatBackend> mixer;
  FloatModel(MambaMixer<FloatBackend> m, uint64_t seed, double perturb = 0.2) : mixer(std::move(m)) {
    mixer.register_params(store, "mixer.");
    store.finalize();
    mixer.init(store, seed, 0);
    Philox rng(seed, 99);
    for (const auto& p : store.params()) {
      View<float> v = store.param(store.handle(p.name));
      for (int64_t i = 0; i < v.numel(); ++i) v[i] += static_cast<float>(rng.uniform(-perturb, perturb));
    }
  }
};

struct DoubleModel {
  ReferenceStore store;
  MambaMixer<DoubleBackend> mixer;
  DoubleModel(const FloatModel& f)
      : mixer(f.mixer.d_model(), f.mixer.d_state(), f.mixer.d_conv(), f.mixer.expand(), f.mixer.options()) {
    mixer.register_params(store, "mixer.");
    store.finalize();
    store.copy_from(f.store);
  }
};

}  // namespace

TEST_CASE("mamba: finite differences of the whole mixer in double", "[cpu][grad][nn]") {
  const uint64_t seed = test::test_seed(501);
  INFO("seed " << seed);
  MambaOptions opt;
  opt.scan_chunk = 2;  // several saved chunk states per sequence
  FloatModel f(make_mamba<FloatBackend>(4, 3, 2, 8, opt), seed);
  DoubleModel m(f);
  // Δ = softplus(bias + ·) of order 1 instead of the initial 1e-3..0.1, so that every gradient
  // (A_log and dt_proj ones scale with Δ) is well above the differences' round-off.
  View<double> dtb = m.store.param(m.store.handle("mixer.dt_proj.bias"));
  const std::vector<double> bias = test::random_uniform<double>(static_cast<std::size_t>(dtb.numel()), seed + 3);
  for (int64_t i = 0; i < dtb.numel(); ++i) dtb[i] = bias[static_cast<std::size_t>(i)];
  const std::vector<int64_t> cu = offsets({5, 1, 3});
  const int64_t tok = cu.back(), dm = 8;
  std::vector<double> x = test::random_uniform<double>(static_cast<std::size_t>(tok * dm), seed + 1);
  const std::vector<double> w = test::random_uniform<double>(x.size(), seed + 2);  // loss = Σ out·w
  View<const int64_t> cu_v(cu.data(), {static_cast<int64_t>(cu.size())});
  MambaMixer<DoubleBackend>::Context ctx;
  auto loss = [&]() {
    View<const double> y = m.mixer.forward(ctx, View<const double>(x.data(), {tok, dm}), cu_v);
    double l = 0;
    for (int64_t i = 0; i < y.numel(); ++i) l += y[i] * w[static_cast<std::size_t>(i)];
    return l;
  };
  loss();
  View<const double> dx = m.mixer.backward(ctx, View<const double>(w.data(), {tok, dm}));
  const std::vector<double> dx_analytic(dx.data, dx.data + dx.numel());

  // Central differences, h = 1e-5: truncation ~h²·f''' ≈ 1e-10, round-off ~1e-16/h ≈ 1e-11 relative.
  const double h = 1e-5, tol = 1e-7;
  auto fd = [&](double* p, int64_t n) {
    std::vector<double> g(static_cast<std::size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const double keep = p[i];
      p[i] = keep + h;
      const double lp = loss();
      p[i] = keep - h;
      const double lm = loss();
      p[i] = keep;
      g[static_cast<std::size_t>(i)] = (lp - lm) / (2 * h);
    }
    return g;
  };
  {
    const std::vector<double> num = fd(x.data(), tok * dm);
    INFO("dx");
    CHECK(test::rel_err(dx_analytic, num) < tol);
  }
  for (const char* n : kNames) {
    const std::string name = std::string("mixer.") + n;
    View<double> p = m.store.param(m.store.handle(name));
    View<double> g = m.store.grad(m.store.handle(name));
    const std::vector<double> analytic(g.data, g.data + g.numel());
    const std::vector<double> num = fd(p.data, p.numel());
    INFO(name << " analytic[0] " << analytic[0] << " numeric[0] " << num[0]);
    CHECK(test::rel_err(analytic, num) < tol);
  }
}

TEST_CASE("mamba: the float CPU mixer matches the double reference mixer across scan chunks", "[cpu][nn]") {
  const uint64_t seed = test::test_seed(508);
  INFO("seed " << seed);
  MambaOptions opt;
  opt.scan_chunk = 4;  // the golden files' sequences fit in one chunk; here most span several
  FloatModel f(make_mamba<FloatBackend>(16, 3, 2, 24, opt), seed);
  DoubleModel m(f);
  const std::vector<int64_t> cu = offsets({13, 2, 9});
  const int64_t tok = cu.back(), dm = 24;
  const std::vector<double> x = test::random_uniform<double>(static_cast<std::size_t>(tok * dm), seed + 1);
  const std::vector<double> dy = test::random_uniform<double>(x.size(), seed + 2);
  const std::vector<float> xf(x.begin(), x.end()), dyf(dy.begin(), dy.end());
  View<const int64_t> cu_v(cu.data(), {4});
  MambaMixer<FloatBackend>::Context cf;
  MambaMixer<DoubleBackend>::Context cd;
  View<const float> yf = f.mixer.forward(cf, View<const float>(xf.data(), {tok, dm}), cu_v);
  View<const double> yd = m.mixer.forward(cd, View<const double>(x.data(), {tok, dm}), cu_v);
  // Float inputs and parameters are exact copies; float sums over d_model/d_inner and the scan's
  // float state over 13 steps: measured ~3e-7, bound 1e-5 (README: 1e-4 for blocks).
  CHECK(test::rel_err(std::vector<float>(yf.data, yf.data + yf.numel()), std::vector<double>(yd.data, yd.data + yd.numel())) < 1e-5);
  View<const float> dxf = f.mixer.backward(cf, View<const float>(dyf.data(), {tok, dm}));
  View<const double> dxd = m.mixer.backward(cd, View<const double>(dy.data(), {tok, dm}));
  CHECK(test::rel_err(std::vector<float>(dxf.data, dxf.data + dxf.numel()), std::vector<double>(dxd.data, dxd.data + dxd.numel())) < 1e-5);
  for (const char* n : kNames) {
    const std::string name = std::string("mixer.") + n;
    View<const float> gf = f.store.grad(f.store.handle(name));
    View<const double> gd = m.store.grad(m.store.handle(name));
    INFO(name);
    CHECK(test::rel_err(std::vector<float>(gf.data, gf.data + gf.numel()), std::vector<double>(gd.data, gd.data + gd.numel())) < 1e-5);
  }
}

TEST_CASE("mamba: a packed batch equals each sequence run alone", "[cpu][nn]") {
  const uint64_t seed = test::test_seed(502);
  INFO("seed " << seed);
  MambaOptions opt;
  opt.scan_chunk = 4;
  FloatModel f(make_mamba<FloatBackend>(8, 4, 2, 16, opt), seed);
  const std::vector<int64_t> lens{7, 1, 12, 3};  // 1 and 3 are shorter than d_conv
  const std::vector<int64_t> cu = offsets(lens);
  const int64_t tok = cu.back(), dm = 16;
  const std::vector<float> x = test::random_uniform<float>(static_cast<std::size_t>(tok * dm), seed + 1);
  const std::vector<float> dy = test::random_uniform<float>(x.size(), seed + 2);

  MambaMixer<FloatBackend>::Context ctx;
  View<const float> y = f.mixer.forward(ctx, View<const float>(x.data(), {tok, dm}),
                                        View<const int64_t>(cu.data(), {static_cast<int64_t>(cu.size())}));
  const std::vector<float> y_packed(y.data, y.data + y.numel());
  f.store.zero_grad();
  View<const float> dx = f.mixer.backward(ctx, View<const float>(dy.data(), {tok, dm}));
  const std::vector<float> dx_packed(dx.data, dx.data + dx.numel());
  const std::vector<float> g_packed(f.store.grads().data, f.store.grads().data + f.store.flat_size());

  f.store.zero_grad();
  std::vector<float> y_single, dx_single;
  for (std::size_t s = 0; s < lens.size(); ++s) {
    const int64_t cu1[2] = {0, lens[s]};
    MambaMixer<FloatBackend>::Context c1;  // fresh context per sequence
    View<const float> ys = f.mixer.forward(c1, View<const float>(x.data() + cu[s] * dm, {lens[s], dm}),
                                           View<const int64_t>(cu1, {2}));
    y_single.insert(y_single.end(), ys.data, ys.data + ys.numel());
    View<const float> dxs = f.mixer.backward(c1, View<const float>(dy.data() + cu[s] * dm, {lens[s], dm}));
    dx_single.insert(dx_single.end(), dxs.data, dxs.data + dxs.numel());
  }
  const std::vector<float> g_single(f.store.grads().data, f.store.grads().data + f.store.flat_size());
  // Same float math per token; only GEMM blocking and the order of the parameter-gradient sums
  // over tokens differ: ~1e-7 relative, bound 1e-5. A leak across sequences is O(1).
  CHECK(test::rel_err(y_packed, y_single) < 1e-5);
  CHECK(test::rel_err(dx_packed, dx_single) < 1e-5);
  CHECK(test::rel_err(g_packed, g_single) < 1e-5);
}

TEST_CASE("mamba: step() equals the full forward at every position", "[cpu][nn]") {
  const uint64_t seed = test::test_seed(503);
  INFO("seed " << seed);
  FloatModel f(make_mamba<FloatBackend>(16, 4, 2, 24), seed);
  DoubleModel m(f);
  const int64_t batch = 3, len = 9, dm = 24, tok = batch * len;
  const std::vector<int64_t> cu = offsets({len, len, len});
  const std::vector<double> x = test::random_uniform<double>(static_cast<std::size_t>(tok * dm), seed + 1);
  const std::vector<float> xf(x.begin(), x.end());
  View<const int64_t> cu_v(cu.data(), {batch + 1});

  MambaMixer<DoubleBackend>::Context cd;
  View<const double> yd = m.mixer.forward(cd, View<const double>(x.data(), {tok, dm}), cu_v);
  MambaMixer<FloatBackend>::Context cf;
  View<const float> yf = f.mixer.forward(cf, View<const float>(xf.data(), {tok, dm}), cu_v);

  auto sd = m.mixer.make_state(batch);
  auto sf = f.mixer.make_state(batch);
  std::vector<double> xt(static_cast<std::size_t>(batch * dm)), outd(xt.size());
  std::vector<float> xtf(xt.size()), outf(xt.size());
  double worst_d = 0, worst_f = 0;
  for (int64_t t = 0; t < len; ++t) {
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t c = 0; c < dm; ++c) {
        xt[b * dm + c] = x[(b * len + t) * dm + c];
        xtf[b * dm + c] = xf[(b * len + t) * dm + c];
      }
    m.mixer.step(sd, View<const double>(xt.data(), {batch, dm}), View<double>(outd.data(), {batch, dm}));
    f.mixer.step(sf, View<const float>(xtf.data(), {batch, dm}), View<float>(outf.data(), {batch, dm}));
    std::vector<double> want_d, want_f;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t c = 0; c < dm; ++c) {
        want_d.push_back(yd[(b * len + t) * dm + c]);
        want_f.push_back(yf[(b * len + t) * dm + c]);
      }
    worst_d = std::max(worst_d, test::rel_err(outd, want_d));
    worst_f = std::max(worst_f, test::rel_err(outf, want_f));
  }
  // Double: the same math in another order: 1e-12. Float: step keeps double accumulators, the
  // CPU scan float ones (exp approximations): ~1e-6, bound 1e-5.
  CHECK(worst_d < 1e-12);
  CHECK(worst_f < 1e-5);
  // A reset state starts a new sequence: the first step equals position 0 again.
  m.mixer.reset_state(sd);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < dm; ++c) xt[b * dm + c] = x[(b * len) * dm + c];
  m.mixer.step(sd, View<const double>(xt.data(), {batch, dm}), View<double>(outd.data(), {batch, dm}));
  CHECK(outd[5] == Approx(yd[5]).epsilon(1e-12));
}

TEST_CASE("mamba: prefill then step continues every sequence like the full forward", "[cpu][nn]") {
  const uint64_t seed = test::test_seed(506);
  INFO("seed " << seed);
  FloatModel f(make_mamba<FloatBackend>(8, 4, 2, 16), seed);
  DoubleModel m(f);
  const int64_t dm = 16, total = 8;
  const std::vector<int64_t> prompt{5, 2, 1};  // prompts shorter than d_conv leave zeros in the window
  const int64_t batch = static_cast<int64_t>(prompt.size());
  const std::vector<double> x = test::random_uniform<double>(static_cast<std::size_t>(batch * total * dm), seed + 1);
  const std::vector<int64_t> cu_full = offsets({total, total, total});
  MambaMixer<DoubleBackend>::Context cfull;
  View<const double> y = m.mixer.forward(cfull, View<const double>(x.data(), {batch * total, dm}),
                                         View<const int64_t>(cu_full.data(), {batch + 1}));
  const std::vector<double> want(y.data, y.data + y.numel());

  // Prefill the prompts packed, then step each sequence on to `total` tokens (a finished
  // sequence keeps stepping its own next inputs; all three advance together).
  std::vector<double> xp;
  for (int64_t b = 0; b < batch; ++b)
    xp.insert(xp.end(), x.begin() + b * total * dm, x.begin() + (b * total + prompt[b]) * dm);
  const std::vector<int64_t> cu_p = offsets(prompt);
  auto state = m.mixer.make_state(batch);
  MambaMixer<DoubleBackend>::Context cp;
  m.mixer.prefill(cp, state, View<const double>(xp.data(), {cu_p.back(), dm}), View<const int64_t>(cu_p.data(), {batch + 1}));
  double worst = 0;
  std::vector<int64_t> pos = prompt;
  for (int64_t s = 0; s < total - 5; ++s) {  // the longest prompt has total − 5 tokens left
    std::vector<double> xt(static_cast<std::size_t>(batch * dm)), out(xt.size()), ref;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t c = 0; c < dm; ++c) xt[b * dm + c] = x[(b * total + pos[b]) * dm + c];
    m.mixer.step(state, View<const double>(xt.data(), {batch, dm}), View<double>(out.data(), {batch, dm}));
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t c = 0; c < dm; ++c) ref.push_back(want[(b * total + pos[b]) * dm + c]);
    worst = std::max(worst, test::rel_err(out, ref));
    for (auto& p : pos) ++p;
  }
  CHECK(worst < 1e-12);  // double, same math in another order
}

TEST_CASE("mamba: reference initialisation", "[cpu][nn]") {
  const uint64_t seed = test::test_seed(504);
  INFO("seed " << seed);
  const int64_t dm = 64, di = 128, n = 16, k = 4, r = 4;
  ParameterStore s;
  Mamba<16, 4, 2, FloatBackend> mixer(dm);
  mixer.register_params(s, "backbone.layers.0.mixer.");
  s.finalize();
  const int n_layer = 4;
  mixer.init(s, seed, n_layer);
  auto P = [&](const char* name) { return s.param(s.handle(std::string("backbone.layers.0.mixer.") + name)); };

  // Exact values: A_log[d, n] = log(n + 1) (S4D-real), D = 1.
  View<float> a_log = P("A_log"), d = P("D");
  for (int64_t c = 0; c < di; ++c) {
    for (int64_t j = 0; j < n; ++j) REQUIRE(a_log.at(c, j) == static_cast<float>(std::log(static_cast<double>(j + 1))));
    REQUIRE(d[c] == 1.0f);
  }
  // dt bias: softplus(bias) in [dt_min, dt_max] = [1e-3, 0.1], log-uniform (mean of ln dt = ln 1e-2,
  // sd of the mean 1.33/sqrt(128) ≈ 0.12: margin 0.5).
  View<float> dtb = P("dt_proj.bias");
  double log_sum = 0;
  for (int64_t c = 0; c < di; ++c) {
    const double sp = std::log1p(std::exp(static_cast<double>(dtb[c])));
    REQUIRE(sp >= 1e-3 * (1 - 1e-4));
    REQUIRE(sp <= 0.1 * (1 + 1e-4));
    log_sum += std::log(sp);
  }
  CHECK(log_sum / di == Approx(std::log(1e-2)).margin(0.5));

  // Uniform weights: inside the bound, variance bound²/3 (relative sd of the variance estimate
  // ≈ sqrt(0.8/numel): at most 8% for the smallest, 512 values; bound 25%).
  auto check_uniform = [&](const char* name, double bound) {
    View<float> w = P(name);
    double sum2 = 0, mx = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
      sum2 += static_cast<double>(w[i]) * w[i];
      mx = std::max(mx, std::abs(static_cast<double>(w[i])));
    }
    INFO(name << " bound " << bound << " max " << mx);
    CHECK(mx <= bound * (1 + 1e-6));
    CHECK(mx >= bound * 0.9);
    CHECK(sum2 / w.numel() == Approx(bound * bound / 3).epsilon(0.25));
  };
  check_uniform("in_proj.weight", 1 / std::sqrt(double(dm)));
  check_uniform("conv1d.weight", 1 / std::sqrt(double(k)));
  check_uniform("conv1d.bias", 1 / std::sqrt(double(k)));
  check_uniform("x_proj.weight", 1 / std::sqrt(double(di)));
  check_uniform("dt_proj.weight", 1 / std::sqrt(double(r)));
  check_uniform("out_proj.weight", 1 / std::sqrt(double(di)) / std::sqrt(double(n_layer)));

  // Same seed, same model; another seed, another model; the fixed parameters do not move.
  ParameterStore s2;
  Mamba<16, 4, 2, FloatBackend> m2(dm);
  m2.register_params(s2, "backbone.layers.0.mixer.");
  s2.finalize();
  m2.init(s2, seed, n_layer);
  const std::vector<float> v1(s.values().data, s.values().data + s.flat_size());
  CHECK(std::vector<float>(s2.values().data, s2.values().data + s2.flat_size()) == v1);
  m2.init(s2, seed + 1, n_layer);
  CHECK(std::vector<float>(s2.values().data, s2.values().data + s2.flat_size()) != v1);
  CHECK(s2.param(s2.handle("backbone.layers.0.mixer.D"))[7] == 1.0f);
}

TEST_CASE("mamba: parameter names, shapes and decay flags are the reference's", "[cpu][nn]") {
  ParameterStore s;
  Mamba<16, 4, 2, FloatBackend> m(40);  // dt_rank = ceil(40/16) = 3, d_inner 80
  STATIC_REQUIRE(decltype(m)::kDState == 16);
  STATIC_REQUIRE(decltype(m)::kDConv == 4);
  STATIC_REQUIRE(decltype(m)::kExpand == 2);
  CHECK(m.dt_rank() == 3);
  m.register_params(s, "backbone.layers.3.mixer.");
  struct Want {
    const char* name;
    std::vector<int64_t> disk;
    bool no_decay;
  };
  const std::vector<Want> want{{"in_proj.weight", {160, 40}, false}, {"conv1d.weight", {80, 1, 4}, false},
                               {"conv1d.bias", {80}, true},          {"x_proj.weight", {35, 80}, false},
                               {"dt_proj.weight", {80, 3}, false},   {"dt_proj.bias", {80}, true},
                               {"A_log", {80, 16}, true},            {"D", {80}, true},
                               {"out_proj.weight", {40, 80}, false}};
  REQUIRE(s.params().size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const ParamInfo& p = s.params()[i];
    INFO(p.name);
    CHECK(p.name == std::string("backbone.layers.3.mixer.") + want[i].name);
    CHECK(p.disk_shape == want[i].disk);
    CHECK(p.no_decay == want[i].no_decay);
  }
  CHECK(s.params()[1].shape == Shape{80, 4});  // conv weight (d_inner, d_conv) in memory
}

TEST_CASE("mamba: the dispatch table rejects uncompiled values with the supported list", "[cpu][nn]") {
  auto message = [](auto f) {
    try {
      f();
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no ConfigError");
  };
  const std::string ds = message([] { make_mamba<FloatBackend>(20, 4, 2, 32); });
  CHECK_THAT(ds, Catch::Contains("d_state = 20"));
  CHECK_THAT(ds, Catch::Contains("4, 8, 12, 16, 32, 48, 64, 96, 128"));
  CHECK_THAT(message([] { make_mamba<FloatBackend>(16, 5, 2, 32); }), Catch::Contains("2, 3, 4"));
  CHECK_THAT(message([] { make_mamba<FloatBackend>(16, 4, 3, 32); }), Catch::Contains("1, 2, 4"));
  CHECK_THAT(message([] { MambaMixer<FloatBackend>(32, 20, 4, 2); }), Catch::Contains("supported"));
  const MambaMixer<FloatBackend> ok = make_mamba<FloatBackend>(96, 2, 4, 32);
  CHECK(ok.d_state() == 96);
  CHECK(ok.d_conv() == 2);
  CHECK(ok.d_inner() == 128);
  CHECK(ok.dt_rank() == 2);
}

TEST_CASE("mamba: workspaces are reused and the forward is repeatable", "[cpu][nn]") {
  const uint64_t seed = test::test_seed(505);
  INFO("seed " << seed);
  FloatModel f(make_mamba<FloatBackend>(16, 4, 2, 16), seed);
  const std::vector<int64_t> cu = offsets({6, 10});
  const std::vector<float> x = test::random_uniform<float>(16 * 16, seed + 1);
  View<const int64_t> cu_v(cu.data(), {3});
  MambaMixer<FloatBackend>::Context ctx;
  View<const float> y1 = f.mixer.forward(ctx, View<const float>(x.data(), {16, 16}), cu_v);
  const std::vector<float> first(y1.data, y1.data + y1.numel());
  f.mixer.backward(ctx, y1);
  const std::size_t bytes = ctx.bytes();
  const float* saved = ctx.saved_states.data();
  View<const float> y2 = f.mixer.forward(ctx, View<const float>(x.data(), {16, 16}), cu_v);
  CHECK(y2.data == y1.data);
  CHECK(ctx.saved_states.data() == saved);
  CHECK(std::vector<float>(y2.data, y2.data + y2.numel()) == first);
  f.mixer.backward(ctx, y2);
  CHECK(ctx.bytes() == bytes);
  CHECK(bytes > 0);
  // Wrong input width: a ShapeError naming d_model.
  CHECK_THROWS_AS(f.mixer.forward(ctx, View<const float>(x.data(), {32, 8}), cu_v), ShapeError);
}

TEST_CASE("mamba: in a Backbone, reference names, out_proj rescale, checkpointing", "[cpu][nn]") {
  const uint64_t seed = test::test_seed(507);
  INFO("seed " << seed);
  BackboneConfig bc;
  bc.d_model = 32;
  bc.n_layer = 3;
  bc.vocab = 20;
  const int64_t di = 64;
  Backbone<FloatBackend, MambaMixer<FloatBackend>> bb(bc, make_mamba<FloatBackend>(16, 4, 2, bc.d_model));
  ParameterStore s;
  bb.register_params(s);
  s.finalize();
  bb.init(s, seed);

  std::vector<std::string> want{"backbone.embedding.weight"};
  for (int i = 0; i < bc.n_layer; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".";
    want.push_back(p + "norm.weight");
    for (const char* n : kNames) want.push_back(p + "mixer." + n);
  }
  want.push_back("backbone.norm_f.weight");
  std::vector<std::string> got;
  for (const auto& p : s.params()) got.push_back(p.name);
  CHECK(got == want);

  // MambaLMHeadModel's _init_weights: out_proj.weight ~ U(±1/sqrt(d_inner)) / sqrt(n_layer).
  View<float> w = s.param(s.handle("backbone.layers.2.mixer.out_proj.weight"));
  const double bound = 1.0 / std::sqrt(double(di)) / std::sqrt(double(bc.n_layer));
  double mx = 0;
  for (int64_t i = 0; i < w.numel(); ++i) mx = std::max(mx, std::abs(double(w[i])));
  CHECK(mx <= bound * (1 + 1e-6));
  CHECK(mx >= bound * 0.9);

  // Activation checkpointing recomputes each mixer from its block input into one shared
  // Context: the gradients must not change (same float ops in the same order: 1e-6).
  const std::vector<int64_t> cu = offsets({9, 4, 11});
  std::vector<int64_t> ids;
  Philox rng(seed, 3);
  for (int64_t t = 0; t < cu.back(); ++t) ids.push_back(static_cast<int64_t>(rng.below(20)));
  const std::vector<float> dy = test::random_uniform<float>(static_cast<std::size_t>(cu.back() * bc.d_model), seed + 1);
  auto grads = [&](bool checkpointing) {
    bb.set_checkpointing(checkpointing);
    s.zero_grad();
    Backbone<FloatBackend, MambaMixer<FloatBackend>>::Context ctx;
    bb.forward_tokens(ctx, View<const int64_t>(ids.data(), {cu.back()}), View<const int64_t>(cu.data(), {4}));
    bb.backward(ctx, View<const float>(dy.data(), {cu.back(), bc.d_model}));
    return std::vector<float>(s.grads().data, s.grads().data + s.flat_size());
  };
  const std::vector<float> plain = grads(false), ckpt = grads(true);
  CHECK(test::rel_err(ckpt, plain) < 1e-6);
  double norm = 0;
  for (float g : plain) norm += double(g) * g;
  CHECK(norm > 0);
}
