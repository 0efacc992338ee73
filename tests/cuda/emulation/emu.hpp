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
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
namespace emu {
inline std::size_t kSmemLimit = 232448;
inline float* g_smem = nullptr;
inline std::barrier<>* g_bar = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> g_warp_bars;
inline std::vector<float> g_xch;
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
      std::vector<float> sm(nf > 0 ? nf : 1, std::numeric_limits<float>::quiet_NaN());
      g_smem = nf > 0 ? sm.data() : nullptr;
      std::barrier<> bar(block.x);
      g_bar = &bar;
      g_warp_bars.clear();
      for (unsigned w = 0; w < (block.x + 31) / 32; ++w) g_warp_bars.emplace_back(new std::barrier<>(32));
      g_xch.assign(block.x, 0.0f);
      std::vector<std::thread> th;
      th.reserve(block.x);
      for (unsigned t = 0; t < block.x; ++t)
        th.emplace_back([&, t] {
          threadIdx = dim3(t, 0, 0);
          blockIdx = dim3(bx, by, 0);
          body();
        });
      for (auto& x : th) x.join();
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
