// Reference causal depthwise conv1d (+ SiLU) in double precision with plain loops (tests only):
// pre[t] = bias + Σ_j w[j]·x[t-(K-1)+j] within the sequence, out = silu(pre) or pre; backward
// dpre = dout·silu'(pre), dx[s] = Σ_j w[j]·dpre[s+(K-1)-j], dw[j] += Σ_t dpre[t]·x[t-(K-1)+j].
#pragma once

#include <cmath>
#include <cstdint>

#include "mambatrack/ops/causal_conv1d.hpp"

namespace mambatrack::reference {

namespace conv_detail {
inline double pre_activation(const CausalConv1dInputs<double>& in, int64_t start, int64_t t, int64_t c) {
  const int64_t K = in.weight.dim(1);
  double acc = is_given(in.bias) ? in.bias[c] : 0.0;
  for (int64_t j = 0; j < K; ++j) {
    const int64_t src = t - (K - 1) + j;
    if (src >= start) acc += in.weight.at(c, j) * in.x.at(src, c);
  }
  return acc;
}
}  // namespace conv_detail

inline void causal_conv1d_fwd(const CausalConv1dFwdArgs<double>& a) {
  const CausalConv1dSizes s = validate_causal_conv1d(a);
  validate_cu_seqlens(a.in.cu_seqlens, s.tokens, "causal_conv1d");
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t t = a.in.cu_seqlens[b]; t < a.in.cu_seqlens[b + 1]; ++t)
      for (int64_t c = 0; c < s.channels; ++c) {
        const double pre = conv_detail::pre_activation(a.in, a.in.cu_seqlens[b], t, c);
        a.out.at(t, c) = a.in.silu ? pre / (1.0 + std::exp(-pre)) : pre;
      }
}

// Overwrites dx, accumulates into dweight and dbias.
inline void causal_conv1d_bwd(const CausalConv1dBwdArgs<double>& a) {
  const CausalConv1dSizes s = validate_causal_conv1d(a);
  validate_cu_seqlens(a.in.cu_seqlens, s.tokens, "causal_conv1d");
  const int64_t K = s.d_conv;
  fill(a.dx, 0.0);
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t start = a.in.cu_seqlens[b];
    for (int64_t t = start; t < a.in.cu_seqlens[b + 1]; ++t)
      for (int64_t c = 0; c < s.channels; ++c) {
        double dpre = a.dout.at(t, c);
        if (a.in.silu) {
          const double pre = conv_detail::pre_activation(a.in, start, t, c);
          const double sg = 1.0 / (1.0 + std::exp(-pre));
          dpre *= sg * (1.0 + pre * (1.0 - sg));  // silu' = σ(1 + x(1-σ))
        }
        if (is_given(a.in.bias)) a.dbias[c] += dpre;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t src = t - (K - 1) + j;
          if (src < start) continue;
          a.dx.at(src, c) += a.in.weight.at(c, j) * dpre;
          a.dweight.at(c, j) += a.in.x.at(src, c) * dpre;
        }
      }
  }
}

}  // namespace mambatrack::reference
