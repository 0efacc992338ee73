// nn::Block<Backend, Mixer> with the test mixer: the CPU backend against the reference backend,
// finite differences of the whole block in double (causal and bidirectional, RMS and LayerNorm),
// and the reference Block's residual semantics.
#include <catch2/catch.hpp>

#include "mambatrack/nn/block.hpp"
#include "nn/nn_test_mixer.hpp"

using namespace mambatrack;
using namespace mambatrack::nn;
using namespace mambatrack::nn::test;

namespace {

template <class Backend>
using TestBlock = Block<Backend, PrevTokenMixer<Backend>>;

struct BlockPair {
  ParameterStore fs;
  ReferenceStore rs;
  TestBlock<CpuBackend> f;
  TestBlock<ReferenceBackend> r;
  BlockPair(uint64_t seed, int64_t d, NormKind norm, bool bidir, double dropout)
      : f(d, norm, 1e-5, PrevTokenMixer<CpuBackend>(d, 2 * d), bidir, dropout, 0),
        r(d, norm, 1e-5, PrevTokenMixer<ReferenceBackend>(d, 2 * d), bidir, dropout, 0) {
    f.register_params(fs, "backbone.layers.0.");
    r.register_params(rs, "backbone.layers.0.");
    fs.finalize();
    rs.finalize();
    f.init(fs, seed, 2);
    fill_random(fs.param(fs.handle("backbone.layers.0.norm.weight")), seed + 9, 0.5, 1.5);
    rs.copy_from(fs);
    f.set_mode(dropout > 0, seed, 3);
    r.set_mode(dropout > 0, seed, 3);
  }
};

const std::vector<int64_t> kCu = {0, 3, 4, 8};

}  // namespace

TEST_CASE("nn::Block matches the reference backend (causal, bidirectional, dropout)", "[cpu][nn]") {
  const uint64_t seed = mambatrack::test::test_seed(201);
  INFO("seed " << seed);
  View<const int64_t> cu(kCu.data(), Shape{4});
  for (bool bidir : {false, true})
    for (NormKind norm : {NormKind::kRms, NormKind::kLayer}) {
      INFO("bidirectional " << bidir << ", layer norm " << (norm == NormKind::kLayer));
      BlockPair b(seed, 12, norm, bidir, 0.2);
      Tensor<float> h(Shape{8, 12}), res(Shape{8, 12}), gh(Shape{8, 12}), gr(Shape{8, 12});
      fill_random(h.view(), seed + 1);
      fill_random(res.view(), seed + 2);
      fill_random(gh.view(), seed + 3);
      fill_random(gr.view(), seed + 4);
      Tensor<double> hd = to_double(h.view()), resd = to_double(res.view()), ghd = to_double(gh.view()),
                     grd = to_double(gr.view());
      typename TestBlock<CpuBackend>::Context cf;
      typename TestBlock<ReferenceBackend>::Context cr;
      // float vs double through a norm, two GEMMs of ≤ 24 terms and SiLU: ~1e-6; 5e-5 for margin
      CHECK(max_rel(b.f.forward(cf, h.view(), res.view(), cu), b.r.forward(cr, hd.view(), resd.view(), cu)) < 5e-5);
      CHECK(max_rel(cf.residual.view(), cr.residual.view()) < 1e-6);
      CHECK(max_rel(b.f.backward(cf, gh.view(), gr.view()), b.r.backward(cr, ghd.view(), grd.view())) < 5e-5);
      check_grads_match(b.fs, b.rs, 5e-5);
      // residual semantics: residual out = hidden in + residual in
      for (int64_t i = 0; i < h.numel(); ++i) CHECK(cf.residual.view()[i] == h[i] + res[i]);
    }
}

TEST_CASE("nn::Block finite differences in double (causal and bidirectional)", "[cpu][nn][grad]") {
  const uint64_t seed = mambatrack::test::test_seed(202);
  INFO("seed " << seed);
  View<const int64_t> cu(kCu.data(), Shape{4});
  for (bool bidir : {false, true})
    for (bool first_layer : {true, false}) {
      INFO("bidirectional " << bidir << ", first layer " << first_layer);
      BlockPair b(seed, 5, bidir ? NormKind::kLayer : NormKind::kRms, bidir, 0.3);
      Tensor<double> h(Shape{8, 5}), res(Shape{8, 5}), gh(Shape{8, 5}), gr(Shape{8, 5});
      fill_random(h.view(), seed + 1);
      fill_random(res.view(), seed + 2);
      fill_random(gh.view(), seed + 3);
      fill_random(gr.view(), seed + 4);
      View<const double> rin = first_layer ? View<const double>() : View<const double>(res.view());
      typename TestBlock<ReferenceBackend>::Context ctx;
      auto loss = [&] {
        typename TestBlock<ReferenceBackend>::Context c;
        View<const double> y = b.r.forward(c, h.view(), rin, cu);
        return dot(y, View<const double>(gh.view())) + dot(View<const double>(c.residual.view()), View<const double>(gr.view()));
      };
      b.rs.zero_grad();
      b.r.forward(ctx, h.view(), rin, cu);
      View<const double> dsum = b.r.backward(ctx, gh.view(), gr.view());
      Tensor<double> dh(dsum.shape);
      copy(dsum, dh.view());
      fd_check_params(b.rs, loss);
      fd_check_input(h.view(), dh.view(), loss, "hidden_in");
      if (!first_layer) fd_check_input(res.view(), dh.view(), loss, "residual_in");
    }
}
