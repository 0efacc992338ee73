// Helpers shared by the ops' argument structs: optional arguments (a default-constructed view
// means "absent") and packed batches, described by cu_seqlens = (0, len_0, len_0 + len_1, ...,
// tokens): sequence b is tokens [cu[b], cu[b+1]); a padded batch of length L is cu = (0, L, 2L, ...).
#pragma once

#include <cstdint>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack {

// An optional argument is absent when its view is default-constructed (rank 0); a present view
// may still hold zero elements (a batch of empty sequences).
template <class T, class Device>
bool is_given(const View<T, Device>& v) {
  return v.rank() > 0;
}

// cu_seqlens on the host: cu[0] = 0, non-decreasing, cu[batch] = tokens. ShapeError otherwise,
// naming the offending entries and sizes. `op` prefixes the message.
inline void validate_cu_seqlens(View<const int64_t, Host> cu, int64_t tokens, const char* op) {
  MAMBATRACK_CHECK_SHAPE(cu.rank() == 1 && cu.dim(0) >= 2, op,
                         ": cu_seqlens must be (batch + 1) with batch >= 1, got ", cu.shape);
  const int64_t batch = cu.numel() - 1;
  MAMBATRACK_CHECK_SHAPE(cu[0] == 0, op, ": cu_seqlens[0] must be 0, got ", cu[0]);
  for (int64_t b = 0; b < batch; ++b) {
    MAMBATRACK_CHECK_SHAPE(cu[b + 1] >= cu[b], op, ": cu_seqlens must be non-decreasing, but cu_seqlens[",
                           b + 1, "] = ", cu[b + 1], " < cu_seqlens[", b, "] = ", cu[b]);
  }
  MAMBATRACK_CHECK_SHAPE(cu[batch] == tokens, op, ": cu_seqlens[", batch, "] = ", cu[batch],
                         " must equal the number of tokens ", tokens);
}

// The longest sequence of a (validated) host cu_seqlens.
inline int64_t max_seqlen(View<const int64_t, Host> cu) {
  int64_t m = 0;
  for (int64_t b = 0; b + 1 < cu.numel(); ++b) m = cu[b + 1] - cu[b] > m ? cu[b + 1] - cu[b] : m;
  return m;
}

}  // namespace mambatrack
