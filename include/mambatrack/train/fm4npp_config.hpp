// The FM4NPP pretraining configuration: the keys of the seed's mamba_pretrain.yaml (a `default`
// section merged into `mamba_5m`, `mamba2_5m`, `mamba_small` with `<<: *default`; seeds-code.md
// §2.9), which we ignore and why, and our additions (simulated TrackML input, the k-NNN task).
#pragma once

#include "mambatrack/train/config.hpp"

namespace mambatrack::train {

inline ConfigSchema fm4npp_schema() {
  using V = ValueType;
  ConfigSchema s;
  s.add("data_root", V::String, "", "TrackML directory or TPCpp-10M npz folder; empty: simulate")
      .add("checkpoint_dir", V::String, "checkpoints", "checkpoint folder inside the run directory")
      .add("limit_data", V::Bool, "true", "limit the number of training samples")
      .add("limit_size", V::Int, "10000000", "samples used when limit_data")
      .add("batch_size", V::Int, "256", "global batch size (events)")
      .add("local_batch_size", V::Int, "16", "events per rank and micro-batch")
      .add("valid_batch_size", V::Int, "64", "global validation batch size")
      .add("local_valid_batch_size", V::Int, "4", "validation events per rank")
      .add("max_lr", V::Float, "0.0002", "peak learning rate")
      .add("min_lr", V::Float, "0.00002", "final learning rate of the cosine")
      .add("warmup_steps", V::Int, "1000", "linear warmup steps")
      .add("total_steps", V::Int, "50000", "optimizer steps")
      .add("embed_dim", V::Int, "256", "model width")
      .add("klen", V::Int, "30", "k of the k next-nearest-neighbour targets")
      .add("dropout", V::Float, "0.1", "dropout on each block's output")
      .add("embed_method", V::String, "additive", "additive or concat input embedding")
      .add("pe_method", V::String, "nerf", "positional encoding: nerf or sinusoidal")
      .add("num_layers_backbone", V::Int, "12", "number of blocks")
      .add("d_state", V::Int, "16", "SSM state size (DState)")
      .add("d_conv", V::Int, "4", "causal convolution width (DConv)")
      .add("expand", V::Int, "2", "inner width factor (Expand)")
      .add("headdim", V::Int, "0", "Mamba2 head dimension; 0 selects Mamba (v1)")
      .add("ngroups", V::Int, "1", "Mamba2 B/C groups")
      .add("save_version", V::String, "mamba_pretrain", "name of the run")
      .add("weight_decay", V::Float, "0.01", "AdamW decoupled weight decay")
      .add("serialization_order", V::String, "EPR", "voxel raster-scan order: EPR, RPE, REP or PER")
      .add("simulate_events", V::Int, "40", "events to simulate when data_root is empty")
      .add("simulate_particles", V::Int, "300", "particles per simulated event")
      .add("checkpoint_every_steps", V::Int, "1000", "checkpoint every N steps")
      .add("eval_every_steps", V::Int, "500", "validate every N steps")
      .add("seed", V::Int, "42", "seed of every random stream (Philox)")
      .ignore("stat_dir", "normalisation constants are built in (FM4NPP's TPC values) or computed from the data")
      .ignore("data_version", "the data layout is detected from the files")
      .ignore("n_data_idx", "unused by the seed as well")
      .ignore("base_dim", "unused by the seed as well")
      .ignore("init_std", "unused by the seed as well; initialisation follows the reference")
      .ignore("num_data_workers", "data loading runs in the training process")
      .ignore("log_to_screen", "progress goes to stderr; metrics to metrics.jsonl/csv");
  return s;
}

}  // namespace mambatrack::train
