// CPU Linear in float: the three GEMMs of y = x·Wᵀ + b and its backward through Eigen maps of
// the row-major buffers. dx is overwritten; dW and db are accumulated (+=) into the caller's
// gradient buffers. With several threads and enough tokens, the tokens are split into one
// contiguous range per thread, each running a single-threaded Eigen GEMM (dW: one partial per
// range, summed in range order), which avoids Eigen's per-k-block thread synchronisation; the
// results are deterministic for a given thread count.
#pragma once

#include <algorithm>

#include <Eigen/Core>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/ops/cpu/workspace.hpp"
#include "mambatrack/ops/linear.hpp"

namespace mambatrack::cpu {

namespace detail {
using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatMap = Eigen::Map<const RowMatrixF>;
using MatMap = Eigen::Map<RowMatrixF>;

constexpr int64_t kMinTokensPerThread = 256;

// Number of token ranges: one per thread when each gets at least kMinTokensPerThread tokens,
// else 1 (Eigen then threads the GEMM itself, which suits few tokens and large weights).
inline int linear_token_parts(int64_t tokens) {
  const int t = num_threads();
  return (t > 1 && tokens >= kMinTokensPerThread * t) ? t : 1;
}
inline int64_t part_begin(int64_t n, int parts, int p) { return n * p / parts; }
}  // namespace detail

inline void linear_fwd(const LinearFwdArgs<float>& a) {
  a.check();
  const int64_t n = a.tokens(), in = a.in_features(), out = a.out_features();
  if (n == 0 || out == 0) return;
  detail::ConstMatMap x(a.x.data, n, in), w(a.w.data, out, in);
  detail::MatMap y(a.y.data, n, out);
  const int parts = detail::linear_token_parts(n);
  // Inside the parallel region Eigen runs each GEMM on the calling thread.
  parallel_for(0, parts, [&](int64_t p) {
    const int64_t t0 = detail::part_begin(n, parts, static_cast<int>(p));
    const int64_t t1 = detail::part_begin(n, parts, static_cast<int>(p) + 1);
    auto yp = y.middleRows(t0, t1 - t0);
    if (in == 0) yp.setZero();
    else yp.noalias() = x.middleRows(t0, t1 - t0) * w.transpose();
    if (ops::present(a.b)) yp.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(a.b.data, out);
  });
}

inline void linear_bwd(const LinearBwdArgs<float>& a) {
  a.check();
  const int64_t n = a.tokens(), in = a.in_features(), out = a.out_features();
  detail::ConstMatMap x(a.x.data, n, in), w(a.w.data, out, in), dy(a.dy.data, n, out);
  const int parts = detail::linear_token_parts(n);
  if (ops::present(a.dx) && n * in > 0) {
    detail::MatMap dx(a.dx.data, n, in);
    parallel_for(0, parts, [&](int64_t p) {
      const int64_t t0 = detail::part_begin(n, parts, static_cast<int>(p));
      const int64_t t1 = detail::part_begin(n, parts, static_cast<int>(p) + 1);
      if (out == 0) dx.middleRows(t0, t1 - t0).setZero();
      else dx.middleRows(t0, t1 - t0).noalias() = dy.middleRows(t0, t1 - t0) * w;
    });
  }
  if (n == 0) return;  // nothing to accumulate
  if (ops::present(a.dw) && out * in > 0) {
    detail::MatMap dw(a.dw.data, out, in);
    if (parts == 1) {
      dw.noalias() += dy.transpose() * x;
    } else {
      const int64_t m = out * in;
      float* part = scratch_floats(static_cast<std::size_t>(parts * m));
      parallel_for(0, parts, [&](int64_t p) {
        const int64_t t0 = detail::part_begin(n, parts, static_cast<int>(p));
        const int64_t t1 = detail::part_begin(n, parts, static_cast<int>(p) + 1);
        detail::MatMap(part + p * m, out, in).noalias() =
            dy.middleRows(t0, t1 - t0).transpose() * x.middleRows(t0, t1 - t0);
      });
      parallel_for(0, m, [&](int64_t i) {
        float s = 0;
        for (int p = 0; p < parts; ++p) s += part[p * m + i];
        a.dw[i] += s;
      }, 4096);
    }
  }
  if (ops::present(a.db) && out > 0) {
    // Row by row into a float partial (contiguous, vectorised), then into db: Eigen's colwise
    // sum of a row-major map walks columns with a stride of `out` floats and is several times slower.
    float* acc = scratch_floats(static_cast<std::size_t>(out), 1);
    std::fill(acc, acc + out, 0.0f);
    for (int64_t t = 0; t < n; ++t) {
      const float* row = a.dy.data + t * out;
      for (int64_t o = 0; o < out; ++o) acc[o] += row[o];
    }
    for (int64_t o = 0; o < out; ++o) a.db[o] += acc[o];
  }
}

}  // namespace mambatrack::cpu
