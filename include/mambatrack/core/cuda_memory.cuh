// CUDA half of core/: the CUDA status check (a failed call becomes a DeviceError naming the call
// and where it was made), device memory through cudaMalloc (never managed memory) with a cache
// of released blocks, and copies between host and device tensors.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack {

namespace detail {
inline void cuda_check(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // a non-sticky error must not resurface in the next, unrelated launch check
    throw DeviceError(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                      cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}
}  // namespace detail

#define MAMBATRACK_CUDA_CHECK(call) ::mambatrack::detail::cuda_check((call), #call, __FILE__, __LINE__)

// Device memory is cached: a released block goes to a free list of its device and the next
// allocation of a similar size (the request rounded up to 512 B, or to 2 MiB above 1 MiB; a
// cached block is taken when it is at most twice that) reuses it, so the workspaces that change
// shape with every packed batch cost neither cudaMalloc nor cudaFree (which waits for the whole
// device) in the steady state. When cudaMalloc fails, the cache is emptied and the call retried.
// Reuse follows stream order: a block released while a kernel on ANOTHER stream may still read it
// can be handed out again at once; synchronise such a stream before its tensors go (the library
// itself runs on one stream). cuda_release_cached_memory() gives the cache back to the driver.
//
// Bytes in live tensors now and at most so far ("peak GPU memory"), and bytes reserved from the
// driver (live + cached). cuBLASLt's own internal allocations, if any, are not included.
struct CudaMemoryStats {
  std::size_t current = 0, peak = 0, reserved = 0;
};

// CUDA graphs (nn/cuda_graph.cuh) bake device addresses in. While a capture is running, an
// allocation is an error (its block would be handed to someone else after the capture and
// overwritten by every replay); once a graph exists, the ops' grow-only scratch buffers are
// kept for the process instead of released when they grow (retain_captured_scratch).
struct CudaGraphState {
  bool capturing = false;
  bool captured = false;
};
inline CudaGraphState& cuda_graph_state() {
  static CudaGraphState s;
  return s;
}
namespace detail {
struct CudaAllocations {
  struct Block {
    std::size_t bytes;
    int device;
  };
  std::mutex mu;
  std::unordered_map<void*, Block> live;
  std::multimap<std::pair<int, std::size_t>, void*> cached;  // (device, bytes) -> block
  CudaMemoryStats stats;
  // Never destroyed: tensors with static storage may be released during program shutdown.
  static CudaAllocations& get() {
    static CudaAllocations* a = new CudaAllocations;
    return *a;
  }
  void release_cached_locked() {
    for (auto& kv : cached) {
      cudaFree(kv.second);
      stats.reserved -= kv.first.second;
    }
    cached.clear();
  }
};
inline std::size_t cuda_rounded_bytes(std::size_t bytes) {
  const std::size_t unit = bytes > (std::size_t(1) << 20) ? (std::size_t(2) << 20) : 512;
  return (bytes + unit - 1) / unit * unit;
}
}  // namespace detail
inline CudaMemoryStats cuda_memory_stats() {
  auto& a = detail::CudaAllocations::get();
  std::lock_guard<std::mutex> lock(a.mu);
  return a.stats;
}
inline std::size_t cuda_peak_allocated_bytes() { return cuda_memory_stats().peak; }
inline void cuda_release_cached_memory() {
  auto& a = detail::CudaAllocations::get();
  std::lock_guard<std::mutex> lock(a.mu);
  a.release_cached_locked();
}

template <>
struct DeviceMemory<Cuda> {
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    if (cuda_graph_state().capturing)
      throw DeviceError("device allocation of " + std::to_string(bytes) +
                        " bytes during CUDA-graph capture: every buffer of a captured step must exist before "
                        "the capture (run the step once eagerly with the same shapes first)");
    const std::size_t want = detail::cuda_rounded_bytes(bytes);
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
      cudaGetLastError();
      throw DeviceError("cudaGetDevice failed: no usable CUDA device for an allocation of " + std::to_string(bytes) +
                        " bytes");
    }
    auto& a = detail::CudaAllocations::get();
    std::lock_guard<std::mutex> lock(a.mu);
    void* p = nullptr;
    std::size_t got = want;
    auto it = a.cached.lower_bound({dev, want});
    if (it != a.cached.end() && it->first.first == dev && it->first.second <= 2 * want) {
      p = it->second;
      got = it->first.second;
      a.cached.erase(it);
    } else {
      cudaError_t status = cudaMalloc(&p, want);
      if (status == cudaErrorMemoryAllocation && !a.cached.empty()) {
        cudaGetLastError();
        a.release_cached_locked();  // give the cache back and try once more
        status = cudaMalloc(&p, want);
      }
      if (status != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error of a failed allocation
        throw DeviceError("cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + cudaGetErrorString(status) +
                          " (" + std::to_string(a.stats.current >> 20) + " MiB in use by mambatrack tensors)");
      }
      a.stats.reserved += want;
    }
    a.live[p] = {got, dev};
    a.stats.current += got;
    if (a.stats.current > a.stats.peak) a.stats.peak = a.stats.current;
    return p;
  }
  static void release(void* p) noexcept {
    if (!p) return;
    auto& a = detail::CudaAllocations::get();
    std::lock_guard<std::mutex> lock(a.mu);
    auto it = a.live.find(p);
    if (it == a.live.end()) return;  // not ours
    a.stats.current -= it->second.bytes;
    a.cached.emplace(std::make_pair(it->second.device, it->second.bytes), p);
    a.live.erase(it);
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
