// nn::Backbone<Backend, Mixer> with the test mixer: reference-backend comparison, finite
// differences in double (causal, bidirectional, feature input), packed == each sequence alone,
// bidirectional reversal, activation checkpointing (same gradients, fewer bytes held), and the
// reference state-dict names.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "mambatrack/nn/backbone.hpp"
#include "mambatrack/nn/heads.hpp"
#include "nn/nn_test_mixer.hpp"

using namespace mambatrack;
using namespace mambatrack::nn;
using namespace mambatrack::nn::test;

namespace {

template <class Backend>
using TestBackbone = Backbone<Backend, PrevTokenMixer<Backend>>;

template <class Backend>
TestBackbone<Backend> make(const BackboneConfig& c) {
  return TestBackbone<Backend>(c, PrevTokenMixer<Backend>(c.d_model, 2 * c.d_model));
}

struct Model {
  ParameterStore fs;
  ReferenceStore rs;
  TestBackbone<CpuBackend> f;
  TestBackbone<ReferenceBackend> r;
  Model(const BackboneConfig& c, uint64_t seed) : f(make<CpuBackend>(c)), r(make<ReferenceBackend>(c)) {
    f.register_params(fs);
    r.register_params(rs);
    fs.finalize();
    rs.finalize();
    f.init(fs, seed);
    for (const auto& p : fs.params())  // make norm weights/biases non-trivial
      if (p.name.find("norm") != std::string::npos) fill_random(fs.param(fs.handle(p.name)), seed + p.offset, 0.5, 1.5);
    rs.copy_from(fs);
  }
};

BackboneConfig token_config(bool bidir, int n_layer = 2, int64_t d = 6) {
  BackboneConfig c;
  c.d_model = d;
  c.n_layer = n_layer;
  c.vocab = 9;
  c.padding_idx = 0;
  c.max_positions = 8;
  c.bidirectional = bidir;
  c.norm = bidir ? NormKind::kLayer : NormKind::kRms;
  return c;
}

std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  Philox rng(seed, 5);
  std::vector<int64_t> ids(n);
  for (auto& id : ids) id = static_cast<int64_t>(rng.below(static_cast<uint64_t>(vocab)));
  return ids;
}

template <class T>
View<const T> cview(const std::vector<T>& v) {
  return View<const T>(v.data(), Shape{static_cast<int64_t>(v.size())});
}

}  // namespace

TEST_CASE("nn::Backbone matches the reference backend (tokens + positions, dropout, both directions)", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(301);
  INFO("seed " << seed);
  const std::vector<int64_t> cu = {0, 5, 6, 11, 14};
  const std::vector<int64_t> ids = random_ids(14, 9, seed);
  for (bool bidir : {false, true}) {
    INFO("bidirectional " << bidir);
    BackboneConfig c = token_config(bidir, 3, 16);
    c.dropout = 0.1;
    Model m(c, seed);
    m.f.set_mode(true, seed, 4);
    m.r.set_mode(true, seed, 4);
    typename TestBackbone<CpuBackend>::Context cf;
    typename TestBackbone<ReferenceBackend>::Context cr;
    View<const float> y = m.f.forward_tokens(cf, cview(ids), cview(cu));
    View<const double> yr = m.r.forward_tokens(cr, cview(ids), cview(cu));
    // float vs double through 3 blocks of width 16/32: ~1e-6 per block; 1e-4 for margin
    CHECK(max_rel(y, yr) < 1e-4);
    for (int i = 0; i < 3; ++i) CHECK(max_rel(m.f.layer_output(cf, i), m.r.layer_output(cr, i)) < 1e-4);
    Tensor<float> g(y.shape);
    fill_random(g.view(), seed + 1);
    Tensor<double> gd = to_double(g.view());
    m.f.backward(cf, g.view());
    m.r.backward(cr, gd.view());
    check_grads_match(m.fs, m.rs, 1e-4);
    // the padding row gets no gradient
    View<const float> ge = m.fs.grad(m.fs.handle("backbone.embedding.weight"));
    for (int64_t k = 0; k < 16; ++k) CHECK(ge.at(0, k) == 0.0f);
  }
}

TEST_CASE("nn::Backbone finite differences in double", "[cpu][nn][grad]") {
  const uint64_t seed = mambatrack::test::test_seed(302);
  INFO("seed " << seed);
  const std::vector<int64_t> cu = {0, 3, 4, 7};
  const std::vector<int64_t> ids = random_ids(7, 9, seed);
  for (bool bidir : {false, true}) {
    INFO("token input, bidirectional " << bidir);
    BackboneConfig c = token_config(bidir);
    c.dropout = 0.25;
    Model m(c, seed);
    m.r.set_mode(true, seed, 1);
    Tensor<double> g(Shape{7, 6});
    fill_random(g.view(), seed + 1);
    auto loss = [&] {
      typename TestBackbone<ReferenceBackend>::Context ctx;
      return dot(m.r.forward_tokens(ctx, cview(ids), cview(cu)), View<const double>(g.view()));
    };
    typename TestBackbone<ReferenceBackend>::Context ctx;
    m.r.forward_tokens(ctx, cview(ids), cview(cu));
    m.r.backward(ctx, g.view());
    fd_check_params(m.rs, loss, 8);
  }
  {
    INFO("feature input, the input gradient of embedded input");
    BackboneConfig c = token_config(true);
    c.input = BackboneInput::kFeatures;
    c.in_features = 4;
    Model m(c, seed);
    Tensor<double> x(Shape{7, 4}), g(Shape{7, 6});
    fill_random(x.view(), seed + 2);
    fill_random(g.view(), seed + 3);
    auto loss = [&] {
      typename TestBackbone<ReferenceBackend>::Context ctx;
      return dot(m.r.forward_features(ctx, x.view(), cview(cu)), View<const double>(g.view()));
    };
    typename TestBackbone<ReferenceBackend>::Context ctx;
    m.r.forward_features(ctx, x.view(), cview(cu));
    m.r.backward(ctx, g.view());
    fd_check_params(m.rs, loss, 8);
    CHECK(m.rs.names()[0] == "backbone.input_proj.weight");
  }
  {
    BackboneConfig c = token_config(false);
    c.input = BackboneInput::kEmbedded;
    Model m(c, seed);
    Tensor<double> h(Shape{7, 6}), g(Shape{7, 6});
    fill_random(h.view(), seed + 4);
    fill_random(g.view(), seed + 5);
    auto loss = [&] {
      typename TestBackbone<ReferenceBackend>::Context ctx;
      return dot(m.r.forward_embedded(ctx, h.view(), cview(cu)), View<const double>(g.view()));
    };
    typename TestBackbone<ReferenceBackend>::Context ctx;
    m.r.forward_embedded(ctx, h.view(), cview(cu));
    View<const double> dh = m.r.backward(ctx, g.view());
    Tensor<double> dhc(dh.shape);
    copy(dh, dhc.view());
    fd_check_input(h.view(), dhc.view(), loss, "embedded input");
  }
}

TEST_CASE("nn::Backbone: a packed batch equals each sequence run alone", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(303);
  INFO("seed " << seed);
  const std::vector<int64_t> cu = {0, 4, 5, 12, 18};
  const std::vector<int64_t> ids = random_ids(18, 9, seed);
  for (bool bidir : {false, true}) {
    INFO("bidirectional " << bidir);
    BackboneConfig c = token_config(bidir, 2, 16);
    Model m(c, seed);
    typename TestBackbone<CpuBackend>::Context packed;
    View<const float> y = m.f.forward_tokens(packed, cview(ids), cview(cu));
    Tensor<float> g(y.shape);
    fill_random(g.view(), seed + 1);
    m.f.backward(packed, g.view());
    Tensor<float> packed_grads(Shape{m.fs.flat_size()});
    copy(View<const float>(m.fs.grads()), packed_grads.view());
    m.fs.zero_grad();
    for (std::size_t s = 0; s + 1 < cu.size(); ++s) {
      const int64_t b = cu[s], e = cu[s + 1];
      std::vector<int64_t> one_ids(ids.begin() + b, ids.begin() + e), one_cu = {0, e - b};
      typename TestBackbone<CpuBackend>::Context alone;
      View<const float> ya = m.f.forward_tokens(alone, cview(one_ids), cview(one_cu));
      // the same float ops on the same rows; GEMM blocking may differ with the row count: 1e-6
      CHECK(max_rel(ya, y.rows(b, e)) < 1e-6);
      for (int i = 0; i < 2; ++i) CHECK(max_rel(m.f.layer_output(alone, i), m.f.layer_output(packed, i).rows(b, e)) < 1e-6);
      m.f.backward(alone, View<const float>(g.view().rows(b, e)));
    }
    // summed per-sequence gradients vs the packed ones: float sums in another order, 1e-5
    CHECK(max_rel(View<const float>(m.fs.grads()), View<const float>(packed_grads.view())) < 1e-5);
  }
}

TEST_CASE("nn::Backbone bidirectional: mixer_rev sees each sequence reversed in its own bounds", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(304);
  INFO("seed " << seed);
  const std::vector<int64_t> cu = {0, 3, 8, 9};
  BackboneConfig c = token_config(true, 1, 8);
  c.input = BackboneInput::kEmbedded;
  Model bi(c, seed);
  c.bidirectional = false;
  Model fwd(c, seed + 100), rev(c, seed + 200);
  // the causal models take the forward and the reversed mixer (and the norms) of the bidirectional one
  for (const auto& p : fwd.fs.params()) {
    std::string from_fwd = p.name, from_rev = p.name;
    const auto at = p.name.find(".mixer.");
    if (at != std::string::npos) from_rev.replace(at, 7, ".mixer_rev.");
    copy(View<const float>(bi.fs.param(bi.fs.handle(from_fwd))), fwd.fs.param(fwd.fs.handle(p.name)));
    copy(View<const float>(bi.fs.param(bi.fs.handle(from_rev))), rev.fs.param(rev.fs.handle(p.name)));
  }
  Tensor<float> h(Shape{9, 8}), hr(Shape{9, 8});
  fill_random(h.view(), seed + 1);
  CpuBackend::reverse_within_sequences(h.view(), cview(cu), hr.view());
  typename TestBackbone<CpuBackend>::Context cb, cf, cr;
  View<const float> y = bi.f.forward_embedded(cb, h.view(), cview(cu));
  fwd.f.forward_embedded(cf, h.view(), cview(cu));
  rev.f.forward_embedded(cr, hr.view(), cview(cu));
  Tensor<float> rev_back(Shape{9, 8});
  CpuBackend::reverse_within_sequences(rev.f.layer_output(cr, 0), cview(cu), rev_back.view());
  View<const float> z = bi.f.layer_output(cb, 0), zf = fwd.f.layer_output(cf, 0);
  // a sum of two float terms against the same ops run separately: 1e-6
  for (int64_t i = 0; i < z.numel(); ++i) CHECK(z[i] == Approx(zf[i] + rev_back[i]).margin(1e-6));
  // the first token of sequence 1 now depends on the token after it (the test mixer reaches one
  // token back, so the reversed one reaches one ahead), and nothing leaks into other sequences
  Tensor<float> h2(Shape{9, 8});
  copy(View<const float>(h.view()), h2.view());
  h2.at(4, 2) += 0.5f;
  h2.at(8, 1) += 0.5f;
  typename TestBackbone<CpuBackend>::Context c2, c3;
  View<const float> y2 = bi.f.forward_embedded(c2, h2.view(), cview(cu));
  CHECK(std::fabs(y2.at(3, 0) - y.at(3, 0)) > 1e-5);
  for (int k = 0; k < 8; ++k) CHECK(y2.at(2, k) == y.at(2, k));  // sequence 0 untouched
  View<const float> y3 = fwd.f.forward_embedded(c3, h2.view(), cview(cu));
  View<const float> y1 = fwd.f.forward_embedded(cf, h.view(), cview(cu));
  for (int k = 0; k < 8; ++k) CHECK(y3.at(3, k) == y1.at(3, k));  // causal: token 3 cannot see token 4
}

TEST_CASE("nn::Backbone activation checkpointing: identical gradients, fewer bytes held", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(305);
  INFO("seed " << seed);
  std::vector<int64_t> cu = {0};
  for (int s = 0; s < 16; ++s) cu.push_back(cu.back() + 4 + s % 9);
  const std::vector<int64_t> ids = random_ids(cu.back(), 9, seed);
  for (bool bidir : {false, true}) {
    INFO("bidirectional " << bidir);
    BackboneConfig c = token_config(bidir, 6, 32);
    c.max_positions = 16;
    c.dropout = 0.1;
    Model m(c, seed);
    m.f.set_mode(true, seed, 2);
    Tensor<float> g(Shape{cu.back(), 32});
    fill_random(g.view(), seed + 1);
    typename TestBackbone<CpuBackend>::Context full, ckpt;
    View<const float> y = m.f.forward_tokens(full, cview(ids), cview(cu));
    const std::size_t held_full = full.bytes();
    m.f.backward(full, g.view());
    Tensor<float> grads_full(Shape{m.fs.flat_size()});
    copy(View<const float>(m.fs.grads()), grads_full.view());
    m.fs.zero_grad();
    m.f.set_checkpointing(true);
    View<const float> yc = m.f.forward_tokens(ckpt, cview(ids), cview(cu));
    const std::size_t held_ckpt = ckpt.bytes();
    for (int64_t i = 0; i < y.numel(); ++i) REQUIRE(yc[i] == y[i]);
    m.f.backward(ckpt, g.view());
    // recomputation repeats the same float ops in the same order: bitwise equal
    int64_t differ = 0;
    for (int64_t i = 0; i < m.fs.flat_size(); ++i) differ += m.fs.grads()[i] != grads_full[i];
    CHECK(differ == 0);
    // bytes held in contexts between forward and backward (the forward's workspaces included)
    CHECK(held_ckpt < held_full);
    CHECK(static_cast<double>(held_ckpt) < 0.6 * static_cast<double>(held_full));
  }
}

TEST_CASE("nn::Backbone + LM head parameter names are the reference state-dict names", "[cpu][nn]") {
  for (bool bidir : {false, true})
    for (bool tied : {true, false}) {
      BackboneConfig c = token_config(bidir, 2);
      c.max_positions = 0;
      c.norm = NormKind::kRms;
      ParameterStore s;
      auto bb = make<CpuBackend>(c);
      bb.register_params(s);
      LmHead<CpuBackend> head(c.d_model, c.vocab);
      head.register_params(s, "lm_head.weight", tied ? bb.embedding().weight() : ParamHandle{});
      std::set<std::string> names, want = {"backbone.embedding.weight", "backbone.norm_f.weight"};
      for (const auto& p : s.params()) names.insert(p.name);
      for (int i = 0; i < 2; ++i) {
        const std::string l = "backbone.layers." + std::to_string(i) + ".";
        want.insert(l + "norm.weight");
        for (const char* m : {"mixer.", "mixer_rev."}) {
          if (std::string(m) == "mixer_rev." && !bidir) continue;
          for (const char* w : {"in_proj.weight", "shift_proj.weight", "shift_proj.bias", "out_proj.weight"})
            want.insert(l + m + w);
        }
      }
      if (!tied) want.insert("lm_head.weight");
      CHECK(names == want);
    }
}

TEST_CASE("nn::Backbone dropout: training differs from eval, eval is deterministic", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(306);
  INFO("seed " << seed);
  const std::vector<int64_t> cu = {0, 6, 10};
  const std::vector<int64_t> ids = random_ids(10, 9, seed);
  BackboneConfig c = token_config(false);
  c.dropout = 0.3;
  Model m(c, seed);
  typename TestBackbone<CpuBackend>::Context a, b;
  m.f.set_mode(false);
  View<const float> e = m.f.forward_tokens(a, cview(ids), cview(cu));
  std::vector<float> eval(e.data, e.data + e.numel());
  m.f.set_mode(true, seed, 1);
  View<const float> train = m.f.forward_tokens(b, cview(ids), cview(cu));
  int64_t differ = 0;
  for (int64_t i = 0; i < train.numel(); ++i) differ += train[i] != eval[i];
  CHECK(differ > train.numel() / 2);
  m.f.set_mode(false);
  View<const float> again = m.f.forward_tokens(b, cview(ids), cview(cu));
  for (int64_t i = 0; i < again.numel(); ++i) CHECK(again[i] == eval[i]);
}
