// Wiring of a MAMBA-PT run from its resolved config: the data (a TrackML directory, or events
// simulated into RUN_DIR/data), the tokenizer (from detectors.csv or the built-in layout, saved
// to RUN_DIR/tokenizer.txt), the event split and track sequences, the model and the Trainer's
// options. Used by pretrain-mdm and eval.
#pragma once

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "commands/cuda_tasks.hpp"
#include "commands/simulate.hpp"
#include "mambatrack/data/batching.hpp"
#include "mambatrack/data/detector.hpp"
#include "mambatrack/data/simulator.hpp"
#include "mambatrack/data/tokenizer.hpp"
#include "mambatrack/data/track_sequences.hpp"
#include "mambatrack/data/trackml_io.hpp"
#include "mambatrack/nn/cpu_backend.hpp"
#include "mambatrack/nn/dispatch.hpp"
#include "mambatrack/nn/ssm_backend.hpp"
#include "mambatrack/train/mambapt_config.hpp"
#include "mambatrack/train/mdm_task.hpp"

namespace mambatrack::cli {

using CpuSsmBackend = nn::WithSsmOps<nn::CpuBackend>;
using CpuMixer = nn::MambaMixer<CpuSsmBackend>;
using CpuMdmTask = train::MdmTask<CpuSsmBackend, CpuMixer>;

struct MdmRun {
  train::Config config{train::mambapt_schema()};
  std::unique_ptr<train::MdmTaskBase> task;  // on the CPU or the GPU
  train::TrainerOptions trainer;
  int64_t vocab = 0;
  std::string data_dir;
};

inline bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
inline bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
inline void make_dir(const std::string& p) {
  std::string partial;
  for (std::size_t i = 0; i <= p.size(); ++i) {
    if ((i == p.size() || p[i] == '/') && !partial.empty()) ::mkdir(partial.c_str(), 0755);
    if (i < p.size()) partial += p[i];
  }
  if (!is_dir(p)) throw ConfigError(p + ": cannot create the directory");
}

// Simulated events for a run without data: only the configured volumes, written once.
inline std::string simulate_into(const std::string& dir, const train::Config& c) {
  const int64_t n = c.get<int64_t>("data.simulate_events");
  if (is_file(dir + "/detectors.csv") && static_cast<int64_t>(data::list_events(dir).size()) >= n) return dir;
  make_dir(dir);
  data::SimulatorOptions o;
  o.seed = static_cast<uint64_t>(c.get<int64_t>("seed"));
  o.n_particles = c.get<int64_t>("data.simulate_particles");
  o.n_vertices = static_cast<int32_t>(std::max<int64_t>(1, o.n_particles / 60));
  o.volumes = c.get<std::vector<int32_t>>("data.volumes");
  o.noise_per_module = 0.1;
  o.cells = false;
  write_simulated_events(dir, data::Detector::trackml_builtin(), o, 1000, n);
  return dir;
}

inline data::TrackSequenceOptions sequence_options(const train::Config& c) {
  data::TrackSequenceOptions s;
  s.volumes = c.get<std::vector<int32_t>>("data.volumes");
  const auto range = c.get<std::vector<int64_t>>("data.track_length_range");
  if (range.size() != 2 || range[0] < 1 || range[1] < range[0])
    throw ConfigError(c.origin("data.track_length_range") + ": data.track_length_range must be [min, max] hits, got " +
                      std::to_string(range.size()) + " values");
  s.min_hits = range[0];
  s.max_hits = range[1];
  const std::string order = c.get<std::string>("data.hit_order");
  if (order == "distance") s.order = data::HitOrder::kVertexDistance;
  else if (order == "hit_id") s.order = data::HitOrder::kHitId;
  else throw ConfigError(c.origin("data.hit_order") + ": data.hit_order must be distance or hit_id, got " + order);
  s.min_pt = c.get<double>("data.min_pt");
  return s;
}

// detectors.csv of a data directory, or the built-in TrackML layout when it has none.
inline std::vector<data::ModuleRecord> module_records(const std::string& data_dir) {
  const std::string detectors = data_dir + "/detectors.csv";
  return is_file(detectors) ? data::read_detectors(detectors) : data::Detector::trackml_builtin_records();
}

// The event split of a run: data::split_events with the run's seed and split fractions.
inline std::vector<data::Split> event_split(const train::Config& c, int64_t n_events) {
  return data::split_events(n_events, static_cast<uint64_t>(c.get<int64_t>("seed")), c.get<double>("data.train_split"),
                            c.get<double>("data.val_split"));
}

// Track sequences of the events whose split is one of `which`, in file order.
inline data::TrackSequences read_track_sequences(const std::vector<data::EventFiles>& files,
                                                 const std::vector<data::Split>& split,
                                                 const std::vector<data::Split>& which,
                                                 const data::Tokenizer& tokenizer, const data::TrackSequenceOptions& so) {
  data::TrackSequences out;
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (std::find(which.begin(), which.end(), split[i]) == which.end()) continue;
    const data::Event ev = data::read_event(files[i].prefix, false, true, true);
    out.append(data::build_track_sequences(ev, tokenizer, so));
  }
  return out;
}

// The MdmTask options of a resolved config (model, masking, losses) with the model config that
// goes into model.safetensors; `vocab` is the tokenizer's size.
inline train::MdmTaskOptions mdm_task_options(const train::Config& c, int64_t vocab) {
  train::MdmTaskOptions o;
  o.backbone.d_model = c.get<int64_t>("model.d_model");
  o.backbone.n_layer = c.get<int>("model.n_layers");
  o.backbone.input = nn::BackboneInput::kTokens;
  o.backbone.vocab = vocab;
  o.backbone.padding_idx = data::Tokenizer::kPad;
  if (c.get<bool>("model.position_embedding")) o.backbone.max_positions = c.get<int64_t>("model.max_length");
  const std::string norm = c.get<std::string>("model.norm");
  if (norm == "layer") o.backbone.norm = NormKind::kLayer;
  else if (norm == "rms") o.backbone.norm = NormKind::kRms;
  else throw ConfigError(c.origin("model.norm") + ": model.norm must be layer or rms, got " + norm);
  o.backbone.bidirectional = c.get<bool>("model.bidirectional");
  o.backbone.dropout = c.get<double>("model.dropout");
  o.backbone.checkpointing = c.get<bool>("model.gradient_checkpointing");
  o.mdm_hidden = c.get<int64_t>("model.mdm_hidden_dim");
  o.ntp_hidden = c.get<int64_t>("model.ntp_hidden_dim");
  o.batch_size = c.get<int64_t>("data.batch_size");
  o.seed = static_cast<uint64_t>(c.get<int64_t>("seed"));
  const std::string mask_mode = c.get<std::string>("training.mask_mode");
  if (mask_mode == "bert") o.mask.mode = data::MaskMode::kBert;
  else if (mask_mode != "mambapt") throw ConfigError(c.origin("training.mask_mode") + ": training.mask_mode must be mambapt or bert");
  o.schedule.initial_rate = c.get<double>("training.initial_mask_rate");
  o.schedule.intermediate_rate = c.get<double>("training.intermediate_mask_rate");
  o.schedule.final_rate = c.get<double>("training.final_mask_rate");
  const auto boundaries = c.get<std::vector<int64_t>>("training.mask_schedule_epochs");
  if (boundaries.size() != 2)
    throw ConfigError(c.origin("training.mask_schedule_epochs") + ": training.mask_schedule_epochs must be [first, second]");
  o.schedule.first_epoch = boundaries[0];
  o.schedule.second_epoch = boundaries[1];
  o.label_smoothing = c.get<double>("training.label_smoothing");
  o.mdm_weight = c.get<double>("training.mdm_weight");
  o.ntp_weight = c.get<double>("training.ntp_weight");
  const std::string ssm = c.get<std::string>("model.ssm");
  if (ssm != "mamba") throw ConfigError(c.origin("model.ssm") + ": model.ssm " + ssm + " is not available for pretrain-mdm yet (mamba)");
  o.model_config = {{"task", "mambapt"},
                    {"ssm", ssm},
                    {"d_model", o.backbone.d_model},
                    {"n_layer", o.backbone.n_layer},
                    {"d_state", c.get<int>("model.d_state")},
                    {"d_conv", c.get<int>("model.d_conv")},
                    {"expand", c.get<int>("model.expand")},
                    {"vocab", vocab},
                    {"norm", norm},
                    {"bidirectional", o.backbone.bidirectional},
                    {"max_positions", o.backbone.max_positions},
                    {"mdm_hidden_dim", o.mdm_hidden},
                    {"ntp_hidden_dim", o.ntp_hidden},
                    {"tokenizer", "tokenizer.txt"}};
  return o;
}

// The model and task of a resolved config on the given track sequences.
inline std::unique_ptr<CpuMdmTask> make_mdm_task(const train::Config& c, train::MdmTaskOptions o,
                                                 data::TrackSequences train_seqs, data::TrackSequences val_seqs) {
  nn::MambaOptions mo;
  const CpuMixer mixer = nn::make_mamba<CpuSsmBackend>(c.get<int>("model.d_state"), c.get<int>("model.d_conv"),
                                                        c.get<int>("model.expand"), o.backbone.d_model, mo);
  return std::make_unique<CpuMdmTask>(std::move(o), mixer, std::move(train_seqs), std::move(val_seqs));
}

// `device`: "cpu" or "cuda" (resolve_device()); `precision`: auto, fp32 or bf16 (resolve_bf16(): auto
// follows training.amp_enabled on the GPU); `cuda_graphs`: the GPU replays each full micro-batch
// (backbone, head, loss, backward) from a CUDA graph (MdmTaskOptions::cuda_graphs).
inline MdmRun setup_mdm_run(const std::string& config_path, const std::vector<std::string>& sets,
                            const std::string& data_arg, const std::string& run_dir, bool resume,
                            const std::string& device = "cpu", const std::string& precision = "auto",
                            bool cuda_graphs = true) {
  MdmRun run;
  train::Config& c = run.config;
  if (!config_path.empty()) c.read_file(config_path);
  for (const auto& s : sets) c.set(s);
  for (const auto& [key, why] : c.ignored()) std::fprintf(stderr, "config: ignoring %s (%s)\n", key.c_str(), why.c_str());
  make_dir(run_dir);
  { std::ofstream(run_dir + "/config.yaml") << c.dump_yaml(); }

  // Data and tokenizer.
  run.data_dir = !data_arg.empty() ? data_arg : c.get<std::string>("data.data_dir");
  if (run.data_dir.empty()) run.data_dir = simulate_into(run_dir + "/data", c);
  const auto files = data::list_events(run.data_dir);
  if (files.empty()) throw DataError(run.data_dir, 0, "", "no eventNNNNNNNNN-*.csv[.gz] files in this directory");
  const auto volumes = c.get<std::vector<int32_t>>("data.volumes");
  const data::Tokenizer tokenizer = data::Tokenizer::from_modules(module_records(run.data_dir), volumes);
  tokenizer.save(run_dir + "/tokenizer.txt");
  run.vocab = tokenizer.vocab_size();

  // Events → split → track sequences.
  const auto split = event_split(c, static_cast<int64_t>(files.size()));
  const data::TrackSequenceOptions so = sequence_options(c);
  data::TrackSequences train_seqs = read_track_sequences(files, split, {data::Split::kTrain}, tokenizer, so);
  data::TrackSequences val_seqs = read_track_sequences(files, split, {data::Split::kValidation}, tokenizer, so);
  if (val_seqs.size() == 0)
    throw ConfigError("pretrain-mdm: no validation tracks: " + std::to_string(files.size()) +
                      " events are too few for data.val_split; give more events");

  // Model.
  const bool bf16 = resolve_bf16(precision, device, c.get<bool>("training.amp_enabled"), "pretrain-mdm");
  if (device == "cuda") {
    train::MdmTaskOptions o = mdm_task_options(c, run.vocab);
    o.cuda_graphs = cuda_graphs;
    run.task = make_cuda_mdm_task(std::move(o), c.get<int>("model.d_state"), c.get<int>("model.d_conv"),
                                  c.get<int>("model.expand"), nn::MambaOptions{}, std::move(train_seqs),
                                  std::move(val_seqs), bf16);
  } else {
    run.task = make_mdm_task(c, mdm_task_options(c, run.vocab), std::move(train_seqs), std::move(val_seqs));
  }

  // Trainer.
  train::TrainerOptions& t = run.trainer;
  t.run_dir = run_dir;
  t.resume = resume;
  t.accumulation_steps = c.get<int64_t>("training.accumulation_steps");
  const int64_t steps_per_epoch = run.task->steps_per_epoch(t.accumulation_steps);
  const int64_t epochs = c.get<int64_t>("training.num_epochs");
  t.max_steps = c.get<int64_t>("training.max_steps") > 0 ? c.get<int64_t>("training.max_steps") : epochs * steps_per_epoch;
  const double lr = c.get<double>("training.learning_rate"), min_lr = c.get<double>("training.min_lr");
  const std::string unit = c.get<std::string>("training.schedule_unit");
  const std::string sched = c.get<std::string>("training.scheduler");
  if (sched == "constant") {
    t.schedule = optim::Schedule::constant(lr);
  } else if (sched != "cosine") {
    throw ConfigError(c.origin("training.scheduler") + ": training.scheduler must be cosine or constant, got " + sched);
  } else if (unit == "epoch") {
    t.schedule = optim::Schedule::cosine_annealing(lr, min_lr, std::max<int64_t>(1, epochs));
  } else if (unit == "step") {
    const int64_t warmup = std::min(c.get<int64_t>("training.warmup_steps"), std::max<int64_t>(0, t.max_steps - 1));
    t.schedule = optim::Schedule::warmup_cosine(lr, min_lr, warmup, std::max<int64_t>(t.max_steps, warmup + 1));
  } else {
    throw ConfigError(c.origin("training.schedule_unit") + ": training.schedule_unit must be step or epoch, got " + unit);
  }
  t.adamw.beta1 = c.get<double>("training.adam_beta1");
  t.adamw.beta2 = c.get<double>("training.adam_beta2");
  t.adamw.eps = c.get<double>("training.adam_epsilon");
  t.adamw.weight_decay = c.get<double>("training.weight_decay");
  t.clip_norm = c.get<double>("training.gradient_clip_val");
  const int64_t ck = c.get<int64_t>("training.checkpoint_every_steps");
  t.checkpoint_every = ck > 0 ? ck : c.get<int64_t>("training.save_every_n_epochs") * steps_per_epoch;
  t.keep_last = c.get<int64_t>("training.keep_last_n_checkpoints");
  const int64_t ev = c.get<int64_t>("training.eval_every_steps");
  t.eval_every = ev > 0 ? ev : steps_per_epoch;
  t.log_every = c.get<int64_t>("logging.log_every_n_steps");
  t.max_nonfinite = c.get<int64_t>("training.max_nonfinite_steps");
  t.progress.plain_interval_s = c.get<double>("logging.progress_seconds");
  return run;
}

}  // namespace mambatrack::cli
