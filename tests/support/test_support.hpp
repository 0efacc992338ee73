// Helpers shared by the tests: where shared/ data lives, seeded random fills (the seed is printed
// through Catch's INFO so a failure can be replayed), and the relative error the golden README
// defines: ||got - want||_2 / ||want||_2.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "mambatrack/core/philox.hpp"

namespace mambatrack::test {

inline bool path_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// shared/ (golden vectors, real TrackML files): $MAMBATRACK_SHARED_DIR, else the build's default.
inline std::string shared_dir() {
  if (const char* env = std::getenv("MAMBATRACK_SHARED_DIR")) return env;
  return MAMBATRACK_SHARED_DIR;
}
// The golden vectors: $MAMBATRACK_GOLDEN_DIR, else shared/golden.
inline std::string golden_dir() {
  if (const char* env = std::getenv("MAMBATRACK_GOLDEN_DIR")) return env;
  return shared_dir() + "/golden";
}
inline std::string fixtures_dir() { return MAMBATRACK_FIXTURES_DIR; }

// A seed for a test: $MAMBATRACK_TEST_SEED to replay, else a fixed per-test value.
inline uint64_t test_seed(uint64_t fallback) {
  if (const char* env = std::getenv("MAMBATRACK_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  return fallback;
}

// Uniform values in [lo, hi).
template <class T>
std::vector<T> random_uniform(std::size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Philox rng(seed, 7);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(rng.uniform(lo, hi));
  return v;
}

template <class A, class B>
double rel_err(const A& got, const B& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    num += d * d;
    den += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

}  // namespace mambatrack::test
