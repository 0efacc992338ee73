// Shared by the tests in tests/ops/: seeded random buffers, float copies, views over
// std::vector, and the central finite-difference gradient used to check reference backwards.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "mambatrack/core/philox.hpp"
#include "mambatrack/core/tensor.hpp"
#include "support/test_support.hpp"

namespace mambatrack::test {

using VecD = std::vector<double>;
using VecF = std::vector<float>;

inline VecD rnd(std::size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return random_uniform<double>(n, seed, lo, hi);
}

// Small integers in [lo, hi]: GEMM products and sums of them are exact in float.
inline VecD small_ints(std::size_t n, uint64_t seed, int lo = -3, int hi = 3) {
  Philox rng(seed, 11);
  VecD v(n);
  for (auto& x : v) x = static_cast<double>(rng.range(lo, hi));
  return v;
}

inline VecF to_float(const VecD& v) { return VecF(v.begin(), v.end()); }

template <class T>
View<const T> cv(const std::vector<T>& v, Shape s) {
  return View<const T>(v.data(), s);
}
template <class T>
View<T> mv(std::vector<T>& v, Shape s) {
  return View<T>(v.data(), s);
}

// Central differences of a scalar function f() w.r.t. every element of x (perturbed in place
// and restored). Error O(h²·f''') + O(eps_double·|f|/h): with h = 1e-5 both are ~1e-10.
inline VecD fd_grad(VecD& x, const std::function<double()>& f, double h = 1e-5) {
  VecD g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f();
    x[i] = x0 - h;
    const double fm = f();
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

inline double dot(const VecD& a, const VecD& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace mambatrack::test
