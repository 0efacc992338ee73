// nn::CudaParameterStore: the ParameterStore of CudaBackend (DESIGN.md §6). Registration, names,
// offsets and the host copies live in an owned host ParameterStore (init and checkpoints run
// there); finalize() adds two zeroed flat device buffers of flat_size() floats with the same
// layout: values and grads. upload()/download() copy the values host <-> device (synchronous);
// param(h)/grad(h) are device views at the host store's offsets.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <utility>
#include <vector>

#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/nn/cuda_backend_context.cuh"
#include "mambatrack/nn/parameter_store.hpp"

namespace mambatrack::nn {

class CudaParameterStore {
 public:
  ParamHandle add(const std::string& name, Shape shape, bool no_decay = false, std::vector<int64_t> disk_shape = {},
                  bool frozen = false) {
    return host_.add(name, shape, no_decay, std::move(disk_shape), frozen);
  }

  // Host finalize (zeroed host buffers) plus zeroed device values and grads.
  void finalize() {
    host_.finalize();
    values_ = Tensor<float, Cuda>(Shape{host_.flat_size()});
    grads_ = Tensor<float, Cuda>(Shape{host_.flat_size()});
    if (values_.numel() > 0) {
      MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(values_.data(), 0, values_.bytes(), cuda_backend_stream()));
      MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, grads_.bytes(), cuda_backend_stream()));
      MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(cuda_backend_stream()));
    }
  }
  bool finalized() const noexcept { return host_.finalized(); }

  ParameterStore& host() noexcept { return host_; }
  const ParameterStore& host() const noexcept { return host_; }

  View<float, Cuda> param(ParamHandle h) { return slice(values_.data(), h); }
  View<const float, Cuda> param(ParamHandle h) const { return slice(const_cast<float*>(values_.data()), h); }
  View<float, Cuda> grad(ParamHandle h) { return slice(grads_.data(), h); }
  View<const float, Cuda> grad(ParamHandle h) const { return slice(const_cast<float*>(grads_.data()), h); }

  // Whole flat device buffers (padding included), for the optimizer and collectives.
  View<float, Cuda> values() { return values_.view(); }
  View<float, Cuda> grads() { return grads_.view(); }
  View<const float, Cuda> values() const { return values_.view(); }
  View<const float, Cuda> grads() const { return grads_.view(); }

  // Host values -> device values (the whole flat buffer; waits for the copy).
  void upload() {
    check_finalized("upload");
    if (values_.numel() == 0) return;
    MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(values_.data(), host_.values().data, values_.bytes(), cudaMemcpyHostToDevice,
                                          cuda_backend_stream()));
    MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(cuda_backend_stream()));
  }
  // Device values -> host values (waits for every op queued before it on the backend stream).
  void download() {
    check_finalized("download");
    if (values_.numel() == 0) return;
    MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(host_.values().data, values_.data(), values_.bytes(), cudaMemcpyDeviceToHost,
                                          cuda_backend_stream()));
    MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(cuda_backend_stream()));
  }
  // Device grads = 0, queued on the backend stream (no host sync; graph-capturable).
  void zero_grad() {
    check_finalized("zero_grad");
    if (grads_.numel() > 0)
      MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(grads_.data(), 0, grads_.bytes(), cuda_backend_stream()));
  }

  const ParamInfo& info(ParamHandle h) const { return host_.info(h); }
  const std::vector<ParamInfo>& params() const noexcept { return host_.params(); }
  ParamHandle find(const std::string& name) const { return host_.find(name); }
  ParamHandle handle(const std::string& name) const { return host_.handle(name); }
  int64_t flat_size() const noexcept { return host_.flat_size(); }
  int64_t num_trainable() const { return host_.num_trainable(); }
  int64_t num_total() const { return host_.num_total(); }

 private:
  void check_finalized(const char* what) const {
    MAMBATRACK_CHECK(host_.finalized(), ConfigError, "CudaParameterStore: ", what, " before finalize()");
  }
  View<float, Cuda> slice(float* base, ParamHandle h) const {
    check_finalized("parameter access");
    const ParamInfo& p = host_.info(h);
    return View<float, Cuda>(base + p.offset, p.shape);
  }

  ParameterStore host_;
  Tensor<float, Cuda> values_, grads_;
};

}  // namespace mambatrack::nn
