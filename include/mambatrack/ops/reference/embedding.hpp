// Reference embedding gather / scatter-add in double with plain loops (tests only):
// y[t, :] = table[ids[t], :]; dtable[ids[t], :] += dy[t, :] unless ids[t] is the padding index.
#pragma once

#include "mambatrack/ops/embedding.hpp"

namespace mambatrack::reference {

inline void embedding_fwd(const EmbeddingFwdArgs<double>& a) {
  a.check();
  ops::check_ids(a.ids, a.vocab(), "embedding");
  const int64_t d = a.dim();
  for (int64_t t = 0; t < a.tokens(); ++t)
    for (int64_t i = 0; i < d; ++i) a.y[t * d + i] = a.table[a.ids[t] * d + i];
}

inline void embedding_bwd(const EmbeddingBwdArgs<double>& a) {
  a.check();
  ops::check_ids(a.ids, a.vocab(), "embedding backward");
  const int64_t d = a.dim();
  for (int64_t t = 0; t < a.tokens(); ++t) {
    if (a.ids[t] == a.padding_idx) continue;
    for (int64_t i = 0; i < d; ++i) a.dtable[a.ids[t] * d + i] += a.dy[t * d + i];
  }
}

}  // namespace mambatrack::reference
