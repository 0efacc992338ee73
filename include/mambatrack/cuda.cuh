// mambatrack for CUDA translation units: the CUDA memory, copies and kernels. Never includes
// Eigen, so .cu files stay quick to compile.
#pragma once

#include "mambatrack/core/core.hpp"
#include "mambatrack/core/cuda_memory.cuh"
