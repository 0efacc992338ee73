// The Backend policy of the nn/ layers (DESIGN.md §4): a struct of static functions with the op
// names of ops/, plus the types a layer needs (Scalar, Device, Store). CpuBackend forwards to
// mambatrack::cpu:: in float32 on the ParameterStore; a CudaBackend forwards to mambatrack::cuda::
// with the same names; ReferenceBackend (reference_backend.hpp) runs the same layers in double.
// Layer headers include only workspace.hpp, never a backend, so a .cu unit never sees Eigen.
#pragma once

#include <cstdint>

#include "mambatrack/core/tensor.hpp"
#include "mambatrack/nn/host_backend_base.hpp"
#include "mambatrack/nn/workspace.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/ops/cpu/activations.hpp"
#include "mambatrack/ops/cpu/embedding.hpp"
#include "mambatrack/ops/cpu/linear.hpp"
#include "mambatrack/ops/cpu/norm.hpp"

namespace mambatrack::nn {

struct CpuBackend : HostBackendBase<float> {
  using Store = ParameterStore;
  static constexpr const char* kName = "cpu";
  static void linear_fwd(const LinearFwdArgs<float>& a) { cpu::linear_fwd(a); }
  static void linear_bwd(const LinearBwdArgs<float>& a) { cpu::linear_bwd(a); }
  static void norm_fwd(const NormFwdArgs<float>& a) { cpu::norm_fwd(a); }
  static void norm_bwd(const NormBwdArgs<float>& a) { cpu::norm_bwd(a); }
  static void add_norm_fwd(const AddNormFwdArgs<float>& a) { cpu::add_norm_fwd(a); }
  static void add_norm_bwd(const AddNormBwdArgs<float>& a) { cpu::add_norm_bwd(a); }
  static void embedding_fwd(const EmbeddingFwdArgs<float>& a) { cpu::embedding_fwd(a); }
  static void embedding_bwd(const EmbeddingBwdArgs<float>& a) { cpu::embedding_bwd(a); }
  static void gelu_fwd(const ActivationFwdArgs<float>& a) { cpu::gelu_fwd(a); }
  static void gelu_bwd(const ActivationBwdArgs<float>& a) { cpu::gelu_bwd(a); }
  static void silu_fwd(const ActivationFwdArgs<float>& a) { cpu::silu_fwd(a); }
  static void silu_bwd(const ActivationBwdArgs<float>& a) { cpu::silu_bwd(a); }
};

}  // namespace mambatrack::nn
