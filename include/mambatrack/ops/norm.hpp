// RMSNorm / LayerNorm over the channels of each token, and the reference Block's fused
// "residual add + norm", arguments shared by every backend.
//   RMSNorm:   y = x / sqrt(mean(x²) + eps) · w (+ b)
//   LayerNorm: y = (x − mean(x)) / sqrt(var(x) + eps) · w + b   (biased variance, as torch)
//   add_norm:  residual = x + residual_in (residual_in absent: residual = x); y = norm(residual)
// Backward: dx OVERWRITTEN; dw, db ACCUMULATED (+=). mean/rstd are recomputed, not saved.
#pragma once

#include <cstdint>

#include "mambatrack/core/tensor.hpp"
#include "mambatrack/ops/view_checks.hpp"

namespace mambatrack {

enum class NormKind { kRms, kLayer };

inline const char* norm_name(NormKind k) { return k == NormKind::kRms ? "rms_norm" : "layer_norm"; }

template <class T, class Device = Host>
struct NormFwdArgs {
  View<const T, Device> x;  // (tokens, dim)
  View<const T, Device> w;  // (dim)
  View<const T, Device> b;  // (dim) or absent (RMSNorm usually has none)
  View<T, Device> y;        // (tokens, dim), overwritten
  NormKind kind = NormKind::kRms;
  double eps = 1e-5;

  int64_t tokens() const { return x.dim(0); }
  int64_t dim() const { return x.dim(1); }
  void check() const {
    const char* op = norm_name(kind);
    ops::check_rank2(x, op, "x");
    ops::check_vector(w, dim(), op, "weight");
    if (ops::present(b)) ops::check_vector(b, dim(), op, "bias");
    ops::check_matrix(y, tokens(), dim(), op, "y");
    MAMBATRACK_CHECK(eps > 0, ConfigError, op, ": eps must be > 0, got ", eps);
  }
};

template <class T, class Device = Host>
struct NormBwdArgs {
  View<const T, Device> x;   // (tokens, dim), the forward input
  View<const T, Device> w;   // (dim)
  View<const T, Device> dy;  // (tokens, dim)
  View<T, Device> dx;        // (tokens, dim), overwritten
  View<T, Device> dw;        // (dim), accumulated; absent: not computed
  View<T, Device> db;        // (dim), accumulated; absent: no bias
  NormKind kind = NormKind::kRms;
  double eps = 1e-5;

  int64_t tokens() const { return x.dim(0); }
  int64_t dim() const { return x.dim(1); }
  void check() const {
    const char* op = norm_name(kind);
    ops::check_rank2(x, op, "x");
    ops::check_vector(w, dim(), op, "weight");
    ops::check_matrix(dy, tokens(), dim(), op, "dy");
    ops::check_matrix(dx, tokens(), dim(), op, "dx");
    if (ops::present(dw)) ops::check_vector(dw, dim(), op, "dweight");
    if (ops::present(db)) ops::check_vector(db, dim(), op, "dbias");
    MAMBATRACK_CHECK(eps > 0, ConfigError, op, ": eps must be > 0, got ", eps);
  }
};

// residual = x + residual_in; y = norm(residual). residual may alias residual_in (in-place).
template <class T, class Device = Host>
struct AddNormFwdArgs {
  View<const T, Device> x;            // (tokens, dim), the mixer output
  View<const T, Device> residual_in;  // (tokens, dim), or absent at the first block
  View<const T, Device> w;            // (dim)
  View<const T, Device> b;            // (dim) or absent
  View<T, Device> residual;           // (tokens, dim), overwritten: x + residual_in
  View<T, Device> y;                  // (tokens, dim), overwritten: norm(residual)
  NormKind kind = NormKind::kRms;
  double eps = 1e-5;

  int64_t tokens() const { return x.dim(0); }
  int64_t dim() const { return x.dim(1); }
  void check() const {
    const char* op = kind == NormKind::kRms ? "add_rms_norm" : "add_layer_norm";
    ops::check_rank2(x, op, "x");
    if (ops::present(residual_in)) ops::check_matrix(residual_in, tokens(), dim(), op, "residual_in");
    ops::check_vector(w, dim(), op, "weight");
    if (ops::present(b)) ops::check_vector(b, dim(), op, "bias");
    ops::check_matrix(residual, tokens(), dim(), op, "residual");
    ops::check_matrix(y, tokens(), dim(), op, "y");
    MAMBATRACK_CHECK(eps > 0, ConfigError, op, ": eps must be > 0, got ", eps);
  }
};

// d(residual) = dy through the norm + dresidual (the gradient arriving on the residual stream
// from later blocks, absent at the last one). Since residual = x + residual_in, that one tensor
// is the gradient of both x and residual_in: dsum is overwritten with it.
template <class T, class Device = Host>
struct AddNormBwdArgs {
  View<const T, Device> residual;   // (tokens, dim), saved from the forward
  View<const T, Device> w;          // (dim)
  View<const T, Device> dy;         // (tokens, dim)
  View<const T, Device> dresidual;  // (tokens, dim) or absent
  View<T, Device> dsum;             // (tokens, dim), overwritten: dL/dx = dL/dresidual_in
  View<T, Device> dw;               // (dim), accumulated; absent: not computed
  View<T, Device> db;               // (dim), accumulated; absent: no bias
  NormKind kind = NormKind::kRms;
  double eps = 1e-5;

  int64_t tokens() const { return residual.dim(0); }
  int64_t dim() const { return residual.dim(1); }
  void check() const {
    const char* op = kind == NormKind::kRms ? "add_rms_norm backward" : "add_layer_norm backward";
    ops::check_rank2(residual, op, "residual");
    ops::check_vector(w, dim(), op, "weight");
    ops::check_matrix(dy, tokens(), dim(), op, "dy");
    if (ops::present(dresidual)) ops::check_matrix(dresidual, tokens(), dim(), op, "dresidual");
    ops::check_matrix(dsum, tokens(), dim(), op, "dsum");
    if (ops::present(dw)) ops::check_vector(dw, dim(), op, "dweight");
    if (ops::present(db)) ops::check_vector(db, dim(), op, "dbias");
    MAMBATRACK_CHECK(eps > 0, ConfigError, op, ": eps must be > 0, got ", eps);
  }
  // The same backward seen as a plain norm backward on `residual`.
  NormBwdArgs<T, Device> as_norm() const { return {residual, w, dy, dsum, dw, db, kind, eps}; }
};

// out = a + b (the residual add); its backward passes dout to both a and b unchanged.
template <class T, class Device = Host>
struct AddArgs {
  View<const T, Device> a, b;
  View<T, Device> out;
  void check() const {
    MAMBATRACK_CHECK_SHAPE(a.shape == b.shape && a.shape == out.shape, "residual add: shapes ", a.shape,
                           " + ", b.shape, " -> ", out.shape, " must all be equal");
  }
};

}  // namespace mambatrack
