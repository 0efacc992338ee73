// CUDA half of core/: the CUDA status check (a failed call becomes a DeviceError naming the call
// and where it was made), device memory through cudaMalloc (never managed memory), and copies
// between host and device tensors.
#pragma once

#include <cuda_runtime.h>

#include <mutex>
#include <string>
#include <unordered_map>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack {

namespace detail {
inline void cuda_check(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) {
    throw DeviceError(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                      cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}
}  // namespace detail

#define MAMBATRACK_CUDA_CHECK(call) ::mambatrack::detail::cuda_check((call), #call, __FILE__, __LINE__)

// Bytes held in cudaMalloc'd tensors now and at most so far (what a run reports as its peak GPU
// memory; cuBLASLt's own internal allocations, if any, are not included). Allocation is rare (workspaces
// are reused), so a mutex-guarded size map costs nothing measurable.
struct CudaMemoryStats {
  std::size_t current = 0, peak = 0;
};
namespace detail {
struct CudaAllocations {
  std::mutex mu;
  std::unordered_map<void*, std::size_t> sizes;
  CudaMemoryStats stats;
  static CudaAllocations& get() {
    static CudaAllocations a;
    return a;
  }
};
}  // namespace detail
inline CudaMemoryStats cuda_memory_stats() {
  auto& a = detail::CudaAllocations::get();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.stats;
}
inline std::size_t cuda_peak_allocated_bytes() { return cuda_memory_stats().peak; }

template <>
struct DeviceMemory<Cuda> {
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    cudaError_t status = cudaMalloc(&p, bytes);
    if (status != cudaSuccess) {
      cudaGetLastError();  // clear the sticky error of a failed allocation
      throw DeviceError("cudaMalloc of " + std::to_string(bytes) + " bytes failed: " +
                        cudaGetErrorString(status));
    }
    auto& a = detail::CudaAllocations::get();
    std::lock_guard<std::mutex> lock(a.mu);
    a.sizes[p] = bytes;
    a.stats.current += bytes;
    if (a.stats.current > a.stats.peak) a.stats.peak = a.stats.current;
    return p;
  }
  static void release(void* p) noexcept {
    if (!p) return;
    cudaFree(p);
    auto& a = detail::CudaAllocations::get();
    std::lock_guard<std::mutex> lock(a.mu);
    auto it = a.sizes.find(p);
    if (it != a.sizes.end()) {
      a.stats.current -= it->second;
      a.sizes.erase(it);
    }
  }
};

// Number of CUDA devices (0 when there is no driver or no device).
inline int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

template <class T>
void copy(View<const T, Host> src, View<T, Cuda> dst, cudaStream_t stream = nullptr) {
  MAMBATRACK_CHECK_SHAPE(src.numel() == dst.numel(), "copy of ", src.shape, " into ", dst.shape);
  if (src.numel() == 0) return;
  MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyHostToDevice, stream));
  MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(stream));
}
template <class T>
void copy(View<const T, Cuda> src, View<T, Host> dst, cudaStream_t stream = nullptr) {
  MAMBATRACK_CHECK_SHAPE(src.numel() == dst.numel(), "copy of ", src.shape, " into ", dst.shape);
  if (src.numel() == 0) return;
  MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream));
  MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(stream));
}
template <class T>
void copy(View<const T, Cuda> src, View<T, Cuda> dst, cudaStream_t stream = nullptr) {
  MAMBATRACK_CHECK_SHAPE(src.numel() == dst.numel(), "copy of ", src.shape, " into ", dst.shape);
  if (src.numel() == 0) return;
  MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyDeviceToDevice, stream));
}

template <class T>
Tensor<T, Cuda> to_device(View<const T, Host> src) {
  Tensor<T, Cuda> out(src.shape);
  copy<T>(src, out.view());
  return out;
}
template <class T>
Tensor<T, Host> to_host(View<const T, Cuda> src) {
  Tensor<T, Host> out(src.shape);
  copy<T>(src, out.view());
  return out;
}

}  // namespace mambatrack
