// nn::Gelu / nn::Silu: elementwise layers on the ops/activations functions (exact GELU as
// torch.nn.GELU; SiLU x·σ(x)). No parameters; backward dx = dy·f'(x), overwritten.
#pragma once

#include "mambatrack/nn/workspace.hpp"
#include "mambatrack/ops/activations.hpp"

namespace mambatrack::nn {

enum class ActivationKind { kGelu, kSilu };

template <class Backend, ActivationKind Kind>
class Activation {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  struct Context {
    View<const T, Device> x;
    Tensor<T, Device> y, dx;
    std::size_t bytes() const { return y.bytes() + dx.bytes(); }
  };
  View<const T, Device> forward(Context& ctx, View<const T, Device> x) {
    ctx.x = x;
    View<T, Device> y = ensure(ctx.y, x.shape);
    if constexpr (Kind == ActivationKind::kGelu) Backend::gelu_fwd({x, y});
    else Backend::silu_fwd({x, y});
    return y;
  }
  View<const T, Device> backward(Context& ctx, View<const T, Device> dy) {
    View<T, Device> dx = ensure(ctx.dx, ctx.x.shape);
    if constexpr (Kind == ActivationKind::kGelu) Backend::gelu_bwd({ctx.x, dy, dx});
    else Backend::silu_bwd({ctx.x, dy, dx});
    return dx;
  }
};

template <class Backend>
using Gelu = Activation<Backend, ActivationKind::kGelu>;
template <class Backend>
using Silu = Activation<Backend, ActivationKind::kSilu>;

}  // namespace mambatrack::nn
