// CPU embedding in float: the gather copies rows in parallel over tokens; the scatter-add runs
// in parallel over blocks of channels, each block walking the tokens in order, so there are no
// races and the sums are the same for any thread count (see ops/embedding.hpp for the contract).
#pragma once

#include <algorithm>
#include <cstring>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/ops/embedding.hpp"

namespace mambatrack::cpu {

inline void embedding_fwd(const EmbeddingFwdArgs<float>& a) {
  a.check();
  ops::check_ids(a.ids, a.vocab(), "embedding");
  const int64_t d = a.dim();
  parallel_for(0, a.tokens(), [&](int64_t t) {
    std::memcpy(a.y.data + t * d, a.table.data + a.ids[t] * d, sizeof(float) * static_cast<std::size_t>(d));
  }, 256);
}

inline void embedding_bwd(const EmbeddingBwdArgs<float>& a) {
  a.check();
  ops::check_ids(a.ids, a.vocab(), "embedding backward");
  const int64_t d = a.dim(), n = a.tokens();
  constexpr int64_t kCols = 16;  // channels per block: one cache line of floats
  const int64_t nblocks = (d + kCols - 1) / kCols;
  parallel_for(0, nblocks, [&](int64_t blk) {
    const int64_t c0 = blk * kCols, c1 = std::min(d, c0 + kCols);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t id = a.ids[t];
      if (id == a.padding_idx) continue;
      float* dst = a.dtable.data + id * d;
      const float* src = a.dy.data + t * d;
      for (int64_t i = c0; i < c1; ++i) dst[i] += src[i];
    }
  });
}

}  // namespace mambatrack::cpu
