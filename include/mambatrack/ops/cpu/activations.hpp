// CPU SiLU, softplus and GELU in float (see ops/activations.hpp), in parallel chunks of plain
// loops. σ is evaluated as 1/(1 + e^(−x)), which stays finite for any x (e^(−x) = inf gives 0),
// and softplus as max(x, 0) + log1p(e^(−|x|)), which neither overflows nor loses small values.
#pragma once

#include <algorithm>
#include <cmath>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/ops/activations.hpp"

namespace mambatrack::cpu {

namespace detail {
// f(begin, end) over [0, n) in chunks of 8192 elements, the chunks in parallel.
template <class F>
void for_chunks(int64_t n, F&& f) {
  constexpr int64_t kChunk = 8192;
  parallel_for(0, (n + kChunk - 1) / kChunk, [&](int64_t c) { f(c * kChunk, std::min(n, (c + 1) * kChunk)); });
}
inline float sigmoidf(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace detail

inline void silu_fwd(const ActivationFwdArgs<float>& a) {
  a.check("silu");
  const float* x = a.x.data;
  float* y = a.y.data;
  detail::for_chunks(a.x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = x[i] * detail::sigmoidf(x[i]);
  });
}
inline void silu_bwd(const ActivationBwdArgs<float>& a) {
  a.check("silu");
  const float *x = a.x.data, *dy = a.dy.data;
  float* dx = a.dx.data;
  detail::for_chunks(a.x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float s = detail::sigmoidf(x[i]);
      dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
  });
}

inline void softplus_fwd(const ActivationFwdArgs<float>& a) {
  a.check("softplus");
  const float* x = a.x.data;
  float* y = a.y.data;
  const float thr = static_cast<float>(kSoftplusThreshold);
  detail::for_chunks(a.x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      y[i] = x[i] > thr ? x[i] : std::max(x[i], 0.0f) + std::log1p(std::exp(-std::abs(x[i])));
  });
}
inline void softplus_bwd(const ActivationBwdArgs<float>& a) {
  a.check("softplus");
  const float *x = a.x.data, *dy = a.dy.data;
  float* dx = a.dx.data;
  const float thr = static_cast<float>(kSoftplusThreshold);
  detail::for_chunks(a.x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dx[i] = x[i] > thr ? dy[i] : dy[i] * detail::sigmoidf(x[i]);
  });
}

inline void gelu_fwd(const ActivationFwdArgs<float>& a) {
  a.check("gelu");
  const float* x = a.x.data;
  float* y = a.y.data;
  constexpr float kInvSqrt2 = 0.70710678118654752f;
  detail::for_chunks(a.x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInvSqrt2));
  });
}
inline void gelu_bwd(const ActivationBwdArgs<float>& a) {
  a.check("gelu");
  const float *x = a.x.data, *dy = a.dy.data;
  float* dx = a.dx.data;
  constexpr float kInvSqrt2 = 0.70710678118654752f, kInvSqrt2Pi = 0.39894228040143268f;
  detail::for_chunks(a.x.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float cdf = 0.5f * (1.0f + std::erf(x[i] * kInvSqrt2));
      dx[i] = dy[i] * (cdf + x[i] * kInvSqrt2Pi * std::exp(-0.5f * x[i] * x[i]));
    }
  });
}

}  // namespace mambatrack::cpu
