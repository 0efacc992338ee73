// Small helpers shared by the CUDA ops: float loads/stores of float or bfloat16 storage, softplus
// and sigmoid in float, a grow-only device scratch buffer per (purpose) slot, and the fixed-order
// (deterministic) column sums of a partials matrix: out[c] (+)= Σ_r part[r, c], r in order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/dtype.hpp"

namespace mambatrack::cuda::detail {

template <class T>
__device__ __forceinline__ float ld(const T* p, int64_t i) {
  return static_cast<float>(p[i]);
}
template <class T>
__device__ __forceinline__ void st(T* p, int64_t i, float v) {
  p[i] = T(v);
}

// Read-only (non-coherent cache) loads, so the compiler may move them across the kernel's stores.
__device__ __forceinline__ float ldg(const float* p) { return __ldg(p); }
__device__ __forceinline__ float ldg(const bfloat16* p) {
  return __uint_as_float(static_cast<uint32_t>(__ldg(reinterpret_cast<const unsigned short*>(p))) << 16);
}

// out[0, N) = p[0, N) as floats; with `vec` (p 16-byte aligned and N·sizeof(T) a multiple of
// 16) through 16-byte loads.
__device__ __forceinline__ void unpack(uint32_t w, float* o, float) { o[0] = __uint_as_float(w); }
__device__ __forceinline__ void unpack(uint32_t w, float* o, bfloat16) {
  o[0] = __uint_as_float(w << 16);
  o[1] = __uint_as_float(w & 0xffff0000u);
}
template <class T, int N>
__device__ __forceinline__ void load_row(const T* p, bool vec, float (&out)[N]) {
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  constexpr int kPerWord = 4 / static_cast<int>(sizeof(T));
  if constexpr (kBytes % 16 == 0) {
    if (vec) {
      const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) {
        const uint4 w = __ldg(q + i);
        unpack(w.x, out + (4 * i + 0) * kPerWord, T());
        unpack(w.y, out + (4 * i + 1) * kPerWord, T());
        unpack(w.z, out + (4 * i + 2) * kPerWord, T());
        unpack(w.w, out + (4 * i + 3) * kPerWord, T());
      }
      return;
    }
  }
#pragma unroll
  for (int n = 0; n < N; ++n) out[n] = ldg(p + n);
}

__device__ __forceinline__ float softplus_f(float x) { return x <= 20.0f ? log1pf(expf(x)) : x; }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// Grow-only device scratch, one buffer per `id` (kept for the process; freed at exit). Calls on
// one id must not overlap on different streams (the ops are stream-ordered on the caller's stream).
// An outgrown buffer is released, or kept when a CUDA graph may hold its address.
inline void* scratch(int id, std::size_t bytes) {
  struct Buf {
    void* p = nullptr;
    std::size_t n = 0;
  };
  static Buf bufs[8];
  static std::mutex mu;
  MAMBATRACK_CHECK(id >= 0 && id < 8, Error, "cuda scratch id ", id, " out of range");
  std::lock_guard<std::mutex> lock(mu);
  Buf& b = bufs[id];
  if (b.n < bytes) {
    if (b.p) {
      MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
      if (!cuda_graph_state().captured) DeviceMemory<Cuda>::release(b.p);
      b.p = nullptr;
      b.n = 0;
    }
    b.p = DeviceMemory<Cuda>::allocate(bytes);
    b.n = bytes;
  }
  return b.p;
}

// Stage 1: tmp[g, c] = Σ_{r in [g·64, g·64+64)} part[r, c] (rows in order). (A template only so
// that the header can be included by several translation units.)
template <int kUnused = 0>
__global__ void sum_rows_stage1(const float* __restrict part, int64_t rows, int64_t ld, int64_t cols,
                                float* __restrict tmp) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * 64, r1 = r0 + 64 < rows ? r0 + 64 : rows;
  float s = 0.0f;
  for (int64_t r = r0; r < r1; ++r) s += part[r * ld + c];
  tmp[blockIdx.y * cols + c] = s;
}
// Stage 2: out[c] += Σ_g tmp[g, c] (groups in order), out of type T.
template <class T>
__global__ void sum_rows_stage2(const float* __restrict tmp, int64_t groups, int64_t cols, T* __restrict out) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  float s = 0.0f;
  for (int64_t g = 0; g < groups; ++g) s += tmp[g * cols + c];
  out[c] = T(static_cast<float>(out[c]) + s);
}

// out[c] += Σ_r part[r·ld + c] for c < cols, in a fixed order (bit-identical from run to run).
// tmp: ceil(rows / 64) · cols floats of scratch.
template <class T>
void sum_rows_accumulate(const float* part, int64_t rows, int64_t ld, int64_t cols, float* tmp, T* out,
                         cudaStream_t stream) {
  if (cols == 0) return;
  const int64_t groups = rows > 0 ? (rows + 63) / 64 : 0;
  const int threads = 256;
  const unsigned bx = static_cast<unsigned>((cols + threads - 1) / threads);
  if (groups > 0) {
    MAMBATRACK_CHECK(groups < 65536, Error, "sum_rows: ", rows, " rows is too many");
    sum_rows_stage1<0><<<dim3(bx, static_cast<unsigned>(groups)), threads, 0, stream>>>(part, rows, ld, cols, tmp);
  }
  sum_rows_stage2<T><<<bx, threads, 0, stream>>>(tmp, groups, cols, out);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace mambatrack::cuda::detail
