// Small host loops the nn/ layers need besides the ops/ halves, written once for float (CPU
// backend) and double (reference backend): residual add and accumulate, the reversal of each
// packed sequence within its own bounds (y[cu[s] + i] = x[cu[s+1] − 1 − i]), dropout by a mask,
// positions within sequences, mean pooling per sequence. A CUDA backend provides the same names.
#pragma once

#include <cstdint>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack::nn::host {

// Elementwise loops split over threads above this many elements (each element is independent,
// so the result does not depend on the thread count).
constexpr int64_t kGrain = 1 << 15;

// Checks cu_seqlens: starts at 0, non-decreasing, ends at `tokens`.
inline void check_cu_seqlens(View<const int64_t> cu, int64_t tokens, const char* where) {
  MAMBATRACK_CHECK_SHAPE(cu.numel() >= 1 && cu[0] == 0, where, ": cu_seqlens must start at 0 and have batch + 1 entries");
  for (int64_t s = 0; s + 1 < cu.numel(); ++s)
    MAMBATRACK_CHECK_SHAPE(cu[s + 1] >= cu[s], where, ": cu_seqlens decreases at sequence ", s, " (", cu[s], " -> ",
                           cu[s + 1], ")");
  MAMBATRACK_CHECK_SHAPE(cu[cu.numel() - 1] == tokens, where, ": cu_seqlens ends at ", cu[cu.numel() - 1], " but the input has ",
                         tokens, " tokens");
}

// out = a + b (any equal shapes).
template <class T>
void add(View<const T> a, View<const T> b, View<T> out) {
  MAMBATRACK_CHECK_SHAPE(a.numel() == b.numel() && a.numel() == out.numel(), "add: ", a.shape, " + ", b.shape, " -> ",
                         out.shape);
  parallel_for(0, a.numel(), [&](int64_t i) { out[i] = a[i] + b[i]; }, kGrain);
}

// y += x.
template <class T>
void accumulate(View<const T> x, View<T> y) {
  MAMBATRACK_CHECK_SHAPE(x.numel() == y.numel(), "accumulate: ", x.shape, " into ", y.shape);
  parallel_for(0, x.numel(), [&](int64_t i) { y[i] += x[i]; }, kGrain);
}

// Rows of each packed sequence in reverse order. Its own inverse, so the backward is the same call.
template <class T>
void reverse_within_sequences(View<const T> x, View<const int64_t> cu, View<T> y) {
  MAMBATRACK_CHECK_SHAPE(x.shape == y.shape && x.rank() == 2, "reverse_within_sequences: x ", x.shape, ", y ", y.shape);
  check_cu_seqlens(cu, x.dim(0), "reverse_within_sequences");
  MAMBATRACK_CHECK_SHAPE(x.data != y.data, "reverse_within_sequences: x and y must not alias");
  const int64_t d = x.dim(1);
  for (int64_t s = 0; s + 1 < cu.numel(); ++s)
    for (int64_t i = cu[s], j = cu[s + 1] - 1; i < cu[s + 1]; ++i, --j)
      for (int64_t c = 0; c < d; ++c) y.data[i * d + c] = x.data[j * d + c];
}

// pos[t] = t − cu[s] for t in sequence s.
inline void sequence_positions(View<const int64_t> cu, View<int64_t> pos) {
  check_cu_seqlens(cu, pos.numel(), "sequence_positions");
  for (int64_t s = 0; s + 1 < cu.numel(); ++s)
    for (int64_t t = cu[s]; t < cu[s + 1]; ++t) pos[t] = t - cu[s];
}

// Dropout scale per element: 0 with probability p, else 1/(1−p). Element i draws Philox
// (seed, stream, position = step·2^40 + i), so the mask depends only on (seed, stream, step, i).
template <class T>
void dropout_mask(uint64_t seed, uint64_t stream, uint64_t step, double p, View<T> mask) {
  const T keep = static_cast<T>(1.0 / (1.0 - p));
  const uint64_t base = step << 40;
  parallel_for(
      0, mask.numel(),
      [&](int64_t i) { mask[i] = philox_uniform_double(seed, stream, base + static_cast<uint64_t>(i)) < p ? T(0) : keep; },
      kGrain / 8);
}

// y = x ⊙ m (also the backward: dx = dy ⊙ m).
template <class T>
void multiply(View<const T> x, View<const T> m, View<T> y) {
  MAMBATRACK_CHECK_SHAPE(x.numel() == m.numel() && x.numel() == y.numel(), "multiply: ", x.shape, " · ", m.shape,
                         " -> ", y.shape);
  parallel_for(0, x.numel(), [&](int64_t i) { y[i] = x[i] * m[i]; }, kGrain);
}

// pooled[s] = mean over the rows of sequence s (an empty sequence pools to 0).
template <class T>
void mean_pool(View<const T> x, View<const int64_t> cu, View<T> pooled) {
  check_cu_seqlens(cu, x.dim(0), "mean_pool");
  const int64_t d = x.dim(1), b = cu.numel() - 1;
  MAMBATRACK_CHECK_SHAPE(pooled.rank() == 2 && pooled.dim(0) == b && pooled.dim(1) == d, "mean_pool: pooled is ",
                         pooled.shape, ", expected (", b, ", ", d, ")");
  for (int64_t s = 0; s < b; ++s) {
    const int64_t n = cu[s + 1] - cu[s];
    for (int64_t c = 0; c < d; ++c) {
      T sum = 0;
      for (int64_t t = cu[s]; t < cu[s + 1]; ++t) sum += x.data[t * d + c];
      pooled.data[s * d + c] = n > 0 ? sum / static_cast<T>(n) : T(0);
    }
  }
}

// dx[t] = dpooled[s] / n_s (overwritten).
template <class T>
void mean_pool_bwd(View<const T> dpooled, View<const int64_t> cu, View<T> dx) {
  const int64_t d = dx.dim(1), b = cu.numel() - 1, rows = dx.dim(0);
  // Rows outside every sequence (a batch padded beyond cu[b]) get no gradient.
  for (int64_t t = 0; t < rows; ++t)
    if (b < 1 || t < cu[0] || t >= cu[b])
      for (int64_t c = 0; c < d; ++c) dx.data[t * d + c] = T(0);
  for (int64_t s = 0; s + 1 < cu.numel(); ++s) {
    const int64_t n = cu[s + 1] - cu[s];
    for (int64_t t = cu[s]; t < cu[s + 1]; ++t)
      for (int64_t c = 0; c < d; ++c) dx.data[t * d + c] = dpooled.data[s * d + c] / static_cast<T>(n);
  }
}

// Column blocks: out[:, off:off+x.cols] = x (concat) and its inverse (split).
template <class T>
void copy_columns(View<const T> x, View<T> out, int64_t offset) {
  const int64_t n = x.dim(0), w = x.dim(1), W = out.dim(1);
  MAMBATRACK_CHECK_SHAPE(out.dim(0) == n && offset + w <= W, "copy_columns: ", x.shape, " into ", out.shape, " at ", offset);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < w; ++c) out.data[i * W + offset + c] = x.data[i * w + c];
}
template <class T>
void take_columns(View<const T> x, View<T> out, int64_t offset) {
  const int64_t n = out.dim(0), w = out.dim(1), W = x.dim(1);
  MAMBATRACK_CHECK_SHAPE(x.dim(0) == n && offset + w <= W, "take_columns: ", out.shape, " from ", x.shape, " at ", offset);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < w; ++c) out.data[i * w + c] = x.data[i * W + offset + c];
}

// at = aᵀ for a (rows, cols).
template <class T>
void transpose(View<const T> a, View<T> at) {
  const int64_t r = a.dim(0), c = a.dim(1);
  MAMBATRACK_CHECK_SHAPE(at.rank() == 2 && at.dim(0) == c && at.dim(1) == r, "transpose: ", a.shape, " into ", at.shape);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) at.data[j * r + i] = a.data[i * c + j];
}

// Rows of a (rows, ...) tensor: the elements per row (1 for a vector).
template <class V>
int64_t row_width(const V& x) {
  return x.rank() <= 1 ? 1 : (x.dim(0) > 0 ? x.numel() / x.dim(0) : 0);
}

// out[i] = x[idx[i]] (whole rows); idx in [0, rows of x).
template <class T>
void gather_rows(View<const T> x, View<const int64_t> idx, View<T> out) {
  const int64_t n = x.rank() == 0 ? 0 : x.dim(0), w = row_width(x), m = idx.numel();
  MAMBATRACK_CHECK_SHAPE(out.numel() == m * w, "gather_rows: ", m, " indices of rows of ", x.shape, " into ", out.shape);
  for (int64_t i = 0; i < m; ++i) {
    MAMBATRACK_CHECK_SHAPE(idx[i] >= 0 && idx[i] < n, "gather_rows: index ", i, " is ", idx[i], ", outside [0, ", n, ")");
    for (int64_t c = 0; c < w; ++c) out.data[i * w + c] = x.data[idx[i] * w + c];
  }
}

// out[idx[i]] += src[i] (whole rows); the idx must be in range (checked here) and distinct (the
// CUDA version relies on it; not checked).
template <class T>
void scatter_add_rows(View<const T> src, View<const int64_t> idx, View<T> out) {
  const int64_t n = out.rank() == 0 ? 0 : out.dim(0), w = row_width(out), m = idx.numel();
  MAMBATRACK_CHECK_SHAPE(src.numel() == m * w, "scatter_add_rows: ", src.shape, " with ", m, " indices into rows of ",
                         out.shape);
  for (int64_t i = 0; i < m; ++i)
    MAMBATRACK_CHECK_SHAPE(idx[i] >= 0 && idx[i] < n, "scatter_add_rows: index ", i, " is ", idx[i], ", outside [0, ", n,
                           ")");
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 0; c < w; ++c) out.data[idx[i] * w + c] += src.data[i * w + c];
}

// out[r] = the first column of row r holding the row's maximum.
template <class T>
void argmax_rows(View<const T> x, View<int64_t> out) {
  const int64_t n = x.rank() == 0 ? 0 : x.dim(0), w = row_width(x);
  MAMBATRACK_CHECK_SHAPE(out.numel() == n && w >= 1, "argmax_rows: ", x.shape, " into ", out.shape);
  for (int64_t r = 0; r < n; ++r) {
    int64_t best = 0;
    for (int64_t c = 1; c < w; ++c)
      if (x.data[r * w + c] > x.data[r * w + best]) best = c;
    out.data[r] = best;
  }
}

}  // namespace mambatrack::nn::host
