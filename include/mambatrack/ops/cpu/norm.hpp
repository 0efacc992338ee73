// CPU RMSNorm / LayerNorm / add+norm in float (see ops/norm.hpp for the math and conventions):
// rows are processed in parallel; the weight/bias gradients are summed per fixed block of 64
// tokens and the blocks added in order, so results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/ops/cpu/workspace.hpp"
#include "mambatrack/ops/norm.hpp"

namespace mambatrack::cpu {

namespace detail {
constexpr int64_t kNormBlock = 64;  // tokens per partial-sum block of dw/db

inline void norm_row_stats(const float* x, int64_t d, NormKind kind, float eps, float& mu, float& r) {
  float s = 0;
  if (kind == NormKind::kLayer) {
    for (int64_t i = 0; i < d; ++i) s += x[i];
    s /= static_cast<float>(d);
  }
  mu = s;
  float v = 0;
  for (int64_t i = 0; i < d; ++i) v += (x[i] - s) * (x[i] - s);
  r = 1.0f / std::sqrt(v / static_cast<float>(d) + eps);
}
}  // namespace detail

inline void norm_fwd(const NormFwdArgs<float>& a) {
  a.check();
  const int64_t n = a.tokens(), d = a.dim();
  const float eps = static_cast<float>(a.eps);
  const float* w = a.w.data;
  const float* b = a.b.data;
  parallel_for(0, n, [&](int64_t t) {
    const float* x = a.x.data + t * d;
    float* y = a.y.data + t * d;
    float mu, r;
    detail::norm_row_stats(x, d, a.kind, eps, mu, r);
    if (b) {
      for (int64_t i = 0; i < d; ++i) y[i] = (x[i] - mu) * r * w[i] + b[i];
    } else {
      for (int64_t i = 0; i < d; ++i) y[i] = (x[i] - mu) * r * w[i];
    }
  }, 16);
}

inline void norm_bwd(const NormBwdArgs<float>& a) {
  a.check();
  const int64_t n = a.tokens(), d = a.dim();
  if (n == 0 || d == 0) return;
  const float eps = static_cast<float>(a.eps);
  const float* w = a.w.data;
  const bool want_dw = ops::present(a.dw), want_db = ops::present(a.db);
  const int64_t nblocks = (n + detail::kNormBlock - 1) / detail::kNormBlock;
  // partials: (nblocks, d) for dw then (nblocks, d) for db
  float* part = (want_dw || want_db) ? scratch_floats(static_cast<std::size_t>(2 * nblocks * d)) : nullptr;
  parallel_for(0, nblocks, [&](int64_t blk) {
    float* pdw = part ? part + blk * d : nullptr;
    float* pdb = part ? part + (nblocks + blk) * d : nullptr;
    if (part) {
      std::fill(pdw, pdw + d, 0.0f);
      std::fill(pdb, pdb + d, 0.0f);
    }
    const int64_t t1 = std::min(n, (blk + 1) * detail::kNormBlock);
    for (int64_t t = blk * detail::kNormBlock; t < t1; ++t) {
      const float* x = a.x.data + t * d;
      const float* dy = a.dy.data + t * d;
      float* dx = a.dx.data + t * d;
      float mu, r;
      detail::norm_row_stats(x, d, a.kind, eps, mu, r);
      float sum_g = 0, sum_gx = 0;
      for (int64_t i = 0; i < d; ++i) {
        const float xhat = (x[i] - mu) * r, g = dy[i] * w[i];
        sum_g += g;
        sum_gx += g * xhat;
      }
      if (part)
        for (int64_t i = 0; i < d; ++i) {
          pdw[i] += dy[i] * (x[i] - mu) * r;
          pdb[i] += dy[i];
        }
      const float mean_g = a.kind == NormKind::kLayer ? sum_g / static_cast<float>(d) : 0.0f;
      const float mean_gx = sum_gx / static_cast<float>(d);
      for (int64_t i = 0; i < d; ++i) {
        const float xhat = (x[i] - mu) * r;
        dx[i] = r * (dy[i] * w[i] - mean_g - xhat * mean_gx);
      }
    }
  });
  if (!part) return;
  // Sum the block partials in block order: deterministic for any thread count.
  parallel_for(0, d, [&](int64_t i) {
    float sdw = 0, sdb = 0;
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      sdw += part[blk * d + i];
      sdb += part[(nblocks + blk) * d + i];
    }
    if (want_dw) a.dw[i] += sdw;
    if (want_db) a.db[i] += sdb;
  }, 256);
}

inline void add_fwd(const AddArgs<float>& a) {
  a.check();
  const int64_t m = a.out.numel();
  constexpr int64_t kChunk = 16384;
  parallel_for(0, (m + kChunk - 1) / kChunk, [&](int64_t c) {
    const int64_t e = std::min(m, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < e; ++i) a.out[i] = a.a[i] + a.b[i];
  });
}

inline void add_norm_fwd(const AddNormFwdArgs<float>& a) {
  a.check();
  if (ops::present(a.residual_in)) {
    add_fwd({a.x, a.residual_in, a.residual});
  } else if (a.residual.data != a.x.data) {
    copy<float>(a.x, a.residual);
  }
  norm_fwd({a.residual, a.w, a.b, a.y, a.kind, a.eps});
}

inline void add_norm_bwd(const AddNormBwdArgs<float>& a) {
  a.check();
  norm_bwd(a.as_norm());
  if (ops::present(a.dresidual)) add_fwd({a.dsum, a.dresidual, a.dsum});
}

}  // namespace mambatrack::cpu
