// The backends the Mamba tests and golden handler run on: nn-basic's CpuBackend (float,
// ParameterStore) and ReferenceBackend (double, ReferenceStore), each with the SSM ops of
// nn/ssm_backend.hpp added, plus the loss the whole-model golden case needs.
#pragma once

#include "mambatrack/nn/backend.hpp"
#include "mambatrack/nn/reference_backend.hpp"
#include "mambatrack/nn/ssm_backend.hpp"
#include "mambatrack/ops/cpu/losses.hpp"
#include "mambatrack/ops/reference/losses.hpp"

namespace mambatrack::test {

using FloatBackend = nn::WithSsmOps<nn::CpuBackend>;
using DoubleBackend = nn::WithSsmOps<nn::ReferenceBackend>;

inline LossResult cross_entropy(const CrossEntropyArgs<float>& a) { return cpu::cross_entropy(a); }
inline LossResult cross_entropy(const CrossEntropyArgs<double>& a) { return reference::cross_entropy(a); }

}  // namespace mambatrack::test
