// CUDA RMSNorm / LayerNorm and the fused residual-add + norm (see ops/norm.hpp for the math):
// one warp per token row, fp32 math for float and bf16 storage. The forward writes the residual
// (rounded to the storage type) and normalises that stored value, as the backward recomputes
// from it. Backward: dx (+ dresidual) per row; dw/db deterministic: per-part column sums over a
// fixed partition of 128 tokens (detail::rows_per_part), then the parts summed in order.
#pragma once

#include "mambatrack/ops/cuda/common.cuh"
#include "mambatrack/ops/norm.hpp"

namespace mambatrack::cuda {

namespace detail {

constexpr int kNormThreads = 256;  // 8 warps, one row each

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// residual_out absent: normalise x. Else residual_out = x (+ residual_in), normalise it.
template <class T>
__global__ void norm_fwd_kernel(const T* x, const T* residual_in, T* residual_out, const T* __restrict__ w,
                                const T* __restrict__ b, T* __restrict__ y, int64_t n, int64_t d, bool layer,
                                float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kNormThreads / 32) + (threadIdx.x >> 5);
  if (row >= n) return;
  const T* src = x + row * d;
  float s = 0;
  if (residual_out) {
    T* r = residual_out + row * d;
    const T* ri = residual_in ? residual_in + row * d : nullptr;
    for (int64_t i = lane; i < d; i += 32) {
      const T v = from_f<T>(to_f(src[i]) + (ri ? to_f(ri[i]) : 0.0f));
      r[i] = v;
      s += to_f(v);
    }
    src = r;
  } else {
    for (int64_t i = lane; i < d; i += 32) s += to_f(src[i]);
  }
  const float mu = layer ? warp_sum(s) / static_cast<float>(d) : 0.0f;
  float v = 0;
  for (int64_t i = lane; i < d; i += 32) {
    const float c = to_f(src[i]) - mu;
    v += c * c;
  }
  const float r = rsqrtf(warp_sum(v) / static_cast<float>(d) + eps);
  T* out = y + row * d;
  for (int64_t i = lane; i < d; i += 32) {
    const float o = (to_f(src[i]) - mu) * r * to_f(w[i]) + (b ? to_f(b[i]) : 0.0f);
    out[i] = from_f<T>(o);
  }
}

template <class T>
__device__ __forceinline__ void row_stats(const T* xr, int64_t d, bool layer, float eps, int lane, float& mu, float& r) {
  float s = 0;
  if (layer)
    for (int64_t i = lane; i < d; i += 32) s += to_f(xr[i]);
  mu = layer ? warp_sum(s) / static_cast<float>(d) : 0.0f;
  float v = 0;
  for (int64_t i = lane; i < d; i += 32) {
    const float c = to_f(xr[i]) - mu;
    v += c * c;
  }
  r = rsqrtf(warp_sum(v) / static_cast<float>(d) + eps);
}

// Per-row mean and 1/std into stats[2·row], stats[2·row + 1].
template <class T>
__global__ void norm_stats_kernel(const T* __restrict__ x, int64_t n, int64_t d, bool layer, float eps,
                                  float* __restrict__ stats) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kNormThreads / 32) + (threadIdx.x >> 5);
  if (row >= n) return;
  float mu, r;
  row_stats(x + row * d, d, layer, eps, lane, mu, r);
  if (lane == 0) {
    stats[2 * row] = mu;
    stats[2 * row + 1] = r;
  }
}

// dx = r·(g − mean(g) − xhat·mean(g·xhat)) (+ dres); g = dy·w. Stats recomputed, or read from
// `saved` when given; written to `stats_out` when given.
template <class T>
__global__ void norm_bwd_dx_kernel(const T* x, const T* __restrict__ w, const T* dy, const T* dres, T* dx, int64_t n,
                                   int64_t d, bool layer, float eps, const float* __restrict__ saved,
                                   float* __restrict__ stats_out) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * static_cast<int64_t>(kNormThreads / 32) + (threadIdx.x >> 5);
  if (row >= n) return;
  const T* xr = x + row * d;
  const T* dyr = dy + row * d;
  float mu, r;
  if (saved) {
    mu = saved[2 * row];
    r = saved[2 * row + 1];
  } else {
    row_stats(xr, d, layer, eps, lane, mu, r);
  }
  if (stats_out && lane == 0) {
    stats_out[2 * row] = mu;
    stats_out[2 * row + 1] = r;
  }
  float sg = 0, sgx = 0;
  for (int64_t i = lane; i < d; i += 32) {
    const float g = to_f(dyr[i]) * to_f(w[i]);
    sg += g;
    sgx += g * (to_f(xr[i]) - mu) * r;
  }
  const float mean_g = layer ? warp_sum(sg) / static_cast<float>(d) : 0.0f;
  const float mean_gx = warp_sum(sgx) / static_cast<float>(d);
  T* dxr = dx + row * d;
  const T* dr = dres ? dres + row * d : nullptr;
  for (int64_t i = lane; i < d; i += 32) {
    const float xhat = (to_f(xr[i]) - mu) * r;
    float v = r * (to_f(dyr[i]) * to_f(w[i]) - mean_g - xhat * mean_gx);
    if (dr) v += to_f(dr[i]);
    dxr[i] = from_f<T>(v);
  }
}

// part_dw[p, c] = Σ_{rows of part p} dy·xhat; part_db[p, c] = Σ dy (either may be null).
template <class T>
__global__ void norm_wb_partials_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                        const float* __restrict__ stats, int64_t n, int64_t d, int64_t rpp,
                                        float* __restrict__ part_dw, float* __restrict__ part_db) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= d) return;
  const int64_t r0 = blockIdx.y * rpp, r1 = min(n, r0 + rpp);
  float sw = 0, sb = 0;
  for (int64_t t = r0; t < r1; ++t) {
    const float g = to_f(dy[t * d + c]);
    sw += g * (to_f(x[t * d + c]) - stats[2 * t]) * stats[2 * t + 1];
    sb += g;
  }
  if (part_dw) part_dw[blockIdx.y * d + c] = sw;
  if (part_db) part_db[blockIdx.y * d + c] = sb;
}

inline bool overlaps(const void* a, const void* b, std::size_t bytes) {
  const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + bytes && y < x + bytes;
}

template <class T>
void norm_bwd_impl(const NormBwdArgs<T, Cuda>& a, const T* dres, CudaContext& ctx) {
  const int64_t n = a.tokens(), d = a.dim();
  if (n == 0 || d == 0) return;
  const bool layer = a.kind == NormKind::kLayer;
  const float eps = static_cast<float>(a.eps);
  const bool want_dw = ops::present(a.dw), want_db = ops::present(a.db);
  const unsigned rows_grid = static_cast<unsigned>((n + kNormThreads / 32 - 1) / (kNormThreads / 32));
  cudaStream_t s = ctx.stream();
  if (!want_dw && !want_db) {
    norm_bwd_dx_kernel<T><<<rows_grid, kNormThreads, 0, s>>>(a.x.data, a.w.data, a.dy.data, dres, a.dx.data, n, d,
                                                             layer, eps, nullptr, nullptr);
    check_launch(norm_name(a.kind));
    return;
  }
  float* stats = ctx.scratch_as<float>(static_cast<std::size_t>(2 * n), 0);
  const int64_t rpp = rows_per_part(n), parts = (n + rpp - 1) / rpp;
  float* part = ctx.scratch_as<float>(static_cast<std::size_t>(2 * parts * d), 1);
  float* part_dw = want_dw ? part : nullptr;
  float* part_db = want_db ? part + parts * d : nullptr;
  const dim3 pgrid(grid_for(d, 128), static_cast<unsigned>(parts));
  const std::size_t bytes = static_cast<std::size_t>(n * d) * sizeof(T);
  // dx overwriting x or dy would corrupt the partials' inputs: then the partials run first.
  const bool alias = overlaps(a.dx.data, a.dy.data, bytes) || overlaps(a.dx.data, a.x.data, bytes);
  if (alias) {
    norm_stats_kernel<T><<<rows_grid, kNormThreads, 0, s>>>(a.x.data, n, d, layer, eps, stats);
    norm_wb_partials_kernel<T><<<pgrid, 128, 0, s>>>(a.x.data, a.dy.data, stats, n, d, rpp, part_dw, part_db);
    norm_bwd_dx_kernel<T><<<rows_grid, kNormThreads, 0, s>>>(a.x.data, a.w.data, a.dy.data, dres, a.dx.data, n, d,
                                                             layer, eps, stats, nullptr);
  } else {
    norm_bwd_dx_kernel<T><<<rows_grid, kNormThreads, 0, s>>>(a.x.data, a.w.data, a.dy.data, dres, a.dx.data, n, d,
                                                             layer, eps, nullptr, stats);
    norm_wb_partials_kernel<T><<<pgrid, 128, 0, s>>>(a.x.data, a.dy.data, stats, n, d, rpp, part_dw, part_db);
  }
  check_launch(norm_name(a.kind));
  if (want_dw) sum_partials<T>(part_dw, parts, d, a.dw.data, s);
  if (want_db) sum_partials<T>(part_db, parts, d, a.db.data, s);
}

template <class T>
__global__ void add_kernel(const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
}

template <class T>
void norm_fwd_launch(const T* x, const T* rin, T* rout, const T* w, const T* b, T* y, int64_t n, int64_t d,
                     NormKind kind, double eps, cudaStream_t s) {
  if (n == 0 || d == 0) return;
  const unsigned grid = static_cast<unsigned>((n + kNormThreads / 32 - 1) / (kNormThreads / 32));
  norm_fwd_kernel<T><<<grid, kNormThreads, 0, s>>>(x, rin, rout, w, b, y, n, d, kind == NormKind::kLayer,
                                                    static_cast<float>(eps));
  check_launch(norm_name(kind));
}

}  // namespace detail

template <class T>
void norm_fwd(const NormFwdArgs<T, Cuda>& a, cudaStream_t stream) {
  a.check();
  detail::norm_fwd_launch<T>(a.x.data, nullptr, nullptr, a.w.data, a.b.data, a.y.data, a.tokens(), a.dim(), a.kind,
                             a.eps, stream);
}

// Needs the context for the dw/db partials and the saved row statistics.
template <class T>
void norm_bwd(const NormBwdArgs<T, Cuda>& a, CudaContext& ctx) {
  a.check();
  detail::norm_bwd_impl<T>(a, nullptr, ctx);
}

template <class T>
void add_fwd(const AddArgs<T, Cuda>& a, cudaStream_t stream) {
  a.check();
  const int64_t n = a.out.numel();
  if (n == 0) return;
  detail::add_kernel<T><<<detail::grid_for(n, 256), 256, 0, stream>>>(a.a.data, a.b.data, a.out.data, n);
  detail::check_launch("residual add");
}

// residual = x (+ residual_in) and y = norm(residual) in one pass over each row.
template <class T>
void add_norm_fwd(const AddNormFwdArgs<T, Cuda>& a, cudaStream_t stream) {
  a.check();
  detail::norm_fwd_launch<T>(a.x.data, a.residual_in.data, a.residual.data, a.w.data, a.b.data, a.y.data, a.tokens(),
                             a.dim(), a.kind, a.eps, stream);
}

// dsum = norm backward + dresidual, fused in the dx pass.
template <class T>
void add_norm_bwd(const AddNormBwdArgs<T, Cuda>& a, CudaContext& ctx) {
  a.check();
  detail::norm_bwd_impl<T>(a.as_norm(), a.dresidual.data, ctx);
}

}  // namespace mambatrack::cuda
