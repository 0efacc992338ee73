// CPU float causal depthwise conv1d + optional SiLU (math in ops/causal_conv1d.hpp), forward and
// backward, templated on the kernel width DConv. Work unit: one sequence × a block of
// kConvBlock contiguous channels, so every tap is one vectorised pass over the block.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/supported.hpp"
#include "mambatrack/ops/causal_conv1d.hpp"
#include "mambatrack/ops/cpu/vec_math.hpp"

namespace mambatrack::cpu {

inline constexpr int kConvBlock = 64;

namespace conv_detail {

constexpr int kW = kConvBlock;

template <int K>
struct Block {
  alignas(64) float wT[K][kW];  // taps transposed: wT[j][c] = weight[c0 + c, j]
  alignas(64) float bias[kW];
  int64_t c0, w;
  Block(const CausalConv1dInputs<float>& in, int64_t blk, int64_t channels) : c0(blk * kW) {
    w = std::min<int64_t>(kW, channels - c0);
    for (int j = 0; j < K; ++j)
      for (int64_t c = 0; c < w; ++c) wT[j][c] = in.weight.data[(c0 + c) * K + j];
    for (int64_t c = 0; c < w; ++c) bias[c] = is_given(in.bias) ? in.bias.data[c0 + c] : 0.0f;
  }
  // acc = bias + Σ_j wT[j] · x[t - (K-1) + j] over the taps inside the sequence (i = t - start).
  void pre_activation(float* acc, const float* x, int64_t channels, int64_t t, int64_t i) const {
    for (int64_t c = 0; c < w; ++c) acc[c] = bias[c];
    for (int j = 0; j < K; ++j) {
      const int64_t back = (K - 1) - j;
      if (i < back) continue;
      const float* xr = x + (t - back) * channels + c0;
      for (int64_t c = 0; c < w; ++c) acc[c] += wT[j][c] * xr[c];
    }
  }
};

template <int K>
void fwd(const CausalConv1dFwdArgs<float>& a, const CausalConv1dSizes& s) {
  const int64_t C = s.channels, blocks = (C + kW - 1) / kW;
  const int64_t* cu = a.in.cu_seqlens.data;
  parallel_for(0, s.batch * blocks, [&](int64_t task) {
    const int64_t b = task / blocks;
    const Block<K> blk(a.in, task % blocks, C);
    alignas(64) float acc[kW];
    for (int64_t t = cu[b]; t < cu[b + 1]; ++t) {
      blk.pre_activation(acc, a.in.x.data, C, t, t - cu[b]);
      float* out = a.out.data + t * C + blk.c0;
      if (a.in.silu) {
        for (int64_t c = 0; c < blk.w; ++c) out[c] = acc[c] * sigmoid_approx(acc[c]);
      } else {
        for (int64_t c = 0; c < blk.w; ++c) out[c] = acc[c];
      }
    }
  });
}

template <int K>
void bwd(const CausalConv1dBwdArgs<float>& a, const CausalConv1dSizes& s) {
  const int64_t C = s.channels, blocks = (C + kW - 1) / kW;
  const int64_t* cu = a.in.cu_seqlens.data;
  // dweight and dbias sum over sequences: each of `parts` contiguous ranges of (sequence, block)
  // tasks sums into its own buffer, added in part order (deterministic for a thread count).
  const int64_t tasks = s.batch * blocks;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(tasks, num_threads()));
  const int64_t pstride = C * (K + 1);
  std::vector<float> partial(static_cast<std::size_t>(parts * pstride), 0.0f);
  parallel_for(0, parts, [&](int64_t part) {
    float* pw = partial.data() + part * pstride;
    float* pb = pw + C * K;
    for (int64_t task = part * tasks / parts; task < (part + 1) * tasks / parts; ++task) {
      const int64_t b = task / blocks, start = cu[b], end = cu[b + 1];
      const Block<K> blk(a.in, task % blocks, C);
      const int64_t c0 = blk.c0, w = blk.w;
      alignas(64) float dw[K][kW] = {}, db[kW] = {}, pre[kW], dp[kW];
      for (int64_t t = start; t < end; ++t) std::fill(a.dx.data + t * C + c0, a.dx.data + t * C + c0 + w, 0.0f);
      for (int64_t t = start; t < end; ++t) {
        const float* go = a.dout.data + t * C + c0;
        if (a.in.silu) {
          blk.pre_activation(pre, a.in.x.data, C, t, t - start);
          for (int64_t c = 0; c < w; ++c) {
            const float sg = sigmoid_approx(pre[c]);
            dp[c] = go[c] * sg * (1.0f + pre[c] * (1.0f - sg));  // silu' = σ(1 + x(1-σ))
          }
        } else {
          for (int64_t c = 0; c < w; ++c) dp[c] = go[c];
        }
        for (int64_t c = 0; c < w; ++c) db[c] += dp[c];
        for (int j = 0; j < K; ++j) {
          const int64_t back = (K - 1) - j;
          if (t - start < back) continue;
          const float* xr = a.in.x.data + (t - back) * C + c0;
          float* dxr = a.dx.data + (t - back) * C + c0;
          for (int64_t c = 0; c < w; ++c) {
            dxr[c] += blk.wT[j][c] * dp[c];
            dw[j][c] += xr[c] * dp[c];
          }
        }
      }
      for (int64_t c = 0; c < w; ++c) {
        for (int j = 0; j < K; ++j) pw[(c0 + c) * K + j] += dw[j][c];
        pb[c0 + c] += db[c];
      }
    }
  });
  for (int64_t part = 0; part < parts; ++part) {
    const float* pw = partial.data() + part * pstride;
    for (int64_t i = 0; i < C * K; ++i) a.dweight.data[i] += pw[i];
    if (is_given(a.in.bias))
      for (int64_t c = 0; c < C; ++c) a.dbias.data[c] += pw[C * K + c];
  }
}

}  // namespace conv_detail

// Forward. ShapeError for inconsistent shapes or cu_seqlens; ConfigError for a d_conv that is not
// compiled (core/supported.hpp lists them).
inline void causal_conv1d_fwd(const CausalConv1dFwdArgs<float>& a) {
  const CausalConv1dSizes s = validate_causal_conv1d(a);
  validate_cu_seqlens(a.in.cu_seqlens, s.tokens, "causal_conv1d");
  dispatch_value(SupportedDConv{}, static_cast<int>(s.d_conv), "d_conv",
                 [&](auto k) { conv_detail::fwd<decltype(k)::value>(a, s); });
}

// Backward: overwrites dx, accumulates dweight and dbias (recomputes the pre-activation for SiLU).
inline void causal_conv1d_bwd(const CausalConv1dBwdArgs<float>& a) {
  const CausalConv1dSizes s = validate_causal_conv1d(a);
  validate_cu_seqlens(a.in.cu_seqlens, s.tokens, "causal_conv1d");
  dispatch_value(SupportedDConv{}, static_cast<int>(s.d_conv), "d_conv",
                 [&](auto k) { conv_detail::bwd<decltype(k)::value>(a, s); });
}

}  // namespace mambatrack::cpu
