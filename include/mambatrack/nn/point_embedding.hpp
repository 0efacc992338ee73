// FM4NPP's fixed input embedding (EmbedderAdd, learnable_projection=False), additive form:
//   h = nerf(η, φ, r)·P + E·Q,  nerf (tokens, 63) from data/fm4npp_points.hpp, P (63, d), Q (1, d)
// P, Q ~ N(0, 1) are registered frozen ("<prefix>pos_proj", "<prefix>energy_proj"): they are
// saved in checkpoints, loaded back, never updated by the optimizer and never redrawn on load.
#pragma once

#include <string>

#include "mambatrack/nn/backend.hpp"
#include "mambatrack/nn/init.hpp"

namespace mambatrack::nn {

template <class Backend>
class FrozenPointEmbedding {
 public:
  using T = typename Backend::Scalar;
  using Store = typename Backend::Store;
  struct Context {
    Tensor<T> pt, qt, y, tmp;
    std::size_t bytes() const { return pt.bytes() + qt.bytes() + y.bytes() + tmp.bytes(); }
  };
  FrozenPointEmbedding() = default;
  FrozenPointEmbedding(int64_t nerf_dim, int64_t d_model) : nerf_(nerf_dim), d_(d_model) {}

  void register_params(Store& s, const std::string& prefix = "embedder.") {
    store_ = &s;
    p_ = s.add(prefix + "pos_proj", Shape{nerf_, d_}, true, {}, true);
    q_ = s.add(prefix + "energy_proj", Shape{1, d_}, true, {}, true);
  }
  void init(ParameterStore& s, uint64_t seed) const {
    Philox r1 = param_rng(seed, s.info(p_).name), r2 = param_rng(seed, s.info(q_).name);
    init_normal(s.param(p_), 0.0, 1.0, r1);
    init_normal(s.param(q_), 0.0, 1.0, r2);
  }

  // nerf (tokens, nerf_dim), energy (tokens, 1) -> (tokens, d_model). No backward: the inputs are
  // data and the projections frozen.
  View<const T> forward(Context& ctx, View<const T> nerf, View<const T> energy) {
    MAMBATRACK_CHECK_SHAPE(nerf.rank() == 2 && nerf.dim(1) == nerf_ && energy.numel() == nerf.dim(0),
                           "point embedding: nerf ", nerf.shape, " and energy ", energy.shape, ", expected (tokens, ",
                           nerf_, ") and (tokens, 1)");
    // linear_fwd wants W as (out, in); the projections are stored (in, out) as in FM4NPP.
    View<T> pt = ensure(ctx.pt, Shape{d_, nerf_}), qt = ensure(ctx.qt, Shape{d_, 1});
    transpose(store_->param(p_), pt);
    transpose(store_->param(q_), qt);
    View<T> y = ensure(ctx.y, Shape{nerf.dim(0), d_}), tmp = ensure(ctx.tmp, Shape{nerf.dim(0), d_});
    Backend::linear_fwd({nerf, View<const T>(pt), View<const T>(), y});
    Backend::linear_fwd({energy.reshape(Shape{nerf.dim(0), 1}), View<const T>(qt), View<const T>(), tmp});
    Backend::accumulate(View<const T>(tmp), y);
    return y;
  }
  ParamHandle pos_proj() const { return p_; }
  ParamHandle energy_proj() const { return q_; }

 private:
  static void transpose(View<const T> a, View<T> at) {
    const int64_t r = a.dim(0), c = a.dim(1);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) at.data[j * r + i] = a.data[i * c + j];
  }
  int64_t nerf_ = 63, d_ = 0;
  Store* store_ = nullptr;
  ParamHandle p_, q_;
};

}  // namespace mambatrack::nn
