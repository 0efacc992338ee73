// Reference RMSNorm / LayerNorm / add+norm in double with plain loops (tests only). With
// xhat = (x − μ)·r (μ = 0 for RMSNorm), r = 1/sqrt(var + eps), g = dy·w, the backward is
//   dx = r·(g − mean(g) − xhat·mean(g·xhat))   (the mean(g) term only for LayerNorm).
#pragma once

#include <cmath>
#include <vector>

#include "mambatrack/ops/norm.hpp"

namespace mambatrack::reference {

namespace detail {
// mean and 1/sqrt(var + eps) of one row; RMSNorm: mean 0 and var = mean(x²).
inline void norm_stats(const double* x, int64_t d, NormKind kind, double eps, double& mu, double& r) {
  mu = 0;
  if (kind == NormKind::kLayer) {
    for (int64_t i = 0; i < d; ++i) mu += x[i];
    mu /= static_cast<double>(d);
  }
  double var = 0;
  for (int64_t i = 0; i < d; ++i) var += (x[i] - mu) * (x[i] - mu);
  var /= static_cast<double>(d);
  r = 1.0 / std::sqrt(var + eps);
}
}  // namespace detail

inline void norm_fwd(const NormFwdArgs<double>& a) {
  a.check();
  const int64_t n = a.tokens(), d = a.dim();
  for (int64_t t = 0; t < n; ++t) {
    const double* x = a.x.data + t * d;
    double mu, r;
    detail::norm_stats(x, d, a.kind, a.eps, mu, r);
    for (int64_t i = 0; i < d; ++i)
      a.y[t * d + i] = (x[i] - mu) * r * a.w[i] + (ops::present(a.b) ? a.b[i] : 0.0);
  }
}

inline void norm_bwd(const NormBwdArgs<double>& a) {
  a.check();
  const int64_t n = a.tokens(), d = a.dim();
  for (int64_t t = 0; t < n; ++t) {
    const double* x = a.x.data + t * d;
    const double* dy = a.dy.data + t * d;
    double mu, r;
    detail::norm_stats(x, d, a.kind, a.eps, mu, r);
    double mean_g = 0, mean_gx = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double xhat = (x[i] - mu) * r, g = dy[i] * a.w[i];
      mean_g += g;
      mean_gx += g * xhat;
      if (ops::present(a.dw)) a.dw[i] += dy[i] * xhat;
      if (ops::present(a.db)) a.db[i] += dy[i];
    }
    mean_g = a.kind == NormKind::kLayer ? mean_g / static_cast<double>(d) : 0.0;
    mean_gx /= static_cast<double>(d);
    for (int64_t i = 0; i < d; ++i) {
      const double xhat = (x[i] - mu) * r, g = dy[i] * a.w[i];
      a.dx[t * d + i] = r * (g - mean_g - xhat * mean_gx);
    }
  }
}

inline void add_fwd(const AddArgs<double>& a) {
  a.check();
  for (int64_t i = 0; i < a.out.numel(); ++i) a.out[i] = a.a[i] + a.b[i];
}

inline void add_norm_fwd(const AddNormFwdArgs<double>& a) {
  a.check();
  const int64_t m = a.tokens() * a.dim();
  for (int64_t i = 0; i < m; ++i)
    a.residual[i] = a.x[i] + (ops::present(a.residual_in) ? a.residual_in[i] : 0.0);
  norm_fwd({a.residual, a.w, a.b, a.y, a.kind, a.eps});
}

inline void add_norm_bwd(const AddNormBwdArgs<double>& a) {
  a.check();
  norm_bwd(a.as_norm());
  if (ops::present(a.dresidual))
    for (int64_t i = 0; i < a.dsum.numel(); ++i) a.dsum[i] += a.dresidual[i];
}

}  // namespace mambatrack::reference
