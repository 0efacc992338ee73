// Gated grouped RMSNorm of Mamba2 (RMSNormGated, norm_before_gate = false): argument structs and
// the validation shared by every backend. Per token, with the d_inner channels split into ngroups
// groups of d_inner/ngroups contiguous channels:
//   g = y·silu(z),  out = g / sqrt(mean_group(g²) + eps) · weight
#pragma once

#include <cstdint>
#include <type_traits>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack {

template <class T, class Device = Host>
struct GatedRmsNormFwdArgs {
  View<const T, Device> y;       // (tokens, d_inner)
  View<const T, Device> z;       // (tokens, d_inner), the gate
  View<const T, Device> weight;  // (d_inner)
  int64_t ngroups = 1;
  T eps = T(1e-5);
  View<T, Device> out;           // (tokens, d_inner), overwritten
};

// Backward: dy and dz are OVERWRITTEN; dweight is ACCUMULATED (+=).
template <class T, class Device = Host>
struct GatedRmsNormBwdArgs {
  View<const T, Device> y, z, weight;
  View<const T, Device> dout;    // (tokens, d_inner)
  int64_t ngroups = 1;
  T eps = T(1e-5);
  View<T, Device> dy;            // (tokens, d_inner), overwritten
  View<T, Device> dz;            // (tokens, d_inner), overwritten
  View<T, Device> dweight;       // (d_inner), +=
};

struct GatedRmsNormDims {
  int64_t tokens = 0, channels = 0, ngroups = 1;
  int64_t group_size() const { return channels / ngroups; }
};

template <class T, class Device>
GatedRmsNormDims validate_gated_rmsnorm(View<const T, Device> y, View<const T, Device> z,
                                        View<const T, Device> weight, int64_t ngroups, T eps) {
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
  double eps_d;  // bfloat16 has no comparisons of its own
  if constexpr (std::is_arithmetic_v<T>) eps_d = static_cast<double>(eps);
  else eps_d = static_cast<double>(static_cast<float>(eps));
  MAMBATRACK_CHECK(eps_d > 0.0, ConfigError, "RMSNorm eps must be > 0, got ", eps_d);
  return d;
}

template <class T, class Device>
GatedRmsNormDims validate_gated_rmsnorm_fwd(const GatedRmsNormFwdArgs<T, Device>& a) {
  const auto d = validate_gated_rmsnorm<T, Device>(a.y, a.z, a.weight, a.ngroups, a.eps);
  MAMBATRACK_CHECK_SHAPE(a.out.shape == a.y.shape, "out has shape ", a.out.shape, ", expected ",
                         a.y.shape);
  return d;
}

template <class T, class Device>
GatedRmsNormDims validate_gated_rmsnorm_bwd(const GatedRmsNormBwdArgs<T, Device>& a) {
  const auto d = validate_gated_rmsnorm<T, Device>(a.y, a.z, a.weight, a.ngroups, a.eps);
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
