// CUDA losses (see ops/losses.hpp for the definitions, the mean reduction and grad_scale):
// cross-entropy with ignore index and MAMBA-PT/torch label smoothing (one warp per row,
// log-softmax as z − (max + log Σ e^(z − max))), BCE with logits and masked MSE (fixed chunks
// of 4096 elements per block). Per-row / per-chunk losses go to double partials summed in a
// fixed order (detail::ordered_sum): deterministic. Labels are checked and the counted elements
// counted first (integer atomics, exact; one sync), so the gradient scale 1/count is known
// before the gradients are written; the loss is read back with a second sync. With `result`
// (deferred) the kernels read the count on the device and the mean goes to `result`: no sync.
#pragma once

#include "mambatrack/ops/cuda/common.cuh"
#include "mambatrack/ops/losses.hpp"

namespace mambatrack::cuda {

namespace detail {

constexpr int64_t kLossChunk = 4096;  // elements per block of the elementwise losses
constexpr int kLossThreads = 256;

// counters[0] += tokens with a label ≠ ignore; counters[1] = min position of an invalid label.
template <int kUnused = 0>
__global__ void ce_count_kernel(const int64_t* __restrict__ labels, int64_t n, int64_t classes, int64_t ignore,
                                unsigned long long* __restrict__ counters) {
  unsigned long long c = 0;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t y = labels[t];
    if (y == ignore) continue;
    if (y < 0 || y >= classes) atomicMin(counters + 1, static_cast<unsigned long long>(t));
    ++c;
  }
  if (c) atomicAdd(counters, c);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_sum_f(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The gradient scale grad_scale / count, from the device count when there is one (deferred
// results); the same double division and rounding as the host's.
__device__ __forceinline__ float loss_scale(float scale, const unsigned long long* count, double grad_scale) {
  if (!count) return scale;
  return *count > 0 ? static_cast<float>(grad_scale / static_cast<double>(*count)) : 0.0f;
}

template <class T>
__global__ void cross_entropy_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                                     T* __restrict__ dlogits, int64_t n, int64_t v, int64_t ignore, float on,
                                     float off, double on_d, double off_d, float scale_h,
                                     const unsigned long long* __restrict__ count, double grad_scale,
                                     double* __restrict__ part) {
  const int lane = threadIdx.x & 31;
  const int64_t t = blockIdx.x * static_cast<int64_t>(kLossThreads / 32) + (threadIdx.x >> 5);
  if (t >= n) return;
  const T* z = logits + t * v;
  T* g = dlogits ? dlogits + t * v : nullptr;
  const int64_t y = labels[t];
  const bool bad = y != ignore && (y < 0 || y >= v);  // only where the caller skipped the check
  if (y == ignore || bad) {
    if (g)
      for (int64_t c = lane; c < v; c += 32) g[c] = from_f<T>(0.0f);
    if (lane == 0) part[t] = bad ? static_cast<double>(NAN) : 0.0;
    return;
  }
  const float scale = loss_scale(scale_h, count, grad_scale);
  float m = -INFINITY;
  for (int64_t c = lane; c < v; c += 32) m = fmaxf(m, to_f(z[c]));
  m = warp_max(m);
  float s = 0;
  double sum_z = 0;
  for (int64_t c = lane; c < v; c += 32) {
    const float zc = to_f(z[c]);
    s += expf(zc - m);
    sum_z += zc;
  }
  s = warp_sum_f(s);
  sum_z = warp_sum_d(sum_z);
  const float lse = m + logf(s);
  if (g) {
    const float inv = 1.0f / s;
    for (int64_t c = lane; c < v; c += 32) {
      float gc = scale * (expf(to_f(z[c]) - m) * inv - off);
      if (c == y) gc -= scale * (on - off);
      g[c] = from_f<T>(gc);
    }
  }
  if (lane == 0)
    part[t] = -(on_d - off_d) * (static_cast<double>(to_f(z[y])) - lse) -
              off_d * (sum_z - static_cast<double>(v) * static_cast<double>(lse));
}

template <class T, class Op>
__global__ void chunk_loss_kernel(Op op, int64_t n, double* __restrict__ part) {
  using Reduce = cub::BlockReduce<double, kLossThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int64_t b = blockIdx.x * kLossChunk, e = min(n, b + kLossChunk);
  op.prepare();
  double s = 0;
  for (int64_t i = b + threadIdx.x; i < e; i += kLossThreads) s += op(i);
  const double total = Reduce(tmp).Sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = total;
}

struct BceOp {
  const float* z;
  const float* y;
  float* g;
  float scale;
  __device__ void prepare() {}
  __device__ double operator()(int64_t i) const {
    const float zi = z[i], yi = y[i];
    if (g) g[i] = scale * (1.0f / (1.0f + expf(-zi)) - yi);
    return static_cast<double>(fmaxf(zi, 0.0f) - zi * yi + log1pf(expf(-fabsf(zi))));
  }
};

template <class T>
struct MseOp {
  const T* p;
  const float* t;
  const uint8_t* mask;
  T* g;
  float scale, pad;
  bool skip_pad;
  const unsigned long long* count = nullptr;  // deferred results: scale = 2·grad_scale / *count
  double grad_scale2 = 0;
  __device__ void prepare() { scale = loss_scale(scale, count, grad_scale2); }
  __device__ bool counted(int64_t i) const { return (!mask || mask[i] != 0) && !(skip_pad && t[i] == pad); }
  __device__ double operator()(int64_t i) const {
    const float d = to_f(p[i]) - t[i];
    const bool c = counted(i);
    if (g) g[i] = from_f<T>(c ? scale * d : 0.0f);
    return c ? static_cast<double>(d) * d : 0.0;
  }
};

template <class T>
__global__ void mse_count_kernel(MseOp<T> op, int64_t n, unsigned long long* __restrict__ count) {
  unsigned long long c = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    c += op.counted(i);
  if (c) atomicAdd(count, c);
}

// Sums `parts` doubles into a device double and reads it back (synchronises).
inline double read_total(const double* part, int64_t parts, CudaContext& ctx) {
  double* total = ctx.scratch_as<double>(1, 2);
  ordered_sum(part, parts, total, ctx.stream());
  double h = 0;
  MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(&h, total, sizeof(h), cudaMemcpyDeviceToHost, ctx.stream()));
  MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  return h;
}

// Deferred results: result = {Σ part / count + add, count} (0 loss for count 0), the partials
// summed in ordered_sum's order; NaN when `bad` holds a position (an invalid label).
template <int kUnused = 0>
__global__ void loss_finalize_kernel(const double* __restrict__ part, int64_t n, const unsigned long long* count,
                                     const unsigned long long* bad, double add, double* __restrict__ result) {
  using Reduce = cub::BlockReduce<double, kSumThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += kSumThreads) s += part[i];
  const double total = Reduce(tmp).Sum(s);
  if (threadIdx.x == 0) {
    const double c = static_cast<double>(*count);
    result[0] = bad && *bad != ~0ull ? static_cast<double>(NAN) : c > 0 ? total / c + add : 0.0;
    result[1] = c;
  }
}
// No elements: loss 0 over count 0, into `result` as well when there is one (queued).
inline LossResult empty_loss(View<double, Cuda> result, CudaContext& ctx) {
  LossResult r;
  if (ops::present(result)) {
    MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(result.data, 0, 2 * sizeof(double), ctx.stream()));
    r.count = -1;
  }
  return r;
}
template <int kUnused = 0>
__global__ void ce_counters_init_kernel(unsigned long long* counters) {
  counters[0] = 0ull;
  counters[1] = ~0ull;
}

template <class T>
LossResult cross_entropy_impl(const CrossEntropyArgs<T, Cuda>& a, CudaContext& ctx) {
  a.check();
  const int64_t n = a.tokens(), v = a.classes();
  LossResult r;
  if (n == 0) return empty_loss(a.result, ctx);
  cudaStream_t s = ctx.stream();
  double on_d, off_d;
  a.smoothing_weights(on_d, off_d);
  const unsigned grid = static_cast<unsigned>((n + kLossThreads / 32 - 1) / (kLossThreads / 32));
  if (ops::present(a.result)) {  // deferred: count, loss and mean on the device, nothing read back
    auto* counters = ctx.scratch_as<unsigned long long>(2, 2);
    ce_counters_init_kernel<><<<1, 1, 0, s>>>(counters);
    ce_count_kernel<><<<grid_for(n, 256, 1024), 256, 0, s>>>(a.labels.data, n, v, a.ignore_index, counters);
    double* part = ctx.scratch_as<double>(static_cast<std::size_t>(n), 0);
    cross_entropy_kernel<T><<<grid, kLossThreads, 0, s>>>(a.logits.data, a.labels.data, a.dlogits.data, n, v,
                                                         a.ignore_index, static_cast<float>(on_d),
                                                         static_cast<float>(off_d), on_d, off_d, 0.0f, counters,
                                                         a.grad_scale, part);
    loss_finalize_kernel<><<<1, kSumThreads, 0, s>>>(part, n, counters, counters + 1,
                                                    a.kl_divergence ? a.q_log_q() : 0.0, a.result.data);
    check_launch("cross_entropy");
    r.count = -1;
    return r;
  }
  if (a.host_count >= 0) {
    MAMBATRACK_CHECK_SHAPE(a.host_count <= n, "cross_entropy: host_count ", a.host_count, " exceeds the ", n,
                           " tokens");
    r.count = a.host_count;  // the caller counted (and checked) the labels on the host: no sync
  } else {
    auto* counters = ctx.scratch_as<unsigned long long>(2, 2);
    const unsigned long long init[2] = {0ull, ~0ull};
    MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(counters, init, sizeof(init), cudaMemcpyHostToDevice, s));
    ce_count_kernel<><<<grid_for(n, 256, 1024), 256, 0, s>>>(a.labels.data, n, v, a.ignore_index, counters);
    check_launch("cross_entropy");
    unsigned long long h[2];
    MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(h, counters, sizeof(h), cudaMemcpyDeviceToHost, s));
    MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(s));
    if (h[1] != ~0ull) {
      int64_t label = 0;
      MAMBATRACK_CUDA_CHECK(cudaMemcpy(&label, a.labels.data + h[1], sizeof(label), cudaMemcpyDeviceToHost));
      MAMBATRACK_CHECK_SHAPE(false, "cross_entropy: token ", h[1], " has label ", label, ", outside [0, ", v,
                             ") and not the ignore index ", a.ignore_index);
    }
    r.count = static_cast<int64_t>(h[0]);
  }
  const float scale = r.count > 0 ? static_cast<float>(a.grad_scale / static_cast<double>(r.count)) : 0.0f;
  double* part = ctx.scratch_as<double>(static_cast<std::size_t>(n), 0);
  cross_entropy_kernel<T><<<grid, kLossThreads, 0, s>>>(a.logits.data, a.labels.data, a.dlogits.data, n, v,
                                                       a.ignore_index, static_cast<float>(on_d),
                                                       static_cast<float>(off_d), on_d, off_d, scale, nullptr,
                                                       0.0, part);
  check_launch("cross_entropy");
  const double total = read_total(part, n, ctx);
  if (r.count > 0) r.loss = total / static_cast<double>(r.count) + (a.kl_divergence ? a.q_log_q() : 0.0);
  return r;
}

}  // namespace detail

inline LossResult cross_entropy(const CrossEntropyArgs<float, Cuda>& a, CudaContext& ctx) {
  return detail::cross_entropy_impl<float>(a, ctx);
}
// bf16 logits and dlogits; the softmax, the loss and its reduction in fp32/double.
inline LossResult cross_entropy(const CrossEntropyArgs<bfloat16, Cuda>& a, CudaContext& ctx) {
  return detail::cross_entropy_impl<bfloat16>(a, ctx);
}

inline LossResult bce_with_logits(const BceWithLogitsArgs<float, Cuda>& a, CudaContext& ctx) {
  a.check();
  const int64_t n = a.logits.numel();
  LossResult r;
  r.count = n;
  if (n == 0) return r;
  const int64_t parts = (n + detail::kLossChunk - 1) / detail::kLossChunk;
  double* part = ctx.scratch_as<double>(static_cast<std::size_t>(parts), 0);
  const detail::BceOp op{a.logits.data, a.targets.data, a.dlogits.data,
                         static_cast<float>(a.grad_scale / static_cast<double>(n))};
  detail::chunk_loss_kernel<float, detail::BceOp>
      <<<static_cast<unsigned>(parts), detail::kLossThreads, 0, ctx.stream()>>>(op, n, part);
  detail::check_launch("bce_with_logits");
  r.loss = detail::read_total(part, parts, ctx) / static_cast<double>(n);
  return r;
}

namespace detail {
template <class T>
LossResult masked_mse_impl(const MaskedMseArgs<T, Cuda>& a, CudaContext& ctx) {
  a.check();
  const int64_t n = a.predictions.numel();
  LossResult r;
  if (n == 0) return detail::empty_loss(a.result, ctx);
  cudaStream_t s = ctx.stream();
  detail::MseOp<T> op{a.predictions.data, a.targets.data, a.mask.data, a.dpredictions.data, 0.0f,
                   static_cast<float>(a.pad_value), a.skip_pad_targets};
  auto* count = ctx.scratch_as<unsigned long long>(1, 2);
  MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(count, 0, sizeof(*count), s));
  detail::mse_count_kernel<T><<<detail::grid_for(n, 256, 1024), 256, 0, s>>>(op, n, count);
  detail::check_launch("masked_mse");
  const int64_t parts = (n + detail::kLossChunk - 1) / detail::kLossChunk;
  if (ops::present(a.result)) {  // deferred: the scale from the device count, nothing read back
    op.count = count;
    op.grad_scale2 = 2.0 * a.grad_scale;
    double* part = ctx.scratch_as<double>(static_cast<std::size_t>(parts), 0);
    detail::chunk_loss_kernel<float, detail::MseOp<T>>
        <<<static_cast<unsigned>(parts), detail::kLossThreads, 0, s>>>(op, n, part);
    detail::loss_finalize_kernel<><<<1, detail::kSumThreads, 0, s>>>(part, parts, count, nullptr, 0.0,
                                                                     a.result.data);
    detail::check_launch("masked_mse");
    r.count = -1;
    return r;
  }
  unsigned long long h = 0;
  MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(&h, count, sizeof(h), cudaMemcpyDeviceToHost, s));
  MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(s));
  r.count = static_cast<int64_t>(h);
  op.scale = r.count > 0 ? static_cast<float>(2.0 * a.grad_scale / static_cast<double>(r.count)) : 0.0f;
  double* part = ctx.scratch_as<double>(static_cast<std::size_t>(parts), 0);
  detail::chunk_loss_kernel<float, detail::MseOp<T>><<<static_cast<unsigned>(parts), detail::kLossThreads, 0, s>>>(op, n, part);
  detail::check_launch("masked_mse");
  const double total = detail::read_total(part, parts, ctx);
  if (r.count > 0) r.loss = total / static_cast<double>(r.count);
  return r;
}
}  // namespace detail

inline LossResult masked_mse(const MaskedMseArgs<float, Cuda>& a, CudaContext& ctx) {
  return detail::masked_mse_impl<float>(a, ctx);
}
// bf16 predictions and dpredictions, fp32 targets; the difference, loss and reduction in fp32/double.
inline LossResult masked_mse(const MaskedMseArgs<bfloat16, Cuda>& a, CudaContext& ctx) {
  return detail::masked_mse_impl<bfloat16>(a, ctx);
}

}  // namespace mambatrack::cuda
