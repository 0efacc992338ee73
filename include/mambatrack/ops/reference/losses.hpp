// Reference losses in double with plain loops (tests only); see ops/losses.hpp for the
// definitions. log-softmax is computed as z − (max + log Σ e^(z − max)).
#pragma once

#include <algorithm>
#include <cmath>

#include "mambatrack/ops/losses.hpp"

namespace mambatrack::reference {

inline LossResult cross_entropy(const CrossEntropyArgs<double>& a) {
  a.check();
  ops::check_labels(a.labels, a.classes(), a.ignore_index, "cross_entropy");
  const int64_t n = a.tokens(), v = a.classes();
  double on, off;
  a.smoothing_weights(on, off);
  LossResult r;
  for (int64_t t = 0; t < n; ++t) r.count += a.labels[t] != a.ignore_index;
  double total = 0;
  for (int64_t t = 0; t < n; ++t) {
    const double* z = a.logits.data + t * v;
    const int64_t y = a.labels[t];
    if (y == a.ignore_index) {
      if (ops::present(a.dlogits)) std::fill(a.dlogits.data + t * v, a.dlogits.data + (t + 1) * v, 0.0);
      continue;
    }
    double m = z[0];
    for (int64_t c = 1; c < v; ++c) m = std::max(m, z[c]);
    double s = 0;
    for (int64_t c = 0; c < v; ++c) s += std::exp(z[c] - m);
    const double lse = m + std::log(s);
    for (int64_t c = 0; c < v; ++c) {
      const double q = c == y ? on : off;
      total -= q * (z[c] - lse);
      if (ops::present(a.dlogits))
        a.dlogits[t * v + c] = a.grad_scale * (std::exp(z[c] - lse) - q) / static_cast<double>(r.count);
    }
  }
  if (r.count > 0) r.loss = total / static_cast<double>(r.count) + (a.kl_divergence ? a.q_log_q() : 0.0);
  return r;
}

inline LossResult bce_with_logits(const BceWithLogitsArgs<double>& a) {
  a.check();
  const int64_t n = a.logits.numel();
  LossResult r;
  r.count = n;
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double z = a.logits[i], y = a.targets[i];
    total += std::max(z, 0.0) - z * y + std::log1p(std::exp(-std::abs(z)));
    if (ops::present(a.dlogits)) {
      const double s = z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
      a.dlogits[i] = a.grad_scale * (s - y) / static_cast<double>(n);
    }
  }
  if (n > 0) r.loss = total / static_cast<double>(n);
  return r;
}

inline LossResult masked_mse(const MaskedMseArgs<double>& a) {
  a.check();
  const int64_t n = a.predictions.numel();
  auto counted = [&](int64_t i) {
    return (!ops::present(a.mask) || a.mask[i] != 0) && !(a.skip_pad_targets && a.targets[i] == a.pad_value);
  };
  LossResult r;
  for (int64_t i = 0; i < n; ++i) r.count += counted(i);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = a.predictions[i] - a.targets[i];
    const bool c = counted(i);
    if (c) total += d * d;
    if (ops::present(a.dpredictions))
      a.dpredictions[i] = c ? a.grad_scale * 2.0 * d / static_cast<double>(r.count) : 0.0;
  }
  if (r.count > 0) r.loss = total / static_cast<double>(r.count);
  return r;
}

}  // namespace mambatrack::reference
