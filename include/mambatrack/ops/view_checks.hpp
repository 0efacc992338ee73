// Small helpers shared by the args structs of the ops in ops/: optional views (a View whose data
// is null means "not given"), and shape checks that name the argument and the sizes involved.
// Free of Eigen and of any backend, so CPU, reference and CUDA code validate the same way.
#pragma once

#include <cstdint>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack::ops {

// A View left default-constructed (null data) is an absent optional argument.
template <class T, class Device>
bool present(const View<T, Device>& v) noexcept {
  return v.data != nullptr;
}

// Throws ShapeError("<op>: <name> has shape (a, b), expected (rows, cols)") unless v is 2-D with
// exactly those sizes.
template <class T, class Device>
void check_matrix(const View<T, Device>& v, int64_t rows, int64_t cols, const char* op,
                  const char* name) {
  MAMBATRACK_CHECK_SHAPE(v.rank() == 2 && v.dim(0) == rows && v.dim(1) == cols, op, ": ", name,
                         " has shape ", v.shape, ", expected (", rows, ", ", cols, ")");
  MAMBATRACK_CHECK_SHAPE(v.data != nullptr || rows * cols == 0, op, ": ", name,
                         " has no data (null pointer)");
}

// Same for a 1-D view of length n.
template <class T, class Device>
void check_vector(const View<T, Device>& v, int64_t n, const char* op, const char* name) {
  MAMBATRACK_CHECK_SHAPE(v.rank() == 1 && v.dim(0) == n, op, ": ", name, " has shape ", v.shape,
                         ", expected (", n, ")");
  MAMBATRACK_CHECK_SHAPE(v.data != nullptr || n == 0, op, ": ", name, " has no data (null pointer)");
}

// A 2-D view whose sizes the caller reads off: throws unless rank 2.
template <class T, class Device>
void check_rank2(const View<T, Device>& v, const char* op, const char* name) {
  MAMBATRACK_CHECK_SHAPE(v.rank() == 2, op, ": ", name, " must be 2-D (tokens, channels), got shape ",
                         v.shape);
}

}  // namespace mambatrack::ops
