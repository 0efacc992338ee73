// Wiring of an FM4NPP pretraining run from its resolved config (the seed's mamba_pretrain.yaml
// and a section such as mamba_5m): the data (a TrackML directory, a TPCpp-10M npz folder, or
// events simulated into RUN_DIR/data), the per-event k-NNN preparation (voxel bins from the
// training events), the model (Mamba when headdim = 0, Mamba2 otherwise) and the Trainer's options.
// `mambatrack eval` rebuilds the same task from a run's config.yaml with the evaluated events
// as its held-out set (setup_fm_task with an FmEvents other than kTrainVal).
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "commands/mdm_setup.hpp"
#include "commands/cuda_tasks.hpp"
#include "commands/simulate.hpp"
#include "mambatrack/data/batching.hpp"
#include "mambatrack/data/detector.hpp"
#include "mambatrack/data/fm4npp_points.hpp"
#include "mambatrack/data/npz.hpp"
#include "mambatrack/data/simulator.hpp"
#include "mambatrack/data/trackml_io.hpp"
#include "mambatrack/nn/cpu_backend.hpp"
#include "mambatrack/nn/dispatch.hpp"
#include "mambatrack/nn/mamba2.hpp"
#include "mambatrack/nn/mamba2_backend.hpp"
#include "mambatrack/nn/ssm_backend.hpp"
#include "mambatrack/train/fm4npp_config.hpp"
#include "mambatrack/train/fm4npp_task.hpp"

namespace mambatrack::cli {

// One host policy with the Mamba (v1) and the Mamba2 ops, so both mixers run on it.
using FmBackend = nn::WithMamba2Ops<nn::WithSsmOps<nn::CpuBackend>>;
using FmMambaTask = train::Fm4nppTask<FmBackend, nn::MambaMixer<FmBackend>>;
using FmMamba2Task = train::Fm4nppTask<FmBackend, nn::Mamba2Mixer<FmBackend>>;

// fm4npp_schema() plus the keys only this command reads (TrackML selection and the split).
inline train::ConfigSchema fm_run_schema() {
  using V = train::ValueType;
  train::ConfigSchema s = train::fm4npp_schema();
  s.add("volumes", V::IntList, "[8, 13]",
        "TrackML volumes whose hits are the points (pixel + short-strip barrel); [] = all")
      .add("max_points", V::Int, "3200", "drop events with more points (FM4NPP's high_thr); 0 = keep all")
      .add("val_fraction", V::Float, "0.1", "held-out fraction of the events when the data has one split")
      .add("simulate_noise", V::Float, "0.01", "mean noise hits per module in simulated events");
  return s;
}

struct FmRun {
  train::Config config{fm_run_schema()};
  std::unique_ptr<train::TrainTask> task;
  train::TrainerOptions trainer;
  std::string data_dir, data_kind, mixer;
  std::string split = "val";  // what the task's held-out events are: val, test or all
  std::string device = "cpu";  // where the task trains: cpu or cuda (resolve_device())
  bool bf16 = false;           // bf16 mixed precision on the GPU (resolve_bf16())
  bool cuda_graphs = false;    // the GPU replays full micro-batches from CUDA graphs
  int64_t train_events = 0, val_events = 0, train_points = 0, val_points = 0, dropped = 0, params = 0;
};

// Small simulated events (the configured volumes only), written once.
inline std::string simulate_fm_events(const std::string& dir, const train::Config& c) {
  const int64_t n = c.get<int64_t>("simulate_events");
  if (is_file(dir + "/detectors.csv") && static_cast<int64_t>(data::list_events(dir).size()) >= n) return dir;
  make_dir(dir);
  data::SimulatorOptions o;
  o.seed = static_cast<uint64_t>(c.get<int64_t>("seed"));
  o.n_particles = c.get<int64_t>("simulate_particles");
  o.n_vertices = static_cast<int32_t>(std::max<int64_t>(1, o.n_particles / 60));
  o.volumes = c.get<std::vector<int32_t>>("volumes");
  o.noise_per_module = c.get<double>("simulate_noise");
  o.cells = false;
  write_simulated_events(dir, data::Detector::trackml_builtin(), o, 1000, n);
  return dir;
}

inline bool has_spacepoints(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) return false;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("spacepoints", 0) == 0 && name.size() > 4 && name.compare(name.size() - 4, 4, ".npz") == 0)
      return true;
  }
  return false;
}

// The events of the run as point sets, already split: TrackML (eventNNNNNNNNN-hits.csv[.gz]),
// a TPCpp-10M folder with spacepoints*.npz, or one with train/ and validation/ (or test/)
// subfolders of them. `limit` keeps the first events that pass the size cut (the seed's limit_data).
struct FmPoints {
  std::vector<data::PointSet> train, val, test;  // test: only a test/ folder next to validation/
  bool tpc = false;
  int64_t dropped = 0;
};

inline FmPoints load_fm_points(const std::string& dir, const train::Config& c, bool with_test = false) {
  FmPoints out;
  const int64_t max_points = c.get<int64_t>("max_points");
  const int64_t limit = c.get<bool>("limit_data") ? c.get<int64_t>("limit_size") : -1;
  const uint64_t seed = static_cast<uint64_t>(c.get<int64_t>("seed"));
  const double vf = c.get<double>("val_fraction");
  if (!(vf > 0 && vf < 1)) throw ConfigError(c.origin("val_fraction") + ": val_fraction must be in (0, 1)");
  auto keep = [&](const data::PointSet& p) {
    const bool ok = p.size() > 0 && (max_points <= 0 || p.size() <= max_points);
    out.dropped += !ok;
    return ok;
  };
  // Splits one list of events (event order shuffled by the seed) into train / validation.
  auto split_into = [&](std::vector<data::PointSet> all) {
    const auto n = static_cast<int64_t>(all.size());
    if (n < 2) throw DataError(dir, 0, "", std::to_string(n) + " usable event(s): need at least 2 (one to validate on)");
    const double val = std::max(vf, 1.0 / static_cast<double>(n) + 1e-9);
    const auto split = data::split_events(n, seed, 1.0 - val, val);
    for (int64_t i = 0; i < n; ++i) (split[i] == data::Split::kTrain ? out.train : out.val).push_back(std::move(all[i]));
  };
  auto tpc_events = [&](const std::string& folder, int64_t cap) {
    const data::TpcSplit s = data::read_tpc_split(folder);
    std::vector<data::PointSet> v;
    for (int64_t e = 0; e < s.points.num_events() && (cap < 0 || static_cast<int64_t>(v.size()) < cap); ++e) {
      data::PointSet p = data::points_from_exyz(s.points.event(e), s.points.event_size(e));
      if (keep(p)) v.push_back(std::move(p));
    }
    return v;
  };

  const auto files = data::list_events(dir);
  if (!files.empty()) {
    data::TrackmlPointOptions po;
    po.volumes = c.get<std::vector<int32_t>>("volumes");
    std::vector<data::PointSet> all;
    for (std::size_t i = 0; i < files.size() && (limit < 0 || static_cast<int64_t>(all.size()) < limit); ++i) {
      data::PointSet p = data::points_from_event(data::read_event(files[i].prefix, true, false, false), po);
      if (keep(p)) all.push_back(std::move(p));
    }
    split_into(std::move(all));
  } else if (has_spacepoints(dir)) {
    out.tpc = true;
    split_into(tpc_events(dir, limit));
  } else {
    std::string val_dir;
    for (const char* name : {"validation", "valid", "test"})
      if (has_spacepoints(dir + "/" + name)) {
        val_dir = dir + "/" + name;
        break;
      }
    if (!has_spacepoints(dir + "/train") || val_dir.empty())
      throw DataError(dir, 0, "", "no TrackML events (eventNNNNNNNNN-hits.csv[.gz]), no spacepoints*.npz, and no "
                                  "train/ + validation/ (or test/) folders of them");
    out.tpc = true;
    out.train = tpc_events(dir + "/train", limit);
    out.val = tpc_events(val_dir, -1);
    if (with_test && val_dir != dir + "/test" && has_spacepoints(dir + "/test")) out.test = tpc_events(dir + "/test", -1);
  }
  if (out.train.empty() || out.val.empty())
    throw DataError(dir, 0, "", "no training or no validation events left (" + std::to_string(out.dropped) +
                                    " dropped as empty or above max_points = " + std::to_string(max_points) +
                                    "; raise max_points or narrow volumes)");
  return out;
}

// The events the task holds out (evaluate() runs on them). kTrainVal: the run's own split
// (training); kVal / kTest / kAll: an evaluation of the run's validation events, the data's test/
// folder (TPCpp-10M; FM4NPP runs split the other data into train and validation only, so then the
// validation events, and run.split says "val"), or training + validation events.
enum class FmEvents { kTrainVal, kVal, kTest, kAll };

// Checks the config, loads and prepares the data (run.data_dir: data_arg, else data_root, else
// events simulated into RUN_DIR/data) and builds run.task from run.config.
inline void setup_fm_task(FmRun& run, const std::string& data_arg, const std::string& run_dir, FmEvents events) {
  const train::Config& c = run.config;
  const std::string embed = c.get<std::string>("embed_method");
  if (embed != "additive" && embed != "add" && embed != "concat")
    throw ConfigError(c.origin("embed_method") + ": embed_method must be additive (add) or concat, got " + embed);
  const std::string pe = c.get<std::string>("pe_method");
  if (pe != "nerf") throw ConfigError(c.origin("pe_method") + ": pe_method " + pe + " is not available (nerf)");
  const int64_t global = c.get<int64_t>("batch_size"), local = c.get<int64_t>("local_batch_size");
  if (local <= 0 || global < local || global % local != 0)
    throw ConfigError(c.origin("batch_size") + ": batch_size (" + std::to_string(global) +
                      ") must be a positive multiple of local_batch_size (" + std::to_string(local) + ")");
  const int d_state = c.get<int>("d_state"), d_conv = c.get<int>("d_conv"), expand = c.get<int>("expand");
  const int headdim = c.get<int>("headdim");
  if (headdim > 0) nn::check_mamba2_supported(d_state, d_conv, expand, headdim);
  else nn::make_mamba<FmBackend>(d_state, d_conv, expand, 8);  // throws on values that are not compiled
  if (c.get<int64_t>("klen") <= 0) throw ConfigError(c.origin("klen") + ": klen must be > 0");

  // Data.
  run.data_dir = !data_arg.empty() ? data_arg : c.get<std::string>("data_root");
  if (run.data_dir.empty()) {
    run.data_dir = simulate_fm_events(run_dir + "/data", c);
  } else if (!is_dir(run.data_dir)) {
    throw ConfigError((data_arg.empty() ? c.origin("data_root") + ": data_root " : "--data ") + run.data_dir +
                      " is not a directory; give --data DIR, or --set data_root= to simulate events");
  }
  FmPoints pts = load_fm_points(run.data_dir, c, events == FmEvents::kTest);
  const bool pts_tpc = pts.tpc;
  run.data_kind = pts.tpc ? "TPCpp-10M npz" : "TrackML";
  run.dropped = pts.dropped;

  // Per-event preparation: voxel bins from the training events, then r-sort, k-NNN, raster scan.
  const data::PointNormalization tpc = data::PointNormalization::tpc();
  const std::vector<double> r_splits =
      pts.tpc ? std::vector<double>{tpc.normalize_r(40.0), tpc.normalize_r(57.0)} : std::vector<double>{};
  data::Fm4nppOptions fo;
  fo.k = c.get<int64_t>("klen");
  fo.order = data::parse_sweep_order(c.get<std::string>("serialization_order"));
  fo.edges = train::fm4npp_edges(pts.train, r_splits);
  if (events != FmEvents::kTrainVal) {
    // Evaluation: the chosen events become the held-out set. The training events stay: the voxel
    // bins and the predict-the-mean baseline come from them, as in the run.
    if (events == FmEvents::kTest && !pts.test.empty()) {
      pts.val = std::move(pts.test);
      run.split = "test";
    } else if (events == FmEvents::kAll) {
      pts.val.insert(pts.val.begin(), pts.train.begin(), pts.train.end());
      run.split = "all";
    }
  }
  std::fprintf(stderr, "preparing %zu + %zu events (k-NNN targets, k = %lld)...\n", pts.train.size(), pts.val.size(),
               static_cast<long long>(fo.k));
  std::vector<data::Fm4nppEvent> train_ev = train::prepare_fm4npp_events(std::move(pts.train), fo);
  std::vector<data::Fm4nppEvent> val_ev = train::prepare_fm4npp_events(std::move(pts.val), fo);
  run.train_events = static_cast<int64_t>(train_ev.size());
  run.val_events = static_cast<int64_t>(val_ev.size());
  run.train_points = FmMambaTask::num_points(train_ev);
  run.val_points = FmMambaTask::num_points(val_ev);

  // Model.
  train::Fm4nppTaskOptions o;
  o.backbone.d_model = c.get<int64_t>("embed_dim");
  o.backbone.n_layer = c.get<int>("num_layers_backbone");
  o.backbone.norm = NormKind::kRms;  // FM4NPP: pre-norm RMSNorm blocks and a final RMSNorm
  o.backbone.bidirectional = false;
  o.backbone.dropout = c.get<double>("dropout");
  o.k = fo.k;
  o.embed = embed == "concat" ? nn::PointEmbedMethod::kConcat : nn::PointEmbedMethod::kAdd;
  o.batch_size = local;
  o.eval_batch_size = std::max<int64_t>(1, c.get<int64_t>("local_valid_batch_size"));
  o.seed = static_cast<uint64_t>(c.get<int64_t>("seed"));
  run.mixer = headdim > 0 ? "mamba2" : "mamba";
  o.model_config = {{"task", "fm4npp"},
                    {"ssm", run.mixer},
                    {"d_model", o.backbone.d_model},
                    {"n_layer", o.backbone.n_layer},
                    {"d_state", d_state},
                    {"d_conv", d_conv},
                    {"expand", expand},
                    {"headdim", headdim},
                    {"ngroups", c.get<int64_t>("ngroups")},
                    {"klen", o.k},
                    {"embed_method", embed == "concat" ? "concat" : "add"},
                    {"pe_method", pe},
                    {"norm", "rms"},
                    {"serialization_order", c.get<std::string>("serialization_order")},
                    {"data", run.data_kind},
                    {"normalization", pts_tpc ? "tpc" : "trackml"},
                    {"volumes", pts_tpc ? std::vector<int32_t>{} : c.get<std::vector<int32_t>>("volumes")},
                    {"voxel_edges", {{"eta", fo.edges.eta}, {"phi", fo.edges.phi}, {"r", fo.edges.r}}}};
  nn::Mamba2Options m2;
  if (headdim > 0) m2.ngroups = c.get<int64_t>("ngroups");
  if (run.device == "cuda") {
    o.cuda_graphs = run.cuda_graphs;
    run.task =
        make_cuda_fm_task(o, d_state, d_conv, expand, headdim, m2, std::move(train_ev), std::move(val_ev), run.bf16);
  } else if (headdim > 0) {
    run.task = std::make_unique<FmMamba2Task>(
        o, nn::make_mamba2<FmBackend>(d_state, d_conv, expand, headdim, o.backbone.d_model, m2), std::move(train_ev),
        std::move(val_ev));
  } else {
    run.task = std::make_unique<FmMambaTask>(o, nn::make_mamba<FmBackend>(d_state, d_conv, expand, o.backbone.d_model),
                                             std::move(train_ev), std::move(val_ev));
  }
  run.params = run.task->store().num_trainable();
}

inline FmRun setup_fm_run(const std::string& config_path, const std::string& section,
                          const std::vector<std::string>& sets, const std::string& data_arg,
                          const std::string& run_dir, bool resume, const std::string& device = "cpu",
                          const std::string& precision = "auto", bool cuda_graphs = false) {
  FmRun run;
  run.device = device;
  run.cuda_graphs = cuda_graphs;
  run.bf16 = resolve_bf16(precision, device, false, "pretrain-fm");  // FM4NPP's configs have no AMP switch
  train::Config& c = run.config;
  if (!section.empty() && config_path.empty()) throw ConfigError("--config-section needs --config FILE");
  if (!config_path.empty()) c.read_file(config_path, section);
  for (const auto& s : sets) c.set(s);
  for (const auto& [key, why] : c.ignored()) std::fprintf(stderr, "config: ignoring %s (%s)\n", key.c_str(), why.c_str());
  if (c.given("checkpoint_dir"))
    std::fprintf(stderr, "config: checkpoints go to %s/checkpoints (checkpoint_dir is not used)\n", run_dir.c_str());
  make_dir(run_dir);
  { std::ofstream(run_dir + "/config.yaml") << c.dump_yaml(); }
  setup_fm_task(run, data_arg, run_dir, FmEvents::kTrainVal);
  const int64_t global = c.get<int64_t>("batch_size"), local = c.get<int64_t>("local_batch_size");

  // Trainer: AdamW(β = 0.9, 0.95) as FM4NPP, warmup + cosine stepped every optimizer step.
  train::TrainerOptions& t = run.trainer;
  t.run_dir = run_dir;
  t.resume = resume;
  t.accumulation_steps = global / local;
  t.max_steps = c.get<int64_t>("total_steps");
  if (t.max_steps <= 0) throw ConfigError(c.origin("total_steps") + ": total_steps must be > 0");
  const int64_t warmup = std::min(c.get<int64_t>("warmup_steps"), std::max<int64_t>(0, t.max_steps - 1));
  t.schedule = optim::Schedule::warmup_cosine(c.get<double>("max_lr"), c.get<double>("min_lr"), warmup,
                                              std::max<int64_t>(t.max_steps, warmup + 1));
  t.adamw.beta1 = 0.9;
  t.adamw.beta2 = 0.95;
  t.adamw.eps = 1e-8;
  t.adamw.weight_decay = c.get<double>("weight_decay");
  t.checkpoint_every = c.get<int64_t>("checkpoint_every_steps");
  t.eval_every = c.get<int64_t>("eval_every_steps");
  t.keep_last = 3;
  t.log_every = 10;
  return run;
}

}  // namespace mambatrack::cli
