// All the small CUDA ops and the optimiser kernels in one include (namespace mambatrack::cuda):
// linear (cuBLASLt), norm / add+norm, activations, embedding, losses, AdamW, clipping.
#pragma once

#include "mambatrack/ops/cuda/activations.cuh"
#include "mambatrack/ops/cuda/embedding.cuh"
#include "mambatrack/ops/cuda/linear.cuh"
#include "mambatrack/ops/cuda/losses.cuh"
#include "mambatrack/ops/cuda/norm.cuh"
#include "mambatrack/optim/cuda/adamw.cuh"
#include "mambatrack/optim/cuda/clip.cuh"
