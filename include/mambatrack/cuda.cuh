// mambatrack for CUDA translation units: core (tensors, Philox, dtypes, safetensors), the CUDA
// memory and the CUDA context. The ops are included one by one from ops/cuda/ and optim/cuda/
// (ops/cuda/ops.cuh has the small ones); call them as mambatrack::cuda::name, since CUDA's own
// libcu++ also defines a namespace ::cuda. Never includes Eigen.
#pragma once

#include "mambatrack/core/core.hpp"
#include "mambatrack/core/cuda_context.cuh"
#include "mambatrack/core/cuda_memory.cuh"
