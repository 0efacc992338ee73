// Reference gated grouped RMSNorm in double (tests only): g = y·silu(z),
// out = g / sqrt(mean_group(g²) + eps) · weight, and its backward
//   dg = r·w·dout − g·r³/n·Σ_group(w·dout·g),  dy = dg·silu(z),  dz = dg·y·silu'(z).
#pragma once

#include <cmath>
#include <cstdint>

#include "mambatrack/ops/gated_rmsnorm.hpp"

namespace mambatrack::reference {

inline void gated_rmsnorm_fwd(const GatedRmsNormFwdArgs<double>& a) {
  const auto d = validate_gated_rmsnorm_fwd(a);
  const int64_t n = d.group_size();
  for (int64_t t = 0; t < d.tokens; ++t) {
    for (int64_t grp = 0; grp < d.ngroups; ++grp) {
      double ss = 0;
      for (int64_t i = grp * n; i < (grp + 1) * n; ++i) {
        const double z = a.z.at(t, i);
        const double g = a.y.at(t, i) * z / (1.0 + std::exp(-z));
        ss += g * g;
      }
      const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + a.eps);
      for (int64_t i = grp * n; i < (grp + 1) * n; ++i) {
        const double z = a.z.at(t, i);
        const double g = a.y.at(t, i) * z / (1.0 + std::exp(-z));
        a.out.at(t, i) = g * r * a.weight[i];
      }
    }
  }
}

inline void gated_rmsnorm_bwd(const GatedRmsNormBwdArgs<double>& a) {
  const auto d = validate_gated_rmsnorm_bwd(a);
  const int64_t n = d.group_size();
  for (int64_t t = 0; t < d.tokens; ++t) {
    for (int64_t grp = 0; grp < d.ngroups; ++grp) {
      double ss = 0, dot = 0;
      for (int64_t i = grp * n; i < (grp + 1) * n; ++i) {
        const double z = a.z.at(t, i);
        const double g = a.y.at(t, i) * z / (1.0 + std::exp(-z));
        ss += g * g;
        dot += a.weight[i] * a.dout.at(t, i) * g;
      }
      const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + a.eps);
      for (int64_t i = grp * n; i < (grp + 1) * n; ++i) {
        const double y = a.y.at(t, i), z = a.z.at(t, i);
        const double s = 1.0 / (1.0 + std::exp(-z));
        const double g = y * z * s;
        const double dout = a.dout.at(t, i);
        a.dweight[i] += dout * g * r;
        const double dg = r * a.weight[i] * dout - g * r * r * r / static_cast<double>(n) * dot;
        a.dy.at(t, i) = dg * z * s;
        a.dz.at(t, i) = dg * y * s * (1.0 + z * (1.0 - s));
      }
    }
  }
}

}  // namespace mambatrack::reference
