// The Mamba2 part of a host Backend policy (DESIGN.md §4): WithMamba2Ops<Base> adds to a backend
// (CpuBackend in float, ReferenceBackend in double) the causal depthwise conv, the SSD scan, the
// gated grouped RMSNorm and the two elementwise steps of the A parameterisation, A = −exp(A_log)
// and its chain rule dA_log += dA ⊙ A, forwarding float to mambatrack::cpu:: and double to
// mambatrack::reference::. A device backend that provides these static functions itself is used
// as it is (Mamba2OpsFor).
#pragma once

#include <cmath>
#include <type_traits>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"
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

namespace mamba2_detail {
template <class B, class = void>
struct HasMamba2Ops : std::false_type {};
template <class B>
struct HasMamba2Ops<B, std::void_t<decltype(&B::ssd_fwd), decltype(&B::mamba2_neg_exp)>> : std::true_type {};
}  // namespace mamba2_detail

// The ops a Mamba2 layer on Backend calls: the backend itself when it has them (a CUDA backend,
// or one already wrapped), else WithMamba2Ops<Backend> (host backends).
template <class Backend>
using Mamba2OpsFor =
    std::conditional_t<mamba2_detail::HasMamba2Ops<Backend>::value, Backend, WithMamba2Ops<Backend>>;

}  // namespace mambatrack::nn
