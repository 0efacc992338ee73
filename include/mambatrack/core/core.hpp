// Everything in core/ that CPU code uses: errors, logging, shapes, tensors, RNG, dtypes,
// safetensors.
#pragma once

#include "mambatrack/core/dtype.hpp"
#include "mambatrack/core/error.hpp"
#include "mambatrack/core/logging.hpp"
#include "mambatrack/core/philox.hpp"
#include "mambatrack/core/safetensors.hpp"
#include "mambatrack/core/shape.hpp"
#include "mambatrack/core/tensor.hpp"
