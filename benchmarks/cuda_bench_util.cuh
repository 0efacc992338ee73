// Timing helpers of the CUDA benchmarks: the median of repeated runs timed with CUDA events
// after a warm-up, and the two ceilings other benchmarks compare with: device-to-device copy
// bandwidth (bytes read + written) and the bf16 GEMM rate through cuBLASLt (large square GEMM).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "mambatrack/cuda.cuh"
#include "mambatrack/ops/cuda/linear.cuh"

namespace mambatrack::bench {

namespace detail {
template <class T>
__global__ void fill_uniform_kernel(T* p, int64_t n, uint64_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = T(lo + (hi - lo) * philox_uniform(seed, 11, static_cast<uint64_t>(i)));
}
}  // namespace detail

// Fills a device buffer with uniform values in [lo, hi) (random data: GEMMs on constant inputs
// draw less power and run faster than on real data).
template <class T>
void fill_uniform(T* p, int64_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  if (n == 0) return;
  detail::fill_uniform_kernel<T><<<1024, 256>>>(p, n, seed, lo, hi);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
}

// Median seconds of `runs` calls of f() on `stream`, each bracketed by CUDA events.
template <class F>
double cuda_median_seconds(F&& f, cudaStream_t stream, int runs = 50, int warmup = 5) {
  for (int i = 0; i < warmup; ++i) f();
  cudaEvent_t a, b;
  MAMBATRACK_CUDA_CHECK(cudaEventCreate(&a));
  MAMBATRACK_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    MAMBATRACK_CUDA_CHECK(cudaEventRecord(a, stream));
    f();
    MAMBATRACK_CUDA_CHECK(cudaEventRecord(b, stream));
    MAMBATRACK_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    MAMBATRACK_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e-3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Device-to-device cudaMemcpyAsync bandwidth in bytes/s, read + written counted.
inline double cuda_copy_bandwidth(std::size_t bytes = std::size_t(1) << 30) {
  Tensor<uint8_t, Cuda> a({static_cast<int64_t>(bytes)}), b({static_cast<int64_t>(bytes)});
  MAMBATRACK_CUDA_CHECK(cudaMemset(a.data(), 1, bytes));
  const double s = cuda_median_seconds(
      [&] { MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, nullptr)); },
      nullptr, 20, 3);
  return 2.0 * static_cast<double>(bytes) / s;
}

// bf16 GEMM rate (FLOP/s, 2·n³ per GEMM) of y = x·Wᵀ, n×n×n, through cuBLASLt, random inputs.
inline double cuda_bf16_gemm_rate(int64_t n = 8192) {
  CudaContext ctx;
  Tensor<bfloat16, Cuda> x({n, n}), w({n, n}), y({n, n});
  fill_uniform(x.data(), x.numel(), 1);
  fill_uniform(w.data(), w.numel(), 2);
  LinearFwdArgs<bfloat16, Cuda> a{x.view(), w.view(), {}, y.view()};
  const double s = cuda_median_seconds([&] { mambatrack::cuda::linear_fwd(a, ctx); }, ctx.stream(), 20, 3);
  return 2.0 * static_cast<double>(n) * n * n / s;
}

}  // namespace mambatrack::bench
