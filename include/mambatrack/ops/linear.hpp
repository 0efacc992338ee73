// Linear layer arguments, shared by every backend: y = x·Wᵀ (+ b), x (tokens, in), W (out, in)
// as torch.nn.Linear stores it, b (out) optional. Backward: dx = dy·W (OVERWRITTEN, optional),
// dW += dyᵀ·x and db += Σ_tokens dy (ACCUMULATED into the caller's gradient buffers).
#pragma once

#include <cstdint>

#include "mambatrack/core/tensor.hpp"
#include "mambatrack/ops/view_checks.hpp"

namespace mambatrack {

template <class T, class Device = Host>
struct LinearFwdArgs {
  View<const T, Device> x;  // (tokens, in)
  View<const T, Device> w;  // (out, in)
  View<const T, Device> b;  // (out), or absent (null data) for no bias
  View<T, Device> y;        // (tokens, out), overwritten

  int64_t tokens() const { return x.dim(0); }
  int64_t in_features() const { return w.dim(1); }
  int64_t out_features() const { return w.dim(0); }

  void check() const {
    ops::check_rank2(x, "linear", "x");
    ops::check_rank2(w, "linear", "w");
    MAMBATRACK_CHECK_SHAPE(x.dim(1) == w.dim(1), "linear: x has ", x.dim(1),
                           " features per token but w (out, in) = ", w.shape, " expects ", w.dim(1));
    if (ops::present(b)) ops::check_vector(b, out_features(), "linear", "b");
    ops::check_matrix(y, tokens(), out_features(), "linear", "y");
  }
};

template <class T, class Device = Host>
struct LinearBwdArgs {
  View<const T, Device> x;   // (tokens, in), the forward input
  View<const T, Device> w;   // (out, in)
  View<const T, Device> dy;  // (tokens, out)
  View<T, Device> dx;        // (tokens, in), overwritten; absent: not computed (first layer)
  View<T, Device> dw;        // (out, in), accumulated (+=); absent: not computed (frozen)
  View<T, Device> db;        // (out), accumulated (+=); absent: no bias

  int64_t tokens() const { return x.dim(0); }
  int64_t in_features() const { return w.dim(1); }
  int64_t out_features() const { return w.dim(0); }

  void check() const {
    ops::check_rank2(x, "linear backward", "x");
    ops::check_rank2(w, "linear backward", "w");
    MAMBATRACK_CHECK_SHAPE(x.dim(1) == w.dim(1), "linear backward: x has ", x.dim(1),
                           " features per token but w (out, in) = ", w.shape, " expects ", w.dim(1));
    ops::check_matrix(dy, tokens(), out_features(), "linear backward", "dy");
    if (ops::present(dx)) ops::check_matrix(dx, tokens(), in_features(), "linear backward", "dx");
    if (ops::present(dw)) ops::check_matrix(dw, out_features(), in_features(), "linear backward", "dw");
    if (ops::present(db)) ops::check_vector(db, out_features(), "linear backward", "db");
  }
};

}  // namespace mambatrack
