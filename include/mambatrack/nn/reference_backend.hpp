// The reference backend: the same nn/ layer templates run in double on mambatrack::reference::
// ops, for tests (forward/backward comparison with the CPU backend, finite differences).
// ReferenceStore mirrors ParameterStore's registration interface with double buffers; a model
// built twice (once per backend) registers the same names, and copy_from() takes the float values.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "mambatrack/nn/host_backend_base.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/ops/reference/activations.hpp"
#include "mambatrack/ops/reference/embedding.hpp"
#include "mambatrack/ops/reference/linear.hpp"
#include "mambatrack/ops/reference/norm.hpp"

namespace mambatrack::nn {

class ReferenceStore {
 public:
  ParamHandle add(const std::string& name, Shape shape, bool no_decay = false, std::vector<int64_t> disk_shape = {},
                  bool frozen = false) {
    MAMBATRACK_CHECK(!by_name_.count(name), ConfigError, "parameter '", name, "' registered twice");
    (void)no_decay;
    (void)disk_shape;
    by_name_[name] = static_cast<int>(names_.size());
    names_.push_back(name);
    shapes_.push_back(shape);
    frozen_.push_back(frozen);
    return ParamHandle{static_cast<int>(names_.size()) - 1};
  }
  void finalize() {
    for (const Shape& s : shapes_) {
      values_.emplace_back(s);
      grads_.emplace_back(s);
      mambatrack::fill(values_.back().view(), 0.0);
      mambatrack::fill(grads_.back().view(), 0.0);
    }
  }
  View<double> param(ParamHandle h) { return values_.at(h.index).view(); }
  View<double> grad(ParamHandle h) { return grads_.at(h.index).view(); }
  const std::vector<std::string>& names() const { return names_; }
  ParamHandle handle(const std::string& name) const {
    auto it = by_name_.find(name);
    MAMBATRACK_CHECK(it != by_name_.end(), ConfigError, "no parameter named '", name, "'");
    return ParamHandle{it->second};
  }
  void zero_grad() {
    for (auto& g : grads_) mambatrack::fill(g.view(), 0.0);
  }
  // Every parameter value from a float store with the same names.
  void copy_from(const ParameterStore& s) {
    MAMBATRACK_CHECK(s.params().size() == names_.size(), ConfigError, "reference store has ", names_.size(),
                     " parameters, the float store ", s.params().size());
    for (std::size_t i = 0; i < names_.size(); ++i) {
      View<const float> src = s.param(s.handle(names_[i]));
      View<double> dst = values_[i].view();
      MAMBATRACK_CHECK_SHAPE(src.numel() == dst.numel(), "parameter '", names_[i], "': ", src.shape, " vs ", dst.shape);
      for (int64_t k = 0; k < dst.numel(); ++k) dst[k] = src[k];
    }
  }

 private:
  std::vector<std::string> names_;
  std::vector<Shape> shapes_;
  std::vector<bool> frozen_;
  std::unordered_map<std::string, int> by_name_;
  std::vector<Tensor<double>> values_, grads_;
};

struct ReferenceBackend : HostBackendBase<double> {
  using Store = ReferenceStore;
  static constexpr const char* kName = "reference";
  static void linear_fwd(const LinearFwdArgs<double>& a) { reference::linear_fwd(a); }
  static void linear_bwd(const LinearBwdArgs<double>& a) { reference::linear_bwd(a); }
  static void norm_fwd(const NormFwdArgs<double>& a) { reference::norm_fwd(a); }
  static void norm_bwd(const NormBwdArgs<double>& a) { reference::norm_bwd(a); }
  static void add_norm_fwd(const AddNormFwdArgs<double>& a) { reference::add_norm_fwd(a); }
  static void add_norm_bwd(const AddNormBwdArgs<double>& a) { reference::add_norm_bwd(a); }
  static void embedding_fwd(const EmbeddingFwdArgs<double>& a) { reference::embedding_fwd(a); }
  static void embedding_bwd(const EmbeddingBwdArgs<double>& a) { reference::embedding_bwd(a); }
  static void gelu_fwd(const ActivationFwdArgs<double>& a) { reference::gelu_fwd(a); }
  static void gelu_bwd(const ActivationBwdArgs<double>& a) { reference::gelu_bwd(a); }
  static void silu_fwd(const ActivationFwdArgs<double>& a) { reference::silu_fwd(a); }
  static void silu_bwd(const ActivationBwdArgs<double>& a) { reference::silu_bwd(a); }
};

}  // namespace mambatrack::nn
