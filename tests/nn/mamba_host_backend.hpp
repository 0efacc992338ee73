// Interim host backends for the Mamba tests and golden handler: float on ParameterStore and
// mambatrack::cpu::, double on a small double store and mambatrack::reference:: (the nn-basic
// branch's CpuBackend / ReferenceBackend + ReferenceStore replace these once merged:
// WithSsmOps<CpuBackend> is the float one, WithSsmOps<ReferenceBackend> the double one).
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/nn/ssm_backend.hpp"
#include "mambatrack/ops/cpu/embedding.hpp"
#include "mambatrack/ops/cpu/linear.hpp"
#include "mambatrack/ops/cpu/losses.hpp"
#include "mambatrack/ops/cpu/norm.hpp"
#include "mambatrack/ops/reference/embedding.hpp"
#include "mambatrack/ops/reference/linear.hpp"
#include "mambatrack/ops/reference/losses.hpp"
#include "mambatrack/ops/reference/norm.hpp"

namespace mambatrack::test {

// Double parameters registered under the same names as a ParameterStore; copy_from takes its values.
class DoubleStore {
 public:
  nn::ParamHandle add(const std::string& name, Shape shape, bool no_decay = false, std::vector<int64_t> disk = {},
                      bool frozen = false) {
    (void)no_decay, (void)disk, (void)frozen;
    by_name_[name] = static_cast<int>(names_.size());
    names_.push_back(name);
    values_.emplace_back(shape);
    grads_.emplace_back(shape);
    fill(values_.back().view(), 0.0);
    fill(grads_.back().view(), 0.0);
    return nn::ParamHandle{static_cast<int>(names_.size()) - 1};
  }
  View<double> param(nn::ParamHandle h) { return values_.at(h.index).view(); }
  View<double> grad(nn::ParamHandle h) { return grads_.at(h.index).view(); }
  nn::ParamHandle handle(const std::string& name) const { return nn::ParamHandle{by_name_.at(name)}; }
  const std::vector<std::string>& names() const { return names_; }
  void zero_grad() {
    for (auto& g : grads_) fill(g.view(), 0.0);
  }
  void copy_from(const nn::ParameterStore& s) {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      View<const float> src = s.param(s.handle(names_[i]));
      for (int64_t k = 0; k < src.numel(); ++k) values_[i].view()[k] = src[k];
    }
  }

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, int> by_name_;
  std::vector<Tensor<double>> values_, grads_;
};

template <class T>
struct HostBase {
  using Scalar = T;
  using Device = Host;
  using Store = std::conditional_t<std::is_same_v<T, float>, nn::ParameterStore, DoubleStore>;
  static void linear_fwd(const LinearFwdArgs<T>& a) {
    if constexpr (std::is_same_v<T, float>) cpu::linear_fwd(a);
    else reference::linear_fwd(a);
  }
  static void linear_bwd(const LinearBwdArgs<T>& a) {
    if constexpr (std::is_same_v<T, float>) cpu::linear_bwd(a);
    else reference::linear_bwd(a);
  }
  static void accumulate(View<const T> x, View<T> y) {
    for (int64_t i = 0; i < y.numel(); ++i) y[i] += x[i];
  }
  static void fill(View<T> x, T v) { mambatrack::fill(x, v); }
  // For the whole-model golden case.
#define MT_HOST_OP(ret, name, Args)                   \
  static ret name(const Args<T>& a) {                  \
    if constexpr (std::is_same_v<T, float>) return cpu::name(a); \
    else return reference::name(a);                    \
  }
  MT_HOST_OP(void, embedding_fwd, EmbeddingFwdArgs)
  MT_HOST_OP(void, embedding_bwd, EmbeddingBwdArgs)
  MT_HOST_OP(void, add_norm_fwd, AddNormFwdArgs)
  MT_HOST_OP(void, add_norm_bwd, AddNormBwdArgs)
  MT_HOST_OP(LossResult, cross_entropy, CrossEntropyArgs)
#undef MT_HOST_OP
};

using FloatBackend = nn::WithSsmOps<HostBase<float>>;
using DoubleBackend = nn::WithSsmOps<HostBase<double>>;

}  // namespace mambatrack::test
