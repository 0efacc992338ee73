// Timing helpers for the CPU benchmarks: the median of repeated runs after a warm-up, and the
// host's memcpy bandwidth as the ceiling that memory-bound work is compared with.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

namespace mambatrack::bench {

template <class F>
double median_seconds(F&& f, int runs = 7, int warmup = 1) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// One-core memcpy bandwidth in bytes/s (read + write counted), over a buffer beyond the caches.
inline double memcpy_bandwidth(std::size_t bytes = std::size_t(256) << 20) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  const double s = median_seconds([&] { std::memcpy(b.data(), a.data(), bytes); }, 5);
  return 2.0 * static_cast<double>(bytes) / s;
}

}  // namespace mambatrack::bench
