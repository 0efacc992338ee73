// Embedding gather, arguments shared by every backend: y[t] = table[ids[t]], ids int64 (tokens),
// table (vocab, dim). Backward is a scatter-add: dtable[ids[t]] += dy[t], ACCUMULATED, except
// for the padding index (as torch's padding_idx, its row gets no gradient). An id outside
// [0, vocab) is a ShapeError naming the id, its position and the vocabulary size.
#pragma once

#include <cstdint>

#include "mambatrack/core/tensor.hpp"
#include "mambatrack/ops/view_checks.hpp"

namespace mambatrack {

constexpr int64_t kNoPadding = -1;

template <class T, class Device = Host>
struct EmbeddingFwdArgs {
  View<const int64_t, Device> ids;  // (tokens)
  View<const T, Device> table;      // (vocab, dim)
  View<T, Device> y;                // (tokens, dim), overwritten
  int64_t padding_idx = kNoPadding;

  int64_t tokens() const { return ids.numel(); }
  int64_t vocab() const { return table.dim(0); }
  int64_t dim() const { return table.dim(1); }
  void check() const {
    ops::check_rank2(table, "embedding", "table");
    ops::check_matrix(y, tokens(), dim(), "embedding", "y");
    MAMBATRACK_CHECK(padding_idx == kNoPadding || (padding_idx >= 0 && padding_idx < vocab()), ConfigError,
                     "embedding: padding index ", padding_idx, " outside the vocabulary of ", vocab());
  }
};

template <class T, class Device = Host>
struct EmbeddingBwdArgs {
  View<const int64_t, Device> ids;  // (tokens)
  View<const T, Device> dy;         // (tokens, dim)
  View<T, Device> dtable;           // (vocab, dim), accumulated (+=)
  int64_t padding_idx = kNoPadding;

  int64_t tokens() const { return ids.numel(); }
  int64_t vocab() const { return dtable.dim(0); }
  int64_t dim() const { return dtable.dim(1); }
  void check() const {
    ops::check_rank2(dtable, "embedding backward", "dtable");
    ops::check_matrix(dy, tokens(), dim(), "embedding backward", "dy");
    MAMBATRACK_CHECK(padding_idx == kNoPadding || (padding_idx >= 0 && padding_idx < vocab()), ConfigError,
                     "embedding: padding index ", padding_idx, " outside the vocabulary of ", vocab());
  }
};

namespace ops {
// Host-side id check: throws a ShapeError at the first id outside [0, vocab).
inline void check_ids(View<const int64_t, Host> ids, int64_t vocab, const char* op) {
  for (int64_t t = 0; t < ids.numel(); ++t)
    MAMBATRACK_CHECK_SHAPE(ids[t] >= 0 && ids[t] < vocab, op, ": token ", t, " has id ", ids[t],
                           ", outside the vocabulary [0, ", vocab, ")");
}
}  // namespace ops

}  // namespace mambatrack
