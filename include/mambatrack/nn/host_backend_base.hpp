// The shared host part of the CPU (float) and reference (double) Backend policies (DESIGN.md §4):
// the elementwise/sequence helpers of nn/host_kernels.hpp and the task-level ops (gather_rows,
// scatter_add_rows, argmax_rows, cross_entropy, masked_mse, to_device/to_host = plain copies).
// Eigen-free, so a .cu test can run the reference backend next to the CUDA one.
#pragma once

#include <cstdint>

#include "mambatrack/core/tensor.hpp"
#include "mambatrack/nn/host_kernels.hpp"
#include "mambatrack/ops/cpu/losses.hpp"
#include "mambatrack/ops/losses.hpp"
#include "mambatrack/ops/reference/losses.hpp"

namespace mambatrack::nn {

namespace host_losses {
inline LossResult cross_entropy(const CrossEntropyArgs<float>& a) { return cpu::cross_entropy(a); }
inline LossResult cross_entropy(const CrossEntropyArgs<double>& a) { return reference::cross_entropy(a); }
inline LossResult masked_mse(const MaskedMseArgs<float>& a) { return cpu::masked_mse(a); }
inline LossResult masked_mse(const MaskedMseArgs<double>& a) { return reference::masked_mse(a); }
}  // namespace host_losses

// The shared host parts of the CPU and reference backends, on scalar T.
template <class T>
struct HostBackendBase {
  using Scalar = T;
  using Device = Host;
  static void add(View<const T> a, View<const T> b, View<T> out) { host::add(a, b, out); }
  static void accumulate(View<const T> x, View<T> y) { host::accumulate(x, y); }
  static void copy(View<const T> x, View<T> y) { mambatrack::copy(x, y); }
  static void reverse_within_sequences(View<const T> x, View<const int64_t> cu, View<T> y) {
    host::reverse_within_sequences(x, cu, y);
  }
  static void sequence_positions(View<const int64_t> cu, View<int64_t> pos) { host::sequence_positions(cu, pos); }
  static void dropout_mask(uint64_t seed, uint64_t stream, uint64_t step, double p, View<T> mask) {
    host::dropout_mask(seed, stream, step, p, mask);
  }
  static void multiply(View<const T> x, View<const T> m, View<T> y) { host::multiply(x, m, y); }
  static void mean_pool(View<const T> x, View<const int64_t> cu, View<T> pooled) { host::mean_pool(x, cu, pooled); }
  static void mean_pool_bwd(View<const T> dp, View<const int64_t> cu, View<T> dx) { host::mean_pool_bwd(dp, cu, dx); }
  static void copy_columns(View<const T> x, View<T> out, int64_t offset) { host::copy_columns(x, out, offset); }
  static void take_columns(View<const T> x, View<T> out, int64_t offset) { host::take_columns(x, out, offset); }
  static void fill(View<T> x, T v) { mambatrack::fill(x, v); }
  static void transpose(View<const T> a, View<T> at) { host::transpose(a, at); }

  // Task-level ops (the same names on every backend).
  static void gather_rows(View<const T> x, View<const int64_t> idx, View<T> out) { host::gather_rows(x, idx, out); }
  static void gather_rows(View<const int64_t> x, View<const int64_t> idx, View<int64_t> out) {
    host::gather_rows(x, idx, out);
  }
  static void scatter_add_rows(View<const T> src, View<const int64_t> idx, View<T> out) {
    host::scatter_add_rows(src, idx, out);
  }
  static void argmax_rows(View<const T> x, View<int64_t> out) { host::argmax_rows(x, out); }
  static LossResult cross_entropy(const CrossEntropyArgs<T>& a) { return deliver(host_losses::cross_entropy(a), a.result); }
  static LossResult masked_mse(const MaskedMseArgs<T>& a) { return deliver(host_losses::masked_mse(a), a.result); }
  // out[0] = the rows whose label (not ignore_index) is the first column holding the row's maximum.
  static void count_correct(View<const T> logits, View<const int64_t> labels, int64_t ignore_index, View<double> out) {
    const int64_t n = logits.dim(0), w = logits.dim(1);
    MAMBATRACK_CHECK_SHAPE(labels.numel() == n && out.numel() == 1, "count_correct: logits ", logits.shape,
                           ", labels ", labels.shape, ", out ", out.shape);
    int64_t correct = 0;
    for (int64_t r = 0; r < n; ++r) {
      if (labels.data[r] == ignore_index) continue;
      const T* row = logits.data + r * w;
      int64_t best = 0;
      for (int64_t c = 1; c < w; ++c)
        if (row[c] > row[best]) best = c;
      correct += best == labels.data[r];
    }
    out.data[0] = static_cast<double>(correct);
  }
  // The loss also into `result` when the caller asked for it there (CrossEntropyArgs::result).
  static LossResult deliver(LossResult r, View<double> result) {
    if (ops::present(result)) {
      result.data[0] = r.loss;
      result.data[1] = static_cast<double>(r.count);
    }
    return r;
  }
  // Host <-> "device" transfers: plain copies on a host backend.
  static void to_device(View<const float> src, View<float> dst) { mambatrack::copy(src, dst); }
  static void to_device(View<const double> src, View<double> dst) { mambatrack::copy(src, dst); }
  static void to_device(View<const int64_t> src, View<int64_t> dst) { mambatrack::copy(src, dst); }
  static void to_device(View<const uint8_t> src, View<uint8_t> dst) { mambatrack::copy(src, dst); }
  static void to_host(View<const float> src, View<float> dst) { mambatrack::copy(src, dst); }
  static void to_host(View<const double> src, View<double> dst) { mambatrack::copy(src, dst); }
  static void to_host(View<const int64_t> src, View<int64_t> dst) { mambatrack::copy(src, dst); }
  static void to_host(View<const uint8_t> src, View<uint8_t> dst) { mambatrack::copy(src, dst); }
};

}  // namespace mambatrack::nn
