// The CPU side of test_training_cuda.cu: the tiny runs of tiny_training.hpp on the float CPU
// backend (this unit has Eigen; the .cu unit must not).
#include <memory>

#include "mambatrack/core/parallel.hpp"
#include "mambatrack/nn/cpu_backend.hpp"
#include "mambatrack/nn/dispatch.hpp"
#include "mambatrack/nn/mamba2_backend.hpp"
#include "mambatrack/nn/ssm_backend.hpp"
#include "tiny_training.hpp"

namespace mambatrack::test {

namespace {
using HostBackend = nn::WithMamba2Ops<nn::WithSsmOps<nn::CpuBackend>>;
}

std::vector<double> cpu_tiny_mdm_losses(uint64_t seed, const std::string& run_dir) {
  set_num_threads(1);
  TinyMdmData d = tiny_mdm_data(seed);
  using Mixer = nn::MambaMixer<HostBackend>;
  train::MdmTask<HostBackend, Mixer> task(tiny_mdm_options(d.vocab, seed), nn::make_mamba<HostBackend>(16, 4, 2, 32),
                                          d.train, d.val);
  train::Trainer trainer(tiny_trainer_options(run_dir), task);
  return trainer.run().losses;
}

std::vector<double> cpu_tiny_fm_losses(uint64_t seed, int headdim, const std::string& run_dir) {
  set_num_threads(1);
  TinyFmEvents ev = tiny_fm_events(seed, 4, 1, 5);
  train::TrainerOptions t = tiny_trainer_options(run_dir);
  if (headdim > 0) {
    using Mixer = nn::Mamba2Mixer<HostBackend>;
    train::Fm4nppTask<HostBackend, Mixer> task(tiny_fm_options(seed, 5),
                                               nn::make_mamba2<HostBackend>(64, 4, 2, headdim, 32), ev.train, ev.val);
    return train::Trainer(t, task).run().losses;
  }
  using Mixer = nn::MambaMixer<HostBackend>;
  train::Fm4nppTask<HostBackend, Mixer> task(tiny_fm_options(seed, 5), nn::make_mamba<HostBackend>(16, 4, 2, 32),
                                             ev.train, ev.val);
  return train::Trainer(t, task).run().losses;
}

}  // namespace mambatrack::test
