// nn::Linear: y = x·Wᵀ (+ b), W (out, in) as torch.nn.Linear, on a Backend policy.
// Parameters "<prefix>weight", "<prefix>bias"; init: W ~ U(±1/sqrt(in)) (PyTorch default), b = 0
// (mamba_ssm's _init_weights zeroes Linear biases). backward: dx overwritten, dW/db accumulated.
#pragma once

#include <string>

#include "mambatrack/nn/workspace.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/ops/linear.hpp"
#include "mambatrack/nn/init.hpp"

namespace mambatrack::nn {

template <class Backend>
class Linear {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  using Store = typename Backend::Store;
  struct Context {
    View<const T, Device> x;  // the forward input (owned by the caller)
    Tensor<T, Device> y, dx;
    std::size_t bytes() const { return y.bytes() + dx.bytes(); }
  };

  Linear() = default;
  Linear(int64_t in, int64_t out, bool bias) : in_(in), out_(out), bias_(bias) {}

  void register_params(Store& s, const std::string& prefix, bool frozen = false) {
    store_ = &s;
    frozen_ = frozen;
    w_ = s.add(prefix + "weight", Shape{out_, in_}, false, {}, frozen);
    if (bias_) b_ = s.add(prefix + "bias", Shape{out_}, true, {}, frozen);
  }
  void init(ParameterStore& s, uint64_t seed) const {
    Philox rng = param_rng(seed, s.info(w_).name);
    init_fan_in_uniform(s.param(w_), in_, rng);
    if (bias_) init_constant(s.param(b_), 0.0f);
  }

  View<const T, Device> forward(Context& ctx, View<const T, Device> x) {
    ctx.x = x;
    View<T, Device> y = ensure(ctx.y, Shape{x.dim(0), out_});
    Backend::linear_fwd({x, store_->param(w_), bias_ ? View<const T, Device>(store_->param(b_)) : View<const T, Device>(), y});
    return y;
  }
  // need_dx = false skips dx (the layer sees data, not activations) and returns an empty view.
  View<const T, Device> backward(Context& ctx, View<const T, Device> dy, bool need_dx = true) {
    View<T, Device> dx = need_dx ? ensure(ctx.dx, ctx.x.shape) : View<T, Device>();
    View<T, Device> dw = frozen_ ? View<T, Device>() : store_->grad(w_);
    View<T, Device> db = (bias_ && !frozen_) ? store_->grad(b_) : View<T, Device>();
    Backend::linear_bwd({ctx.x, store_->param(w_), dy, dx, dw, db});
    return dx;
  }

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  ParamHandle weight() const { return w_; }
  ParamHandle bias() const { return b_; }

 private:
  int64_t in_ = 0, out_ = 0;
  bool bias_ = false, frozen_ = false;
  Store* store_ = nullptr;
  ParamHandle w_, b_;
};

}  // namespace mambatrack::nn
