// CPU losses in float (see ops/losses.hpp for the definitions and the mean reduction): rows or
// chunks run in parallel, their loss partials (double) are summed in a fixed order, so results
// do not depend on the thread count. log-softmax is z − (max + log Σ e^(z − max)).
#pragma once

#include <algorithm>
#include <cmath>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/ops/cpu/workspace.hpp"
#include "mambatrack/ops/losses.hpp"

namespace mambatrack::cpu {

namespace detail {
constexpr int64_t kLossChunk = 4096;  // elements per partial sum of the elementwise losses

// Σ_b partial[b] over nblocks blocks computed by f(b) in parallel, summed in block order.
template <class F>
double ordered_sum(int64_t nblocks, F&& f) {
  double* part = scratch_doubles(static_cast<std::size_t>(nblocks));
  parallel_for(0, nblocks, [&](int64_t b) { part[b] = f(b); });
  double s = 0;
  for (int64_t b = 0; b < nblocks; ++b) s += part[b];
  return s;
}
}  // namespace detail

inline LossResult cross_entropy(const CrossEntropyArgs<float>& a) {
  a.check();
  ops::check_labels(a.labels, a.classes(), a.ignore_index, "cross_entropy");
  const int64_t n = a.tokens(), v = a.classes();
  double on_d, off_d;
  a.smoothing_weights(on_d, off_d);
  LossResult r;
  for (int64_t t = 0; t < n; ++t) r.count += a.labels[t] != a.ignore_index;
  const float scale = r.count > 0 ? static_cast<float>(a.grad_scale / static_cast<double>(r.count)) : 0.0f;
  const float on = static_cast<float>(on_d), off = static_cast<float>(off_d);
  const double total = detail::ordered_sum(n, [&](int64_t t) -> double {
    const float* z = a.logits.data + t * v;
    float* g = ops::present(a.dlogits) ? a.dlogits.data + t * v : nullptr;
    const int64_t y = a.labels[t];
    if (y == a.ignore_index) {
      if (g) std::fill(g, g + v, 0.0f);
      return 0.0;
    }
    float m = z[0];
    for (int64_t c = 1; c < v; ++c) m = std::max(m, z[c]);
    float s = 0;
    double sum_z = 0;
    for (int64_t c = 0; c < v; ++c) {
      const float e = std::exp(z[c] - m);
      s += e;
      sum_z += z[c];
      if (g) g[c] = e;
    }
    const float lse = m + std::log(s);
    if (g) {
      const float inv = 1.0f / s;
      for (int64_t c = 0; c < v; ++c) g[c] = scale * (g[c] * inv - off);
      g[y] -= scale * (on - off);
    }
    // −Σ_c q_c (z_c − lse) = −(on − off)(z_y − lse) − off (Σz − V·lse)
    return -(on_d - off_d) * (static_cast<double>(z[y]) - lse) -
           off_d * (sum_z - static_cast<double>(v) * static_cast<double>(lse));
  });
  if (r.count > 0) r.loss = total / static_cast<double>(r.count) + (a.kl_divergence ? a.q_log_q() : 0.0);
  return r;
}

inline LossResult bce_with_logits(const BceWithLogitsArgs<float>& a) {
  a.check();
  const int64_t n = a.logits.numel();
  LossResult r;
  r.count = n;
  if (n == 0) return r;
  const float scale = static_cast<float>(a.grad_scale / static_cast<double>(n));
  const int64_t nblocks = (n + detail::kLossChunk - 1) / detail::kLossChunk;
  const double total = detail::ordered_sum(nblocks, [&](int64_t b) -> double {
    double s = 0;
    const int64_t e = std::min(n, (b + 1) * detail::kLossChunk);
    for (int64_t i = b * detail::kLossChunk; i < e; ++i) {
      const float z = a.logits[i], y = a.targets[i];
      s += std::max(z, 0.0f) - z * y + std::log1p(std::exp(-std::abs(z)));
      if (ops::present(a.dlogits)) a.dlogits[i] = scale * (1.0f / (1.0f + std::exp(-z)) - y);
    }
    return s;
  });
  r.loss = total / static_cast<double>(n);
  return r;
}

inline LossResult masked_mse(const MaskedMseArgs<float>& a) {
  a.check();
  const int64_t n = a.predictions.numel();
  const float pad = static_cast<float>(a.pad_value);
  const bool has_mask = ops::present(a.mask), skip_pad = a.skip_pad_targets;
  auto counted = [&](int64_t i) {
    return (!has_mask || a.mask[i] != 0) && !(skip_pad && a.targets[i] == pad);
  };
  LossResult r;
  for (int64_t i = 0; i < n; ++i) r.count += counted(i);
  const float scale = r.count > 0 ? static_cast<float>(2.0 * a.grad_scale / static_cast<double>(r.count)) : 0.0f;
  const int64_t nblocks = (n + detail::kLossChunk - 1) / detail::kLossChunk;
  const double total = detail::ordered_sum(nblocks, [&](int64_t b) -> double {
    double s = 0;
    const int64_t e = std::min(n, (b + 1) * detail::kLossChunk);
    for (int64_t i = b * detail::kLossChunk; i < e; ++i) {
      const float d = a.predictions[i] - a.targets[i];
      const bool c = counted(i);
      if (c) s += static_cast<double>(d) * d;
      if (ops::present(a.dpredictions)) a.dpredictions[i] = c ? scale * d : 0.0f;
    }
    return s;
  });
  if (r.count > 0) r.loss = total / static_cast<double>(r.count);
  return r;
}

}  // namespace mambatrack::cpu
