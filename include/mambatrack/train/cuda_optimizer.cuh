// The Trainer's flat buffers on the GPU (train/flat_optimizer.hpp): parameters, gradients and
// both AdamW moments stay in device memory for the whole run; the global norm, clipping and the
// AdamW update (one kernel per trainable span, optim/cuda/) run on the context's stream. The host
// ParameterStore is touched only by save() (download before a checkpoint) and load() (upload
// after a resume), so a checkpoint holds exactly what the GPU trains.
#pragma once

#include <vector>

#include "mambatrack/core/cuda_context.cuh"
#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/nn/cuda_backend.cuh"
#include "mambatrack/nn/cuda_mixed_parameter_store.cuh"
#include "mambatrack/nn/cuda_parameter_store.cuh"
#include "mambatrack/optim/cuda/adamw.cuh"
#include "mambatrack/optim/cuda/clip.cuh"
#include "mambatrack/train/flat_optimizer.hpp"

namespace mambatrack::train {

class CudaFlatOptimizer final : public FlatOptimizer {
 public:
  explicit CudaFlatOptimizer(nn::CudaParameterStore& store)
      : store_(store),
        spans_(trainable_spans(store.host())),
        exp_avg_(Shape{store.flat_size()}),
        exp_avg_sq_(Shape{store.flat_size()}) {
    const auto bytes = static_cast<std::size_t>(store.flat_size()) * sizeof(float);
    MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(exp_avg_.data(), 0, bytes, ctx().stream()));
    MAMBATRACK_CUDA_CHECK(cudaMemsetAsync(exp_avg_sq_.data(), 0, bytes, ctx().stream()));
  }

  void zero_grad() override { store_.zero_grad(); }
  double grad_norm(double clip_norm) override {
    return clip_norm > 0 ? cuda::clip_grad_norm(store_.grads(), clip_norm, ctx())
                         : cuda::grad_norm(View<const float, Cuda>(store_.grads()), ctx());
  }
  void clip_value(double limit) override { cuda::clip_grad_value(store_.grads(), limit, ctx().stream()); }
  void step(int64_t adam_step, const optim::AdamWConfig& c) override {
    for (const TrainableSpan& s : spans_) {
      const Shape shape{s.end - s.begin};
      optim::AdamWArgs<float, Cuda> a;
      a.param = View<float, Cuda>(store_.values().data + s.begin, shape);
      a.grad = View<const float, Cuda>(store_.grads().data + s.begin, shape);
      a.exp_avg = View<float, Cuda>(exp_avg_.data() + s.begin, shape);
      a.exp_avg_sq = View<float, Cuda>(exp_avg_sq_.data() + s.begin, shape);
      a.step = adam_step;
      a.config = c;
      a.no_decay = s.no_decay;
      cuda::adamw_step(a, ctx());
    }
  }
  void save(nn::TrainState& state) override {
    store_.download();
    state.buffers["exp_avg"] = download(exp_avg_);
    state.buffers["exp_avg_sq"] = download(exp_avg_sq_);
  }
  void load(const nn::TrainState& state) override {
    store_.upload();
    upload(moment(state, "exp_avg", static_cast<std::size_t>(exp_avg_.numel())), exp_avg_);
    upload(moment(state, "exp_avg_sq", static_cast<std::size_t>(exp_avg_sq_.numel())), exp_avg_sq_);
  }

 private:
  std::vector<float> download(const Tensor<float, Cuda>& t) {
    std::vector<float> h(static_cast<std::size_t>(t.numel()));
    MAMBATRACK_CUDA_CHECK(
        cudaMemcpyAsync(h.data(), t.data(), h.size() * sizeof(float), cudaMemcpyDeviceToHost, ctx().stream()));
    MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(ctx().stream()));
    return h;
  }
  void upload(const std::vector<float>& h, Tensor<float, Cuda>& t) {
    MAMBATRACK_CUDA_CHECK(
        cudaMemcpyAsync(t.data(), h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice, ctx().stream()));
    MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(ctx().stream()));
  }

  // The backend's context, taken per call (set_cuda_backend_stream() may replace it).
  static CudaContext& ctx() { return nn::CudaBackend::context(); }

  nn::CudaParameterStore& store_;
  std::vector<TrainableSpan> spans_;
  Tensor<float, Cuda> exp_avg_, exp_avg_sq_;
};

// Mixed precision (nn::CudaMixedParameterStore): the same fp32 AdamW over the fp32 master
// weights and gradients; the bf16 gradients are folded in before they are read (a no-op when the
// task already folded after its last micro-batch) and the bf16 weights are refreshed after every
// change of the master weights.
class CudaMixedFlatOptimizer final : public FlatOptimizer {
 public:
  explicit CudaMixedFlatOptimizer(nn::CudaMixedParameterStore& store) : store_(store), fp32_(store.master()) {}

  void zero_grad() override { store_.zero_grad(); }
  double grad_norm(double clip_norm) override {
    store_.fold_grads();
    return fp32_.grad_norm(clip_norm);
  }
  void clip_value(double limit) override {
    store_.fold_grads();
    fp32_.clip_value(limit);
  }
  void step(int64_t adam_step, const optim::AdamWConfig& c) override {
    store_.fold_grads();
    fp32_.step(adam_step, c);
    store_.refresh();
  }
  void save(nn::TrainState& state) override { fp32_.save(state); }
  void load(const nn::TrainState& state) override {
    fp32_.load(state);
    store_.refresh();
  }

 private:
  nn::CudaMixedParameterStore& store_;
  CudaFlatOptimizer fp32_;
};

}  // namespace mambatrack::train

namespace mambatrack::nn {  // the device overloads of train/flat_optimizer.hpp's store functions
inline ParameterStore& host_of(CudaParameterStore& s) { return s.host(); }
inline void upload_params(CudaParameterStore& s) { s.upload(); }
inline void fold_grads(CudaParameterStore&) {}
inline std::unique_ptr<train::FlatOptimizer> make_flat_optimizer(CudaParameterStore& s) {
  return std::make_unique<train::CudaFlatOptimizer>(s);
}
inline ParameterStore& host_of(CudaMixedParameterStore& s) { return s.host(); }
inline void upload_params(CudaMixedParameterStore& s) { s.upload(); }
inline void fold_grads(CudaMixedParameterStore& s) { s.fold_grads(); }
inline std::unique_ptr<train::FlatOptimizer> make_flat_optimizer(CudaMixedParameterStore& s) {
  return std::make_unique<train::CudaMixedFlatOptimizer>(s);
}
}  // namespace mambatrack::nn
