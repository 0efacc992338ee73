// CUDA causal depthwise conv1d + optional SiLU (math and argument structs: ops/causal_conv1d.hpp):
// pre[t, c] = bias[c] + Σ_{j<K} w[c, j]·x[t-(K-1)+j, c] within each packed sequence, out = act(pre).
// One thread per channel over a tile of 64 tokens (warps read contiguous channels), the last K
// inputs in registers; the backward recomputes pre and writes per-tile dweight/dbias partials
// summed in a fixed order (no atomics).
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
constexpr int kAhead = 8;       // tokens whose loads a thread issues before it uses the first

template <class T>
struct Params {
  const T *x = nullptr, *w = nullptr, *bias = nullptr, *dout = nullptr;
  const int64_t* cu = nullptr;
  T *out = nullptr, *dx = nullptr;
  float* part = nullptr;  // (tiles, C·K + C)
  int64_t tokens = 0, channels = 0, batch = 0;
  bool silu = true;
};

// The sequence holding token t, tracked along a thread's walk over increasing tokens: one binary
// search at the first token, then a step to the next non-empty sequence at each boundary.
struct SeqCursor {
  const int64_t* __restrict cu;
  int64_t batch, b = 0, start = 0, end = 0;
  __device__ SeqCursor(const int64_t* __restrict c, int64_t nb, int64_t t) : cu(c), batch(nb) {
    int64_t lo = 0, hi = nb - 1;  // the last b with cu[b] <= t
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (cu[mid] <= t) lo = mid;
      else hi = mid - 1;
    }
    b = lo;
    start = cu[b];
    end = cu[b + 1];
  }
  // Tokens past cu[batch] (impossible for validated cu_seqlens) stay in the last sequence.
  __device__ __forceinline__ void advance(int64_t t) {
    while (t >= end && b + 1 < batch) {
      ++b;
      start = cu[b];
      end = cu[b + 1];
    }
  }
};

// The window of the last K inputs of one channel, w[K-1] the newest (token t), w[j] token
// t-(K-1)+j. Tap j counts for token t when t-(K-1)+j is in t's sequence: K-1-j <= rel, rel = t -
// its sequence's start.
template <int K>
__device__ __forceinline__ float conv_taps(const float (&w)[K], const float (&xw)[K], float bias, int64_t rel) {
  float acc = bias;
#pragma unroll
  for (int j = 0; j < K; ++j)
    if (K - 1 - j <= rel) acc += w[j] * xw[j];
  return acc;
}
template <int K>
__device__ __forceinline__ void shift_in(float (&win)[K], float v) {
#pragma unroll
  for (int j = 0; j + 1 < K; ++j) win[j] = win[j + 1];
  win[K - 1] = v;
}

// Forward: one thread per channel walks its tile's tokens once with the last K inputs in
// registers (one load per token).
template <class T, int K>
__global__ void __launch_bounds__(kChannels) conv_fwd(Params<T> p) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(kChannels) + threadIdx.x;
  if (c >= p.channels) return;
  float w[K], xw[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    w[j] = detail::ld(p.w, c * K + j);
    const int64_t src = blockIdx.x * static_cast<int64_t>(kTok) - K + j;  // xw after shifting in t0 - 1
    xw[j] = src >= 0 ? detail::ld(p.x, src * p.channels + c) : 0.0f;
  }
  const float bias = p.bias ? detail::ld(p.bias, c) : 0.0f;
  const int64_t t0 = blockIdx.x * static_cast<int64_t>(kTok);
  const int64_t t1 = t0 + kTok < p.tokens ? t0 + kTok : p.tokens;
  SeqCursor seq(p.cu, p.batch, t0);
  for (int64_t tb = t0; tb < t1; tb += kAhead) {
    float xs[kAhead];  // the group's inputs, loaded before any is used
#pragma unroll
    for (int u = 0; u < kAhead; ++u) xs[u] = tb + u < t1 ? detail::ld(p.x, (tb + u) * p.channels + c) : 0.0f;
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int64_t t = tb + u;
      if (t >= t1) break;
      seq.advance(t);
      shift_in(xw, xs[u]);
      const float pre = conv_taps(w, xw, bias, t - seq.start);
      detail::st(p.out, t * p.channels + c, p.silu ? pre / (1.0f + expf(-pre)) : pre);
    }
  }
}

// Backward: one thread per channel walks tokens t of its tile and the K-1 after it once, keeping
// the last K inputs and the last K pre-activation gradients g (with each one's position in its
// sequence) in registers: g[t] from the recomputed pre-activation, the dweight/dbias terms of
// the tile's tokens, and dx[s] for s = t-(K-1), which needs g[s..s+K-1] of s's sequence. Writes
// per-tile dweight/dbias partials, summed over the tiles in a fixed order afterwards.
template <class T, int K>
__global__ void __launch_bounds__(kChannels) conv_bwd(Params<T> p) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(kChannels) + threadIdx.x;
  if (c >= p.channels) return;
  const int64_t t0 = blockIdx.x * static_cast<int64_t>(kTok);
  const int64_t t1 = t0 + kTok < p.tokens ? t0 + kTok : p.tokens;
  float w[K], dw[K], xw[K], gw[K];
  int64_t relw[K];  // position in its sequence of the token of gw[j]; -1: none
#pragma unroll
  for (int j = 0; j < K; ++j) {
    w[j] = detail::ld(p.w, c * K + j);
    dw[j] = 0.0f;
    const int64_t src = t0 - K + j;
    xw[j] = src >= 0 ? detail::ld(p.x, src * p.channels + c) : 0.0f;
    gw[j] = 0.0f;
    relw[j] = -1;
  }
  const float bias = p.bias ? detail::ld(p.bias, c) : 0.0f;
  float db = 0.0f;
  SeqCursor seq(p.cu, p.batch, t0);
  const int64_t t_stop = t1 + (K - 1);
  for (int64_t tb = t0; tb < t_stop; tb += kAhead) {
    float xs[kAhead], ds[kAhead];  // the group's inputs and output gradients, loaded first
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const bool in = tb + u < t_stop && tb + u < p.tokens;
      xs[u] = in ? detail::ld(p.x, (tb + u) * p.channels + c) : 0.0f;
      ds[u] = in ? detail::ld(p.dout, (tb + u) * p.channels + c) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int64_t t = tb + u;
      if (t >= t_stop) break;
      float g = 0.0f;
      int64_t rel = -1;
      if (t < p.tokens) {  // uniform over the block
        seq.advance(t);
        rel = t - seq.start;
        shift_in(xw, xs[u]);
        g = ds[u];
        if (p.silu) {
          const float pre = conv_taps(w, xw, bias, rel);
          const float sg = 1.0f / (1.0f + expf(-pre));
          g *= sg * (1.0f + pre * (1.0f - sg));
        }
        if (t < t1) {  // token t as an output of this tile: its dweight and dbias terms
          db += g;
#pragma unroll
          for (int j = 0; j < K; ++j)
            if (K - 1 - j <= rel) dw[j] += g * xw[j];
        }
      }
      shift_in(gw, g);
#pragma unroll
      for (int j = 0; j + 1 < K; ++j) relw[j] = relw[j + 1];
      relw[K - 1] = rel;
      const int64_t s = t - (K - 1);  // gw[i] is g[s + i]; x[s] is tap K-1-i of token s + i
      if (s >= t0) {
        float dx = 0.0f;
#pragma unroll
        for (int i = 0; i < K; ++i)
          if (relw[i] >= i) dx += w[K - 1 - i] * gw[i];
        detail::st(p.dx, s * p.channels + c, dx);
      }
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
