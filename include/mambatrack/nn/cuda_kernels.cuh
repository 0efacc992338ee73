// The small CUDA kernels of nn::CudaBackend: the device twins of nn/host_kernels.hpp (residual
// add/accumulate, per-sequence reversal y[cu[s] + i] = x[cu[s+1] − 1 − i], positions t − cu[s],
// Philox dropout masks identical to the host's, multiply, mean pooling, column blocks, transpose,
// the A = −exp(A_log) steps) and the task-level row ops (gather, scatter-add with distinct
// indices, first argmax per row). float or bfloat16 storage: arithmetic in acc_t<T> (float for
// bfloat16), one rounding per stored result. One thread per output element or 16-byte group of
// them (grid-stride), so every result is written by one thread: deterministic, no atomics. Each launch is stream-ordered on `s`, checks
// the launch without synchronising and allocates nothing.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/dtype.hpp"
#include "mambatrack/core/error.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/ops/cuda/pack.cuh"

namespace mambatrack::nn::cuda_kernels {

constexpr int kThreads = 256;

// The arithmetic type of a storage type: float for bfloat16, the type itself otherwise.
template <class T>
struct Acc {
  using type = T;
};
template <>
struct Acc<bfloat16> {
  using type = float;
};
template <class T>
using acc_t = typename Acc<T>::type;
template <class T>
__device__ __forceinline__ acc_t<T> ld(const T& v) {
  return static_cast<acc_t<T>>(v);
}
template <class T>
__device__ __forceinline__ T st(acc_t<T> v) {
  return static_cast<T>(v);
}

inline unsigned grid(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}
inline void check(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw DeviceError(std::string("CudaBackend ") + what + ": kernel launch failed: " + cudaGetErrorName(e) + " (" +
                      cudaGetErrorString(e) + ")");
}

#define MAMBATRACK_NN_GRID_LOOP(i, n)                                                    \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// The sequence s of token t: the largest s with cu[s] <= t (empty sequences skipped).
__device__ __forceinline__ int64_t sequence_of(const int64_t* cu, int64_t batch, int64_t t) {
  int64_t lo = 0, hi = batch;  // cu[lo] <= t < cu[hi] for valid cu
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (cu[mid] <= t) lo = mid;
    else hi = mid;
  }
  return lo;
}

// The binary elementwise ops: y = a + b, y += a, y = a·b, y += a·b.
enum class Elementwise { kAdd, kAccumulate, kMultiply, kMulAccumulate };
template <Elementwise op, class U>
__device__ __forceinline__ U elementwise(U a, U b, U y) {
  if constexpr (op == Elementwise::kAdd) return a + b;
  else if constexpr (op == Elementwise::kAccumulate) return y + a;
  else if constexpr (op == Elementwise::kMultiply) return a * b;
  else return y + a * b;
}
template <Elementwise op>
constexpr bool reads_y() {
  return op == Elementwise::kAccumulate || op == Elementwise::kMulAccumulate;
}
// y[i] = op(a[i], b[i], y[i]), one rounding per stored element. kVector: 16 bytes per access
// (all pointers 16-byte aligned), the tail past the last whole vector element by element.
template <class T, Elementwise op, bool kVector>
__global__ void elementwise_kernel(const T* a, const T* b, T* y, int64_t n) {
  using A = acc_t<T>;
  if constexpr (kVector) {
    constexpr int V = mambatrack::cuda::detail::kPack16<T>;
    namespace pk = mambatrack::cuda::detail;
    static_assert(std::is_same_v<A, float>, "the packed path computes in float");
    const int64_t nv = n / V;
    MAMBATRACK_NN_GRID_LOOP(i, nv) {
      float va[V], vb[V] = {}, vy[V] = {};
      pk::load_pack<T, V>(a, i * V, va);
      if (op != Elementwise::kAccumulate) pk::load_pack<T, V>(b, i * V, vb);
      if (reads_y<op>()) pk::load_pack<T, V>(y, i * V, vy);
#pragma unroll
      for (int k = 0; k < V; ++k) vy[k] = elementwise<op, A>(va[k], vb[k], vy[k]);
      pk::store_pack<T, V>(y, i * V, vy);
    }
    const int64_t i = nv * V + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (i < n)
      y[i] = st<T>(elementwise<op, A>(ld(a[i]), (op == Elementwise::kAccumulate) ? A(0) : ld(b[i]),
                                      reads_y<op>() ? ld(y[i]) : A(0)));
  } else {
    MAMBATRACK_NN_GRID_LOOP(i, n)
    y[i] = st<T>(elementwise<op, A>(ld(a[i]), (op == Elementwise::kAccumulate) ? A(0) : ld(b[i]),
                                    reads_y<op>() ? ld(y[i]) : A(0)));
  }
}
template <class T>
__global__ void fill_kernel(T* x, T v, int64_t n) {
  MAMBATRACK_NN_GRID_LOOP(i, n) x[i] = v;
}
template <class T>
__global__ void neg_exp_kernel(const T* a_log, T* a, int64_t n) {
  MAMBATRACK_NN_GRID_LOOP(i, n) a[i] = st<T>(-exp(ld(a_log[i])));
}
template <class T>
// *step_offset (device memory) is added to the step: a captured CUDA graph draws fresh masks on
// each replay when the offset is set before it (CudaBackendT::set_dropout_step_offset).
__global__ void dropout_mask_kernel(uint64_t seed, uint64_t stream, uint64_t base, const uint64_t* step_offset,
                                    double p, T keep, T* mask, int64_t n) {
  const uint64_t b = base + (*step_offset << 40);
  MAMBATRACK_NN_GRID_LOOP(i, n)
  mask[i] = philox_uniform_double(seed, stream, b + static_cast<uint64_t>(i)) < p ? T(0) : keep;
}
template <int kUnused = 0>
__global__ void set_u64_kernel(uint64_t* p, uint64_t v) {
  *p = v;
}
template <class T>
__global__ void reverse_kernel(const T* x, const int64_t* cu, T* y, int64_t batch, int64_t tokens, int64_t d) {
  MAMBATRACK_NN_GRID_LOOP(i, tokens * d) {
    const int64_t t = i / d, c = i - t * d;
    const int64_t s = sequence_of(cu, batch, t);
    const int64_t j = cu[s] + cu[s + 1] - 1 - t;
    y[i] = x[j * d + c];
  }
}
template <int kUnused = 0>
__global__ void positions_kernel(const int64_t* cu, int64_t* pos, int64_t batch, int64_t tokens) {
  MAMBATRACK_NN_GRID_LOOP(t, tokens) pos[t] = t - cu[sequence_of(cu, batch, t)];
}
// pooled[s, c] = Σ_t x[t, c] / n_s, the tokens summed in order as on the host.
template <class T>
__global__ void mean_pool_kernel(const T* x, const int64_t* cu, T* pooled, int64_t batch, int64_t d) {
  MAMBATRACK_NN_GRID_LOOP(i, batch * d) {
    const int64_t s = i / d, c = i - s * d, n = cu[s + 1] - cu[s];
    acc_t<T> sum = 0;
    for (int64_t t = cu[s]; t < cu[s + 1]; ++t) sum += ld(x[t * d + c]);
    pooled[i] = st<T>(n > 0 ? sum / static_cast<acc_t<T>>(n) : acc_t<T>(0));
  }
}
template <class T>
__global__ void mean_pool_bwd_kernel(const T* dp, const int64_t* cu, T* dx, int64_t batch, int64_t tokens, int64_t d) {
  MAMBATRACK_NN_GRID_LOOP(i, tokens * d) {
    const int64_t t = i / d, c = i - t * d;
    const int64_t s = sequence_of(cu, batch, t);
    // Rows outside every sequence (a batch padded beyond cu[batch]) get no gradient.
    dx[i] = t < cu[0] || t >= cu[batch] ? st<T>(0.0f)
                                        : st<T>(ld(dp[s * d + c]) / static_cast<acc_t<T>>(cu[s + 1] - cu[s]));
  }
}
// out[:, off:off+w] = x (kTake false: copy) or out = x[:, off:off+w] (kTake true), one thread
// per element U of the block: U is T, or uint4 (16 bytes) when w, W, off and both pointers allow,
// with w, W, off then counted in uint4s. I: the index type, 32-bit where n·w and n·W fit (its
// division is a fraction of the 64-bit one's cost).
template <class U, class I, bool kTake>
__global__ void columns_kernel(const U* x, U* out, I n, I w, I W, I off) {
  const I total = n * w;
  for (I i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const I r = i / w, c = i - r * w;
    if (kTake) out[i] = x[r * W + off + c];
    else out[r * W + off + c] = x[i];
  }
}
template <class T>
__global__ void transpose_kernel(const T* a, T* at, int64_t r, int64_t c) {
  MAMBATRACK_NN_GRID_LOOP(i, r * c) {
    const int64_t row = i / c, col = i - row * c;
    at[col * r + row] = a[i];
  }
}
// out[i] = x[idx[i]] (rows of width w); an index outside [0, rows) gives a zero row.
template <class U>
__global__ void gather_rows_kernel(const U* x, const int64_t* idx, U* out, int64_t m, int64_t w, int64_t rows) {
  MAMBATRACK_NN_GRID_LOOP(i, m * w) {
    const int64_t r = i / w, c = i - r * w, k = idx[r];
    out[i] = (k >= 0 && k < rows) ? x[k * w + c] : U(0);
  }
}
// out[idx[i]] += src[i]: the indices are distinct, so each output element has one writer.
// An index outside [0, rows) is skipped.
template <class U>
__global__ void scatter_add_rows_kernel(const U* src, const int64_t* idx, U* out, int64_t m, int64_t w, int64_t rows) {
  MAMBATRACK_NN_GRID_LOOP(i, m * w) {
    const int64_t r = i / w, c = i - r * w, k = idx[r];
    if (k >= 0 && k < rows) out[k * w + c] = st<U>(ld(out[k * w + c]) + ld(src[i]));
  }
}
// The first column holding the row's maximum (the host's strict '>' scan).
template <class T>
__global__ void argmax_rows_kernel(const T* x, int64_t* out, int64_t n, int64_t w) {
  MAMBATRACK_NN_GRID_LOOP(r, n) {
    const T* row = x + r * w;
    int64_t best = 0;
    acc_t<T> bv = ld(row[0]);
    for (int64_t c = 1; c < w; ++c)
      if (ld(row[c]) > bv) {
        bv = ld(row[c]);
        best = c;
      }
    out[r] = best;
  }
}

// *count += rows whose label (not `ignore`) is the first column holding the row's maximum; one
// warp per row, integer atomics (exact, so the total does not depend on their order).
template <class T>
__global__ void count_correct_kernel(const T* x, const int64_t* labels, int64_t n, int64_t w, int64_t ignore,
                                     unsigned long long* count) {
  const int lane = threadIdx.x % 32;
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  if (r >= n) return;
  const int64_t y = labels[r];
  if (y == ignore) return;
  const T* row = x + r * w;
  acc_t<T> bv = -INFINITY;
  int64_t best = w;
  for (int64_t c = lane; c < w; c += 32) {  // the first maximum of this lane's columns
    const acc_t<T> v = ld(row[c]);
    if (best == w || v > bv) {
      bv = v;
      best = c;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {  // the largest value, the smallest column among equals
    const acc_t<T> ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int64_t oc = __shfl_xor_sync(0xffffffffu, best, o);
    if (ov > bv || (ov == bv && oc < best)) {
      bv = ov;
      best = oc;
    }
  }
  if (lane == 0 && best == y) atomicAdd(count, 1ull);
}
template <int kUnused = 0>
__global__ void u64_to_double_kernel(const unsigned long long* in, double* out) {
  *out = static_cast<double>(*in);
}

#undef MAMBATRACK_NN_GRID_LOOP

}  // namespace mambatrack::nn::cuda_kernels
