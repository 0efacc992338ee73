// What the selective-scan kernels use beyond emu.hpp: detail::ldg / load_row (plain loads),
// __expf, __fdividef, make_float4, and block-shared buffers standing in for static __shared__
// arrays (blocks run one after the other, so one buffer per array serves every block).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
namespace scan_emu {
constexpr std::size_t kStaticFloats = 8192;  // >= stage_tokens<N>() * N for every d_state
inline float g_static[2][kStaticFloats];
inline float* static_smem(int id) { return g_static[id]; }
}  // namespace scan_emu
namespace mambatrack::cuda::detail {
template <class T>
inline float ldg(const T* p) { return static_cast<float>(*p); }
template <class T, int N>
inline void load_row(const T* p, bool, float (&out)[N]) {
  for (int n = 0; n < N; ++n) out[n] = static_cast<float>(p[n]);
}
}  // namespace mambatrack::cuda::detail
