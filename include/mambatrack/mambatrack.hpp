// mambatrack: Mamba and Mamba2 state-space models for particle tracking, header-only, CPU side.
// Include this from C++ translation units (it pulls in Eigen); CUDA translation units include
// <mambatrack/cuda.cuh> instead. One concept per header, so a unit that needs less can include
// just that header.
#pragma once

#include "mambatrack/core/core.hpp"
#include "mambatrack/core/parallel.hpp"
#include "mambatrack/core/supported.hpp"

// CPU ops (each with its float64 reference under ops/reference/)
#include "mambatrack/ops/cpu/activations.hpp"
#include "mambatrack/ops/cpu/causal_conv1d.hpp"
#include "mambatrack/ops/cpu/embedding.hpp"
#include "mambatrack/ops/cpu/gated_rmsnorm.hpp"
#include "mambatrack/ops/cpu/linear.hpp"
#include "mambatrack/ops/cpu/losses.hpp"
#include "mambatrack/ops/cpu/norm.hpp"
#include "mambatrack/ops/cpu/selective_scan.hpp"
#include "mambatrack/ops/cpu/ssd.hpp"
#include "mambatrack/optim/adamw.hpp"
#include "mambatrack/optim/clip.hpp"
#include "mambatrack/optim/schedule.hpp"

// Layers and models on the CPU backend
#include "mambatrack/nn/backbone.hpp"
#include "mambatrack/nn/checkpoint.hpp"
#include "mambatrack/nn/cpu_backend.hpp"
#include "mambatrack/nn/dispatch.hpp"
#include "mambatrack/nn/heads.hpp"
#include "mambatrack/nn/mamba2_backend.hpp"
#include "mambatrack/nn/point_embedding.hpp"
#include "mambatrack/nn/ssm_backend.hpp"

// TrackML data and the two seeds' pipelines
#include "mambatrack/data/batching.hpp"
#include "mambatrack/data/detector.hpp"
#include "mambatrack/data/fm4npp_points.hpp"
#include "mambatrack/data/mdm_masking.hpp"
#include "mambatrack/data/npz.hpp"
#include "mambatrack/data/ntp_pairs.hpp"
#include "mambatrack/data/score.hpp"
#include "mambatrack/data/simulator.hpp"
#include "mambatrack/data/tokenizer.hpp"
#include "mambatrack/data/track_sequences.hpp"
#include "mambatrack/data/trackml_io.hpp"

// Training
#include "mambatrack/train/config.hpp"
#include "mambatrack/train/fm4npp_config.hpp"
#include "mambatrack/train/fm4npp_task.hpp"
#include "mambatrack/train/mambapt_config.hpp"
#include "mambatrack/train/mdm_task.hpp"
#include "mambatrack/train/trainer.hpp"

namespace mambatrack {
// The CPU policy with every op the Mamba and Mamba2 mixers need.
using CpuModelBackend = nn::WithMamba2Ops<nn::WithSsmOps<nn::CpuBackend>>;
}  // namespace mambatrack
