// Test-only helpers for the nn/ tests: a small causal mixer implementing the Mixer interface of
// nn/block.hpp, and a double-precision finite-difference checker over a ReferenceStore.
//   PrevTokenMixer: y_t = out_proj(silu(in_proj(x_t) + shift_proj(x_{t−1}))), x_{−1} = 0 at each
//   sequence start (cu_seqlens), so it is causal and resets per packed sequence like Mamba.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "mambatrack/nn/activation.hpp"
#include "mambatrack/nn/linear.hpp"
#include "mambatrack/nn/cpu_backend.hpp"
#include "mambatrack/nn/reference_backend.hpp"
#include "support/test_support.hpp"

namespace mambatrack::nn::test {

template <class Backend>
class PrevTokenMixer {
 public:
  using T = typename Backend::Scalar;
  using Store = typename Backend::Store;
  struct Context {
    View<const int64_t> cu;
    Tensor<T> prev, sum, dprev, dx;
    typename Linear<Backend>::Context in, shift, out;
    typename Silu<Backend>::Context act;
    std::size_t bytes() const {
      return prev.bytes() + sum.bytes() + dprev.bytes() + dx.bytes() + in.bytes() + shift.bytes() + out.bytes() +
             act.bytes();
    }
  };
  PrevTokenMixer() = default;
  PrevTokenMixer(int64_t d_model, int64_t d_inner) : in_(d_model, d_inner, false), shift_(d_model, d_inner, true),
                                                     out_(d_inner, d_model, false) {}

  void register_params(Store& s, const std::string& prefix) {
    in_.register_params(s, prefix + "in_proj.");
    shift_.register_params(s, prefix + "shift_proj.");
    out_.register_params(s, prefix + "out_proj.");
  }
  void init(ParameterStore& s, uint64_t seed, int n_layer) const {
    in_.init(s, seed);
    shift_.init(s, seed);
    out_.init(s, seed);
    // nonzero biases so the tests see them; out_proj rescaled by 1/sqrt(n_layer) as the reference
    Philox rng = param_rng(seed, s.info(shift_.bias()).name);
    init_uniform(s.param(shift_.bias()), -0.5, 0.5, rng);
    View<float> w = s.param(out_.weight());
    for (int64_t i = 0; i < w.numel(); ++i) w[i] /= static_cast<float>(std::sqrt(static_cast<double>(n_layer)));
  }

  View<const T> forward(Context& ctx, View<const T> x, View<const int64_t> cu) {
    ctx.cu = cu;
    View<T> prev = ensure(ctx.prev, x.shape);
    shift_rows(x, cu, prev);
    View<const T> a = in_.forward(ctx.in, x);
    View<const T> b = shift_.forward(ctx.shift, View<const T>(prev));
    View<T> sum = ensure(ctx.sum, a.shape);
    Backend::add(a, b, sum);
    return out_.forward(ctx.out, act_.forward(ctx.act, View<const T>(sum)));
  }
  View<const T> backward(Context& ctx, View<const T> dy) {
    View<const T> ds = act_.backward(ctx.act, out_.backward(ctx.out, dy));
    View<const T> dprev_in = shift_.backward(ctx.shift, ds);
    View<const T> dx_in = in_.backward(ctx.in, ds);
    View<T> dx = ensure(ctx.dx, dx_in.shape);
    Backend::copy(dx_in, dx);
    // prev_t = x_{t−1}: dx_{t−1} += dprev_t within a sequence
    const int64_t d = dx.dim(1);
    for (int64_t s = 0; s + 1 < ctx.cu.numel(); ++s)
      for (int64_t t = ctx.cu[s] + 1; t < ctx.cu[s + 1]; ++t)
        for (int64_t c = 0; c < d; ++c) dx.data[(t - 1) * d + c] += dprev_in.data[t * d + c];
    return dx;
  }

 private:
  static void shift_rows(View<const T> x, View<const int64_t> cu, View<T> prev) {
    const int64_t d = x.dim(1);
    for (int64_t s = 0; s + 1 < cu.numel(); ++s)
      for (int64_t t = cu[s]; t < cu[s + 1]; ++t)
        for (int64_t c = 0; c < d; ++c) prev.data[t * d + c] = t == cu[s] ? T(0) : x.data[(t - 1) * d + c];
  }
  Linear<Backend> in_, shift_, out_;
  Silu<Backend> act_;
};

// Fresh random values into a tensor.
template <class T>
void fill_random(View<T> v, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Philox rng(seed, 11);
  for (int64_t i = 0; i < v.numel(); ++i) v[i] = static_cast<T>(rng.uniform(lo, hi));
}

// Same values as a float view, in double.
inline Tensor<double> to_double(View<const float> v) {
  Tensor<double> t(v.shape);
  for (int64_t i = 0; i < v.numel(); ++i) t[i] = v[i];
  return t;
}

// Largest |a − b| / (|b|_max over the tensor + floor): one relative error for a whole tensor.
template <class A, class B>
double max_rel(View<A> a, View<B> b, double floor = 1e-6) {
  REQUIRE(a.numel() == b.numel());
  double scale = floor, err = 0;
  for (int64_t i = 0; i < b.numel(); ++i) scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  for (int64_t i = 0; i < b.numel(); ++i)
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return err / scale;
}

// Every float parameter gradient equals the reference store's (same names), per tensor.
inline void check_grads_match(const ParameterStore& f, ReferenceStore& r, double tol) {
  for (const auto& name : r.names()) {
    INFO("gradient of " << name);
    View<const float> g = f.grad(f.handle(name));
    CHECK(max_rel(g, View<const double>(r.grad(r.handle(name)))) < tol);
  }
}

// Central differences of loss() in double over every parameter of the store (up to max_per_tensor
// entries of each) against the analytic gradients already in the store.
inline void fd_check_params(ReferenceStore& s, const std::function<double()>& loss, int64_t max_per_tensor = 12,
                            double eps = 1e-6, double tol = 1e-6) {
  for (const auto& name : s.names()) {
    View<double> p = s.param(s.handle(name));
    View<double> g = s.grad(s.handle(name));
    const int64_t step = std::max<int64_t>(1, p.numel() / max_per_tensor);
    for (int64_t i = 0; i < p.numel(); i += step) {
      const double keep = p[i];
      p[i] = keep + eps;
      const double lp = loss();
      p[i] = keep - eps;
      const double lm = loss();
      p[i] = keep;
      const double fd = (lp - lm) / (2 * eps);
      INFO("parameter " << name << "[" << i << "]: analytic " << g[i] << ", finite difference " << fd);
      // central difference in double with eps 1e-6: truncation ~eps² and rounding ~1e-16/eps ≈ 1e-10
      CHECK(std::fabs(fd - g[i]) <= tol * (1 + std::fabs(fd)));
    }
  }
}

// Same for an input tensor x with analytic gradient dx.
inline void fd_check_input(View<double> x, View<const double> dx, const std::function<double()>& loss,
                           const char* what, double eps = 1e-6, double tol = 1e-6) {
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double keep = x[i];
    x[i] = keep + eps;
    const double lp = loss();
    x[i] = keep - eps;
    const double lm = loss();
    x[i] = keep;
    const double fd = (lp - lm) / (2 * eps);
    INFO(what << "[" << i << "]: analytic " << dx[i] << ", finite difference " << fd);
    CHECK(std::fabs(fd - dx[i]) <= tol * (1 + std::fabs(fd)));
  }
}

// Σ y ⊙ g: the scalar whose gradient wrt y is g.
template <class T>
double dot(View<const T> y, View<const T> g) {
  double s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y[i]) * static_cast<double>(g[i]);
  return s;
}

}  // namespace mambatrack::nn::test
