// nn::Norm: RMSNorm (weight only) or LayerNorm (weight and bias) over the channels of each token,
// y = x / sqrt(mean(x²) + eps)·w  or  (x − μ)/sqrt(σ² + eps)·w + b. Parameters "<prefix>weight"
// (and "<prefix>bias" for LayerNorm), no weight decay, init w = 1, b = 0.
#pragma once

#include <string>

#include "mambatrack/nn/workspace.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/ops/norm.hpp"
#include "mambatrack/nn/init.hpp"

namespace mambatrack::nn {

template <class Backend>
class Norm {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;
  struct Context {
    View<const T, Device> x;
    Tensor<T, Device> y, dx;
    std::size_t bytes() const { return y.bytes() + dx.bytes(); }
  };

  Norm() = default;
  Norm(int64_t dim, NormKind kind, double eps = 1e-5) : dim_(dim), kind_(kind), eps_(eps) {}

  void register_params(Store& s, const std::string& prefix) {
    store_ = &s;
    w_ = s.add(prefix + "weight", Shape{dim_}, true);
    if (kind_ == NormKind::kLayer) b_ = s.add(prefix + "bias", Shape{dim_}, true);
  }
  void init(ParameterStore& s, uint64_t /*seed*/) const {
    init_constant(s.param(w_), 1.0f);
    if (b_.valid()) init_constant(s.param(b_), 0.0f);
  }

  View<const T, Device> forward(Context& ctx, View<const T, Device> x) {
    ctx.x = x;
    View<T, Device> y = ensure(ctx.y, x.shape);
    Backend::norm_fwd({x, store_->param(w_), bias_view(), y, kind_, eps_});
    return y;
  }
  View<const T, Device> backward(Context& ctx, View<const T, Device> dy) {
    View<T, Device> dx = ensure(ctx.dx, ctx.x.shape);
    Backend::norm_bwd({ctx.x, store_->param(w_), dy, dx, store_->grad(w_), b_.valid() ? store_->grad(b_) : View<T, Device>(),
                       kind_, eps_});
    return dx;
  }

  // The fused "residual = x + residual_in; y = norm(residual)" of the reference Block.
  void add_forward(View<const T, Device> x, View<const T, Device> residual_in, View<T, Device> residual, View<T, Device> y) {
    Backend::add_norm_fwd({x, residual_in, store_->param(w_), bias_view(), residual, y, kind_, eps_});
  }
  // dsum = d(residual) = norm backward(dy) + dresidual (dresidual may be absent).
  void add_backward(View<const T, Device> residual, View<const T, Device> dy, View<const T, Device> dresidual, View<T, Device> dsum) {
    Backend::add_norm_bwd({residual, store_->param(w_), dy, dresidual, dsum, store_->grad(w_),
                           b_.valid() ? store_->grad(b_) : View<T, Device>(), kind_, eps_});
  }

  NormKind kind() const { return kind_; }
  int64_t dim() const { return dim_; }

 private:
  View<const T, Device> bias_view() const { return b_.valid() ? View<const T, Device>(store_->param(b_)) : View<const T, Device>(); }
  int64_t dim_ = 0;
  NormKind kind_ = NormKind::kRms;
  double eps_ = 1e-5;
  Store* store_ = nullptr;
  ParamHandle w_, b_;
};

}  // namespace mambatrack::nn
