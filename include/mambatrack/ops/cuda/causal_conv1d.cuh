// CUDA causal depthwise conv1d + optional SiLU (math and argument structs: ops/causal_conv1d.hpp):
// pre[t, c] = bias[c] + Σ_{j<K} w[c, j]·x[t-(K-1)+j, c] within each packed sequence, out = act(pre).
// One thread per channel (or pair of channels) over a tile of 64 tokens (warps read contiguous
// channels), the last K inputs in registers; the backward recomputes pre and writes per-tile dweight/dbias partials
// summed in a fixed order (no atomics).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/dtype.hpp"
#include "mambatrack/core/supported.hpp"
#include "mambatrack/ops/causal_conv1d.hpp"
#include "mambatrack/ops/cuda/kernel_util.cuh"
#include "mambatrack/ops/cuda/pack.cuh"

namespace mambatrack::cuda {

namespace conv_detail {

constexpr int kTok = 64;       // tokens per block
constexpr int kChannels = 128;  // threads per block (a block covers kChannels·CP channels)
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

// The window of the last K inputs of one channel, xw[K-1] the newest (token t), xw[j] token
// t-(K-1)+j; w[j] the weight of tap j. Tap j counts for token t when t-(K-1)+j is in t's sequence: K-1-j <= rel, rel = t -
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

// xw[k][j] = x[t0 - K + j] of channel c0 + k (0 before the first token): the window after token
// t0 - 1.
template <class T, int K, int CP>
__device__ __forceinline__ void preload_window(const Params<T>& p, int64_t t0, int64_t c0, float (&xw)[CP][K]) {
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int64_t src = t0 - K + j;
    float v[CP] = {};
    if (src >= 0) detail::load_pack<T, CP>(p.x, src * p.channels + c0, v);
#pragma unroll
    for (int k = 0; k < CP; ++k) xw[k][j] = v[k];
  }
}

// Forward: one thread per CP adjacent channels (CP = 2 where the channel count and the pointers
// allow paired accesses) walks its tile's tokens once with the last K inputs in registers, each
// group of kAhead tokens' loads issued before the first is used.
template <class T, int K, int CP>
__global__ void __launch_bounds__(kChannels) conv_fwd(Params<T> p) {
  const int64_t c0 = (blockIdx.y * static_cast<int64_t>(kChannels) + threadIdx.x) * CP;
  if (c0 >= p.channels) return;
  const int64_t t0 = blockIdx.x * static_cast<int64_t>(kTok);
  const int64_t t1 = t0 + kTok < p.tokens ? t0 + kTok : p.tokens;
  float w[CP][K], xw[CP][K], bias[CP];
#pragma unroll
  for (int k = 0; k < CP; ++k) {
    bias[k] = p.bias ? detail::ld(p.bias, c0 + k) : 0.0f;
#pragma unroll
    for (int j = 0; j < K; ++j) w[k][j] = detail::ld(p.w, (c0 + k) * K + j);
  }
  preload_window<T, K, CP>(p, t0, c0, xw);
  SeqCursor seq(p.cu, p.batch, t0);
  for (int64_t tb = t0; tb < t1; tb += kAhead) {
    float xs[kAhead][CP];  // the group's inputs, loaded before any is used
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
#pragma unroll
      for (int k = 0; k < CP; ++k) xs[u][k] = 0.0f;
      if (tb + u < t1) detail::load_pack<T, CP>(p.x, (tb + u) * p.channels + c0, xs[u]);
    }
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int64_t t = tb + u;
      if (t >= t1) break;
      seq.advance(t);
      float out[CP];
#pragma unroll
      for (int k = 0; k < CP; ++k) {
        shift_in(xw[k], xs[u][k]);
        const float pre = conv_taps(w[k], xw[k], bias[k], t - seq.start);
        out[k] = p.silu ? pre / (1.0f + expf(-pre)) : pre;
      }
      detail::store_pack<T, CP>(p.out, t * p.channels + c0, out);
    }
  }
}

// Backward: one thread per CP adjacent channels walks tokens t of its tile and the K-1 after it
// once, keeping the last K inputs and the last K pre-activation gradients g (with each one's
// position in its sequence) in registers: g[t] from the recomputed pre-activation, the
// dweight/dbias terms of the tile's tokens, and dx[s] for s = t-(K-1), which needs g[s..s+K-1] of
// s's sequence. Writes per-tile dweight/dbias partials, summed over the tiles in a fixed order
// afterwards.
template <class T, int K, int CP>
__global__ void __launch_bounds__(kChannels) conv_bwd(Params<T> p) {
  const int64_t c0 = (blockIdx.y * static_cast<int64_t>(kChannels) + threadIdx.x) * CP;
  if (c0 >= p.channels) return;
  const int64_t t0 = blockIdx.x * static_cast<int64_t>(kTok);
  const int64_t t1 = t0 + kTok < p.tokens ? t0 + kTok : p.tokens;
  float w[CP][K], dw[CP][K], xw[CP][K], gw[CP][K], bias[CP], db[CP];
  int64_t relw[K];  // position in its sequence of the token of gw[.][j]; -1: none
#pragma unroll
  for (int k = 0; k < CP; ++k) {
    bias[k] = p.bias ? detail::ld(p.bias, c0 + k) : 0.0f;
    db[k] = 0.0f;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      w[k][j] = detail::ld(p.w, (c0 + k) * K + j);
      dw[k][j] = 0.0f;
      gw[k][j] = 0.0f;
    }
  }
#pragma unroll
  for (int j = 0; j < K; ++j) relw[j] = -1;
  preload_window<T, K, CP>(p, t0, c0, xw);
  SeqCursor seq(p.cu, p.batch, t0);
  const int64_t t_stop = t1 + (K - 1);
  for (int64_t tb = t0; tb < t_stop; tb += kAhead) {
    float xs[kAhead][CP], ds[kAhead][CP];  // the group's inputs and output gradients, loaded first
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
#pragma unroll
      for (int k = 0; k < CP; ++k) xs[u][k] = ds[u][k] = 0.0f;
      if (tb + u < t_stop && tb + u < p.tokens) {
        detail::load_pack<T, CP>(p.x, (tb + u) * p.channels + c0, xs[u]);
        detail::load_pack<T, CP>(p.dout, (tb + u) * p.channels + c0, ds[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int64_t t = tb + u;
      if (t >= t_stop) break;
      int64_t rel = -1;
      if (t < p.tokens) {  // uniform over the block
        seq.advance(t);
        rel = t - seq.start;
      }
#pragma unroll
      for (int k = 0; k < CP; ++k) {
        float g = 0.0f;
        if (t < p.tokens) {
          shift_in(xw[k], xs[u][k]);
          g = ds[u][k];
          if (p.silu) {
            const float pre = conv_taps(w[k], xw[k], bias[k], rel);
            const float sg = 1.0f / (1.0f + expf(-pre));
            g *= sg * (1.0f + pre * (1.0f - sg));
          }
          if (t < t1) {  // token t as an output of this tile: its dweight and dbias terms
            db[k] += g;
#pragma unroll
            for (int j = 0; j < K; ++j)
              if (K - 1 - j <= rel) dw[k][j] += g * xw[k][j];
          }
        }
        shift_in(gw[k], g);
      }
#pragma unroll
      for (int j = 0; j + 1 < K; ++j) relw[j] = relw[j + 1];
      relw[K - 1] = rel;
      const int64_t s = t - (K - 1);  // gw[.][i] is g[s + i]; x[s] is tap K-1-i of token s + i
      if (s >= t0) {
        float dx[CP];
#pragma unroll
        for (int k = 0; k < CP; ++k) {
          dx[k] = 0.0f;
#pragma unroll
          for (int i = 0; i < K; ++i)
            if (relw[i] >= i) dx[k] += w[k][K - 1 - i] * gw[k][i];
        }
        detail::store_pack<T, CP>(p.dx, s * p.channels + c0, dx);
      }
    }
  }
  const int64_t row = blockIdx.x * (p.channels * (K + 1));
#pragma unroll
  for (int k = 0; k < CP; ++k) {
#pragma unroll
    for (int j = 0; j < K; ++j) p.part[row + (c0 + k) * K + j] = dw[k][j];
    p.part[row + p.channels * K + c0 + k] = db[k];
  }
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

// Channels per thread: 2 when the channel count is even and every per-token row pointer allows
// paired accesses, else 1.
template <class T>
int channels_per_thread(const Params<T>& p, std::initializer_list<const void*> ptrs) {
  return p.channels % 2 == 0 && detail::all_aligned(2 * sizeof(T), ptrs) ? 2 : 1;
}
inline dim3 grid_of(const CausalConv1dSizes& s, int cp) {
  return dim3(static_cast<unsigned>((s.tokens + kTok - 1) / kTok),
              static_cast<unsigned>((s.channels + kChannels * cp - 1) / (kChannels * cp)));
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
    constexpr int K = decltype(kc)::value;
    const int cp = conv_detail::channels_per_thread(p, {p.x, p.out});
    if (cp == 2) conv_detail::conv_fwd<T, K, 2><<<conv_detail::grid_of(s, 2), conv_detail::kChannels, 0, stream>>>(p);
    else conv_detail::conv_fwd<T, K, 1><<<conv_detail::grid_of(s, 1), conv_detail::kChannels, 0, stream>>>(p);
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
    constexpr int K = decltype(kc)::value;
    const int cp = conv_detail::channels_per_thread(p, {p.x, p.dout, p.dx});
    if (cp == 2) conv_detail::conv_bwd<T, K, 2><<<conv_detail::grid_of(s, 2), conv_detail::kChannels, 0, stream>>>(p);
    else conv_detail::conv_bwd<T, K, 1><<<conv_detail::grid_of(s, 1), conv_detail::kChannels, 0, stream>>>(p);
    MAMBATRACK_CUDA_CHECK(cudaGetLastError());
  });
  detail::sum_rows_accumulate<T>(p.part, tiles, W, s.channels * s.d_conv, tmp, a.dweight.data, stream);
  if (p.bias) detail::sum_rows_accumulate<T>(p.part + s.channels * s.d_conv, tiles, W, s.channels, tmp, a.dbias.data, stream);
}

}  // namespace mambatrack::cuda
