// The CUDA training path of the mambatrack program behind plain functions (DESIGN.md §3): a .cpp
// unit never sees CUDA headers, so the GPU tasks are instantiated in examples/cuda_tasks.cu
// (CUDA builds) or replaced by examples/cuda_tasks_none.cpp, whose functions say the program was
// built without CUDA. resolve_device() turns --device cpu|cuda|auto into "cpu" or "cuda".
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "mambatrack/core/error.hpp"
#include "mambatrack/data/fm4npp_points.hpp"
#include "mambatrack/data/track_sequences.hpp"
#include "mambatrack/nn/mamba.hpp"
#include "mambatrack/nn/mamba2.hpp"
#include "mambatrack/train/fm4npp_task.hpp"
#include "mambatrack/train/mdm_task.hpp"

namespace mambatrack::cli {

// True when this program was built with the CUDA path and a GPU is usable; `what` gets the
// device's name and memory, or why there is none.
bool cuda_training_available(std::string* what);

// The MAMBA-PT task on the GPU (Mamba mixer); bf16: mixed precision (bf16 activations and weight
// copies, fp32 master weights, gradients, AdamW moments and scan states), else fp32 throughout.
std::unique_ptr<train::MdmTaskBase> make_cuda_mdm_task(train::MdmTaskOptions o, int d_state, int d_conv, int expand,
                                                       nn::MambaOptions mo, data::TrackSequences train,
                                                       data::TrackSequences val, bool bf16);

// The FM4NPP task on the GPU: Mamba2 when headdim > 0, else Mamba; bf16 as above.
std::unique_ptr<train::TrainTask> make_cuda_fm_task(train::Fm4nppTaskOptions o, int d_state, int d_conv, int expand,
                                                    int headdim, nn::Mamba2Options m2, std::vector<data::Fm4nppEvent> train,
                                                    std::vector<data::Fm4nppEvent> val, bool bf16);

// Peak device memory in bytes since the process started (0 without CUDA).
std::size_t cuda_peak_memory_bytes();

// Float GEMMs on tf32 tensor cores (fp32 storage and accumulation) for every later GPU task.
void set_cuda_tf32_gemms(bool on);

// --precision auto|fp32|tf32|bf16 -> whether the GPU trains in bf16 mixed precision (tf32: fp32
// with tf32 GEMMs, set here). auto takes `config_amp` (MAMBA-PT's training.amp_enabled; FM4NPP's
// configs have none: fp32). The CPU always trains in fp32 and says so when asked for another.
inline void check_precision_arg(const std::string& arg) {
  if (arg != "auto" && arg != "fp32" && arg != "tf32" && arg != "bf16")
    throw ConfigError("--precision must be auto, fp32, tf32 or bf16, got '" + arg + "'");
}
inline bool resolve_bf16(const std::string& arg, const std::string& device, bool config_amp, const char* command) {
  check_precision_arg(arg);
  const bool want = arg == "bf16" || (arg == "auto" && config_amp);
  if (device != "cuda") {
    if (arg == "bf16" || arg == "tf32")
      std::fprintf(stderr, "%s: --precision %s is for the GPU; the CPU trains in fp32\n", command, arg.c_str());
    return false;
  }
  set_cuda_tf32_gemms(arg == "tf32");
  std::fprintf(stderr, "%s: %s\n", command,
               want ? "bf16 mixed precision (bf16 activations, fp32 master weights, moments and scan states)"
                    : arg == "tf32" ? "fp32 on the GPU, GEMMs on tf32 tensor cores" : "fp32 on the GPU");
  return want;
}

inline std::string resolve_device(const std::string& arg, const char* command) {
  if (arg == "cpu") return "cpu";
  std::string what;
  const bool gpu = cuda_training_available(&what);
  if (arg == "cuda") {
    if (!gpu) throw ConfigError(std::string("--device cuda: ") + what);
    std::fprintf(stderr, "%s: training on the GPU: %s\n", command, what.c_str());
    return "cuda";
  }
  if (arg == "auto") {
    std::fprintf(stderr, "%s: --device auto: %s\n", command,
                 gpu ? ("using the GPU: " + what).c_str() : ("no GPU (" + what + "); using the CPU").c_str());
    return gpu ? "cuda" : "cpu";
  }
  throw ConfigError("--device must be cpu, cuda or auto, got '" + arg + "'");
}

}  // namespace mambatrack::cli
