// The Mamba2 ops of a host Backend policy (DESIGN.md §4): WithMamba2Ops<Base> adds causal_conv1d,
// ssd, gated_rmsnorm (float -> mambatrack::cpu::, double -> mambatrack::reference::) and the A
// parameterisation A = −exp(A_log), dA_log += dA ⊙ A. Stacks with nn/ssm_backend.hpp's
// WithSsmOps (same causal_conv1d); a CUDA backend provides the same static functions itself.
#pragma once

#include <cmath>
#include <type_traits>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/nn/cpu_backend.hpp"
#include "mambatrack/ops/cpu/causal_conv1d.hpp"
#include "mambatrack/ops/cpu/gated_rmsnorm.hpp"
#include "mambatrack/ops/cpu/ssd.hpp"
#include "mambatrack/ops/reference/causal_conv1d.hpp"
#include "mambatrack/ops/reference/gated_rmsnorm.hpp"
#include "mambatrack/ops/reference/ssd.hpp"

namespace mambatrack::nn {

namespace mamba2_host {
inline void causal_conv1d_fwd(const CausalConv1dFwdArgs<float>& a) { cpu::causal_conv1d_fwd(a); }
inline void causal_conv1d_fwd(const CausalConv1dFwdArgs<double>& a) { reference::causal_conv1d_fwd(a); }
inline void causal_conv1d_bwd(const CausalConv1dBwdArgs<float>& a) { cpu::causal_conv1d_bwd(a); }
inline void causal_conv1d_bwd(const CausalConv1dBwdArgs<double>& a) { reference::causal_conv1d_bwd(a); }
inline void ssd_fwd(const SsdFwdArgs<float>& a) { cpu::ssd_fwd(a); }
inline void ssd_fwd(const SsdFwdArgs<double>& a) { reference::ssd_fwd(a); }
inline void ssd_bwd(const SsdBwdArgs<float>& a) { cpu::ssd_bwd(a); }
inline void ssd_bwd(const SsdBwdArgs<double>& a) { reference::ssd_bwd(a); }
inline void gated_rmsnorm_fwd(const GatedRmsNormFwdArgs<float>& a) { cpu::gated_rmsnorm_fwd(a); }
inline void gated_rmsnorm_fwd(const GatedRmsNormFwdArgs<double>& a) { reference::gated_rmsnorm_fwd(a); }
inline void gated_rmsnorm_bwd(const GatedRmsNormBwdArgs<float>& a) { cpu::gated_rmsnorm_bwd(a); }
inline void gated_rmsnorm_bwd(const GatedRmsNormBwdArgs<double>& a) { reference::gated_rmsnorm_bwd(a); }
}  // namespace mamba2_host

template <class Base>
struct WithMamba2Ops : Base {
  using T = typename Base::Scalar;
  static_assert(std::is_same_v<typename Base::Device, Host>, "WithMamba2Ops forwards to the host ops only");

  static void causal_conv1d_fwd(const CausalConv1dFwdArgs<T>& a) { mamba2_host::causal_conv1d_fwd(a); }
  static void causal_conv1d_bwd(const CausalConv1dBwdArgs<T>& a) { mamba2_host::causal_conv1d_bwd(a); }
  static void ssd_fwd(const SsdFwdArgs<T>& a) { mamba2_host::ssd_fwd(a); }
  static void ssd_bwd(const SsdBwdArgs<T>& a) { mamba2_host::ssd_bwd(a); }
  static void gated_rmsnorm_fwd(const GatedRmsNormFwdArgs<T>& a) { mamba2_host::gated_rmsnorm_fwd(a); }
  static void gated_rmsnorm_bwd(const GatedRmsNormBwdArgs<T>& a) { mamba2_host::gated_rmsnorm_bwd(a); }

  // a = −exp(a_log), elementwise (computed in T: float A_log is upcast nowhere further).
  static void mamba2_neg_exp(View<const T> a_log, View<T> a) {
    MAMBATRACK_CHECK_SHAPE(a_log.numel() == a.numel(), "mamba2_neg_exp: ", a_log.shape, " -> ", a.shape);
    for (int64_t i = 0; i < a.numel(); ++i) a[i] = -std::exp(a_log[i]);
  }
  // da_log += da ⊙ a  (d(−exp(a_log))/d a_log = a; accumulated, the parameter-gradient convention).
  static void mamba2_a_log_grad(View<const T> da, View<const T> a, View<T> da_log) {
    MAMBATRACK_CHECK_SHAPE(da.numel() == a.numel() && a.numel() == da_log.numel(), "mamba2_a_log_grad: ", da.shape,
                           " · ", a.shape, " into ", da_log.shape);
    for (int64_t i = 0; i < a.numel(); ++i) da_log[i] += da[i] * a[i];
  }
};

// The CPU float backend with the Mamba2 ops: Mamba2Mixer<Mamba2CpuBackend> in Block<CpuBackend, ...>.
using Mamba2CpuBackend = WithMamba2Ops<CpuBackend>;

}  // namespace mambatrack::nn
