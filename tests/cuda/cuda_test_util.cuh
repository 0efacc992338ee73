// Helpers of the [cuda] op tests: device tensors from double values rounded to the storage type
// (the reference then sees exactly the rounded inputs), outputs poisoned with NaN bytes before a
// call, and device results read back as doubles.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "mambatrack/cuda.cuh"
#include "support/test_support.hpp"

namespace mambatrack::test {

// Values in [lo, hi) rounded to T, returned as doubles.
template <class T>
std::vector<double> rounded_uniform(std::size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::vector<double> v = random_uniform<double>(n, seed, lo, hi);
  for (auto& x : v) x = static_cast<double>(static_cast<float>(T(static_cast<float>(x))));
  return v;
}

template <class T>
Tensor<T, Cuda> device_from(const std::vector<double>& v, Shape shape) {
  Tensor<T> h(shape);
  for (int64_t i = 0; i < h.numel(); ++i) h[i] = T(static_cast<float>(v[static_cast<std::size_t>(i)]));
  return to_device<T>(h.view());
}

// A device tensor whose every byte is 0xFF: NaN in float and in bfloat16.
template <class T>
Tensor<T, Cuda> poisoned(Shape shape) {
  Tensor<T, Cuda> t(shape);
  if (t.numel() > 0) MAMBATRACK_CUDA_CHECK(cudaMemset(t.data(), 0xFF, t.bytes()));
  return t;
}

template <class T>
std::vector<double> to_doubles(View<const T, Cuda> v) {
  MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor<T> h = to_host<T>(v);
  std::vector<double> out(static_cast<std::size_t>(h.numel()));
  for (int64_t i = 0; i < h.numel(); ++i) out[static_cast<std::size_t>(i)] = static_cast<double>(static_cast<float>(h[i]));
  return out;
}

template <class T>
std::vector<double> to_doubles(const Tensor<T, Cuda>& t) {
  return to_doubles<T>(t.view());
}
inline std::vector<double> values(const Tensor<double>& t) { return std::vector<double>(t.data(), t.data() + t.numel()); }

// A random host tensor of storage type T, the float64 value of each stored element (what the
// reference sees), and its device copy.
template <class T>
struct Pair {
  Tensor<T> t;
  Tensor<double> d;
  Tensor<T, Cuda> dev;
};
template <class T>
Pair<T> make(Shape s, Philox& rng, double lo, double hi) {
  Pair<T> p{Tensor<T>(s), Tensor<double>(s), Tensor<T, Cuda>()};
  for (int64_t i = 0; i < p.t.numel(); ++i) {
    p.t[i] = T(static_cast<float>(rng.uniform(lo, hi)));
    p.d[i] = static_cast<double>(static_cast<float>(p.t[i]));
  }
  p.dev = to_device<T>(p.t.view());
  return p;
}

inline int64_t count_nonfinite(const std::vector<double>& v) {
  int64_t c = 0;
  for (double x : v) c += !std::isfinite(x);
  return c;
}

// Byte-for-byte equality of two device buffers.
template <class T>
bool bit_identical(View<const T, Cuda> a, View<const T, Cuda> b) {
  MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
  Tensor<T> ha = to_host<T>(a), hb = to_host<T>(b);
  return ha.numel() == hb.numel() && std::memcmp(ha.data(), hb.data(), ha.bytes()) == 0;
}

template <class T>
constexpr double op_tolerance() {
  // fp32: rounding of fp32 sums (≈1e-7 each) stays well under 1e-5 for these sizes;
  // bf16: the output is rounded to 8 bits of mantissa (≈4e-3 relative per element).
  return std::is_same_v<T, float> ? 1e-5 : 1e-2;
}

}  // namespace mambatrack::test

// Catch2 check of a result (std::vector<double>) against a reference of the same size: no
// non-finite element and a relative L2 error within tol; the INFO line names both.
#define CHECK_CLOSE(name, got, want, tol)                                                        \
  do {                                                                                           \
    const auto g_ = (got);                                                                       \
    const auto w_ = (want);                                                                      \
    REQUIRE(g_.size() == w_.size());                                                             \
    const double e_ = ::mambatrack::test::rel_err(g_, w_);                                       \
    INFO(name << ": relative error " << e_ << " (tolerance " << (tol) << "), non-finite "       \
              << ::mambatrack::test::count_nonfinite(g_) << " of " << g_.size());                \
    CHECK(::mambatrack::test::count_nonfinite(g_) == 0);                                         \
    CHECK(e_ <= (tol));                                                                          \
  } while (0)
