// nn::CudaMixedParameterStore: the ParameterStore of CudaBf16Backend (mixed precision, DESIGN.md
// §6). An fp32 CudaParameterStore holds the master weights and gradients (what the optimizer
// updates and a checkpoint saves); two bfloat16 flat buffers with the same layout hold what the
// layers see: param(h) reads the bf16 copy of the weights, grad(h) accumulates bf16 gradients.
//   fold_grads(): g32 += float(g16), g16 = 0 — after each micro-batch's backward, so gradient
//                 accumulation across micro-batches is fp32 (one bf16 rounding per micro-batch).
//   refresh():    w16 = bfloat16(w32), round to nearest even — after every upload and update.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/dtype.hpp"
#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/nn/cuda_backend_context.cuh"
#include "mambatrack/nn/cuda_parameter_store.cuh"
#include "mambatrack/nn/parameter_store.hpp"

namespace mambatrack::nn {

namespace mixed_store_detail {
constexpr int kThreads = 256;
template <int kUnused = 0>
__global__ void fold_kernel(bfloat16* __restrict g16, float* __restrict g32, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    g32[i] += static_cast<float>(g16[i]);
    g16[i] = bfloat16(0.0f);
  }
}
template <int kUnused = 0>
__global__ void round_kernel(const float* __restrict w32, bfloat16* __restrict w16, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    w16[i] = bfloat16(w32[i]);
}
inline unsigned grid(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 4096 ? 4096 : b));
}
inline void check(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw DeviceError(std::string("CudaMixedParameterStore ") + what + ": kernel launch failed: " +
                      cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}
}  // namespace mixed_store_detail

class CudaMixedParameterStore {
 public:
  ParamHandle add(const std::string& name, Shape shape, bool no_decay = false, std::vector<int64_t> disk_shape = {},
                  bool frozen = false) {
    return master_.add(name, shape, no_decay, std::move(disk_shape), frozen);
  }

  // fp32 finalize plus zeroed bf16 weights and gradients.
  void finalize() {
    master_.finalize();
    values16_ = Tensor<bfloat16, Cuda>(Shape{master_.flat_size()});
    grads16_ = Tensor<bfloat16, Cuda>(Shape{master_.flat_size()});
    if (values16_.numel() > 0) {
      MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(values16_.data(), 0, values16_.bytes(), cuda_backend_stream()));
      MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(grads16_.data(), 0, grads16_.bytes(), cuda_backend_stream()));
      MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(cuda_backend_stream()));
    }
  }
  bool finalized() const noexcept { return master_.finalized(); }

  ParameterStore& host() noexcept { return master_.host(); }
  const ParameterStore& host() const noexcept { return master_.host(); }
  // The fp32 master weights and gradients (the optimizer's buffers).
  CudaParameterStore& master() noexcept { return master_; }

  View<bfloat16, Cuda> param(ParamHandle h) { return slice(values16_.data(), h); }
  View<const bfloat16, Cuda> param(ParamHandle h) const { return slice(const_cast<bfloat16*>(values16_.data()), h); }
  View<bfloat16, Cuda> grad(ParamHandle h) { return slice(grads16_.data(), h); }
  View<const bfloat16, Cuda> grad(ParamHandle h) const { return slice(const_cast<bfloat16*>(grads16_.data()), h); }
  // The whole bf16 flat buffers.
  View<bfloat16, Cuda> values16() { return values16_.view(); }
  View<bfloat16, Cuda> grads16() { return grads16_.view(); }

  // Host values -> fp32 master -> bf16 copy (waits for the copy).
  void upload() {
    master_.upload();
    refresh();
    MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(cuda_backend_stream()));
  }
  // fp32 master -> host values (what a checkpoint saves).
  void download() { master_.download(); }
  // Both gradient buffers = 0 (queued, no sync).
  void zero_grad() {
    master_.zero_grad();
    if (grads16_.numel() > 0)
      MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(grads16_.data(), 0, grads16_.bytes(), cuda_backend_stream()));
  }
  // fp32 gradients += bf16 gradients; bf16 gradients = 0 (queued, no sync).
  void fold_grads() {
    check_finalized("fold_grads");
    const int64_t n = grads16_.numel();
    if (n == 0) return;
    mixed_store_detail::fold_kernel<><<<mixed_store_detail::grid(n), mixed_store_detail::kThreads, 0,
                                        cuda_backend_stream()>>>(grads16_.data(), master_.grads().data, n);
    mixed_store_detail::check("fold_grads");
  }
  // bf16 weights = the fp32 master rounded to nearest even (queued, no sync).
  void refresh() {
    check_finalized("refresh");
    const int64_t n = values16_.numel();
    if (n == 0) return;
    mixed_store_detail::round_kernel<><<<mixed_store_detail::grid(n), mixed_store_detail::kThreads, 0,
                                         cuda_backend_stream()>>>(master_.values().data, values16_.data(), n);
    mixed_store_detail::check("refresh");
  }

  const ParamInfo& info(ParamHandle h) const { return master_.info(h); }
  const std::vector<ParamInfo>& params() const noexcept { return master_.params(); }
  ParamHandle find(const std::string& name) const { return master_.find(name); }
  ParamHandle handle(const std::string& name) const { return master_.handle(name); }
  int64_t flat_size() const noexcept { return master_.flat_size(); }
  int64_t num_trainable() const { return master_.num_trainable(); }
  int64_t num_total() const { return master_.num_total(); }

 private:
  void check_finalized(const char* what) const {
    MAMBATRACK_CHECK(master_.finalized(), ConfigError, "CudaMixedParameterStore: ", what, " before finalize()");
  }
  View<bfloat16, Cuda> slice(bfloat16* base, ParamHandle h) const {
    check_finalized("parameter access");
    const ParamInfo& p = master_.info(h);
    return View<bfloat16, Cuda>(base + p.offset, p.shape);
  }

  CudaParameterStore master_;
  Tensor<bfloat16, Cuda> values16_, grads16_;
};

}  // namespace mambatrack::nn
