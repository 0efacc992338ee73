// Workspace rule of the nn/ layers (DESIGN.md §2, §7): contexts own their activation and
// workspace tensors, and ensure() reallocates one only when its shape changes, so after the first
// step of a given shape a training loop allocates nothing.
#pragma once

#include "mambatrack/core/tensor.hpp"

namespace mambatrack::nn {

template <class T, class Device>
View<T, Device> ensure(Tensor<T, Device>& t, Shape shape) {
  if (!(t.shape() == shape)) t = Tensor<T, Device>(shape);
  return t.view();
}

}  // namespace mambatrack::nn
