// The SSM part of a host Backend policy (DESIGN.md §4): WithSsmOps<Base> adds to a backend
// (CpuBackend in float, ReferenceBackend in double) the causal depthwise conv, the selective scan
// and the two elementwise steps of the Mamba A parameterisation, A = −exp(A_log) and its chain
// rule dA_log += dA ⊙ A, forwarding float to mambatrack::cpu:: and double to mambatrack::reference::.
// A CudaBackend provides the same static functions with its own kernels.
#pragma once

#include <cmath>

#include "mambatrack/core/error.hpp"
#include "mambatrack/core/tensor.hpp"
#include "mambatrack/ops/cpu/causal_conv1d.hpp"
#include "mambatrack/ops/cpu/selective_scan.hpp"
#include "mambatrack/ops/reference/activations.hpp"
#include "mambatrack/ops/reference/causal_conv1d.hpp"
// ops/reference/selective_scan.hpp and ops/reference/activations.hpp both define
// reference::sigmoid(double), so one translation unit cannot include both (the double backend
// needs both). Until the scan's copy goes, its private one is renamed while it is read; a unit
// that already included the scan header is unaffected (#pragma once).
#define sigmoid scan_private_sigmoid
#include "mambatrack/ops/reference/selective_scan.hpp"
#undef sigmoid

namespace mambatrack::nn {

namespace ssm_host {
inline void causal_conv1d_fwd(const CausalConv1dFwdArgs<float>& a) { cpu::causal_conv1d_fwd(a); }
inline void causal_conv1d_fwd(const CausalConv1dFwdArgs<double>& a) { reference::causal_conv1d_fwd(a); }
inline void causal_conv1d_bwd(const CausalConv1dBwdArgs<float>& a) { cpu::causal_conv1d_bwd(a); }
inline void causal_conv1d_bwd(const CausalConv1dBwdArgs<double>& a) { reference::causal_conv1d_bwd(a); }
inline void selective_scan_fwd(const SelectiveScanFwdArgs<float>& a) { cpu::selective_scan_fwd(a); }
inline void selective_scan_fwd(const SelectiveScanFwdArgs<double>& a) { reference::selective_scan_fwd(a); }
inline void selective_scan_bwd(const SelectiveScanBwdArgs<float>& a) { cpu::selective_scan_bwd(a); }
inline void selective_scan_bwd(const SelectiveScanBwdArgs<double>& a) { reference::selective_scan_bwd(a); }
}  // namespace ssm_host

template <class Base>
struct WithSsmOps : Base {
  using T = typename Base::Scalar;
  static_assert(std::is_same_v<typename Base::Device, Host>, "WithSsmOps forwards to the host ops only");

  static void causal_conv1d_fwd(const CausalConv1dFwdArgs<T>& a) { ssm_host::causal_conv1d_fwd(a); }
  static void causal_conv1d_bwd(const CausalConv1dBwdArgs<T>& a) { ssm_host::causal_conv1d_bwd(a); }
  static void selective_scan_fwd(const SelectiveScanFwdArgs<T>& a) { ssm_host::selective_scan_fwd(a); }
  static void selective_scan_bwd(const SelectiveScanBwdArgs<T>& a) { ssm_host::selective_scan_bwd(a); }

  // a = −exp(a_log), elementwise.
  static void neg_exp(View<const T> a_log, View<T> a) {
    MAMBATRACK_CHECK_SHAPE(a_log.numel() == a.numel(), "neg_exp: ", a_log.shape, " -> ", a.shape);
    for (int64_t i = 0; i < a.numel(); ++i) a[i] = -std::exp(a_log[i]);
  }
  // y += x ⊙ m (accumulated, the parameter-gradient convention).
  static void mul_accumulate(View<const T> x, View<const T> m, View<T> y) {
    MAMBATRACK_CHECK_SHAPE(x.numel() == m.numel() && x.numel() == y.numel(), "mul_accumulate: ", x.shape, " · ",
                           m.shape, " into ", y.shape);
    for (int64_t i = 0; i < y.numel(); ++i) y[i] += x[i] * m[i];
  }
};

}  // namespace mambatrack::nn
