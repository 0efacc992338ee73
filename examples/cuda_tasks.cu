// The GPU tasks of the mambatrack program (commands/cuda_tasks.hpp): MdmTask and Fm4nppTask on
// nn::CudaBackend (fp32) or, with bf16, nn::CudaBf16Backend (cuda_tasks_bf16.cu); parameters,
// gradients and AdamW moments live on the device (train/cuda_optimizer.cuh). Compiled only in
// CUDA builds; never includes Eigen.
#include <cuda_runtime.h>

#include <string>

#include "cuda_tasks_impl.cuh"

namespace mambatrack::cli {

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
                                                       data::TrackSequences val, bool bf16) {
  using namespace cuda_tasks_detail;
  if (bf16) return make_mdm_bf16(std::move(o), d_state, d_conv, expand, mo, std::move(train), std::move(val));
  return make_mdm<nn::CudaBackend>(std::move(o), d_state, d_conv, expand, mo, std::move(train), std::move(val));
}

std::unique_ptr<train::TrainTask> make_cuda_fm_task(train::Fm4nppTaskOptions o, int d_state, int d_conv, int expand,
                                                    int headdim, nn::Mamba2Options m2, std::vector<data::Fm4nppEvent> train,
                                                    std::vector<data::Fm4nppEvent> val, bool bf16) {
  using namespace cuda_tasks_detail;
  if (bf16)
    return make_fm_bf16(std::move(o), d_state, d_conv, expand, headdim, m2, std::move(train), std::move(val));
  return make_fm<nn::CudaBackend>(std::move(o), d_state, d_conv, expand, headdim, m2, std::move(train), std::move(val));
}

void set_cuda_tf32_gemms(bool on) {
  nn::CudaBackend::set_gemm_compute(on ? mambatrack::cuda::GemmCompute::kTf32 : mambatrack::cuda::GemmCompute::kFp32);
}

std::size_t cuda_peak_memory_bytes() { return cuda_peak_allocated_bytes(); }

}  // namespace mambatrack::cli
