// CUDA half of core/: the CUDA status check (a failed call becomes a DeviceError naming the call
// and where it was made), device memory through cudaMalloc (never managed memory), and copies
// between host and device tensors.
#pragma once

#include <cuda_runtime.h>

#include <string>

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
    return p;
  }
  static void release(void* p) noexcept {
    if (p) cudaFree(p);
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
