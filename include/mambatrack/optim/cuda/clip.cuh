// CUDA gradient clipping over the flat fp32 gradient buffer (torch semantics, optim/clip.hpp):
// the global L2 norm in two deterministic passes (per-block double partials over fixed chunks of
// 16384 elements, then one block summing them in a fixed order), then g ·= max_norm/(N + 1e-6)
// when that is < 1; and clamping by value. A non-finite norm leaves g untouched.
#pragma once

#include <cmath>

#include "mambatrack/ops/cuda/common.cuh"
#include "mambatrack/optim/clip.hpp"

namespace mambatrack::cuda {

namespace detail {
constexpr int kClipThreads = 256;

template <int kUnused = 0>
__global__ void sumsq_partials_kernel(const float* __restrict__ g, int64_t n, double* __restrict__ part) {
  using Reduce = cub::BlockReduce<double, kClipThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int64_t b = blockIdx.x * optim::detail::kClipChunk, e = min(n, b + optim::detail::kClipChunk);
  double s = 0;
  for (int64_t i = b + threadIdx.x; i < e; i += kClipThreads) s += static_cast<double>(g[i]) * g[i];
  const double total = Reduce(tmp).Sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = total;
}

template <int kUnused = 0>
__global__ void scale_kernel(float* g, int64_t n, float f) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    g[i] *= f;
}

template <int kUnused = 0>
__global__ void clamp_kernel(float* g, int64_t n, float c) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    g[i] = fminf(fmaxf(g[i], -c), c);
}
// A deferred step's control block (train/cuda_optimizer.cuh), filled on the device.
struct StepControl {
  double norm;  // ‖g‖₂ before clipping
  float coef;   // the clipping factor, 1 when no clipping applies
  int apply;    // 1: update; 0: skip (a non-finite norm or stat)
};

// From Σg² and the task's stats: the norm, the clip_grad_norm factor (clip_norm > 0; the same
// double arithmetic as the host path) and whether the step may be applied.
template <int kUnused = 0>
__global__ void step_control_kernel(const double* __restrict__ sumsq, const double* __restrict__ stats,
                                    int64_t nstats, double clip_norm, StepControl* __restrict__ out) {
  __shared__ int finite;
  if (threadIdx.x == 0) finite = 1;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < nstats; i += blockDim.x)
    if (!isfinite(stats[i])) finite = 0;  // benign race: every writer stores 0
  __syncthreads();
  if (threadIdx.x != 0) return;
  const double norm = sqrt(*sumsq);
  float coef = 1.0f;
  if (clip_norm > 0 && isfinite(norm)) {
    const double c = clip_norm / (norm + optim::kClipNormEps);
    if (c < 1.0) coef = static_cast<float>(c);
  }
  out->norm = norm;
  out->coef = coef;
  out->apply = finite && isfinite(norm) ? 1 : 0;
}

// g ·= ctl->coef when that is below 1 (and the step is applied).
template <int kUnused = 0>
__global__ void scale_by_control_kernel(float* g, int64_t n, const StepControl* __restrict__ ctl) {
  const float f = ctl->coef;
  if (!(f < 1.0f) || !ctl->apply) return;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    g[i] *= f;
}
}  // namespace detail

// Σg² into the device double *out (no synchronisation; capturable).
inline void grad_sumsq_device(View<const float, Cuda> g, double* out, CudaContext& ctx) {
  const int64_t n = g.numel();
  if (n == 0) {
    MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(double), ctx.stream()));
    return;
  }
  const int64_t parts = (n + optim::detail::kClipChunk - 1) / optim::detail::kClipChunk;
  double* part = ctx.scratch_as<double>(static_cast<std::size_t>(parts), 0);
  detail::sumsq_partials_kernel<><<<static_cast<unsigned>(parts), detail::kClipThreads, 0, ctx.stream()>>>(g.data, n,
                                                                                                         part);
  detail::check_launch("grad_norm");
  detail::ordered_sum(part, parts, out, ctx.stream());
}

// ‖g‖₂, accumulated in double (synchronises to return it).
inline double grad_norm(View<const float, Cuda> g, CudaContext& ctx) {
  const int64_t n = g.numel();
  if (n == 0) return 0.0;
  const int64_t parts = (n + optim::detail::kClipChunk - 1) / optim::detail::kClipChunk;
  double* part = ctx.scratch_as<double>(static_cast<std::size_t>(parts), 0);
  detail::sumsq_partials_kernel<><<<static_cast<unsigned>(parts), detail::kClipThreads, 0, ctx.stream()>>>(g.data, n,
                                                                                                         part);
  detail::check_launch("grad_norm");
  double* total = ctx.scratch_as<double>(1, 2);
  detail::ordered_sum(part, parts, total, ctx.stream());
  double h = 0;
  MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(&h, total, sizeof(h), cudaMemcpyDeviceToHost, ctx.stream()));
  MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  return std::sqrt(h);
}

// Returns the norm before clipping.
inline double clip_grad_norm(View<float, Cuda> g, double max_norm, CudaContext& ctx) {
  optim::detail::check_clip(max_norm, "clip_grad_norm: max_norm");
  const double norm = grad_norm(g, ctx);
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + optim::kClipNormEps);
  if (coef < 1.0 && g.numel() > 0) {
    detail::scale_kernel<><<<detail::grid_for(g.numel(), 256, 4096), 256, 0, ctx.stream()>>>(
        g.data, g.numel(), static_cast<float>(coef));
    detail::check_launch("clip_grad_norm");
  }
  return norm;
}

inline void clip_grad_value(View<float, Cuda> g, double clip_value, cudaStream_t stream = nullptr) {
  optim::detail::check_clip(clip_value, "clip_grad_value: clip value");
  if (g.numel() == 0) return;
  detail::clamp_kernel<><<<detail::grid_for(g.numel(), 256, 4096), 256, 0, stream>>>(g.data, g.numel(),
                                                                                     static_cast<float>(clip_value));
  detail::check_launch("clip_grad_value");
}

}  // namespace mambatrack::cuda
