// The Backend policy of the nn/ layers (DESIGN.md §4): a struct of static functions with the op
// names of ops/, plus the types a layer needs (Scalar, Device, Store). CpuBackend forwards to
// mambatrack::cpu:: in float32 on the ParameterStore; a CudaBackend forwards to mambatrack::cuda::
// with the same names; ReferenceBackend (reference_backend.hpp) runs the same layers in double.
// ensure() is the workspace rule: a buffer is reallocated only when its shape changes.
#pragma once

#include <cstdint>

#include "mambatrack/core/tensor.hpp"
#include "mambatrack/nn/host_kernels.hpp"
#include "mambatrack/nn/parameter_store.hpp"
#include "mambatrack/ops/cpu/activations.hpp"
#include "mambatrack/ops/cpu/embedding.hpp"
#include "mambatrack/ops/cpu/linear.hpp"
#include "mambatrack/ops/cpu/norm.hpp"

namespace mambatrack::nn {

// Resizes a workspace tensor to `shape` unless it already has it (no allocation in the steady state).
template <class T, class Device>
View<T, Device> ensure(Tensor<T, Device>& t, Shape shape) {
  if (!(t.shape() == shape)) t = Tensor<T, Device>(shape);
  return t.view();
}

// The shared host parts of the CPU and reference backends, on scalar T.
template <class T>
struct HostBackendBase {
  using Scalar = T;
  using Device = Host;
  static void add(View<const T> a, View<const T> b, View<T> out) { host::add(a, b, out); }
  static void accumulate(View<const T> x, View<T> y) { host::accumulate(x, y); }
  static void copy(View<const T> x, View<T> y) { mambatrack::copy(x, y); }
  static void reverse_within_sequences(View<const T> x, View<const int64_t> cu, View<T> y) {
    host::reverse_within_sequences(x, cu, y);
  }
  static void sequence_positions(View<const int64_t> cu, View<int64_t> pos) { host::sequence_positions(cu, pos); }
  static void dropout_mask(uint64_t seed, uint64_t stream, uint64_t step, double p, View<T> mask) {
    host::dropout_mask(seed, stream, step, p, mask);
  }
  static void multiply(View<const T> x, View<const T> m, View<T> y) { host::multiply(x, m, y); }
  static void mean_pool(View<const T> x, View<const int64_t> cu, View<T> pooled) { host::mean_pool(x, cu, pooled); }
  static void mean_pool_bwd(View<const T> dp, View<const int64_t> cu, View<T> dx) { host::mean_pool_bwd(dp, cu, dx); }
  static void copy_columns(View<const T> x, View<T> out, int64_t offset) { host::copy_columns(x, out, offset); }
  static void take_columns(View<const T> x, View<T> out, int64_t offset) { host::take_columns(x, out, offset); }
  static void fill(View<T> x, T v) { mambatrack::fill(x, v); }
};

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
