// Gated grouped RMSNorm of Mamba2 (RMSNormGated, norm_before_gate = false): argument structs and
// the validation shared by every backend. Per token, with the d_inner channels split into ngroups
// groups of d_inner/ngroups contiguous channels:
//   g = y·silu(z),  out = g / sqrt(mean_group(g²) + eps) · weight
#pragma once

#include <cstdint>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack {

template <class T>
struct GatedRmsNormFwdArgs {
  View<const T> y;       // (tokens, d_inner)
  View<const T> z;       // (tokens, d_inner), the gate
  View<const T> weight;  // (d_inner)
  int64_t ngroups = 1;
  T eps = T(1e-5);
  View<T> out;           // (tokens, d_inner), overwritten
};

// Backward: dy and dz are OVERWRITTEN; dweight is ACCUMULATED (+=).
template <class T>
struct GatedRmsNormBwdArgs {
  View<const T> y, z, weight;
  View<const T> dout;    // (tokens, d_inner)
  int64_t ngroups = 1;
  T eps = T(1e-5);
  View<T> dy;            // (tokens, d_inner), overwritten
  View<T> dz;            // (tokens, d_inner), overwritten
  View<T> dweight;       // (d_inner), +=
};

struct GatedRmsNormDims {
  int64_t tokens = 0, channels = 0, ngroups = 1;
  int64_t group_size() const { return channels / ngroups; }
};

template <class T>
GatedRmsNormDims validate_gated_rmsnorm(View<const T> y, View<const T> z, View<const T> weight,
                                        int64_t ngroups, T eps) {
  GatedRmsNormDims d;
  MAMBATRACK_CHECK_SHAPE(y.rank() == 2, "gated RMSNorm input y must be (tokens, d_inner), got ",
                         y.shape);
  d.tokens = y.dim(0);
  d.channels = y.dim(1);
  d.ngroups = ngroups;
  MAMBATRACK_CHECK_SHAPE(z.shape == y.shape, "gate z has shape ", z.shape, ", expected ", y.shape);
  MAMBATRACK_CHECK_SHAPE(weight.shape == Shape{d.channels}, "norm weight has shape ", weight.shape,
                         ", expected (", d.channels, ")");
  MAMBATRACK_CHECK(ngroups >= 1 && d.channels % ngroups == 0, ConfigError, "ngroups = ", ngroups,
                   " must be >= 1 and divide d_inner = ", d.channels);
  MAMBATRACK_CHECK(eps > T(0), ConfigError, "RMSNorm eps must be > 0, got ", eps);
  return d;
}

template <class T>
GatedRmsNormDims validate_gated_rmsnorm_fwd(const GatedRmsNormFwdArgs<T>& a) {
  const auto d = validate_gated_rmsnorm(a.y, a.z, a.weight, a.ngroups, a.eps);
  MAMBATRACK_CHECK_SHAPE(a.out.shape == a.y.shape, "out has shape ", a.out.shape, ", expected ",
                         a.y.shape);
  return d;
}

template <class T>
GatedRmsNormDims validate_gated_rmsnorm_bwd(const GatedRmsNormBwdArgs<T>& a) {
  const auto d = validate_gated_rmsnorm(a.y, a.z, a.weight, a.ngroups, a.eps);
  MAMBATRACK_CHECK_SHAPE(a.dout.shape == a.y.shape, "dout has shape ", a.dout.shape,
                         ", expected ", a.y.shape);
  MAMBATRACK_CHECK_SHAPE(a.dy.shape == a.y.shape, "dy has shape ", a.dy.shape, ", expected ",
                         a.y.shape);
  MAMBATRACK_CHECK_SHAPE(a.dz.shape == a.y.shape, "dz has shape ", a.dz.shape, ", expected ",
                         a.y.shape);
  MAMBATRACK_CHECK_SHAPE(a.dweight.shape == a.weight.shape, "dweight has shape ", a.dweight.shape,
                         ", expected ", a.weight.shape);
  return d;
}

}  // namespace mambatrack
