// Reference SiLU, softplus and GELU in double, one element at a time (tests only):
// silu' = σ(1 + x(1 − σ)), softplus' = σ(x) (1 above the threshold 20), gelu' = Φ(x) + x·φ(x).
#pragma once

#include <cmath>

#include "mambatrack/ops/activations.hpp"

namespace mambatrack::reference {

inline double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}

inline void silu_fwd(const ActivationFwdArgs<double>& a) {
  a.check("silu");
  for (int64_t i = 0; i < a.x.numel(); ++i) a.y[i] = a.x[i] * sigmoid(a.x[i]);
}
inline void silu_bwd(const ActivationBwdArgs<double>& a) {
  a.check("silu");
  for (int64_t i = 0; i < a.x.numel(); ++i) {
    const double s = sigmoid(a.x[i]);
    a.dx[i] = a.dy[i] * s * (1.0 + a.x[i] * (1.0 - s));
  }
}

inline void softplus_fwd(const ActivationFwdArgs<double>& a) {
  a.check("softplus");
  for (int64_t i = 0; i < a.x.numel(); ++i) {
    const double x = a.x[i];
    a.y[i] = x > kSoftplusThreshold ? x : std::log1p(std::exp(x));
  }
}
inline void softplus_bwd(const ActivationBwdArgs<double>& a) {
  a.check("softplus");
  for (int64_t i = 0; i < a.x.numel(); ++i) {
    const double x = a.x[i];
    a.dx[i] = a.dy[i] * (x > kSoftplusThreshold ? 1.0 : sigmoid(x));
  }
}

inline void gelu_fwd(const ActivationFwdArgs<double>& a) {
  a.check("gelu");
  for (int64_t i = 0; i < a.x.numel(); ++i) {
    const double x = a.x[i];
    a.y[i] = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  }
}
inline void gelu_bwd(const ActivationBwdArgs<double>& a) {
  a.check("gelu");
  const double inv_sqrt_2pi = 1.0 / std::sqrt(2.0 * M_PI);
  for (int64_t i = 0; i < a.x.numel(); ++i) {
    const double x = a.x[i];
    const double cdf = 0.5 * (1.0 + std::erf(x / std::sqrt(2.0)));
    a.dx[i] = a.dy[i] * (cdf + x * inv_sqrt_2pi * std::exp(-0.5 * x * x));
  }
}

}  // namespace mambatrack::reference
