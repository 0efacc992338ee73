// FM4NPP's fixed input embedding (learnable_projection=False), names as FM4NPP's state dict:
//   add:    h = nerf(η, φ, r)·P + E·Q                 P = embed.projection (63, d), Q = proj (1, d)
//   concat: h = [E·Q', nerf·P] · R                    Q' = proj (1, d/4), R = proj2 (d/4 + d, d)
// nerf (tokens, 63) comes from data/fm4npp_points.hpp. The matrices ~ N(0, 1) are registered
// frozen: saved in checkpoints, loaded back, never updated by the optimizer, never redrawn on load.
#pragma once

#include <string>

#include "mambatrack/nn/workspace.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/nn/init.hpp"

namespace mambatrack::nn {

enum class PointEmbedMethod { kAdd, kConcat };

template <class Backend>
class FrozenPointEmbedding {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;
  struct Context {
    Tensor<T, Device> pt, qt, rt, e, pos, cat, y;
    std::size_t bytes() const {
      return pt.bytes() + qt.bytes() + rt.bytes() + e.bytes() + pos.bytes() + cat.bytes() + y.bytes();
    }
  };
  FrozenPointEmbedding() = default;
  FrozenPointEmbedding(int64_t nerf_dim, int64_t d_model, PointEmbedMethod method = PointEmbedMethod::kAdd)
      : nerf_(nerf_dim), d_(d_model), e_dim_(method == PointEmbedMethod::kAdd ? d_model : d_model / 4), method_(method) {
    MAMBATRACK_CHECK(e_dim_ > 0, ConfigError, "point embedding: d_model ", d_model, " too small for the concat method");
  }

  void register_params(Store& s, const std::string& prefix = "embedder.") {
    store_ = &s;
    q_ = s.add(prefix + "proj", Shape{1, e_dim_}, true, {}, true);
    p_ = s.add(prefix + "embed.projection", Shape{nerf_, d_}, true, {}, true);
    if (method_ == PointEmbedMethod::kConcat) r_ = s.add(prefix + "proj2", Shape{e_dim_ + d_, d_}, true, {}, true);
  }
  void init(ParameterStore& s, uint64_t seed) const {
    for (ParamHandle h : {p_, q_, r_}) {
      if (!h.valid()) continue;
      Philox rng = param_rng(seed, s.info(h).name);
      init_normal(s.param(h), 0.0, 1.0, rng);
    }
  }

  // nerf (tokens, nerf_dim), energy (tokens, 1) -> (tokens, d_model). No backward: the inputs are
  // data and the projections frozen.
  View<const T, Device> forward(Context& ctx, View<const T, Device> nerf, View<const T, Device> energy) {
    MAMBATRACK_CHECK_SHAPE(nerf.rank() == 2 && nerf.dim(1) == nerf_ && energy.numel() == nerf.dim(0),
                           "point embedding: nerf ", nerf.shape, " and energy ", energy.shape, ", expected (tokens, ",
                           nerf_, ") and (tokens, 1)");
    const int64_t n = nerf.dim(0);
    // linear_fwd wants W as (out, in); FM4NPP stores its projections (in, out) and multiplies x·P.
    View<T, Device> pt = transposed(store_->param(p_), ctx.pt), qt = transposed(store_->param(q_), ctx.qt);
    View<T, Device> e = ensure(ctx.e, Shape{n, e_dim_}), pos = ensure(ctx.pos, Shape{n, d_});
    Backend::linear_fwd({energy.reshape(Shape{n, 1}), View<const T, Device>(qt), View<const T, Device>(), e});
    Backend::linear_fwd({nerf, View<const T, Device>(pt), View<const T, Device>(), pos});
    if (method_ == PointEmbedMethod::kAdd) {
      Backend::accumulate(View<const T, Device>(e), pos);
      return pos;
    }
    View<T, Device> cat = ensure(ctx.cat, Shape{n, e_dim_ + d_});
    Backend::copy_columns(View<const T, Device>(e), cat, 0);
    Backend::copy_columns(View<const T, Device>(pos), cat, e_dim_);
    View<T, Device> y = ensure(ctx.y, Shape{n, d_});
    Backend::linear_fwd({View<const T, Device>(cat), View<const T, Device>(transposed(store_->param(r_), ctx.rt)), View<const T, Device>(), y});
    return y;
  }
  ParamHandle pos_proj() const { return p_; }
  ParamHandle energy_proj() const { return q_; }
  ParamHandle concat_proj() const { return r_; }

 private:
  static View<T, Device> transposed(View<const T, Device> a, Tensor<T, Device>& buf) {
    const int64_t r = a.dim(0), c = a.dim(1);
    View<T, Device> at = ensure(buf, Shape{c, r});
    Backend::transpose(a, at);
    return at;
  }
  int64_t nerf_ = 63, d_ = 0, e_dim_ = 0;
  PointEmbedMethod method_ = PointEmbedMethod::kAdd;
  Store* store_ = nullptr;
  ParamHandle p_, q_, r_;
};

}  // namespace mambatrack::nn
