// nn::Dropout: y = x ⊙ m, m = 0 with probability p and 1/(1−p) otherwise (inverted dropout, as
// torch). The mask is Philox(seed, stream = layer id, counter = step·2⁴⁰ + element), so it is
// deterministic per (seed, step, layer) and the same when a checkpointed block recomputes it.
// Identity in eval mode or when p = 0.
#pragma once

#include "mambatrack/nn/workspace.hpp"
#include "mambatrack/core/error.hpp"

namespace mambatrack::nn {

template <class Backend>
class Dropout {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  struct Context {
    bool active = false;
    Tensor<T, Device> mask, y, dx;
    std::size_t bytes() const { return mask.bytes() + y.bytes() + dx.bytes(); }
  };

  Dropout() = default;
  Dropout(double p, uint64_t layer_id) : p_(p), layer_(layer_id) {
    MAMBATRACK_CHECK(p >= 0 && p < 1, ConfigError, "dropout probability must be in [0, 1), got ", p);
  }
  // Training mode draws masks; the step selects a fresh mask each optimizer step.
  void set_mode(bool training, uint64_t seed, uint64_t step) {
    training_ = training;
    seed_ = seed;
    step_ = step;
  }
  bool active() const { return training_ && p_ > 0; }

  View<const T, Device> forward(Context& ctx, View<const T, Device> x) {
    ctx.active = active();
    if (!ctx.active) return x;
    View<T, Device> m = ensure(ctx.mask, x.shape);
    Backend::dropout_mask(seed_, layer_, step_, p_, m);
    View<T, Device> y = ensure(ctx.y, x.shape);
    Backend::multiply(x, m, y);
    return y;
  }
  View<const T, Device> backward(Context& ctx, View<const T, Device> dy) {
    if (!ctx.active) return dy;
    View<T, Device> dx = ensure(ctx.dx, dy.shape);
    Backend::multiply(dy, ctx.mask.view(), dx);
    return dx;
  }

 private:
  double p_ = 0;
  uint64_t layer_ = 0, seed_ = 0, step_ = 0;
  bool training_ = false;
};

}  // namespace mambatrack::nn
