// Host emulation of the CUDA built-ins the SSD kernels use: one std::thread per CUDA thread,
// std::barrier for __syncthreads and warp shuffles, a per-block shared-memory buffer.
#pragma once
#include <barrier>
#include <cmath>
#include <math.h>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>
#include <memory>
#include <limits>
#include <cstdlib>
#include <cstdio>
#include "mambatrack/core/dtype.hpp"
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
namespace emu {
inline std::size_t kSmemLimit = 232448;
inline float* g_smem = nullptr;
inline std::barrier<>* g_bar = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> g_warp_bars;
inline std::vector<float> g_xch;
inline std::vector<double> g_xchd;
}  // namespace emu
inline void __syncthreads() { emu::g_bar->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int o) {
  const unsigned t = threadIdx.x, w = t / 32;
  emu::g_xch[t] = v;
  emu::g_warp_bars[w]->arrive_and_wait();
  const float r = emu::g_xch[t ^ static_cast<unsigned>(o)];
  emu::g_warp_bars[w]->arrive_and_wait();
  return r;
}
inline double __shfl_xor_sync(unsigned, double v, int o) {
  const unsigned t = threadIdx.x, w = t / 32;
  emu::g_xchd[t] = v;
  emu::g_warp_bars[w]->arrive_and_wait();
  const double r = emu::g_xchd[t ^ static_cast<unsigned>(o)];
  emu::g_warp_bars[w]->arrive_and_wait();
  return r;
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu::g_warp_bars[threadIdx.x / 32]->arrive_and_wait(); }
inline double __shfl_up_sync(unsigned, double v, unsigned o) {
  const unsigned t = threadIdx.x, w = t / 32;
  emu::g_xchd[t] = v;
  emu::g_warp_bars[w]->arrive_and_wait();
  const double r = t % 32 >= o ? emu::g_xchd[t - o] : v;
  emu::g_warp_bars[w]->arrive_and_wait();
  return r;
}
inline double __shfl_sync(unsigned, double v, int src) {
  const unsigned t = threadIdx.x, w = t / 32;
  emu::g_xchd[t] = v;
  emu::g_warp_bars[w]->arrive_and_wait();
  const double r = emu::g_xchd[w * 32 + static_cast<unsigned>(src)];
  emu::g_warp_bars[w]->arrive_and_wait();
  return r;
}
namespace emu {
// Runs body() once per thread of every block, blocks one after the other. smem_bytes of
// NaN-filled shared memory per block (exact size: ASan catches overruns).
template <class F>
void launch(dim3 grid, dim3 block, std::size_t smem_bytes, F body) {
  gridDim = grid;
  blockDim = block;
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      const std::size_t nf = smem_bytes / sizeof(float);
      const std::size_t alloc = (smem_bytes + 127) / 128 * 128 + 128;
      float* sm = static_cast<float*>(std::aligned_alloc(128, alloc));  // 128-byte aligned like __align__(128)
      for (std::size_t i = 0; i < alloc / sizeof(float); ++i) sm[i] = std::numeric_limits<float>::quiet_NaN();
      g_smem = nf > 0 ? sm : nullptr;
      std::barrier<> bar(block.x);
      g_bar = &bar;
      g_warp_bars.clear();
      for (unsigned w = 0; w < (block.x + 31) / 32; ++w) g_warp_bars.emplace_back(new std::barrier<>(32));
      g_xch.assign(block.x, 0.0f);
      g_xchd.assign(block.x, 0.0);
      std::vector<std::thread> th;
      th.reserve(block.x);
      for (unsigned t = 0; t < block.x; ++t)
        th.emplace_back([&, t] {
          threadIdx = dim3(t, 0, 0);
          blockIdx = dim3(bx, by, 0);
          body();
        });
      for (auto& x : th) x.join();
      std::free(sm);
    }
}
}  // namespace emu
namespace mambatrack::cuda::detail {
template <class T>
inline float ld(const T* p, int64_t i) { return static_cast<float>(p[i]); }
template <class T>
inline void st(T* p, int64_t i, float v) { p[i] = T(v); }
inline float softplus_f(float x) { return x <= 20.0f ? log1pf(expf(x)) : x; }
inline float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
}  // namespace mambatrack::cuda::detail

// WMMA emulation (16x16x16, bf16 in, float accumulate): every lane holds and computes the whole
// tile; the API's alignment rules (32-byte pointers, ldm multiple of 8 / 4) are checked.
struct __nv_bfloat16 {
  uint16_t bits;
};
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class Ty, class Layout = void>
struct fragment {
  float v[16][16];
};
inline void check_ptr(const void* p, unsigned ldm, unsigned mult) {
  if (reinterpret_cast<std::uintptr_t>(p) % 32 != 0 || ldm % mult != 0) {
    std::fprintf(stderr, "wmma: misaligned pointer %p or ldm %u\n", p, ldm);
    std::abort();
  }
}
inline float bf(const __nv_bfloat16& x) { return mambatrack::bf16_bits_to_float(x.bits); }
template <class Use, class Ty, class Layout>
void fill_fragment(fragment<Use, 16, 16, 16, Ty, Layout>& f, float x) {
  for (auto& r : f.v)
    for (float& e : r) e = x;
}
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, __nv_bfloat16, col_major>& f, const __nv_bfloat16* p,
                             unsigned ldm) {
  check_ptr(p, ldm, 8);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = bf(p[r + c * ldm]);
}
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, __nv_bfloat16, row_major>& f, const __nv_bfloat16* p,
                             unsigned ldm) {
  check_ptr(p, ldm, 8);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = bf(p[r * ldm + c]);
}
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, __nv_bfloat16, row_major>& f, const __nv_bfloat16* p,
                             unsigned ldm) {
  check_ptr(p, ldm, 8);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = bf(p[r * ldm + c]);
}
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, __nv_bfloat16, col_major>& f, const __nv_bfloat16* p,
                             unsigned ldm) {
  check_ptr(p, ldm, 8);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = bf(p[r + c * ldm]);
}
template <class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[16][16];
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col) {
      float s = c.v[r][col];
      for (int k = 0; k < 16; ++k) s += a.v[r][k] * b.v[k][col];
      out[r][col] = s;
    }
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col) d.v[r][col] = out[r][col];
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  check_ptr(p, ldm, 4);
  // Warp-collective: every lane has loaded its operands before any lane stores (the emulated
  // lanes each hold the whole tile and do not run in lockstep).
  emu::g_warp_bars[threadIdx.x / 32]->arrive_and_wait();
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) (l == mem_row_major ? p[r * ldm + c] : p[r + c * ldm]) = f.v[r][c];
}
}  // namespace nvcuda::wmma
namespace nvcuda::wmma {
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  check_ptr(p, ldm, 4);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = l == mem_row_major ? p[r * ldm + c] : p[r + c * ldm];
}
}  // namespace nvcuda::wmma
