// nn/ heads and the FM4NPP fixed input embedding: CPU vs reference backend, finite differences in
// double, tied LM head gradients, mean pooling of the NTP pair, frozen projections, and
// save_model -> load_model giving identical outputs for a small backbone + heads.
#include <catch2/catch.hpp>

#include <cstdio>

#include "mambatrack/nn/backbone.hpp"
#include "mambatrack/nn/checkpoint.hpp"
#include "mambatrack/nn/heads.hpp"
#include "mambatrack/nn/point_embedding.hpp"
#include "nn/nn_test_mixer.hpp"

using namespace mambatrack;
using namespace mambatrack::nn;
using namespace mambatrack::nn::test;

namespace {

template <class T>
View<const T> cview(const std::vector<T>& v) {
  return View<const T>(v.data(), Shape{static_cast<int64_t>(v.size())});
}

// Builds one head on both backends with the same parameters (biases and norms made non-trivial).
template <template <class> class H>
struct HeadPair {
  ParameterStore fs;
  ReferenceStore rs;
  H<CpuBackend> f;
  H<ReferenceBackend> r;
  template <class... A>
  HeadPair(uint64_t seed, A... args) : f(args...), r(args...) {
    f.register_params(fs);
    r.register_params(rs);
    fs.finalize();
    rs.finalize();
    f.init(fs, seed);
    for (const auto& p : fs.params())
      if (p.name.find("bias") != std::string::npos || p.name.find("norm") != std::string::npos)
        fill_random(fs.param(fs.handle(p.name)), seed + p.offset, 0.5, 1.5);
    rs.copy_from(fs);
  }
};

// float vs double through ≤ 3 GEMMs of ≤ 32 terms, GELU and LayerNorm: ~1e-6; 5e-5 for margin
constexpr double kTol = 5e-5;

}  // namespace

TEST_CASE("nn::MdmHead: Linear -> GELU -> LayerNorm -> Linear, reference backend and finite differences",
          "[cpu][nn][grad]") {
  const uint64_t seed = mambatrack::test::test_seed(401);
  INFO("seed " << seed);
  {
    HeadPair<MdmHead> h(seed, int64_t{16}, int64_t{24}, int64_t{30});
    Tensor<float> x(Shape{5, 16}), dy(Shape{5, 30});
    fill_random(x.view(), seed + 1, -2, 2);
    fill_random(dy.view(), seed + 2);
    Tensor<double> xd = to_double(x.view()), dyd = to_double(dy.view());
    typename MdmHead<CpuBackend>::Context cf;
    typename MdmHead<ReferenceBackend>::Context cr;
    CHECK(max_rel(h.f.forward(cf, x.view()), h.r.forward(cr, xd.view())) < kTol);
    CHECK(max_rel(h.f.backward(cf, dy.view()), h.r.backward(cr, dyd.view())) < kTol);
    check_grads_match(h.fs, h.rs, kTol);
    CHECK(h.fs.params().size() == 6u);
    CHECK(h.fs.params()[2].name == "mdm_head.norm.weight");
    CHECK(h.fs.params()[4].name == "mdm_head.decoder.weight");
  }
  HeadPair<MdmHead> h(seed, int64_t{4}, int64_t{6}, int64_t{5});
  Tensor<double> x(Shape{3, 4}), g(Shape{3, 5});
  fill_random(x.view(), seed + 3, -2, 2);
  fill_random(g.view(), seed + 4);
  auto loss = [&] {
    typename MdmHead<ReferenceBackend>::Context c;
    return dot(h.r.forward(c, x.view()), View<const double>(g.view()));
  };
  typename MdmHead<ReferenceBackend>::Context c;
  h.r.forward(c, x.view());
  View<const double> dx = h.r.backward(c, g.view());
  Tensor<double> dxc(dx.shape);
  copy(dx, dxc.view());
  fd_check_params(h.rs, loss);
  fd_check_input(x.view(), dxc.view(), loss, "mdm input");
}

TEST_CASE("nn::NtpHead: mean-pooled pair -> MLP -> 2 logits, reference backend and finite differences",
          "[cpu][nn][grad]") {
  const uint64_t seed = mambatrack::test::test_seed(402);
  INFO("seed " << seed);
  const std::vector<int64_t> cu1 = {0, 4, 5, 11}, cu2 = {0, 2, 8, 12};
  {
    HeadPair<NtpHead> h(seed, int64_t{8}, int64_t{12}, 0.1);
    h.f.set_mode(true, seed, 5);
    h.r.set_mode(true, seed, 5);
    Tensor<float> x1(Shape{11, 8}), x2(Shape{12, 8}), dy(Shape{3, 2});
    fill_random(x1.view(), seed + 1);
    fill_random(x2.view(), seed + 2);
    fill_random(dy.view(), seed + 3);
    Tensor<double> x1d = to_double(x1.view()), x2d = to_double(x2.view()), dyd = to_double(dy.view());
    typename NtpHead<CpuBackend>::Context cf;
    typename NtpHead<ReferenceBackend>::Context cr;
    View<const float> logits = h.f.forward(cf, x1.view(), cview(cu1), x2.view(), cview(cu2));
    CHECK(logits.shape == Shape{3, 2});
    CHECK(max_rel(logits, h.r.forward(cr, x1d.view(), cview(cu1), x2d.view(), cview(cu2))) < kTol);
    // pooling: the pair row of track 2 is [mean of x1 rows 5..10, mean of x2 rows 8..11]
    double m1 = 0, m2 = 0;
    for (int t = 5; t < 11; ++t) m1 += x1.at(t, 3);
    for (int t = 8; t < 12; ++t) m2 += x2.at(t, 3);
    CHECK(cf.pair.at(2, 3) == Approx(m1 / 6).epsilon(1e-6));
    CHECK(cf.pair.at(2, 8 + 3) == Approx(m2 / 4).epsilon(1e-6));
    auto df = h.f.backward(cf, dy.view());
    auto dr = h.r.backward(cr, dyd.view());
    CHECK(max_rel(df.first, dr.first) < kTol);
    CHECK(max_rel(df.second, dr.second) < kTol);
    check_grads_match(h.fs, h.rs, kTol);
  }
  HeadPair<NtpHead> h(seed, int64_t{3}, int64_t{6}, 0.2);
  h.r.set_mode(true, seed, 1);
  Tensor<double> x1(Shape{11, 3}), x2(Shape{12, 3}), g(Shape{3, 2});
  fill_random(x1.view(), seed + 4);
  fill_random(x2.view(), seed + 5);
  fill_random(g.view(), seed + 6);
  auto loss = [&] {
    typename NtpHead<ReferenceBackend>::Context c;
    return dot(h.r.forward(c, x1.view(), cview(cu1), x2.view(), cview(cu2)), View<const double>(g.view()));
  };
  typename NtpHead<ReferenceBackend>::Context c;
  h.r.forward(c, x1.view(), cview(cu1), x2.view(), cview(cu2));
  auto d = h.r.backward(c, g.view());
  Tensor<double> d1(d.first.shape), d2(d.second.shape);
  copy(d.first, d1.view());
  copy(d.second, d2.view());
  fd_check_params(h.rs, loss);
  fd_check_input(x1.view(), d1.view(), loss, "ntp track 1");
  fd_check_input(x2.view(), d2.view(), loss, "ntp track 2");
}

TEST_CASE("nn::KnnHead and untied nn::LmHead match the reference backend", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(403);
  INFO("seed " << seed);
  HeadPair<KnnHead> k(seed, int64_t{16}, int64_t{5});
  CHECK(k.fs.params()[0].name == "knn_head.weight");
  CHECK(k.fs.params()[1].name == "knn_head.bias");
  HeadPair<LmHead> lm(seed, int64_t{16}, int64_t{21});
  CHECK(lm.fs.params()[0].name == "lm_head.weight");
  Tensor<float> x(Shape{6, 16}), dk(Shape{6, 15}), dl(Shape{6, 21});
  fill_random(x.view(), seed + 1);
  fill_random(dk.view(), seed + 2);
  fill_random(dl.view(), seed + 3);
  Tensor<double> xd = to_double(x.view()), dkd = to_double(dk.view()), dld = to_double(dl.view());
  typename Linear<CpuBackend>::Context cf, lf;
  typename Linear<ReferenceBackend>::Context cr, lr;
  View<const float> y = k.f.forward(cf, x.view());
  CHECK(y.shape == Shape{6, 15});
  CHECK(max_rel(y, k.r.forward(cr, xd.view())) < kTol);
  CHECK(max_rel(k.f.backward(cf, dk.view()), k.r.backward(cr, dkd.view())) < kTol);
  check_grads_match(k.fs, k.rs, kTol);
  CHECK(max_rel(lm.f.forward(lf, x.view()), lm.r.forward(lr, xd.view())) < kTol);
  CHECK(max_rel(lm.f.backward(lf, dl.view()), lm.r.backward(lr, dld.view())) < kTol);
  check_grads_match(lm.fs, lm.rs, kTol);
}

TEST_CASE("nn::LmHead tied to the embedding shares its weight and gradient", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(404);
  INFO("seed " << seed);
  ParameterStore s;
  Embedding<CpuBackend> emb(13, 8, 0);
  emb.register_params(s, "backbone.embedding.");
  LmHead<CpuBackend> head(8, 13);
  head.register_params(s, "lm_head.weight", emb.weight());
  s.finalize();
  emb.init(s, seed);
  head.init(s, seed);  // tied: leaves the embedding alone
  CHECK(s.params().size() == 1u);
  CHECK(head.tied());
  Tensor<float> x(Shape{4, 8}), dy(Shape{4, 13});
  fill_random(x.view(), seed + 1);
  fill_random(dy.view(), seed + 2);
  typename LmHead<CpuBackend>::Context c;
  View<const float> logits = head.forward(c, x.view());
  View<const float> table = s.param(emb.weight());
  double want = 0;
  for (int k = 0; k < 8; ++k) want += static_cast<double>(x.at(2, k)) * table.at(7, k);
  CHECK(logits.at(2, 7) == Approx(want).epsilon(1e-5));  // 8-term float dot product
  head.backward(c, dy.view());
  double gw = 0;
  for (int t = 0; t < 4; ++t) gw += static_cast<double>(dy.at(t, 7)) * x.at(t, 3);
  CHECK(s.grad(emb.weight()).at(7, 3) == Approx(gw).epsilon(1e-5));
}

TEST_CASE("nn::FrozenPointEmbedding: add and concat with frozen, checkpointed projections", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(405);
  INFO("seed " << seed);
  for (PointEmbedMethod method : {PointEmbedMethod::kAdd, PointEmbedMethod::kConcat}) {
    const bool concat = method == PointEmbedMethod::kConcat;
    INFO("concat " << concat);
    ParameterStore s;
    FrozenPointEmbedding<CpuBackend> e(63, 12, method);
    e.register_params(s);
    s.finalize();
    e.init(s, seed);
    CHECK(s.info(e.pos_proj()).name == "embedder.embed.projection");
    CHECK(s.info(e.energy_proj()).name == "embedder.proj");
    CHECK(s.info(e.energy_proj()).shape == Shape{1, concat ? 3 : 12});
    CHECK(s.params().size() == (concat ? 3u : 2u));
    for (const auto& p : s.params()) CHECK(p.frozen);
    CHECK(s.num_trainable() == 0);
    CHECK(s.decay_ranges().empty());
    CHECK(s.no_decay_ranges().empty());
    Tensor<float> nerf(Shape{3, 63}), energy(Shape{3, 1});
    fill_random(nerf.view(), seed + 1);
    fill_random(energy.view(), seed + 2, 0, 1);
    typename FrozenPointEmbedding<CpuBackend>::Context c;
    View<const float> h = e.forward(c, nerf.view(), energy.view());
    View<const float> P = s.param(e.pos_proj()), Q = s.param(e.energy_proj());
    for (int t = 0; t < 3; ++t) {
      std::vector<double> ev, pv(12, 0.0);
      for (int j = 0; j < Q.dim(1); ++j) ev.push_back(static_cast<double>(energy[t]) * Q.at(0, j));
      for (int j = 0; j < 12; ++j)
        for (int i = 0; i < 63; ++i) pv[j] += static_cast<double>(nerf.at(t, i)) * P.at(i, j);
      for (int j = 0; j < 12; ++j) {
        double want = 0;
        if (!concat) {
          want = ev[j] + pv[j];
        } else {  // [E·proj, nerf·projection] · proj2, energy first
          View<const float> R = s.param(e.concat_proj());
          for (int i = 0; i < 3; ++i) want += ev[i] * R.at(i, j);
          for (int i = 0; i < 12; ++i) want += pv[i] * R.at(3 + i, j);
        }
        // float sums of 64 (and then 15) terms of O(8): ~1e-5 relative
        CHECK(h.at(t, j) == Approx(want).epsilon(1e-4).margin(1e-4));
      }
    }
  }
}

TEST_CASE("save_model -> load_model gives identical outputs for a backbone and heads", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(406);
  INFO("seed " << seed);
  using Mixer = PrevTokenMixer<CpuBackend>;
  BackboneConfig c;
  c.d_model = 12;
  c.n_layer = 2;
  c.vocab = 17;
  c.padding_idx = 0;
  c.max_positions = 8;
  c.norm = NormKind::kLayer;
  c.bidirectional = true;
  struct M {
    ParameterStore s;
    Backbone<CpuBackend, Mixer> bb;
    MdmHead<CpuBackend> mdm;
    NtpHead<CpuBackend> ntp;
    M(const BackboneConfig& c, uint64_t seed) : bb(c, Mixer(12, 20)), mdm(12, 16, 17), ntp(12, 8) {
      bb.register_params(s);
      mdm.register_params(s);
      ntp.register_params(s);
      s.finalize();
      bb.init(s, seed);
      mdm.init(s, seed);
      ntp.init(s, seed);
    }
    std::vector<float> run(const std::vector<int64_t>& ids, const std::vector<int64_t>& cu) {
      typename Backbone<CpuBackend, Mixer>::Context ctx;
      typename MdmHead<CpuBackend>::Context mc;
      typename NtpHead<CpuBackend>::Context nc;
      View<const float> y = bb.forward_tokens(ctx, cview(ids), cview(cu));
      View<const float> logits = mdm.forward(mc, y);
      View<const float> pair = ntp.forward(nc, y, cview(cu), y, cview(cu));
      std::vector<float> out(logits.data, logits.data + logits.numel());
      out.insert(out.end(), pair.data, pair.data + pair.numel());
      return out;
    }
  };
  const std::vector<int64_t> ids = {1, 5, 9, 16, 3, 3, 7, 2, 11}, cu = {0, 4, 9};
  M a(c, seed), b(c, seed + 1);
  const std::vector<float> ya = a.run(ids, cu);
  CHECK(b.run(ids, cu) != ya);
  const std::string path = "test_nn_heads_roundtrip.safetensors";
  save_model(path, a.s, {{"d_model", 12}});
  load_model(path, b.s);
  CHECK(b.run(ids, cu) == ya);  // bitwise: the same float parameters through the same ops
  std::remove(path.c_str());

  // FM4NPP: frozen point embedding + backbone on embeddings + k-NNN head; the frozen projections
  // come back from the file, not from the model's own seed.
  BackboneConfig f = c;
  f.input = BackboneInput::kEmbedded;
  f.bidirectional = false;
  f.norm = NormKind::kRms;
  struct F {
    ParameterStore s;
    FrozenPointEmbedding<CpuBackend> emb;
    Backbone<CpuBackend, Mixer> bb;
    KnnHead<CpuBackend> head;
    F(const BackboneConfig& c, uint64_t seed) : emb(63, 12), bb(c, Mixer(12, 20)), head(12, 4) {
      emb.register_params(s);
      bb.register_params(s);
      head.register_params(s);
      s.finalize();
      emb.init(s, seed);
      bb.init(s, seed);
      head.init(s, seed);
    }
    std::vector<float> run(View<const float> nerf, View<const float> energy, const std::vector<int64_t>& cu) {
      typename FrozenPointEmbedding<CpuBackend>::Context ec;
      typename Backbone<CpuBackend, Mixer>::Context ctx;
      typename Linear<CpuBackend>::Context hc;
      View<const float> y = head.forward(hc, bb.forward_embedded(ctx, emb.forward(ec, nerf, energy), cview(cu)));
      return std::vector<float>(y.data, y.data + y.numel());
    }
  };
  Tensor<float> nerf(Shape{9, 63}), energy(Shape{9, 1});
  fill_random(nerf.view(), seed + 2);
  fill_random(energy.view(), seed + 3, 0, 1);
  F fa(f, seed), fb(f, seed + 1);
  const std::vector<float> za = fa.run(nerf.view(), energy.view(), cu);
  CHECK(za.size() == 9u * 12u);
  CHECK(fb.run(nerf.view(), energy.view(), cu) != za);
  save_model(path, fa.s, {{"embed", "add"}});
  load_model(path, fb.s);
  CHECK(fb.run(nerf.view(), energy.view(), cu) == za);
  CHECK(fb.s.param(fb.emb.pos_proj())[17] == fa.s.param(fa.emb.pos_proj())[17]);
  std::remove(path.c_str());
}
