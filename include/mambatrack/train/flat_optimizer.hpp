// Where the Trainer's flat buffers live (DESIGN.md §6, §11): a FlatOptimizer owns the AdamW
// moments and runs zero-grad, the global gradient norm (with clipping), by-value clipping and the
// AdamW update over the flat parameter/gradient buffers of a model. HostFlatOptimizer works on a
// host ParameterStore; train/cuda_optimizer.cuh keeps everything on the GPU and touches the host
// store only to save or load a checkpoint. Frozen parameters and padding are never updated.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/nn/checkpoint.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/optim/adamw.hpp"
#include "mambatrack/optim/clip.hpp"

namespace mambatrack::train {

// A contiguous run of trainable (not frozen) parameters in the flat buffer, with the no-decay
// ranges inside it (relative to begin). The padding after each tensor is inside the run: it is
// zero in the parameters and gradients, so AdamW leaves it at zero.
struct TrainableSpan {
  int64_t begin = 0, end = 0;
  std::vector<optim::ParamRange> no_decay;
};

inline std::vector<TrainableSpan> trainable_spans(const nn::ParameterStore& store) {
  std::vector<TrainableSpan> spans;
  bool open = false;
  for (const auto& p : store.params()) {
    if (p.frozen) {
      open = false;
      continue;
    }
    const int64_t padded_end =
        p.offset + (p.numel() + nn::ParameterStore::kAlign - 1) / nn::ParameterStore::kAlign * nn::ParameterStore::kAlign;
    if (!open) spans.push_back(TrainableSpan{p.offset, p.offset, {}});
    open = true;
    TrainableSpan& s = spans.back();
    if (p.no_decay) s.no_decay.push_back(optim::ParamRange{p.offset - s.begin, p.offset + p.numel() - s.begin});
    s.end = padded_end;
  }
  return spans;
}

// A step's losses and metrics left on the device by a task (TrainTask::device_stats): `count`
// doubles at the device address `data`.
struct DeviceStats {
  const double* data = nullptr;
  int64_t count = 0;
};
// What a deferred step did, read back after it (FlatOptimizer::deferred_outcome).
struct DeferredOutcome {
  double grad_norm = 0;  // before clipping
  bool applied = false;  // false: skipped on the device (a non-finite norm or stat)
};

class FlatOptimizer {
 public:
  virtual ~FlatOptimizer() = default;
  virtual void zero_grad() = 0;
  // ‖g‖₂ before clipping; scales g to clip_norm when clip_norm > 0 and the norm exceeds it.
  virtual double grad_norm(double clip_norm) = 0;
  virtual void clip_value(double limit) = 0;
  // One AdamW step (1-based adam_step) with learning rate c.lr over every trainable span.
  virtual void step(int64_t adam_step, const optim::AdamWConfig& c) = 0;
  // Checkpoints: save() brings the current parameters into the host store and the moments into
  // `state`; load() takes both back after nn::load_checkpoint filled the host store.
  virtual void save(nn::TrainState& state) = 0;
  virtual void load(const nn::TrainState& state) = 0;
  // The device optimizers' whole update with nothing read back: the gradient norm, clipping by
  // norm (clip_norm > 0) and by value (clip_value > 0) and the AdamW step, all skipped on the
  // device when the norm or one of `stats` is not finite. deferred_outcome() then reads the norm
  // and whether the step was applied (synchronising).
  virtual bool supports_deferred() const { return false; }
  virtual void step_deferred(int64_t /*adam_step*/, const optim::AdamWConfig& /*c*/, double /*clip_norm*/,
                             double /*clip_value*/, DeviceStats /*stats*/) {
    throw Error("this optimizer has no deferred step (FlatOptimizer::supports_deferred is false)");
  }
  virtual DeferredOutcome deferred_outcome() {
    throw Error("this optimizer has no deferred step (FlatOptimizer::supports_deferred is false)");
  }

 protected:
  static const std::vector<float>& moment(const nn::TrainState& state, const char* name, std::size_t n) {
    auto it = state.buffers.find(name);
    MAMBATRACK_CHECK(it != state.buffers.end(), CheckpointError, "train state has no optimizer buffer '", name, "'");
    MAMBATRACK_CHECK(it->second.size() == n, CheckpointError, "train state: optimizer buffer '", name, "' has ",
                     it->second.size(), " values but the model's flat buffer has ", n);
    return it->second;
  }
};

// The host version: moments as std::vector<float> next to a host ParameterStore.
class HostFlatOptimizer final : public FlatOptimizer {
 public:
  explicit HostFlatOptimizer(nn::ParameterStore& store)
      : store_(store),
        spans_(trainable_spans(store)),
        exp_avg_(static_cast<std::size_t>(store.flat_size()), 0.0f),
        exp_avg_sq_(static_cast<std::size_t>(store.flat_size()), 0.0f) {}

  void zero_grad() override { store_.zero_grad(); }
  double grad_norm(double clip_norm) override {
    return clip_norm > 0 ? optim::clip_grad_norm(store_.grads(), clip_norm) : optim::grad_norm(store_.grads());
  }
  void clip_value(double limit) override { optim::clip_grad_value(store_.grads(), limit); }
  void step(int64_t adam_step, const optim::AdamWConfig& c) override {
    for (const TrainableSpan& s : spans_) {
      const Shape shape{s.end - s.begin};
      optim::AdamWArgs<float> a;
      a.param = View<float>(store_.values().data + s.begin, shape);
      a.grad = View<const float>(store_.grads().data + s.begin, shape);
      a.exp_avg = View<float>(exp_avg_.data() + s.begin, shape);
      a.exp_avg_sq = View<float>(exp_avg_sq_.data() + s.begin, shape);
      a.step = adam_step;
      a.config = c;
      a.no_decay = s.no_decay;
      optim::adamw_step(a);
    }
  }
  void save(nn::TrainState& state) override {
    state.buffers["exp_avg"] = exp_avg_;
    state.buffers["exp_avg_sq"] = exp_avg_sq_;
  }
  void load(const nn::TrainState& state) override {
    exp_avg_ = moment(state, "exp_avg", exp_avg_.size());
    exp_avg_sq_ = moment(state, "exp_avg_sq", exp_avg_sq_.size());
  }

 private:
  nn::ParameterStore& store_;
  std::vector<TrainableSpan> spans_;
  std::vector<float> exp_avg_, exp_avg_sq_;
};

}  // namespace mambatrack::train

// What a task needs from its Backend's parameter store, found by argument-dependent lookup so a
// task template serves host and device stores alike (the CUDA overloads are in
// train/cuda_optimizer.cuh): the host store (names, init, checkpoints), copying freshly
// initialised host values to where the model runs, folding a micro-batch's gradients, and the
// optimizer over the live buffers.
namespace mambatrack::nn {
inline ParameterStore& host_of(ParameterStore& s) { return s; }
inline void upload_params(ParameterStore&) {}
// After a micro-batch's backward: a store whose layers accumulate lower-precision gradients adds
// them into its fp32 gradients here (nn::CudaMixedParameterStore); a no-op for fp32 stores.
inline void fold_grads(ParameterStore&) {}
inline std::unique_ptr<train::FlatOptimizer> make_flat_optimizer(ParameterStore& s) {
  return std::make_unique<train::HostFlatOptimizer>(s);
}
}  // namespace mambatrack::nn
