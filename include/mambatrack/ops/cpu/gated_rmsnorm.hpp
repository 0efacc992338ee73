// CPU gated grouped RMSNorm in float (Mamba2's RMSNormGated, norm_before_gate = false):
// g = y·silu(z), out = g / sqrt(mean_group(g²) + eps) · weight; backward as in the reference.
// Tokens are split in fixed blocks; dweight is summed per block and then over blocks in order,
// so the result does not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/ops/gated_rmsnorm.hpp"

namespace mambatrack::cpu {

inline void gated_rmsnorm_fwd(const GatedRmsNormFwdArgs<float>& a) {
  const auto d = validate_gated_rmsnorm_fwd(a);
  const int64_t n = d.group_size(), ch = d.channels;
  const float inv_n = 1.0f / static_cast<float>(n);
  const float* w = a.weight.data;
  parallel_for(0, d.tokens, [&](int64_t t) {
    const float* y = a.y.data + t * ch;
    const float* z = a.z.data + t * ch;
    float* out = a.out.data + t * ch;
    for (int64_t i = 0; i < ch; ++i) out[i] = y[i] * z[i] / (1.0f + std::exp(-z[i]));  // g
    for (int64_t grp = 0; grp < d.ngroups; ++grp) {
      float* o = out + grp * n;
      float ss = 0;
      for (int64_t i = 0; i < n; ++i) ss += o[i] * o[i];
      const float r = 1.0f / std::sqrt(ss * inv_n + a.eps);
      for (int64_t i = 0; i < n; ++i) o[i] *= r * w[grp * n + i];
    }
  }, 16);
}

// dy, dz OVERWRITTEN; dweight ACCUMULATED (+=).
inline void gated_rmsnorm_bwd(const GatedRmsNormBwdArgs<float>& a) {
  const auto d = validate_gated_rmsnorm_bwd(a);
  const int64_t n = d.group_size(), ch = d.channels;
  const float inv_n = 1.0f / static_cast<float>(n);
  const float* w = a.weight.data;
  constexpr int64_t kBlock = 256;  // tokens per dweight partial sum
  const int64_t nblocks = (d.tokens + kBlock - 1) / kBlock;
  std::vector<float> partial(static_cast<std::size_t>(nblocks * ch), 0.0f);
  parallel_for(0, nblocks, [&](int64_t blk) {
    float* dw = partial.data() + blk * ch;
    for (int64_t t = blk * kBlock; t < std::min(d.tokens, (blk + 1) * kBlock); ++t) {
      const float* y = a.y.data + t * ch;
      const float* z = a.z.data + t * ch;
      const float* dout = a.dout.data + t * ch;
      float* dy = a.dy.data + t * ch;  // holds g, then the result
      float* dz = a.dz.data + t * ch;  // holds sigmoid(z), then the result
      for (int64_t i = 0; i < ch; ++i) {
        const float s = 1.0f / (1.0f + std::exp(-z[i]));
        dz[i] = s;
        dy[i] = y[i] * z[i] * s;
      }
      for (int64_t grp = 0; grp < d.ngroups; ++grp) {
        const int64_t o = grp * n;
        float ss = 0, dot = 0;
        for (int64_t i = o; i < o + n; ++i) {
          ss += dy[i] * dy[i];
          dot += w[i] * dout[i] * dy[i];
        }
        const float r = 1.0f / std::sqrt(ss * inv_n + a.eps);
        const float c = r * r * r * inv_n * dot;
        for (int64_t i = o; i < o + n; ++i) {
          const float g = dy[i], s = dz[i];
          dw[i] += dout[i] * g * r;
          const float dg = r * w[i] * dout[i] - g * c;
          dy[i] = dg * z[i] * s;
          dz[i] = dg * y[i] * s * (1.0f + z[i] * (1.0f - s));
        }
      }
    }
  });
  for (int64_t blk = 0; blk < nblocks; ++blk)
    for (int64_t i = 0; i < ch; ++i) a.dweight[i] += partial[blk * ch + i];
}

}  // namespace mambatrack::cpu
