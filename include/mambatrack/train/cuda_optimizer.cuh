// The Trainer's flat buffers on the GPU (train/flat_optimizer.hpp): parameters, gradients and
// both AdamW moments stay in device memory for the whole run; the global norm, clipping and the
// AdamW update (one kernel per trainable span, optim/cuda/) run on the context's stream. The host
// ParameterStore is touched only by save() (download before a checkpoint) and load() (upload
// after a resume), so a checkpoint holds exactly what the GPU trains.
// The deferred step (step_deferred) decides on the device: the norm, the clipping factor and the
// finiteness check go to a control block that the clipping and AdamW kernels read, with the
// step's scalars written ahead of it by a one-thread kernel; from its second call on (same stats
// buffer and clipping) it replays a CUDA graph of the whole update when the backend runs on a
// capturable stream.
#pragma once

#include <functional>
#include <vector>

#include "mambatrack/core/cuda_context.cuh"
#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/nn/cuda_backend.cuh"
#include "mambatrack/nn/cuda_graph.cuh"
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

  bool supports_deferred() const override { return true; }
  void step_deferred(int64_t adam_step, const optim::AdamWConfig& c, double clip_norm, double clip_value,
                     DeviceStats stats) override {
    enqueue_deferred(adam_step, c, clip_norm, clip_value, stats, {}, {});
  }
  DeferredOutcome deferred_outcome() override {
    cuda::detail::StepControl h{};
    MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(&h, control_.data(), sizeof h, cudaMemcpyDeviceToHost, ctx().stream()));
    MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(ctx().stream()));
    return DeferredOutcome{h.norm, h.apply != 0};
  }
  // step_deferred with work queued before the norm (`pre`) and after the update (`post`), both
  // inside the captured graph (CudaMixedFlatOptimizer: the gradient fold and the weight refresh).
  void enqueue_deferred(int64_t adam_step, const optim::AdamWConfig& c, double clip_norm, double clip_value,
                        DeviceStats stats, const std::function<void()>& pre, const std::function<void()>& post) {
    ensure_deferred_buffers();
    cudaStream_t s = ctx().stream();
    auto* ctl = reinterpret_cast<cuda::detail::StepControl*>(control_.data());
    auto* args = reinterpret_cast<cuda::detail::AdamWKernelArgs*>(args_.data());
    // This step's scalars, written ahead of the (captured) update that reads them.
    cuda::detail::set_adamw_args_kernel<><<<1, 1, 0, s>>>(args, cuda::detail::adamw_kernel_args(c, adam_step));
    cuda::detail::check_launch("adamw (step scalars)");
    float* g = store_.grads().data;
    const int64_t n = store_.flat_size();
    auto update = [&] {
      if (pre) pre();
      cuda::grad_sumsq_device(View<const float, Cuda>(store_.grads()), sumsq_.data(), ctx());
      cuda::detail::step_control_kernel<><<<1, 256, 0, s>>>(sumsq_.data(), stats.data, stats.count, clip_norm, ctl);
      cuda::detail::check_launch("step_control");
      if (clip_norm > 0 && n > 0) {
        cuda::detail::scale_by_control_kernel<><<<cuda::detail::grid_for(n, 256, 4096), 256, 0, s>>>(g, n, ctl);
        cuda::detail::check_launch("clip_grad_norm");
      }
      if (clip_value > 0) cuda::clip_grad_value(store_.grads(), clip_value, s);
      for (std::size_t i = 0; i < spans_.size(); ++i) {
        const TrainableSpan& sp = spans_[i];
        cuda::adamw_step_device(store_.values().data + sp.begin, g + sp.begin, exp_avg_.data() + sp.begin,
                                exp_avg_sq_.data() + sp.begin, sp.end - sp.begin,
                                range_count_[i] ? ranges_.data() + 2 * range_begin_[i] : nullptr,
                                static_cast<int>(range_count_[i]), args, &ctl->apply, s);
      }
      if (post) post();
    };
    const GraphKey key{stats.data, stats.count, clip_norm, clip_value, s};
    if (s == nullptr || !(key == key_)) {  // first use of this set-up (or no capturable stream): eagerly
      graph_ = nn::CudaGraph();
      key_ = key;
      update();
      return;
    }
    if (!graph_.ready()) graph_.capture(s, update);
    graph_.launch(s);
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

  // The deferred step's device buffers (first use): the no-decay ranges of every span, the
  // step's scalars, Σg² and the control block.
  void ensure_deferred_buffers() {
    if (control_.data() != nullptr) return;  // (an empty Tensor's rank-0 shape counts one element)
    std::vector<int64_t> ranges;
    for (const TrainableSpan& sp : spans_) {
      range_begin_.push_back(static_cast<int64_t>(ranges.size() / 2));
      for (const optim::ParamRange& r : sp.no_decay) {
        ranges.push_back(r.begin);
        ranges.push_back(r.end);
      }
      range_count_.push_back(static_cast<int64_t>(ranges.size() / 2) - range_begin_.back());
    }
    ranges_ = Tensor<int64_t, Cuda>(Shape{std::max<int64_t>(1, static_cast<int64_t>(ranges.size()))});
    if (!ranges.empty()) {  // on the stream the AdamW kernels run on; waits (the source is a local)
      MAMBATRACK_CUDA_CHECK(cudaMemcpyAsync(ranges_.data(), ranges.data(), ranges.size() * sizeof(int64_t),
                                            cudaMemcpyHostToDevice, ctx().stream()));
      MAMBATRACK_CUDA_CHECK(cudaStreamSynchronize(ctx().stream()));
    }
    args_ = Tensor<uint8_t, Cuda>(Shape{static_cast<int64_t>(sizeof(cuda::detail::AdamWKernelArgs))});
    sumsq_ = Tensor<double, Cuda>(Shape{1});
    control_ = Tensor<uint8_t, Cuda>(Shape{static_cast<int64_t>(sizeof(cuda::detail::StepControl))});
  }
  // What a captured update depends on besides the buffers this optimizer owns.
  struct GraphKey {
    const double* stats = nullptr;
    int64_t count = -1;
    double clip_norm = 0, clip_value = 0;
    cudaStream_t stream = nullptr;
    bool operator==(const GraphKey& o) const {
      return stats == o.stats && count == o.count && clip_norm == o.clip_norm && clip_value == o.clip_value &&
             stream == o.stream;
    }
  };

  nn::CudaParameterStore& store_;
  std::vector<TrainableSpan> spans_;
  Tensor<float, Cuda> exp_avg_, exp_avg_sq_;
  Tensor<int64_t, Cuda> ranges_;
  std::vector<int64_t> range_begin_, range_count_;  // per span, in ranges_ (pairs)
  Tensor<uint8_t, Cuda> args_, control_;
  Tensor<double, Cuda> sumsq_;
  nn::CudaGraph graph_;
  GraphKey key_;
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
  bool supports_deferred() const override { return true; }
  void step_deferred(int64_t adam_step, const optim::AdamWConfig& c, double clip_norm, double clip_value,
                     DeviceStats stats) override {
    fp32_.enqueue_deferred(adam_step, c, clip_norm, clip_value, stats, [this] { store_.fold_grads(); },
                           [this] { store_.refresh(); });
  }
  DeferredOutcome deferred_outcome() override { return fp32_.deferred_outcome(); }

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
