// The MAMBA-PT run configuration: the seed's YAML keys (data.*, model.*, training.*,
// evaluation.*, logging.*, hardware.*, seed, deterministic — see seeds-code.md §1.9) with their
// base_config.yaml defaults, which of them we ignore and why, and our own additions (simulated
// data, bidirectional blocks, step-based scheduling and checkpointing).
#pragma once

#include "mambatrack/train/config.hpp"

namespace mambatrack::train {

inline ConfigSchema mambapt_schema() {
  using V = ValueType;
  ConfigSchema s;
  // data
  s.add("data.data_dir", V::String, "", "TrackML directory (eventNNNNNNNNN-*.csv[.gz]); empty: simulate")
      .add("data.train_split", V::Float, "0.8", "fraction of events for training")
      .add("data.val_split", V::Float, "0.1", "fraction of events for validation")
      .add("data.test_split", V::Float, "0.1", "fraction of events for the final test")
      .add("data.batch_size", V::Int, "128", "tracks per micro-batch")
      .add("data.track_length_range", V::IntList, "[4, 8]", "[min, max] hits per track sequence")
      .add("data.volumes", V::IntList, "[7, 8, 9]", "detector volumes whose hits form the sequences")
      .add("data.max_tracks_per_event", V::Int, "10000", "cap on tracks taken from one event")
      .add("data.hit_order", V::String, "distance", "order of hits: distance (from the vertex) or hit_id")
      .add("data.min_pt", V::Float, "0.0", "minimum transverse momentum of a track [GeV]")
      .add("data.simulate_events", V::Int, "20", "events to simulate when data_dir is empty")
      .add("data.simulate_particles", V::Int, "2000", "particles per simulated event")
      .ignore("data.num_workers", "data loading runs in the training process")
      .ignore("data.pin_memory", "host buffers are reused; nothing to pin");
  // model
  s.add("model.d_model", V::Int, "64", "embedding width")
      .add("model.d_state", V::Int, "16", "SSM state size (DState)")
      .add("model.d_conv", V::Int, "4", "causal convolution width (DConv)")
      .add("model.expand", V::Int, "2", "inner width factor (Expand)")
      .add("model.n_layers", V::Int, "6", "number of blocks")
      .add("model.dropout", V::Float, "0.1", "dropout on each block's output")
      .add("model.mdm_hidden_dim", V::Int, "256", "hidden width of the MDM head")
      .add("model.ntp_hidden_dim", V::Int, "128", "hidden width of the NTP head")
      .add("model.gradient_checkpointing", V::Bool, "true", "recompute each block in backward")
      .add("model.mixed_precision", V::Bool, "true", "bf16 activations on the GPU (fp32 on the CPU)")
      .add("model.ssm", V::String, "mamba", "mixer: mamba or mamba2")
      .add("model.headdim", V::Int, "16", "Mamba2 head dimension")
      .add("model.ngroups", V::Int, "1", "Mamba2 B/C groups")
      .add("model.bidirectional", V::Bool, "false", "forward + reversed mixer per block")
      .add("model.norm", V::String, "layer", "block norm: layer (MAMBA-PT) or rms (mamba_ssm)")
      .add("model.position_embedding", V::Bool, "true", "learned absolute position embedding")
      .add("model.max_length", V::Int, "10", "longest sequence incl. [CLS] and [SEP]")
      .ignore("model.vocab_size", "the vocabulary is built from the detector's modules")
      .ignore("model.pad_token_id", "fixed: PAD=0, MASK=1, UNK=2, CLS=3, SEP=4")
      .ignore("model.mask_token_id", "fixed: PAD=0, MASK=1, UNK=2, CLS=3, SEP=4");
  // training
  s.add("training.num_epochs", V::Int, "200", "epochs over the training tracks")
      .add("training.max_steps", V::Int, "0", "stop after this many optimizer steps (0: by epochs)")
      .add("training.learning_rate", V::Float, "0.001", "peak learning rate")
      .add("training.weight_decay", V::Float, "0.01", "AdamW decoupled weight decay")
      .add("training.warmup_steps", V::Int, "1000", "linear warmup steps")
      .add("training.optimizer", V::String, "adamw", "only adamw")
      .add("training.adam_beta1", V::Float, "0.9", "AdamW beta1")
      .add("training.adam_beta2", V::Float, "0.999", "AdamW beta2")
      .add("training.adam_epsilon", V::Float, "1e-8", "AdamW epsilon")
      .add("training.scheduler", V::String, "cosine", "cosine (after warmup) or constant")
      .add("training.schedule_unit", V::String, "step", "step, or epoch as the seed does")
      .add("training.min_lr", V::Float, "1e-6", "learning rate at the end of the cosine")
      .add("training.mdm_weight", V::Float, "1.0", "weight of the MDM loss")
      .add("training.ntp_weight", V::Float, "0.5", "weight of the NTP loss")
      .add("training.initial_mask_rate", V::Float, "0.15", "MDM mask rate before the first boundary")
      .add("training.intermediate_mask_rate", V::Float, "0.30", "MDM mask rate between the boundaries")
      .add("training.final_mask_rate", V::Float, "0.50", "MDM mask rate after the second boundary")
      .add("training.mask_schedule_epochs", V::IntList, "[50, 100]", "epochs where the mask rate steps up")
      .add("training.mask_mode", V::String, "mambapt", "mambapt (all MASK) or bert (80/10/10)")
      .add("training.accumulation_steps", V::Int, "4", "micro-batches per optimizer step")
      .add("training.amp_enabled", V::Bool, "true", "bf16 mixed precision on the GPU")
      .add("training.label_smoothing", V::Float, "0.1", "MDM label smoothing epsilon")
      .add("training.gradient_clip_val", V::Float, "1.0", "global gradient-norm clip (0: off)")
      .add("training.save_every_n_epochs", V::Int, "10", "checkpoint every N epochs")
      .add("training.checkpoint_every_steps", V::Int, "0", "checkpoint every N steps (0: by epochs)")
      .add("training.eval_every_steps", V::Int, "0", "validate every N steps (0: each epoch)")
      .add("training.checkpoint_dir", V::String, "checkpoints", "checkpoint folder inside the run directory")
      .add("training.keep_last_n_checkpoints", V::Int, "3", "checkpoints kept (by step number)")
      .add("training.max_nonfinite_steps", V::Int, "10", "stop after this many non-finite steps in a row")
      .ignore("training.memory_efficient_attention", "there is no attention in a Mamba model");
  // evaluation, logging, hardware, top level
  s.add("evaluation.metrics", V::StringList, "[accuracy, f1, precision, recall]", "NTP metrics reported")
      .add("evaluation.distance_threshold", V::Float, "20.0", "MDM distance accuracy radius [mm]")
      .add("logging.log_every_n_steps", V::Int, "100", "metrics.jsonl/csv line every N steps")
      .add("logging.tensorboard_dir", V::String, "logs/tensorboard", "TensorBoard event files, in the run directory")
      .add("logging.progress_seconds", V::Float, "10", "seconds between progress lines when not on a terminal")
      .ignore("logging.wandb_project", "no Weights & Biases; use metrics.jsonl or TensorBoard")
      .ignore("logging.wandb_entity", "no Weights & Biases; use metrics.jsonl or TensorBoard")
      .ignore("hardware", "devices come from --device and --threads")
      .add("seed", V::Int, "42", "seed of every random stream (Philox)")
      .ignore("deterministic", "runs are always deterministic for a given seed and thread count");
  return s;
}

}  // namespace mambatrack::train
