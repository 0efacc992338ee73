// nn::GatherRows: out[i] = x[rows[i]] (e.g. the masked positions MAMBA-PT's MDM decoder sees),
// backward dx = 0 then dx[rows[i]] += dout[i]. Runs on the embedding ops: x plays the table.
#pragma once

#include "mambatrack/nn/workspace.hpp"
#include "mambatrack/ops/embedding.hpp"

namespace mambatrack::nn {

template <class Backend>
class GatherRows {
 public:
  using T = typename Backend::Scalar;
  using Device = typename Backend::Device;
  struct Context {
    View<const int64_t, Device> rows;
    Shape x_shape;
    Tensor<T, Device> y, dx;
    std::size_t bytes() const { return y.bytes() + dx.bytes(); }
  };
  View<const T, Device> forward(Context& ctx, View<const T, Device> x, View<const int64_t, Device> rows) {
    ctx.rows = rows;
    ctx.x_shape = x.shape;
    View<T, Device> y = ensure(ctx.y, Shape{rows.numel(), x.dim(1)});
    Backend::embedding_fwd({rows, x, y, kNoPadding});
    return y;
  }
  View<const T, Device> backward(Context& ctx, View<const T, Device> dy) {
    View<T, Device> dx = ensure(ctx.dx, ctx.x_shape);
    Backend::fill(dx, T(0));
    Backend::embedding_bwd({ctx.rows, dy, dx, kNoPadding});
    return dx;
  }
};

}  // namespace mambatrack::nn
