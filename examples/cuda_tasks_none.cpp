// The CUDA training functions of commands/cuda_tasks.hpp in a build without CUDA: each says so.
#include "commands/cuda_tasks.hpp"

namespace mambatrack::cli {

namespace {
const char* kNoCuda =
    "this mambatrack was built without CUDA (nvcc was not found, or -DMAMBATRACK_CUDA=OFF); rebuild with the CUDA "
    "toolkit installed to train on a GPU";
}

bool cuda_training_available(std::string* what) {
  if (what) *what = kNoCuda;
  return false;
}

std::unique_ptr<train::MdmTaskBase> make_cuda_mdm_task(train::MdmTaskOptions, int, int, int, nn::MambaOptions,
                                                       data::TrackSequences, data::TrackSequences, bool) {
  throw ConfigError(kNoCuda);
}

std::unique_ptr<train::TrainTask> make_cuda_fm_task(train::Fm4nppTaskOptions, int, int, int, int, nn::Mamba2Options,
                                                    std::vector<data::Fm4nppEvent>, std::vector<data::Fm4nppEvent>, bool) {
  throw ConfigError(kNoCuda);
}

void set_cuda_tf32_gemms(bool) {}

std::size_t cuda_peak_memory_bytes() { return 0; }

}  // namespace mambatrack::cli
