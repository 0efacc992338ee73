// Parameter initialisation exactly as the reference (mamba_ssm + PyTorch defaults), drawn from
// Philox so a seed gives the same model on every machine and backend. Each parameter draws from
// its own stream, named by a hash of its state-dict name, so adding a layer or changing the
// registration order leaves every other parameter's values unchanged.
//   Linear W, b ~ U(±1/sqrt(fan_in))  (kaiming_uniform with a = sqrt(5));  conv1d likewise, fan_in = DConv
//   A_log[d, n] = log(n + 1) (S4D-real);  D = 1;  dt bias = softplus^-1(dt), dt log-uniform in
//   [dt_min, dt_max] floored at dt_floor;  dt_proj W ~ U(±dt_rank^-0.5 · dt_scale)
//   Mamba2 A_log[h] = log(U(A_lo, A_hi));  embedding ~ N(0, 0.02);  out_proj rescaled by 1/sqrt(n_layer)
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "mambatrack/core/philox.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack::nn {

// FNV-1a of a parameter name: its RNG stream.
inline uint64_t name_stream(const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

inline Philox param_rng(uint64_t seed, const std::string& name) { return Philox(seed, name_stream(name)); }

inline void init_uniform(View<float> w, double lo, double hi, Philox& rng) {
  for (int64_t i = 0; i < w.numel(); ++i) w[i] = static_cast<float>(rng.uniform(lo, hi));
}
inline void init_normal(View<float> w, double mean, double std, Philox& rng) {
  for (int64_t i = 0; i < w.numel(); ++i) w[i] = static_cast<float>(rng.normal(mean, std));
}
inline void init_constant(View<float> w, float value) { fill(w, value); }

// PyTorch's default nn.Linear / nn.Conv1d initialisation: U(±1/sqrt(fan_in)) for weight and bias.
inline void init_fan_in_uniform(View<float> w, int64_t fan_in, Philox& rng) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  init_uniform(w, -bound, bound, rng);
}

// S4D-real: A = -(1, 2, ..., N) for every channel, stored as A_log = log(n + 1).
inline void init_s4d_real_A_log(View<float> a_log) {
  const int64_t n_state = a_log.dim(a_log.rank() - 1);
  for (int64_t i = 0; i < a_log.numel(); ++i) a_log[i] = static_cast<float>(std::log(static_cast<double>(i % n_state + 1)));
}

// dt bias: dt = exp(U(0,1)·(ln dt_max − ln dt_min) + ln dt_min), floored at dt_floor, then the
// inverse softplus dt + log(−expm1(−dt)), so softplus(bias) = dt at initialisation.
inline void init_dt_bias(View<float> bias, double dt_min, double dt_max, double dt_floor, Philox& rng) {
  for (int64_t i = 0; i < bias.numel(); ++i) {
    double dt = std::exp(rng.uniform_double() * (std::log(dt_max) - std::log(dt_min)) + std::log(dt_min));
    dt = std::max(dt, dt_floor);
    bias[i] = static_cast<float>(dt + std::log(-std::expm1(-dt)));
  }
}

// Mamba2: A uniform in [lo, hi] per head, stored as log(A).
inline void init_mamba2_A_log(View<float> a_log, double lo, double hi, Philox& rng) {
  for (int64_t i = 0; i < a_log.numel(); ++i) a_log[i] = static_cast<float>(std::log(rng.uniform(lo, hi)));
}

}  // namespace mambatrack::nn
