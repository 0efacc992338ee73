// The bf16 mixed-precision GPU tasks (examples/cuda_tasks_impl.cuh on nn::CudaBf16Backend).
#include <cuda_runtime.h>

#include "cuda_tasks_impl.cuh"

namespace mambatrack::cli::cuda_tasks_detail {

std::unique_ptr<train::MdmTaskBase> make_mdm_bf16(train::MdmTaskOptions o, int d_state, int d_conv, int expand,
                                                  nn::MambaOptions mo, data::TrackSequences train,
                                                  data::TrackSequences val) {
  return make_mdm<nn::CudaBf16Backend>(std::move(o), d_state, d_conv, expand, mo, std::move(train), std::move(val));
}

std::unique_ptr<train::TrainTask> make_fm_bf16(train::Fm4nppTaskOptions o, int d_state, int d_conv, int expand,
                                               int headdim, nn::Mamba2Options m2, std::vector<data::Fm4nppEvent> train,
                                               std::vector<data::Fm4nppEvent> val) {
  return make_fm<nn::CudaBf16Backend>(std::move(o), d_state, d_conv, expand, headdim, m2, std::move(train),
                                      std::move(val));
}

}  // namespace mambatrack::cli::cuda_tasks_detail
