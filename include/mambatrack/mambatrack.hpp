// mambatrack: Mamba and Mamba2 state-space models for particle tracking, header-only, CPU side.
// Include this from C++ translation units; CUDA programs include <mambatrack/cuda.cuh> as well.
#pragma once

#include "mambatrack/core/core.hpp"
