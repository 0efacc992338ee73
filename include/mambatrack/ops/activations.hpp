// Elementwise activations, arguments shared by every backend:
//   silu(x) = x·σ(x);  softplus(x) = log(1 + eˣ) (x for x > 20, torch's threshold);
//   gelu(x) = x·Φ(x) = ½x(1 + erf(x/√2)) (exact form, torch's nn.GELU default).
// Backward: dx = dy·f'(x), OVERWRITTEN. Any shape; x, y (or dy, dx) have equal element counts.
#pragma once

#include "mambatrack/core/tensor.hpp"
#include "mambatrack/ops/view_checks.hpp"

namespace mambatrack {

// Above this softplus returns x (and its derivative 1), as torch.nn.functional.softplus.
constexpr double kSoftplusThreshold = 20.0;

template <class T, class Device = Host>
struct ActivationFwdArgs {
  View<const T, Device> x;
  View<T, Device> y;  // overwritten; may alias x
  void check(const char* op) const {
    MAMBATRACK_CHECK_SHAPE(x.numel() == y.numel(), op, ": x has ", x.numel(), " elements ", x.shape,
                           " but y has ", y.numel(), " ", y.shape);
  }
};

template <class T, class Device = Host>
struct ActivationBwdArgs {
  View<const T, Device> x;   // the forward input
  View<const T, Device> dy;
  View<T, Device> dx;        // overwritten; may alias dy
  void check(const char* op) const {
    MAMBATRACK_CHECK_SHAPE(x.numel() == dy.numel() && x.numel() == dx.numel(), op, " backward: x ",
                           x.shape, ", dy ", dy.shape, " and dx ", dx.shape,
                           " must have equal element counts");
  }
};

}  // namespace mambatrack
