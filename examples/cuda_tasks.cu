// The GPU tasks of the mambatrack program (commands/cuda_tasks.hpp): MdmTask and Fm4nppTask on
// nn::CudaBackend, whose parameters, gradients and AdamW moments live on the device
// (train/cuda_optimizer.cuh). Compiled only in CUDA builds; never includes Eigen.
#include <cuda_runtime.h>

#include <string>

#include "commands/cuda_tasks.hpp"
#include "mambatrack/nn/cuda_backend.cuh"
#include "mambatrack/nn/dispatch.hpp"
#include "mambatrack/train/cuda_optimizer.cuh"

namespace mambatrack::cli {

using GpuMixer = nn::MambaMixer<nn::CudaBackend>;
using GpuMixer2 = nn::Mamba2Mixer<nn::CudaBackend>;

bool cuda_training_available(std::string* what) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (what) *what = e != cudaSuccess ? std::string("no usable CUDA device (") + cudaGetErrorString(e) + ")"
                                       : std::string("no CUDA device found");
    cudaGetLastError();  // clear the sticky error of a failed query
    return false;
  }
  int dev = 0;
  cudaGetDevice(&dev);
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, dev);
  if (what)
    *what = std::string(p.name) + " (device " + std::to_string(dev) + ", " +
            std::to_string(static_cast<long long>(p.totalGlobalMem >> 20)) + " MiB, sm_" + std::to_string(p.major) +
            std::to_string(p.minor) + ")";
  return true;
}

std::unique_ptr<train::MdmTaskBase> make_cuda_mdm_task(train::MdmTaskOptions o, int d_state, int d_conv, int expand,
                                                       nn::MambaOptions mo, data::TrackSequences train,
                                                       data::TrackSequences val) {
  const GpuMixer mixer = nn::make_mamba<nn::CudaBackend>(d_state, d_conv, expand, o.backbone.d_model, mo);
  // MdmTask checks every token and track length on the host once, so the embedding kernels skip
  // their per-batch id check (a device sync each).
  nn::CudaBackend::set_check_ids(false);
  return std::make_unique<train::MdmTask<nn::CudaBackend, GpuMixer>>(std::move(o), mixer, std::move(train),
                                                                     std::move(val));
}

std::unique_ptr<train::TrainTask> make_cuda_fm_task(train::Fm4nppTaskOptions o, int d_state, int d_conv, int expand,
                                                    int headdim, nn::Mamba2Options m2, std::vector<data::Fm4nppEvent> train,
                                                    std::vector<data::Fm4nppEvent> val) {
  if (headdim > 0) {
    const GpuMixer2 mixer = nn::make_mamba2<nn::CudaBackend>(d_state, d_conv, expand, headdim, o.backbone.d_model, m2);
    return std::make_unique<train::Fm4nppTask<nn::CudaBackend, GpuMixer2>>(std::move(o), mixer, std::move(train),
                                                                           std::move(val));
  }
  const GpuMixer mixer = nn::make_mamba<nn::CudaBackend>(d_state, d_conv, expand, o.backbone.d_model);
  return std::make_unique<train::Fm4nppTask<nn::CudaBackend, GpuMixer>>(std::move(o), mixer, std::move(train),
                                                                        std::move(val));
}

std::size_t cuda_peak_memory_bytes() { return cuda_peak_allocated_bytes(); }

}  // namespace mambatrack::cli
