// ParameterStore: every trainable tensor of a model lives in one contiguous float32 buffer and
// its gradient in a second buffer of the same layout (DESIGN.md §6). Layers register their
// parameters by name (the reference's state-dict names) while the model is built, the store then
// allocates both buffers once, and layers read their views through the returned handles. The
// optimizer, clipping, all-reduce and checkpointing are single passes over the flat arrays.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"

namespace mambatrack::nn {

// Index of a registered parameter.
struct ParamHandle {
  int index = -1;
  bool valid() const noexcept { return index >= 0; }
};

struct ParamInfo {
  std::string name;                 // e.g. "backbone.layers.0.mixer.in_proj.weight"
  Shape shape;                      // shape in memory
  std::vector<int64_t> disk_shape;  // shape in checkpoints (the reference's), same element count
  bool no_decay = false;            // excluded from AdamW weight decay
  bool frozen = false;              // never updated (fixed projections); kept in checkpoints
  int64_t offset = 0;               // first element in the flat buffers
  int64_t numel() const { return shape.numel(); }
};

class ParameterStore {
 public:
  // Each tensor starts on a 16-float (64-byte) boundary so vector loads stay aligned; the padding
  // elements are zero in the parameters and the gradients and never touched by layers.
  static constexpr int64_t kAlign = 16;

  // Registers a parameter; only before finalize(). disk_shape defaults to the memory shape.
  ParamHandle add(const std::string& name, Shape shape, bool no_decay = false,
                  std::vector<int64_t> disk_shape = {}, bool frozen = false) {
    MAMBATRACK_CHECK(!finalized_, ConfigError, "parameter '", name, "' registered after finalize()");
    MAMBATRACK_CHECK(!by_name_.count(name), ConfigError, "parameter '", name, "' registered twice");
    ParamInfo p;
    p.name = name;
    p.shape = shape;
    if (disk_shape.empty()) disk_shape.assign(shape.begin(), shape.end());
    int64_t disk_numel = 1;
    for (int64_t d : disk_shape) disk_numel *= d;
    MAMBATRACK_CHECK_SHAPE(disk_numel == shape.numel(), "parameter '", name, "': disk shape has ",
                           disk_numel, " elements, memory shape ", shape, " has ", shape.numel());
    p.disk_shape = std::move(disk_shape);
    p.no_decay = no_decay;
    p.frozen = frozen;
    p.offset = total_;
    total_ += (shape.numel() + kAlign - 1) / kAlign * kAlign;
    by_name_[name] = static_cast<int>(params_.size());
    params_.push_back(std::move(p));
    return ParamHandle{static_cast<int>(params_.size()) - 1};
  }

  // Allocates the parameter and gradient buffers (zero-filled).
  void finalize() {
    MAMBATRACK_CHECK(!finalized_, ConfigError, "finalize() called twice");
    values_ = Tensor<float>(Shape{total_});
    grads_ = Tensor<float>(Shape{total_});
    fill(values_.view(), 0.0f);
    fill(grads_.view(), 0.0f);
    finalized_ = true;
  }
  bool finalized() const noexcept { return finalized_; }

  View<float> param(ParamHandle h) { return slice(values_, h); }
  View<const float> param(ParamHandle h) const { return slice(values_, h); }
  View<float> grad(ParamHandle h) { return slice(grads_, h); }
  View<const float> grad(ParamHandle h) const { return slice(grads_, h); }

  const ParamInfo& info(ParamHandle h) const { return params_.at(checked(h)); }
  const std::vector<ParamInfo>& params() const noexcept { return params_; }
  ParamHandle find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? ParamHandle{} : ParamHandle{it->second};
  }
  ParamHandle handle(const std::string& name) const {
    ParamHandle h = find(name);
    MAMBATRACK_CHECK(h.valid(), ConfigError, "no parameter named '", name, "'");
    return h;
  }

  // Whole flat buffers (padding included), for the optimizer and collectives.
  View<float> values() { return values_.view(); }
  View<float> grads() { return grads_.view(); }
  View<const float> values() const { return values_.view(); }
  View<const float> grads() const { return grads_.view(); }
  int64_t flat_size() const noexcept { return total_; }

  // Number of trainable scalars (frozen excluded, padding excluded).
  int64_t num_trainable() const {
    int64_t n = 0;
    for (const auto& p : params_)
      if (!p.frozen) n += p.numel();
    return n;
  }
  int64_t num_total() const {
    int64_t n = 0;
    for (const auto& p : params_) n += p.numel();
    return n;
  }

  void zero_grad() { fill(grads_.view(), 0.0f); }

  // [begin, end) element ranges of the flat buffer that get weight decay / that the optimizer
  // updates at all. Padding is outside every range.
  std::vector<std::pair<int64_t, int64_t>> decay_ranges() const { return ranges(true); }
  std::vector<std::pair<int64_t, int64_t>> no_decay_ranges() const { return ranges(false); }

 private:
  int checked(ParamHandle h) const {
    MAMBATRACK_CHECK(h.index >= 0 && h.index < static_cast<int>(params_.size()), ConfigError,
                     "invalid parameter handle ", h.index);
    return h.index;
  }
  View<float> slice(Tensor<float>& buffer, ParamHandle h) {
    MAMBATRACK_CHECK(finalized_, ConfigError, "parameters read before finalize()");
    const auto& p = params_[checked(h)];
    return View<float>(buffer.data() + p.offset, p.shape);
  }
  View<const float> slice(const Tensor<float>& buffer, ParamHandle h) const {
    MAMBATRACK_CHECK(finalized_, ConfigError, "parameters read before finalize()");
    const auto& p = params_[checked(h)];
    return View<const float>(buffer.data() + p.offset, p.shape);
  }
  std::vector<std::pair<int64_t, int64_t>> ranges(bool decay) const {
    std::vector<std::pair<int64_t, int64_t>> out;
    for (const auto& p : params_) {
      if (p.frozen || p.no_decay == decay) continue;
      if (!out.empty() && out.back().second == p.offset) {
        out.back().second = p.offset + p.numel();  // merge neighbours with no padding between
      } else {
        out.emplace_back(p.offset, p.offset + p.numel());
      }
    }
    return out;
  }

  std::vector<ParamInfo> params_;
  std::unordered_map<std::string, int> by_name_;
  int64_t total_ = 0;
  bool finalized_ = false;
  Tensor<float> values_, grads_;
};

}  // namespace mambatrack::nn
