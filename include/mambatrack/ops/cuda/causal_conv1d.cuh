// CUDA causal depthwise conv1d + optional SiLU (math and argument structs: ops/causal_conv1d.hpp):
// pre[t, c] = bias[c] + Σ_{j<K} w[c, j]·x[t-(K-1)+j, c] within each packed sequence, out = act(pre).
// One thread per channel over a tile of 64 tokens (warps read contiguous channels); the backward
// recomputes pre and writes per-tile dweight/dbias partials summed in a fixed order (no atomics).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/dtype.hpp"
#include "mambatrack/core/supported.hpp"
#include "mambatrack/ops/causal_conv1d.hpp"
#include "mambatrack/ops/cuda/kernel_util.cuh"

namespace mambatrack::cuda {

namespace conv_detail {

constexpr int kTok = 64;       // tokens per block
constexpr int kChannels = 128;  // channels per block

template <class T>
struct Params {
  const T *x = nullptr, *w = nullptr, *bias = nullptr, *dout = nullptr;
  const int64_t* cu = nullptr;
  T *out = nullptr, *dx = nullptr;
  float* part = nullptr;  // (tiles, C·K + C)
  int64_t tokens = 0, channels = 0, batch = 0;
  bool silu = true;
};

// [start, end) of the sequence holding token t: the last b with cu[b] <= t.
__device__ __forceinline__ void seq_range(const int64_t* __restrict cu, int64_t batch, int64_t t, int64_t& start,
                                          int64_t& end) {
  int64_t lo = 0, hi = batch - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (cu[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  start = cu[lo];
  end = cu[lo + 1];
}

template <class T, int K>
__device__ __forceinline__ float pre_at(const Params<T>& p, const float (&w)[K], float bias, int64_t start, int64_t t,
                                        int64_t c) {
  float acc = bias;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int64_t src = t - (K - 1) + j;
    if (src >= start) acc += w[j] * detail::ld(p.x, src * p.channels + c);
  }
  return acc;
}

template <class T, int K>
__global__ void __launch_bounds__(kChannels) conv_fwd(Params<T> p) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(kChannels) + threadIdx.x;
  if (c >= p.channels) return;
  float w[K];
#pragma unroll
  for (int j = 0; j < K; ++j) w[j] = detail::ld(p.w, c * K + j);
  const float bias = p.bias ? detail::ld(p.bias, c) : 0.0f;
  const int64_t t0 = blockIdx.x * static_cast<int64_t>(kTok);
  const int64_t t1 = t0 + kTok < p.tokens ? t0 + kTok : p.tokens;
  int64_t start = 0, end = -1;
  for (int64_t t = t0; t < t1; ++t) {
    if (t >= end) seq_range(p.cu, p.batch, t, start, end);
    const float pre = pre_at<T, K>(p, w, bias, start, t, c);
    detail::st(p.out, t * p.channels + c, p.silu ? pre / (1.0f + expf(-pre)) : pre);
  }
}

template <class T, int K>
__global__ void __launch_bounds__(kChannels) conv_bwd(Params<T> p) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(kChannels) + threadIdx.x;
  if (c >= p.channels) return;
  float w[K], dw[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    w[j] = detail::ld(p.w, c * K + j);
    dw[j] = 0.0f;
  }
  const float bias = p.bias ? detail::ld(p.bias, c) : 0.0f;
  const int64_t t0 = blockIdx.x * static_cast<int64_t>(kTok);
  const int64_t t1 = t0 + kTok < p.tokens ? t0 + kTok : p.tokens;
  auto dpre_at = [&](int64_t start, int64_t t) {
    float g = detail::ld(p.dout, t * p.channels + c);
    if (p.silu) {
      const float pre = pre_at<T, K>(p, w, bias, start, t, c);
      const float sg = 1.0f / (1.0f + expf(-pre));
      g *= sg * (1.0f + pre * (1.0f - sg));
    }
    return g;
  };
  float db = 0.0f;
  int64_t start = 0, end = -1;
  for (int64_t s = t0; s < t1; ++s) {
    if (s >= end) seq_range(p.cu, p.batch, s, start, end);
    float dx = 0.0f;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t t = s + (K - 1) - j;
      if (t < end) dx += w[j] * dpre_at(start, t);
    }
    detail::st(p.dx, s * p.channels + c, dx);
    // Token s as an output: its contributions to dweight and dbias.
    const float g = dpre_at(start, s);
    db += g;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t src = s - (K - 1) + j;
      if (src >= start) dw[j] += g * detail::ld(p.x, src * p.channels + c);
    }
  }
  const int64_t row = blockIdx.x * (p.channels * (K + 1));
#pragma unroll
  for (int j = 0; j < K; ++j) p.part[row + c * K + j] = dw[j];
  p.part[row + p.channels * K + c] = db;
}

template <class T>
constexpr void check_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bfloat16>,
                "cuda::causal_conv1d supports float and bfloat16 storage");
}

template <class T, class In>
Params<T> make_params(const In& in, const CausalConv1dSizes& s) {
  Params<T> p;
  p.x = in.x.data;
  p.w = in.weight.data;
  p.bias = is_given(in.bias) ? in.bias.data : nullptr;
  p.cu = in.cu_seqlens.data;
  p.tokens = s.tokens;
  p.channels = s.channels;
  p.batch = s.batch;
  p.silu = in.silu;
  return p;
}

inline dim3 grid_of(const CausalConv1dSizes& s) {
  return dim3(static_cast<unsigned>((s.tokens + kTok - 1) / kTok),
              static_cast<unsigned>((s.channels + kChannels - 1) / kChannels));
}

}  // namespace conv_detail

// Forward on `stream`. cu_seqlens lives on the device and must be valid (validate_cu_seqlens on
// the host before uploading).
template <class T>
void causal_conv1d_fwd(const CausalConv1dFwdArgs<T, Cuda>& a, cudaStream_t stream = nullptr) {
  conv_detail::check_type<T>();
  const CausalConv1dSizes s = validate_causal_conv1d(a);
  if (s.tokens == 0 || s.channels == 0) return;
  conv_detail::Params<T> p = conv_detail::make_params<T>(a.in, s);
  p.out = a.out.data;
  dispatch_value(SupportedDConv{}, static_cast<int>(s.d_conv), "causal_conv1d d_conv (CUDA)", [&](auto kc) {
    conv_detail::conv_fwd<T, decltype(kc)::value><<<conv_detail::grid_of(s), conv_detail::kChannels, 0, stream>>>(p);
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  });
}

// Backward on `stream`: overwrites dx, accumulates into dweight and dbias (fixed-order sums).
template <class T>
void causal_conv1d_bwd(const CausalConv1dBwdArgs<T, Cuda>& a, cudaStream_t stream = nullptr) {
  conv_detail::check_type<T>();
  const CausalConv1dSizes s = validate_causal_conv1d(a);
  if (s.tokens == 0 || s.channels == 0) return;
  conv_detail::Params<T> p = conv_detail::make_params<T>(a.in, s);
  p.dout = a.dout.data;
  p.dx = a.dx.data;
  const int64_t tiles = (s.tokens + conv_detail::kTok - 1) / conv_detail::kTok;
  const int64_t W = s.channels * (s.d_conv + 1);
  p.part = static_cast<float*>(detail::scratch(6, static_cast<std::size_t>(tiles * W) * sizeof(float)));
  float* tmp = static_cast<float*>(detail::scratch(7, static_cast<std::size_t>((tiles + 63) / 64 * W) * sizeof(float)));
  dispatch_value(SupportedDConv{}, static_cast<int>(s.d_conv), "causal_conv1d d_conv (CUDA)", [&](auto kc) {
    conv_detail::conv_bwd<T, decltype(kc)::value><<<conv_detail::grid_of(s), conv_detail::kChannels, 0, stream>>>(p);
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  });
  detail::sum_rows_accumulate<T>(p.part, tiles, W, s.channels * s.d_conv, tmp, a.dweight.data, stream);
  if (p.bias) detail::sum_rows_accumulate<T>(p.part + s.channels * s.d_conv, tiles, W, s.channels, tmp, a.dbias.data, stream);
}

}  // namespace mambatrack::cuda
