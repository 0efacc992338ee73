// Reference Linear in double with plain loops (tests only): y[t,o] = Σ_i x[t,i]·W[o,i] + b[o];
// dx[t,i] = Σ_o dy[t,o]·W[o,i] (overwritten), dW[o,i] += Σ_t dy[t,o]·x[t,i], db[o] += Σ_t dy[t,o].
#pragma once

#include "mambatrack/ops/linear.hpp"

namespace mambatrack::reference {

inline void linear_fwd(const LinearFwdArgs<double>& a) {
  a.check();
  const int64_t n = a.tokens(), in = a.in_features(), out = a.out_features();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double s = ops::present(a.b) ? a.b[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) s += a.x[t * in + i] * a.w[o * in + i];
      a.y[t * out + o] = s;
    }
}

inline void linear_bwd(const LinearBwdArgs<double>& a) {
  a.check();
  const int64_t n = a.tokens(), in = a.in_features(), out = a.out_features();
  if (ops::present(a.dx))
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < in; ++i) {
        double s = 0;
        for (int64_t o = 0; o < out; ++o) s += a.dy[t * out + o] * a.w[o * in + i];
        a.dx[t * in + i] = s;
      }
  if (ops::present(a.dw))
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) {
        double s = 0;
        for (int64_t t = 0; t < n; ++t) s += a.dy[t * out + o] * a.x[t * in + i];
        a.dw[o * in + i] += s;
      }
  if (ops::present(a.db))
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t t = 0; t < n; ++t) s += a.dy[t * out + o];
      a.db[o] += s;
    }
}

}  // namespace mambatrack::reference
