// Shared pieces of the CUDA ops: float <-> storage-type conversion (float, bfloat16; math is
// always fp32), grid sizing, and the deterministic reductions every backward uses instead of
// floating-point atomics: per-block partials reduced in a fixed order (sum_partials_kernel for
// per-column partials, ordered_sum for a vector of double partials).
#pragma once

#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>

#include <algorithm>
#include <cstdint>

#include "mambatrack/core/cuda_context.cuh"
#include "mambatrack/core/dtype.hpp"

namespace mambatrack::cuda {

namespace detail {

template <class T>
__device__ __forceinline__ float to_f(T x) {
  return static_cast<float>(x);
}
template <class T>
__device__ __forceinline__ T from_f(float x) {
  return T(x);
}

inline unsigned grid_for(int64_t n, int block, int64_t max_blocks = 65535 * 8) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + block - 1) / block, max_blocks)));
}

inline void check_launch(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw DeviceError(std::string(what) + ": kernel launch failed: " + cudaGetErrorName(e) + " (" +
                      cudaGetErrorString(e) + ")");
}

// out[c] += Σ_{p < parts} part[p·cols + c] in p order (one thread per column).
template <class T>
__global__ void sum_partials_kernel(const float* __restrict__ part, int64_t parts, int64_t cols, T* __restrict__ out) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  float s = 0;
  for (int64_t p = 0; p < parts; ++p) s += part[p * cols + c];
  out[c] = from_f<T>(to_f(out[c]) + s);
}

template <class T>
void sum_partials(const float* part, int64_t parts, int64_t cols, T* out, cudaStream_t stream) {
  if (cols == 0) return;
  sum_partials_kernel<T><<<grid_for(cols, 256), 256, 0, stream>>>(part, parts, cols, out);
  check_launch("sum_partials");
}

// Column sums of a (rows, cols) matrix: part[blk·cols + c] = Σ rows [blk·R, (blk+1)·R) in row order.
template <class T>
__global__ void colsum_partials_kernel(const T* __restrict__ a, int64_t rows, int64_t cols, int64_t rows_per_part,
                                       float* __restrict__ part) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = blockIdx.y * rows_per_part, r1 = min(rows, r0 + rows_per_part);
  float s = 0;
#pragma unroll 8
  for (int64_t r = r0; r < r1; ++r) s += to_f(a[r * cols + c]);
  part[blockIdx.y * cols + c] = s;
}

constexpr int64_t kRowsPerPart = 128;  // rows summed per partial of the column reductions
// Rows per partial for `rows` rows: 128, more when the parts would exceed the grid's y limit.
inline int64_t rows_per_part(int64_t rows) { return std::max<int64_t>(kRowsPerPart, (rows + 65534) / 65535); }

// out[c] += Σ_r a[r, c], deterministic (fixed partition of rows, partials summed in order).
template <class T, class TOut = T>
void colsum_accumulate(const T* a, int64_t rows, int64_t cols, TOut* out, CudaContext& ctx) {
  if (rows == 0 || cols == 0) return;
  const int64_t rpp = rows_per_part(rows), parts = (rows + rpp - 1) / rpp;
  float* part = ctx.scratch_as<float>(static_cast<std::size_t>(parts * cols), 3);
  dim3 grid(grid_for(cols, 128), static_cast<unsigned>(parts));
  colsum_partials_kernel<T><<<grid, 128, 0, ctx.stream()>>>(a, rows, cols, rpp, part);
  check_launch("column sum");
  sum_partials<TOut>(part, parts, cols, out, ctx.stream());
}

// *out = Σ_i part[i] over n doubles in a fixed order: one block, strided per-thread sums, then
// CUB's block reduction (a fixed tree). Deterministic for a given n.
constexpr int kSumThreads = 512;
template <int kThreads = kSumThreads>
__global__ void ordered_sum_kernel(const double* __restrict__ part, int64_t n, double* __restrict__ out) {
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += part[i];
  const double total = Reduce(tmp).Sum(s);
  if (threadIdx.x == 0) *out = total;
}
inline void ordered_sum(const double* part, int64_t n, double* out, cudaStream_t stream) {
  ordered_sum_kernel<><<<1, kSumThreads, 0, stream>>>(part, n, out);
  check_launch("ordered_sum");
}

}  // namespace detail
}  // namespace mambatrack::cuda
