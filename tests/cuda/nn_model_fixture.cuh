// The model of the [cuda] nn tests (test_nn_cuda.cu, test_mixed_precision_cuda.cu): a Backbone of
// Mamba mixers (bidirectional with token + position embeddings, or causal with checkpointing on
// the frozen point embedding), dropout in training mode, the MDM (on gathered rows), NTP and k-NNN
// heads, templated on the backend; a random varlen batch as float values and its copy on a
// backend; one forward + backward through every part; ModelPair sets up a GPU model and its
// float64 reference twin with the same weights.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "mambatrack/core/philox.hpp"
#include "mambatrack/nn/backbone.hpp"
#include "mambatrack/nn/gather_rows.hpp"
#include "mambatrack/nn/heads.hpp"
#include "mambatrack/nn/mamba.hpp"
#include "mambatrack/nn/point_embedding.hpp"
#include "mambatrack/nn/reference_backend.hpp"
#include "mambatrack/nn/ssm_backend.hpp"
#include "cuda_test_util.cuh"

namespace mambatrack::test::nn_fixture {

using RefB = nn::WithSsmOps<nn::ReferenceBackend>;

constexpr int64_t kDModel = 32, kVocab = 11, kNerf = 63, kMaxPos = 80, kKnn = 3, kMdmHidden = 24, kNtpHidden = 16;
constexpr uint64_t kInitSeed = 1234;

struct Config {
  bool embedded = false;  // FrozenPointEmbedding (concat) -> forward_embedded; else tokens + positions
  bool bidirectional = false;
  bool checkpointing = false;
};

template <class B>
struct Model {
  using T = typename B::Scalar;
  using Mixer = nn::MambaMixer<B>;
  Config cfg;
  nn::Backbone<B, Mixer> backbone;
  nn::FrozenPointEmbedding<B> embed;
  nn::GatherRows<B> gather;
  nn::MdmHead<B> mdm;
  nn::NtpHead<B> ntp;
  nn::KnnHead<B> knn;

  static nn::BackboneConfig backbone_config(const Config& c) {
    nn::BackboneConfig bc;
    bc.d_model = kDModel;
    bc.n_layer = 2;
    bc.input = c.embedded ? nn::BackboneInput::kEmbedded : nn::BackboneInput::kTokens;
    bc.vocab = kVocab;
    bc.max_positions = c.embedded ? 0 : kMaxPos;
    bc.bidirectional = c.bidirectional;
    bc.dropout = 0.1;
    bc.checkpointing = c.checkpointing;
    return bc;
  }
  explicit Model(const Config& c)
      : cfg(c),
        backbone(backbone_config(c), nn::Mamba<16, 4, 2, B>(kDModel)),
        embed(kNerf, kDModel, nn::PointEmbedMethod::kConcat),
        mdm(kDModel, kMdmHidden, kVocab),
        ntp(kDModel, kNtpHidden, 0.2, 1000),
        knn(kDModel, kKnn) {}
  void register_params(typename B::Store& s) {
    if (cfg.embedded) embed.register_params(s);
    backbone.register_params(s);
    mdm.register_params(s);
    ntp.register_params(s);
    knn.register_params(s);
  }
  void init(nn::ParameterStore& s) const {
    if (cfg.embedded) embed.init(s, kInitSeed);
    backbone.init(s, kInitSeed);
    mdm.init(s, kInitSeed);
    ntp.init(s, kInitSeed);
    knn.init(s, kInitSeed);
  }
  void set_step(uint64_t seed, uint64_t step) {
    backbone.set_mode(true, seed, step);
    ntp.set_mode(true, seed, step);
  }
};

// One batch on backend B's device: inputs and the upstream gradients of the three heads.
template <class B>
struct Batch {
  using T = typename B::Scalar;
  using D = typename B::Device;
  Tensor<int64_t, D> ids, cu, rows;
  Tensor<T, D> nerf, energy, dmdm, dntp, dknn;
};

// The same batch as float values (what both backends see).
struct HostBatch {
  std::vector<int64_t> lens, ids, cu, rows;
  std::vector<float> nerf, energy, dmdm, dntp, dknn;
  int64_t tokens = 0;
};

inline HostBatch make_batch(const std::vector<int64_t>& lens, uint64_t seed) {
  Philox rng(seed, 5);
  HostBatch h;
  h.lens = lens;
  h.cu.push_back(0);
  for (int64_t l : lens) h.cu.push_back(h.cu.back() + l);
  h.tokens = h.cu.back();
  for (int64_t t = 0; t < h.tokens; ++t) h.ids.push_back(static_cast<int64_t>(rng.below(kVocab)));
  for (int64_t t = 0; t < h.tokens; ++t)
    if (rng.uniform(0.0, 1.0) < 0.3) h.rows.push_back(t);  // distinct, as MDM's masked positions
  if (h.rows.empty()) h.rows.push_back(0);
  auto fill = [&](std::vector<float>& v, int64_t n, double lo, double hi) {
    v.resize(static_cast<std::size_t>(n));
    for (auto& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  };
  fill(h.nerf, h.tokens * kNerf, -1, 1);
  fill(h.energy, h.tokens, 0, 2);
  fill(h.dmdm, static_cast<int64_t>(h.rows.size()) * kVocab, -1, 1);
  fill(h.dntp, static_cast<int64_t>(lens.size()) * 2, -1, 1);
  fill(h.dknn, h.tokens * 3 * kKnn, -1, 1);
  return h;
}

template <class T, class U>
Tensor<T> host_tensor(const std::vector<U>& v, Shape s) {
  Tensor<T> t(s);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<T>(v[static_cast<std::size_t>(i)]);
  return t;
}
template <class T, class U>
Tensor<T, Cuda> device_tensor(const std::vector<U>& v, Shape s) {
  Tensor<T> h = host_tensor<T>(v, s);
  return to_device<T>(h.view());
}

template <class B>
Batch<B> on_backend(const HostBatch& h) {
  using T = typename B::Scalar;
  const int64_t n = h.tokens, m = static_cast<int64_t>(h.rows.size()), b = static_cast<int64_t>(h.lens.size());
  Batch<B> out;
  auto mk = [](auto tag, const auto& v, Shape s) {
    using V = decltype(tag);
    if constexpr (std::is_same_v<typename B::Device, Host>) return host_tensor<V>(v, s);
    else return device_tensor<V>(v, s);
  };
  out.ids = mk(int64_t(), h.ids, Shape{n});
  out.cu = mk(int64_t(), h.cu, Shape{b + 1});
  out.rows = mk(int64_t(), h.rows, Shape{m});
  out.nerf = mk(T(), h.nerf, Shape{n, kNerf});
  out.energy = mk(T(), h.energy, Shape{n, 1});
  out.dmdm = mk(T(), h.dmdm, Shape{m, kVocab});
  out.dntp = mk(T(), h.dntp, Shape{b, 2});
  out.dknn = mk(T(), h.dknn, Shape{n, 3 * kKnn});
  return out;
}

template <class B>
struct Contexts {
  using T = typename B::Scalar;
  using D = typename B::Device;
  typename nn::Backbone<B, nn::MambaMixer<B>>::Context bb;
  typename nn::FrozenPointEmbedding<B>::Context embed;
  typename nn::GatherRows<B>::Context gather;
  typename nn::MdmHead<B>::Context mdm;
  typename nn::NtpHead<B>::Context ntp;
  typename nn::Linear<B>::Context knn;
  Tensor<T, D> dh;
  View<const T, D> h, emb, logits, pair, knn_out, dinput;
};

// Forward through every part, then backward with the batch's upstream gradients.
template <class B>
void step(Model<B>& m, Contexts<B>& c, const Batch<B>& in) {
  using T = typename B::Scalar;
  using D = typename B::Device;
  if (m.cfg.embedded) {
    c.emb = m.embed.forward(c.embed, in.nerf.view(), in.energy.view());
    c.h = m.backbone.forward_embedded(c.bb, c.emb, in.cu.view());
  } else {
    c.h = m.backbone.forward_tokens(c.bb, in.ids.view(), in.cu.view());
  }
  c.logits = m.mdm.forward(c.mdm, m.gather.forward(c.gather, c.h, in.rows.view()));
  c.pair = m.ntp.forward(c.ntp, c.h, in.cu.view(), c.h, in.cu.view());
  c.knn_out = m.knn.forward(c.knn, c.h);

  View<const T, D> dh_mdm = m.gather.backward(c.gather, m.mdm.backward(c.mdm, in.dmdm.view()));
  auto dpair = m.ntp.backward(c.ntp, in.dntp.view());
  View<const T, D> dh_knn = m.knn.backward(c.knn, in.dknn.view());
  View<T, D> dh = nn::ensure(c.dh, c.h.shape);
  B::copy(dh_mdm, dh);
  B::accumulate(dpair.first, dh);
  B::accumulate(dpair.second, dh);
  B::accumulate(dh_knn, dh);
  c.dinput = m.backbone.backward(c.bb, View<const T, D>(dh));
}

// The model on a GPU backend G and on the float64 reference backend, registered in their stores,
// the GPU's initialised (fp32 master) weights copied into the reference. Not movable: the models
// hold their stores' addresses.
template <class G>
struct ModelPair {
  Model<G> gpu;
  Model<RefB> ref;
  typename G::Store gs;
  nn::ReferenceStore rs;
  explicit ModelPair(const Config& cfg) : gpu(cfg), ref(cfg) {
    gpu.register_params(gs);
    ref.register_params(rs);
    gs.finalize();
    rs.finalize();
    gpu.init(gs.host());
    gs.upload();
    rs.copy_from(gs.host());
  }
  ModelPair(const ModelPair&) = delete;
  ModelPair& operator=(const ModelPair&) = delete;
};

}  // namespace mambatrack::test::nn_fixture
