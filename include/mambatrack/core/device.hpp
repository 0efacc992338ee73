// Device tags and their memory: Host (64-byte aligned heap memory) and Cuda (cudaMalloc, never
// managed memory). DeviceMemory<Cuda> is defined in core/cuda_memory.cuh, so CPU translation
// units never see a CUDA header; a Tensor<T, Cuda> can only be used where that header is included.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

#include "mambatrack/core/error.hpp"

namespace mambatrack {

struct Host {
  static constexpr const char* kName = "host";
};
struct Cuda {
  static constexpr const char* kName = "cuda";
};

template <class Device>
struct DeviceMemory;  // allocate(bytes) -> void*, release(void*)

template <>
struct DeviceMemory<Host> {
  static constexpr std::size_t kAlignment = 64;  // a cache line; also enough for AVX-512 loads
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (!p) throw std::bad_alloc();
    return p;
  }
  static void release(void* p) noexcept { std::free(p); }
};

}  // namespace mambatrack
