// mambatrack for CUDA translation units: core (tensors, Philox, dtypes, safetensors), the CUDA
// memory and context, the CUDA ops and the CUDA optimizer. Never includes Eigen, so .cu files
// stay quick to compile.
#pragma once

#include "mambatrack/core/core.hpp"
#include "mambatrack/core/cuda_context.cuh"
#include "mambatrack/core/cuda_memory.cuh"
#include "mambatrack/ops/cuda/causal_conv1d.cuh"
#include "mambatrack/ops/cuda/ops.cuh"
#include "mambatrack/ops/cuda/selective_scan.cuh"
#include "mambatrack/optim/cuda/adamw.cuh"
#include "mambatrack/optim/cuda/clip.cuh"
