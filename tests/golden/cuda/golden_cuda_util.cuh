// Helpers of the CUDA golden handlers: float64 golden values rounded to float32 on the device,
// outputs poisoned with NaN bytes before a call (an element an op forgets to write then fails the
// comparison instead of passing on stale zeros), and device results read back as doubles after
// a device-wide synchronisation (which also surfaces asynchronous kernel errors). Eigen-free.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "mambatrack/cuda.cuh"

namespace mambatrack::golden {

// A float32 device tensor of `shape` holding `v` rounded to float (element order kept).
inline Tensor<float, Cuda> device_f32(const std::vector<double>& v, Shape shape) {
  MAMBATRACK_CHECK_SHAPE(static_cast<int64_t>(v.size()) == shape.numel(), "golden: ", v.size(),
                         " values for a device tensor of shape ", shape);
  Tensor<float> h(shape);
  for (int64_t i = 0; i < h.numel(); ++i) h[i] = static_cast<float>(v[static_cast<std::size_t>(i)]);
  return to_device<float>(View<const float>(h.view()));
}

inline Tensor<int64_t, Cuda> device_i64(const std::vector<int64_t>& v) {
  return to_device<int64_t>(View<const int64_t>(v.data(), Shape{static_cast<int64_t>(v.size())}));
}

// A float32 device tensor whose every byte is 0xFF (a NaN in float).
inline Tensor<float, Cuda> device_nan(Shape shape) {
  Tensor<float, Cuda> t(shape);
  if (t.numel() > 0) MAMBATRACK_CUDA_CHECK(cudaMemset(t.data(), 0xFF, t.bytes()));
  return t;
}

inline Tensor<float, Cuda> device_zeros(Shape shape) {
  Tensor<float, Cuda> t(shape);
  if (t.numel() > 0) MAMBATRACK_CUDA_CHECK(cudaMemset(t.data(), 0, t.bytes()));
  return t;
}

// Waits for all device work, then copies `v` back as doubles (same element order).
inline std::vector<double> host_doubles(View<const float, Cuda> v) {
  MAMBATRACK_CUDA_CHECK(cudaDeviceSynchronize());
  const Tensor<float> h = to_host<float>(v);
  return std::vector<double>(h.data(), h.data() + h.numel());
}
inline std::vector<double> host_doubles(const Tensor<float, Cuda>& t) { return host_doubles(t.view()); }

// Packed equal-length sequences: cu_seqlens {0, len, 2·len, ..., batch·len}.
inline std::vector<int64_t> equal_cu_seqlens(int64_t batch, int64_t len) {
  std::vector<int64_t> cu;
  for (int64_t b = 0; b <= batch; ++b) cu.push_back(b * len);
  return cu;
}

}  // namespace mambatrack::golden
