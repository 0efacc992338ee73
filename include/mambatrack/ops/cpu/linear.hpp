// CPU Linear in float: the three GEMMs of y = x·Wᵀ + b and its backward through Eigen maps of
// the row-major buffers (Eigen threads them with the count set by set_num_threads). dx is
// overwritten; dW and db are accumulated (+=) into the caller's gradient buffers.
#pragma once

#include <algorithm>

#include <Eigen/Core>

#include "mambatrack/ops/cpu/workspace.hpp"
#include "mambatrack/ops/linear.hpp"

namespace mambatrack::cpu {

namespace detail {
using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatMap = Eigen::Map<const RowMatrixF>;
using MatMap = Eigen::Map<RowMatrixF>;
}  // namespace detail

inline void linear_fwd(const LinearFwdArgs<float>& a) {
  a.check();
  const int64_t n = a.tokens(), in = a.in_features(), out = a.out_features();
  if (n == 0 || out == 0) return;
  detail::ConstMatMap x(a.x.data, n, in), w(a.w.data, out, in);
  detail::MatMap y(a.y.data, n, out);
  if (in == 0) {
    y.setZero();
  } else {
    y.noalias() = x * w.transpose();
  }
  if (ops::present(a.b)) {
    Eigen::Map<const Eigen::RowVectorXf> b(a.b.data, out);
    y.rowwise() += b;
  }
}

inline void linear_bwd(const LinearBwdArgs<float>& a) {
  a.check();
  const int64_t n = a.tokens(), in = a.in_features(), out = a.out_features();
  detail::ConstMatMap x(a.x.data, n, in), w(a.w.data, out, in), dy(a.dy.data, n, out);
  if (ops::present(a.dx) && n * in > 0) {
    detail::MatMap dx(a.dx.data, n, in);
    if (out == 0) dx.setZero();
    else dx.noalias() = dy * w;
  }
  if (n == 0) return;  // nothing to accumulate
  if (ops::present(a.dw) && out * in > 0) {
    detail::MatMap dw(a.dw.data, out, in);
    dw.noalias() += dy.transpose() * x;
  }
  if (ops::present(a.db) && out > 0) {
    // Row by row into a float partial (contiguous, vectorised), then into db: Eigen's colwise
    // sum of a row-major map walks columns with a stride of `out` floats and is several times slower.
    float* acc = scratch_floats(static_cast<std::size_t>(out));
    std::fill(acc, acc + out, 0.0f);
    for (int64_t t = 0; t < n; ++t) {
      const float* row = a.dy.data + t * out;
      for (int64_t o = 0; o < out; ++o) acc[o] += row[o];
    }
    for (int64_t o = 0; o < out; ++o) a.db[o] += acc[o];
  }
}

}  // namespace mambatrack::cpu
