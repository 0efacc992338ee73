// CUDA gated grouped RMSNorm of Mamba2 (math and argument structs: ops/gated_rmsnorm.hpp):
//   g = y·silu(z),  out = g / sqrt(mean_group(g²) + eps) · weight,
// and its backward dg = r·w·dout − g·r³/n·Σ_group(w·dout·g), dy = dg·silu(z), dz = dg·y·silu'(z).
// One warp per (token, group), 16-byte accesses where the group size and the pointers allow
// (the row sums then add in a different order: results are bit-identical from run to run for the
// same buffers, and may differ in the last bits between the packed and the element-wise paths),
// float or bfloat16 storage, float math. dweight is deterministic: per-part column sums over a
// fixed partition of the tokens, then the parts summed in order.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/dtype.hpp"
#include "mambatrack/ops/cuda/kernel_util.cuh"
#include "mambatrack/ops/cuda/pack.cuh"
#include "mambatrack/ops/gated_rmsnorm.hpp"

namespace mambatrack::cuda {

namespace grn_detail {

constexpr int kThreads = 256;  // 8 warps, one (token, group) row each
constexpr int kRowsPerBlock = kThreads / 32;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float gate(float y, float z) { return y * z / (1.0f + expf(-z)); }

// Elements per access V of the row kernels: detail::kPack16<T> (16 bytes) when the group size and
// every pointer allow it (the host's choice, packs), else 1. A lane takes elements [i, i + V) for
// i = V·lane, V·(lane + 32), ...

// Σ g² over the row's elements of this lane.
template <class T, int V>
__device__ __forceinline__ float row_sumsq(const T* __restrict y, const T* __restrict z, int64_t base, int64_t n,
                                           int lane) {
  float ss = 0.0f;
  for (int64_t i = static_cast<int64_t>(lane) * V; i < n; i += 32 * V) {
    float yv[V], zv[V];
    detail::load_pack<T, V>(y, base + i, yv);
    detail::load_pack<T, V>(z, base + i, zv);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float g = gate(yv[k], zv[k]);
      ss += g * g;
    }
  }
  return ss;
}

// Forward: row = token·ngroups + group covers channels [group·n, group·n + n) of the token.
template <class T, int V = 1>
__global__ void fwd_kernel(const T* __restrict y, const T* __restrict z, const T* __restrict w, T* __restrict out,
                           int64_t rows, int64_t ngroups, int64_t n, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int64_t t = row / ngroups, grp = row % ngroups;
  const int64_t base = t * ngroups * n + grp * n;
  const float r = rsqrtf(warp_sum(row_sumsq<T, V>(y, z, base, n, lane)) / static_cast<float>(n) + eps);
  for (int64_t i = static_cast<int64_t>(lane) * V; i < n; i += 32 * V) {
    float yv[V], zv[V], wv[V], o[V];
    detail::load_pack<T, V>(y, base + i, yv);
    detail::load_pack<T, V>(z, base + i, zv);
    detail::load_pack<T, V>(w, grp * n + i, wv);
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = gate(yv[k], zv[k]) * r * wv[k];
    detail::store_pack<T, V>(out, base + i, o);
  }
}

// r = 1/sqrt(mean(g²) + eps) per row.
template <class T, int V = 1>
__global__ void stats_kernel(const T* __restrict y, const T* __restrict z, float* __restrict rstat, int64_t rows,
                             int64_t ngroups, int64_t n, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int64_t t = row / ngroups, grp = row % ngroups;
  const int64_t base = t * ngroups * n + grp * n;
  const float r = rsqrtf(warp_sum(row_sumsq<T, V>(y, z, base, n, lane)) / static_cast<float>(n) + eps);
  if (lane == 0) rstat[row] = r;
}

// part[p, c] = Σ_{t in part p} dout[t, c]·g[t, c]·r[t, c / n] (tokens in order).
template <class T>
__global__ void dweight_partials(const T* __restrict y, const T* __restrict z, const T* __restrict dout,
                                 const float* __restrict rstat, int64_t tokens, int64_t ch, int64_t n, int64_t rpp,
                                 float* __restrict part) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= ch) return;
  const int64_t ngroups = ch / n, grp = c / n;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * rpp, t1 = t0 + rpp < tokens ? t0 + rpp : tokens;
  float s = 0.0f;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t i = t * ch + c;
    s += detail::ld(dout, i) * gate(detail::ld(y, i), detail::ld(z, i)) * rstat[t * ngroups + grp];
  }
  part[static_cast<int64_t>(blockIdx.y) * ch + c] = s;
}

// dy, dz per row from the saved r. Each lane reads a pack of y, z, dout before it writes that
// pack of dy, dz (which may alias them element for element).
template <class T, int V = 1>
__global__ void dx_kernel(const T* y, const T* z, const T* __restrict w, const T* dout, const float* __restrict rstat,
                          T* dy, T* dz, int64_t rows, int64_t ngroups, int64_t n) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int64_t t = row / ngroups, grp = row % ngroups;
  const int64_t base = t * ngroups * n + grp * n;
  float dot = 0.0f;
  for (int64_t i = static_cast<int64_t>(lane) * V; i < n; i += 32 * V) {
    float yv[V], zv[V], wv[V], dv[V];
    detail::load_pack<T, V>(y, base + i, yv);
    detail::load_pack<T, V>(z, base + i, zv);
    detail::load_pack<T, V>(w, grp * n + i, wv);
    detail::load_pack<T, V>(dout, base + i, dv);
#pragma unroll
    for (int k = 0; k < V; ++k) dot += wv[k] * dv[k] * gate(yv[k], zv[k]);
  }
  dot = warp_sum(dot);
  const float r = rstat[row];
  const float kf = r * r * r / static_cast<float>(n) * dot;
  for (int64_t i = static_cast<int64_t>(lane) * V; i < n; i += 32 * V) {
    float yv[V], zv[V], wv[V], dv[V], oy[V], oz[V];
    detail::load_pack<T, V>(y, base + i, yv);
    detail::load_pack<T, V>(z, base + i, zv);
    detail::load_pack<T, V>(w, grp * n + i, wv);
    detail::load_pack<T, V>(dout, base + i, dv);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float s = 1.0f / (1.0f + expf(-zv[k]));
      const float g = yv[k] * zv[k] * s;
      const float dg = r * wv[k] * dv[k] - g * kf;
      oy[k] = dg * zv[k] * s;
      oz[k] = dg * yv[k] * s * (1.0f + zv[k] * (1.0f - s));
    }
    detail::store_pack<T, V>(dy, base + i, oy);
    detail::store_pack<T, V>(dz, base + i, oz);
  }
}

// True when the row kernels can take 16-byte packs: the group size a multiple of the pack and
// every pointer 16-byte aligned.
template <class T>
bool packs(int64_t n, std::initializer_list<const void*> ptrs) {
  return n % detail::kPack16<T> == 0 && detail::all_aligned(16, ptrs);
}

template <class T>
constexpr void check_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bfloat16>,
                "cuda::gated_rmsnorm supports float and bfloat16 storage");
}

}  // namespace grn_detail

// Forward on `stream`: out overwritten.
template <class T>
void gated_rmsnorm_fwd(const GatedRmsNormFwdArgs<T, Cuda>& a, cudaStream_t stream = nullptr) {
  grn_detail::check_type<T>();
  const GatedRmsNormDims d = validate_gated_rmsnorm_fwd(a);
  const int64_t rows = d.tokens * d.ngroups;
  if (rows == 0 || d.channels == 0) return;
  const unsigned grid = static_cast<unsigned>((rows + grn_detail::kRowsPerBlock - 1) / grn_detail::kRowsPerBlock);
  const bool packed = grn_detail::packs<T>(d.group_size(), {a.y.data, a.z.data, a.weight.data, a.out.data});
  const auto launch = [&](auto kernel) {
    kernel<<<grid, grn_detail::kThreads, 0, stream>>>(a.y.data, a.z.data, a.weight.data, a.out.data, rows, d.ngroups,
                                                      d.group_size(), static_cast<float>(a.eps));
  };
  if (packed) launch(grn_detail::fwd_kernel<T, detail::kPack16<T>>);
  else launch(grn_detail::fwd_kernel<T, 1>);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
}

// Backward on `stream`: dy, dz overwritten (they may alias y, z or dout element for element);
// dweight accumulated (+=), bit-identical from run to run (no atomics). Scratch ids 6 and 7.
template <class T>
void gated_rmsnorm_bwd(const GatedRmsNormBwdArgs<T, Cuda>& a, cudaStream_t stream = nullptr) {
  grn_detail::check_type<T>();
  const GatedRmsNormDims d = validate_gated_rmsnorm_bwd(a);
  const int64_t rows = d.tokens * d.ngroups, ch = d.channels, n = d.group_size();
  if (rows == 0 || ch == 0) return;
  const int64_t rpp = d.tokens / 65535 + 1 > 128 ? d.tokens / 65535 + 1 : 128;
  const int64_t parts = (d.tokens + rpp - 1) / rpp;
  // One scratch buffer: r per row, then the partials, then the tmp of sum_rows_accumulate.
  const std::size_t r_floats = static_cast<std::size_t>((rows + 63) / 64 * 64);
  const std::size_t part_floats = static_cast<std::size_t>(parts * ch);
  const std::size_t tmp_floats = static_cast<std::size_t>((parts + 63) / 64 * ch) + 1;
  float* rstat = static_cast<float*>(detail::scratch(6, (r_floats + part_floats + tmp_floats) * sizeof(float)));
  float* part = rstat + r_floats;
  float* tmp = part + part_floats;
  const unsigned grid = static_cast<unsigned>((rows + grn_detail::kRowsPerBlock - 1) / grn_detail::kRowsPerBlock);
  const float eps = static_cast<float>(a.eps);
  const bool packed =
      grn_detail::packs<T>(n, {a.y.data, a.z.data, a.weight.data, a.dout.data, a.dy.data, a.dz.data});
  if (packed)
    grn_detail::stats_kernel<T, detail::kPack16<T>>
        <<<grid, grn_detail::kThreads, 0, stream>>>(a.y.data, a.z.data, rstat, rows, d.ngroups, n, eps);
  else
    grn_detail::stats_kernel<T, 1><<<grid, grn_detail::kThreads, 0, stream>>>(a.y.data, a.z.data, rstat, rows, d.ngroups,
                                                                              n, eps);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  // The partials read y, z, dout before dy, dz are written (they may share memory).
  const dim3 pgrid(static_cast<unsigned>((ch + 127) / 128), static_cast<unsigned>(parts));
  grn_detail::dweight_partials<T><<<pgrid, 128, 0, stream>>>(a.y.data, a.z.data, a.dout.data, rstat, d.tokens, ch, n,
                                                               rpp, part);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  const auto launch_dx = [&](auto kernel) {
    kernel<<<grid, grn_detail::kThreads, 0, stream>>>(a.y.data, a.z.data, a.weight.data, a.dout.data, rstat, a.dy.data,
                                                      a.dz.data, rows, d.ngroups, n);
  };
  if (packed) launch_dx(grn_detail::dx_kernel<T, detail::kPack16<T>>);
  else launch_dx(grn_detail::dx_kernel<T, 1>);
  MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  detail::sum_rows_accumulate<T>(part, parts, ch, ch, tmp, a.dweight.data, stream);
}

}  // namespace mambatrack::cuda
