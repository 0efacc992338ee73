// V consecutive elements of float or bfloat16 storage as one access (V·sizeof(T) bytes, up to
// 16), converted to and from float: the vector loads and stores of kernels whose rows allow them
// (their launchers check the alignment, V·sizeof(T) bytes, of every pointer they pass, with
// all_aligned).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "mambatrack/core/dtype.hpp"

namespace mambatrack::cuda::detail {

// Elements of T in one 16-byte pack.
template <class T>
constexpr int kPack16 = static_cast<int>(16 / sizeof(T));

// True when every non-null pointer is a multiple of `bytes` (tensor data is at least 256-byte
// aligned, but views may start anywhere).
inline bool all_aligned(std::size_t bytes, std::initializer_list<const void*> ptrs) {
  for (const void* q : ptrs)
    if (q && reinterpret_cast<std::uintptr_t>(q) % bytes != 0) return false;
  return true;
}

template <class T, int V>
struct alignas(V * sizeof(T)) Pack {
  T v[V];
};
template <class T, int V>
__device__ __forceinline__ void load_pack(const T* p, int64_t i, float (&out)[V]) {
  const Pack<T, V> q = *reinterpret_cast<const Pack<T, V>*>(p + i);
#pragma unroll
  for (int k = 0; k < V; ++k) out[k] = static_cast<float>(q.v[k]);
}
template <class T, int V>
__device__ __forceinline__ void store_pack(T* p, int64_t i, const float (&in)[V]) {
  Pack<T, V> q;
#pragma unroll
  for (int k = 0; k < V; ++k) q.v[k] = static_cast<T>(in[k]);
  *reinterpret_cast<Pack<T, V>*>(p + i) = q;
}

}  // namespace mambatrack::cuda::detail
