// golden::Mamba2CudaBackend: the backend the Mamba2 golden handler runs Mamba2Mixer on:
// nn::CudaBackend itself where it forwards ssd_fwd/bwd and gated_rmsnorm_fwd/bwd (the production
// path), else CudaMamba2Backend, a stop-gap that adds those four to it the way the host backends'
// WithMamba2Ops does (nn/mamba2_backend.hpp), forwarding to mambatrack::cuda:: (ops/cuda/ssd.cuh,
// gated_rmsnorm.cuh) on the backend's stream. Once CudaBackend has them everywhere, this header
// reduces to `using Mamba2CudaBackend = nn::CudaBackend;`.
#pragma once

#include <type_traits>
#include <utility>

#include "mambatrack/nn/cuda_backend.cuh"
#include "mambatrack/ops/cuda/gated_rmsnorm.cuh"
#include "mambatrack/ops/cuda/ssd.cuh"
#include "mambatrack/ops/gated_rmsnorm.hpp"
#include "mambatrack/ops/ssd.hpp"

namespace mambatrack::golden {

struct CudaMamba2Backend : nn::CudaBackend {
  static void ssd_fwd(const SsdFwdArgs<float, Cuda>& a) { mambatrack::cuda::ssd_fwd<float>(a, stream()); }
  static void ssd_bwd(const SsdBwdArgs<float, Cuda>& a) { mambatrack::cuda::ssd_bwd<float>(a, stream()); }
  static void gated_rmsnorm_fwd(const GatedRmsNormFwdArgs<float, Cuda>& a) {
    mambatrack::cuda::gated_rmsnorm_fwd<float>(a, stream());
  }
  static void gated_rmsnorm_bwd(const GatedRmsNormBwdArgs<float, Cuda>& a) {
    mambatrack::cuda::gated_rmsnorm_bwd<float>(a, stream());
  }
};

template <class B, class = void>
struct ForwardsMamba2Ops : std::false_type {};
template <class B>
struct ForwardsMamba2Ops<B, std::void_t<decltype(B::ssd_fwd(std::declval<const SsdFwdArgs<float, Cuda>&>())),
                                        decltype(B::ssd_bwd(std::declval<const SsdBwdArgs<float, Cuda>&>())),
                                        decltype(B::gated_rmsnorm_fwd(
                                            std::declval<const GatedRmsNormFwdArgs<float, Cuda>&>())),
                                        decltype(B::gated_rmsnorm_bwd(
                                            std::declval<const GatedRmsNormBwdArgs<float, Cuda>&>()))>>
    : std::true_type {};

using Mamba2CudaBackend =
    std::conditional_t<ForwardsMamba2Ops<nn::CudaBackend>::value, nn::CudaBackend, CudaMamba2Backend>;

}  // namespace mambatrack::golden
