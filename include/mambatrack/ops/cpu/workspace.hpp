// A per-thread scratch buffer for CPU ops that need temporary partial sums (e.g. per-block
// weight-gradient partials). It only grows, so after the first step of a training run no call
// allocates; the memory stays with the calling thread until it exits.
#pragma once

#include <cstddef>
#include <vector>

namespace mambatrack::cpu {

// At least n floats, contents unspecified. `slot` separates buffers an op needs at once.
inline float* scratch_floats(std::size_t n, int slot = 0) {
  thread_local std::vector<float> buffers[2];
  auto& b = buffers[slot & 1];
  if (b.size() < n) b.resize(n);
  return b.data();
}

}  // namespace mambatrack::cpu

namespace mambatrack::cpu {

// At least n doubles (per-block partial sums of losses and norms), contents unspecified.
inline double* scratch_doubles(std::size_t n) {
  thread_local std::vector<double> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

}  // namespace mambatrack::cpu
