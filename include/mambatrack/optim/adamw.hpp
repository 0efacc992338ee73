// AdamW (torch.optim.AdamW semantics) in one fused pass over the flat parameter buffer:
//   p ← p·(1 − lr·wd)  (skipped inside the no-decay ranges);  m ← β1·m + (1−β1)·g;
//   v ← β2·v + (1−β2)·g²;  p ← p − lr/(1−β1ᵗ) · m / (sqrt(v)/sqrt(1−β2ᵗ) + eps).
// optim::adamw_step is the float CPU version, optim::reference::adamw_step the double reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack::optim {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;

  void check() const {
    MAMBATRACK_CHECK(lr >= 0, ConfigError, "adamw: learning rate must be >= 0, got ", lr);
    MAMBATRACK_CHECK(beta1 >= 0 && beta1 < 1, ConfigError, "adamw: beta1 must be in [0, 1), got ", beta1);
    MAMBATRACK_CHECK(beta2 >= 0 && beta2 < 1, ConfigError, "adamw: beta2 must be in [0, 1), got ", beta2);
    MAMBATRACK_CHECK(eps >= 0, ConfigError, "adamw: eps must be >= 0, got ", eps);
    MAMBATRACK_CHECK(weight_decay >= 0, ConfigError, "adamw: weight_decay must be >= 0, got ", weight_decay);
  }
};

// Elements [begin, end) of the flat buffer, e.g. one parameter tensor.
struct ParamRange {
  int64_t begin = 0;
  int64_t end = 0;
};

// No-decay parameters are given as [begin, end) ranges of the flat buffer, not a per-element
// mask: every parameter tensor is one contiguous range (ParameterStore hands them out), so a
// handful of ranges (biases, norm weights, A_log, D) describe it exactly, cost nothing to read
// per step, and the inner loop over each range is branch-free. A mask would add 1 byte of
// traffic per parameter to a pass that is memory-bound.
template <class T, class Device = Host>
struct AdamWArgs {
  View<T, Device> param;                // (n), updated in place
  View<const T, Device> grad;           // (n)
  View<T, Device> exp_avg;              // (n), first moment, updated (zero before step 1)
  View<T, Device> exp_avg_sq;           // (n), second moment, updated (zero before step 1)
  int64_t step = 1;                     // 1-based number of this step (bias correction)
  AdamWConfig config;
  std::vector<ParamRange> no_decay;     // ranges without weight decay; any order, no overlap

  int64_t size() const { return param.numel(); }
  void check() const {
    config.check();
    const int64_t n = size();
    MAMBATRACK_CHECK_SHAPE(grad.numel() == n && exp_avg.numel() == n && exp_avg_sq.numel() == n,
                           "adamw: param has ", n, " elements but grad has ", grad.numel(), ", exp_avg ",
                           exp_avg.numel(), ", exp_avg_sq ", exp_avg_sq.numel());
    MAMBATRACK_CHECK(step >= 1, ConfigError, "adamw: step counts from 1, got ", step);
    for (const auto& r : no_decay)
      MAMBATRACK_CHECK_SHAPE(0 <= r.begin && r.begin <= r.end && r.end <= n, "adamw: no-decay range [",
                             r.begin, ", ", r.end, ") outside the parameter buffer of ", n, " elements");
  }

  // The buffer cut into consecutive segments with their decay flag, ranges sorted and checked
  // for overlap.
  struct Segment {
    int64_t begin, end;
    bool decay;
  };
  std::vector<Segment> segments() const {
    std::vector<ParamRange> r = no_decay;
    std::sort(r.begin(), r.end(), [](const ParamRange& a, const ParamRange& b) { return a.begin < b.begin; });
    std::vector<Segment> s;
    int64_t pos = 0;
    for (const auto& x : r) {
      MAMBATRACK_CHECK(x.begin >= pos, ConfigError, "adamw: no-decay range [", x.begin, ", ", x.end,
                       ") overlaps the previous range, which ends at ", pos);
      if (x.begin > pos) s.push_back({pos, x.begin, true});
      if (x.end > x.begin) s.push_back({x.begin, x.end, false});
      pos = x.end;
    }
    if (pos < size()) s.push_back({pos, size(), true});
    return s;
  }
};

namespace detail {
// Step constants shared by both precisions, computed in double.
struct AdamWScalars {
  double decay_factor;  // 1 − lr·wd
  double step_size;     // lr / (1 − β1ᵗ)
  double bc2_sqrt;      // sqrt(1 − β2ᵗ)
};
inline AdamWScalars adamw_scalars(const AdamWConfig& c, int64_t step) {
  const double t = static_cast<double>(step);
  return {1.0 - c.lr * c.weight_decay, c.lr / (1.0 - std::pow(c.beta1, t)),
          std::sqrt(1.0 - std::pow(c.beta2, t))};
}
}  // namespace detail

// Float CPU step: segments in order, each split into chunks run in parallel.
inline void adamw_step(const AdamWArgs<float>& a) {
  a.check();
  const auto k = detail::adamw_scalars(a.config, a.step);
  const float b1 = static_cast<float>(a.config.beta1), b2 = static_cast<float>(a.config.beta2);
  const float one_b1 = static_cast<float>(1.0 - a.config.beta1), one_b2 = static_cast<float>(1.0 - a.config.beta2);
  const float eps = static_cast<float>(a.config.eps), step_size = static_cast<float>(k.step_size);
  const float bc2_sqrt = static_cast<float>(k.bc2_sqrt), decay = static_cast<float>(k.decay_factor);
  float* p = a.param.data;
  float* m = a.exp_avg.data;
  float* v = a.exp_avg_sq.data;
  const float* g = a.grad.data;
  constexpr int64_t kChunk = 16384;
  for (const auto& s : a.segments()) {
    const float f = s.decay ? decay : 1.0f;
    const int64_t nchunks = (s.end - s.begin + kChunk - 1) / kChunk;
    parallel_for(0, nchunks, [&](int64_t c) {
      const int64_t b = s.begin + c * kChunk, e = std::min(s.end, b + kChunk);
      for (int64_t i = b; i < e; ++i) {
        const float mi = b1 * m[i] + one_b1 * g[i];
        const float vi = b2 * v[i] + one_b2 * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * f - step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps);
      }
    });
  }
}

namespace reference {
// Double reference: one element at a time, in torch's order of operations.
inline void adamw_step(const AdamWArgs<double>& a) {
  a.check();
  const auto k = detail::adamw_scalars(a.config, a.step);
  const auto& c = a.config;
  for (const auto& s : a.segments())
    for (int64_t i = s.begin; i < s.end; ++i) {
      if (s.decay) a.param[i] *= k.decay_factor;
      a.exp_avg[i] = c.beta1 * a.exp_avg[i] + (1.0 - c.beta1) * a.grad[i];
      a.exp_avg_sq[i] = c.beta2 * a.exp_avg_sq[i] + (1.0 - c.beta2) * a.grad[i] * a.grad[i];
      a.param[i] -= k.step_size * a.exp_avg[i] / (std::sqrt(a.exp_avg_sq[i]) / k.bc2_sqrt + c.eps);
    }
}
}  // namespace reference

}  // namespace mambatrack::optim
