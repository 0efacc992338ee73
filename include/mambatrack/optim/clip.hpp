// Gradient clipping over the flat gradient buffer, torch semantics:
//   by norm (clip_grad_norm_): N = ‖g‖₂; g ← g · min(1, max_norm / (N + 1e-6)); returns N.
//   by value (clip_grad_value_): g ← clamp(g, −c, c).
// Float CPU versions in optim::, double references in optim::reference::.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/ops/cpu/workspace.hpp"

namespace mambatrack::optim {

constexpr double kClipNormEps = 1e-6;  // torch adds it to the norm before dividing

namespace detail {
constexpr int64_t kClipChunk = 16384;
inline void check_clip(double limit, const char* what) {
  MAMBATRACK_CHECK(limit > 0 && std::isfinite(limit), ConfigError, what, " must be a positive finite number, got ",
                   limit);
}
}  // namespace detail

// ‖g‖₂ accumulated in double over fixed chunks summed in order (same result for any thread count).
inline double grad_norm(View<const float> g) {
  const int64_t n = g.numel(), nchunks = (n + detail::kClipChunk - 1) / detail::kClipChunk;
  double* part = cpu::scratch_doubles(static_cast<std::size_t>(nchunks));
  parallel_for(0, nchunks, [&](int64_t c) {
    const int64_t e = std::min(n, (c + 1) * detail::kClipChunk);
    double s = 0;
    for (int64_t i = c * detail::kClipChunk; i < e; ++i) s += static_cast<double>(g[i]) * g[i];
    part[c] = s;
  });
  double s = 0;
  for (int64_t c = 0; c < nchunks; ++c) s += part[c];
  return std::sqrt(s);
}

// Multiplies g by `factor` in place.
inline void scale_grads(View<float> g, float factor) {
  const int64_t n = g.numel(), nchunks = (n + detail::kClipChunk - 1) / detail::kClipChunk;
  parallel_for(0, nchunks, [&](int64_t c) {
    const int64_t e = std::min(n, (c + 1) * detail::kClipChunk);
    for (int64_t i = c * detail::kClipChunk; i < e; ++i) g[i] *= factor;
  });
}

// Returns the norm before clipping. A non-finite norm leaves g untouched (torch would scale
// every gradient to NaN); the caller skips the step, as the design's non-finite rule says.
inline double clip_grad_norm(View<float> g, double max_norm) {
  detail::check_clip(max_norm, "clip_grad_norm: max_norm");
  const double norm = grad_norm(g);
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + kClipNormEps);
  if (coef < 1.0) scale_grads(g, static_cast<float>(coef));
  return norm;
}

inline void clip_grad_value(View<float> g, double clip_value) {
  detail::check_clip(clip_value, "clip_grad_value: clip value");
  const float c = static_cast<float>(clip_value);
  const int64_t n = g.numel(), nchunks = (n + detail::kClipChunk - 1) / detail::kClipChunk;
  parallel_for(0, nchunks, [&](int64_t k) {
    const int64_t e = std::min(n, (k + 1) * detail::kClipChunk);
    for (int64_t i = k * detail::kClipChunk; i < e; ++i) g[i] = std::min(std::max(g[i], -c), c);
  });
}

namespace reference {
inline double clip_grad_norm(View<double> g, double max_norm) {
  detail::check_clip(max_norm, "clip_grad_norm: max_norm");
  double s = 0;
  for (int64_t i = 0; i < g.numel(); ++i) s += g[i] * g[i];
  const double norm = std::sqrt(s);
  if (!std::isfinite(norm)) return norm;
  const double coef = std::min(1.0, max_norm / (norm + kClipNormEps));
  for (int64_t i = 0; i < g.numel(); ++i) g[i] *= coef;
  return norm;
}
inline void clip_grad_value(View<double> g, double clip_value) {
  detail::check_clip(clip_value, "clip_grad_value: clip value");
  for (int64_t i = 0; i < g.numel(); ++i) g[i] = std::min(std::max(g[i], -clip_value), clip_value);
}
}  // namespace reference

}  // namespace mambatrack::optim
