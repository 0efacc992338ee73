// CudaMamba2Backend: nn::CudaBackend plus the Mamba2 ops that Mamba2Mixer needs beyond it, as the
// host backends' WithMamba2Ops adds them (nn/mamba2_backend.hpp): ssd_fwd/bwd and
// gated_rmsnorm_fwd/bwd forwarded to mambatrack::cuda:: (ops/cuda/ssd.cuh, gated_rmsnorm.cuh) on
// the backend's stream. A stop-gap for the golden runner until nn::CudaBackend forwards them
// itself; then this struct only re-exports the same functions (it may be replaced by CudaBackend).
#pragma once

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

}  // namespace mambatrack::golden
