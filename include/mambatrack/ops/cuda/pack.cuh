// V consecutive elements of float or bfloat16 storage as one access (V·sizeof(T) bytes, up to
// 16), converted to and from float: the vector loads and stores of kernels whose rows allow them
// (their launchers check the alignment, V·sizeof(T) bytes, of every pointer they pass).
#pragma once

#include <cstdint>

#include "mambatrack/core/dtype.hpp"

namespace mambatrack::cuda::detail {

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
