// CUDA AdamW (torch.optim.AdamW, see optim/adamw.hpp) over the flat fp32 parameter buffer in
// one kernel: each thread updates its elements, decaying the weight unless the element lies in
// one of the no-decay ranges (sorted, binary-searched from shared memory). Same float
// operations in the same order as optim::adamw_step.
#pragma once

#include <vector>

#include "mambatrack/ops/cuda/common.cuh"
#include "mambatrack/optim/adamw.hpp"

namespace mambatrack::cuda {

namespace detail {

constexpr int kAdamMaxSharedRanges = 1024;  // no-decay ranges staged in shared memory

struct AdamWKernelArgs {
  float b1, b2, one_b1, one_b2, eps, step_size, bc2_sqrt, decay;
};

// The kernel's scalars for a step (the same floats on every path, so they agree bit for bit).
inline AdamWKernelArgs adamw_kernel_args(const optim::AdamWConfig& c, int64_t step) {
  const auto sc = optim::detail::adamw_scalars(c, step);
  return AdamWKernelArgs{static_cast<float>(c.beta1),         static_cast<float>(c.beta2),
                         static_cast<float>(1.0 - c.beta1),   static_cast<float>(1.0 - c.beta2),
                         static_cast<float>(c.eps),           static_cast<float>(sc.step_size),
                         static_cast<float>(sc.bc2_sqrt),     static_cast<float>(sc.decay_factor)};
}

// k_dev (deferred steps, CUDA graphs): the scalars are read from the device, and nothing is
// updated unless *apply is nonzero.
template <int kUnused = 0>
__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, const int64_t* __restrict__ ranges, int nranges,
                             AdamWKernelArgs k, const AdamWKernelArgs* __restrict__ k_dev = nullptr,
                             const int* __restrict__ apply = nullptr) {
  if (k_dev) {  // uniform over the grid
    if (!*apply) return;
    k = *k_dev;
  }
  // ranges: 2·nranges int64 (begin, end), sorted by begin, not overlapping.
  __shared__ int64_t sr[2 * kAdamMaxSharedRanges];
  const bool staged = nranges <= kAdamMaxSharedRanges;
  if (staged)
    for (int i = threadIdx.x; i < 2 * nranges; i += blockDim.x) sr[i] = ranges[i];
  __syncthreads();
  const int64_t* rr = staged ? sr : ranges;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // last range whose begin ≤ i
    int lo = 0, hi = nranges;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (rr[2 * mid] <= i) lo = mid + 1;
      else hi = mid;
    }
    const bool no_decay = lo > 0 && i < rr[2 * (lo - 1) + 1];
    const float f = no_decay ? 1.0f : k.decay;
    const float gi = g[i];
    const float mi = k.b1 * m[i] + k.one_b1 * gi;
    const float vi = k.b2 * v[i] + k.one_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * f - k.step_size * mi / (sqrtf(vi) / k.bc2_sqrt + k.eps);
  }
}

}  // namespace detail

// The no-decay ranges are copied to the device on each call (a few hundred bytes; a copy from
// pageable memory returns once the source is staged, so `ranges` may go out of scope).
inline void adamw_step(const optim::AdamWArgs<float, Cuda>& a, CudaContext& ctx) {
  a.check();
  const int64_t n = a.size();
  std::vector<int64_t> ranges;
  for (const auto& s : a.segments())
    if (!s.decay) {
      ranges.push_back(s.begin);
      ranges.push_back(s.end);
    }
  if (n == 0) return;
  const detail::AdamWKernelArgs k = detail::adamw_kernel_args(a.config, a.step);
  int64_t* dr = nullptr;
  if (!ranges.empty()) {
    dr = ctx.scratch_as<int64_t>(ranges.size(), 2);
    MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(dr, ranges.data(), ranges.size() * sizeof(int64_t),
                                          cudaMemcpyHostToDevice, ctx.stream()));
  }
  detail::adamw_kernel<><<<detail::grid_for(n, 256, 4096), 256, 0, ctx.stream()>>>(
      a.param.data, a.grad.data, a.exp_avg.data, a.exp_avg_sq.data, n, dr, static_cast<int>(ranges.size() / 2), k);
  detail::check_launch("adamw");
}

namespace detail {
// *out = k, queued on a stream (a step's scalars for the deferred form; no host buffer to keep).
template <int kUnused = 0>
__global__ void set_adamw_args_kernel(AdamWKernelArgs* out, AdamWKernelArgs k) {
  *out = k;
}
}  // namespace detail

// The deferred form (train/cuda_optimizer.cuh): `ranges` already on the device (2·nranges int64),
// the scalars and the apply flag read on the device. Queues one kernel; capturable.
inline void adamw_step_device(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                              const int64_t* ranges, int nranges, const detail::AdamWKernelArgs* args,
                              const int* apply, cudaStream_t stream) {
  if (n == 0) return;
  detail::adamw_kernel<><<<detail::grid_for(n, 256, 4096), 256, 0, stream>>>(
      param, grad, exp_avg, exp_avg_sq, n, ranges, nranges, detail::AdamWKernelArgs{}, args, apply);
  detail::check_launch("adamw");
}

}  // namespace mambatrack::cuda
