// The GPU task factories of examples/cuda_tasks.cu, templated on the CUDA backend: nn::CudaBackend
// (fp32) is instantiated in cuda_tasks.cu, nn::CudaBf16Backend (bf16 activations over fp32 master
// weights) in cuda_tasks_bf16.cu, so nvcc compiles the two model instantiations in parallel.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "commands/cuda_tasks.hpp"
#include "mambatrack/nn/cuda_backend.cuh"
#include "mambatrack/nn/dispatch.hpp"
#include "mambatrack/train/cuda_optimizer.cuh"

namespace mambatrack::cli::cuda_tasks_detail {

template <class Backend>
std::unique_ptr<train::MdmTaskBase> make_mdm(train::MdmTaskOptions o, int d_state, int d_conv, int expand,
                                             nn::MambaOptions mo, data::TrackSequences train,
                                             data::TrackSequences val) {
  using Mixer = nn::MambaMixer<Backend>;
  const Mixer mixer = nn::make_mamba<Backend>(d_state, d_conv, expand, o.backbone.d_model, mo);
  // MdmTask checks every token and track length on the host once, so the embedding kernels skip
  // their per-batch id check (a device sync each).
  Backend::set_check_ids(false);
  return std::make_unique<train::MdmTask<Backend, Mixer>>(std::move(o), mixer, std::move(train), std::move(val));
}

template <class Backend>
std::unique_ptr<train::TrainTask> make_fm(train::Fm4nppTaskOptions o, int d_state, int d_conv, int expand, int headdim,
                                          nn::Mamba2Options m2, std::vector<data::Fm4nppEvent> train,
                                          std::vector<data::Fm4nppEvent> val) {
  if (headdim > 0) {
    using Mixer2 = nn::Mamba2Mixer<Backend>;
    const Mixer2 mixer = nn::make_mamba2<Backend>(d_state, d_conv, expand, headdim, o.backbone.d_model, m2);
    return std::make_unique<train::Fm4nppTask<Backend, Mixer2>>(std::move(o), mixer, std::move(train), std::move(val));
  }
  using Mixer = nn::MambaMixer<Backend>;
  const Mixer mixer = nn::make_mamba<Backend>(d_state, d_conv, expand, o.backbone.d_model);
  return std::make_unique<train::Fm4nppTask<Backend, Mixer>>(std::move(o), mixer, std::move(train), std::move(val));
}

// Defined in cuda_tasks_bf16.cu.
std::unique_ptr<train::MdmTaskBase> make_mdm_bf16(train::MdmTaskOptions o, int d_state, int d_conv, int expand,
                                                  nn::MambaOptions mo, data::TrackSequences train,
                                                  data::TrackSequences val);
std::unique_ptr<train::TrainTask> make_fm_bf16(train::Fm4nppTaskOptions o, int d_state, int d_conv, int expand,
                                               int headdim, nn::Mamba2Options m2, std::vector<data::Fm4nppEvent> train,
                                               std::vector<data::Fm4nppEvent> val);

}  // namespace mambatrack::cli::cuda_tasks_detail
