// The small training runs that test_training_cuda.cu compares between the CPU (training_host.cpp,
// a .cpp unit with Eigen) and the GPU (a .cu unit without it): the same simulated tracks and
// points, the same model options and trainer settings, so only the backend differs.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "mambatrack/data/detector.hpp"
#include "mambatrack/data/fm4npp_points.hpp"
#include "mambatrack/data/simulator.hpp"
#include "mambatrack/data/tokenizer.hpp"
#include "mambatrack/data/track_sequences.hpp"
#include "mambatrack/train/fm4npp_task.hpp"
#include "mambatrack/train/mdm_task.hpp"
#include "mambatrack/train/trainer.hpp"

namespace mambatrack::test {

// A fresh run directory `name` under this process's own temporary root (so concurrent runs of the
// same test, e.g. under two compute-sanitizer tools, stay apart); the root goes when the process ends.
inline std::string fresh_run_dir(const std::string& name) {
  struct Root {
    std::filesystem::path path;
    ~Root() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Root root{std::filesystem::temp_directory_path() /
                         ("mambatrack_test_cuda_" + std::to_string(::getpid()))};
  const auto dir = root.path / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(root.path);
  return dir.string();
}

// Steps of the tiny runs: 50, or MAMBATRACK_TINY_STEPS (>= 8) for a compute-sanitizer pass,
// where every kernel path matters and 50 repetitions of each would not fit the time limit.
inline int64_t tiny_steps() {
  static const int64_t n = [] {
    const char* e = std::getenv("MAMBATRACK_TINY_STEPS");
    if (!e) return int64_t{50};
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    MAMBATRACK_CHECK(end != e && *end == '\0' && v >= 8, ConfigError,
                     "MAMBATRACK_TINY_STEPS must be an integer >= 8, got '", e, "'");
    return static_cast<int64_t>(v);
  }();
  return n;
}

struct TinyMdmData {
  data::TrackSequences train, val;
  int64_t vocab = 0;
};

inline TinyMdmData tiny_mdm_data(uint64_t seed) {
  data::SimulatorOptions so;
  so.seed = seed;
  so.n_particles = 300;
  so.n_vertices = 5;
  so.volumes = {7, 8, 9};
  so.noise_per_module = 0;
  so.cells = false;
  const data::Detector det = data::Detector::trackml_builtin();
  const data::Simulator sim(det, so);
  const data::Tokenizer tok = data::Tokenizer::from_modules(det.records(), so.volumes);
  data::TrackSequenceOptions to;
  to.volumes = so.volumes;
  TinyMdmData d;
  d.vocab = tok.vocab_size();
  for (int e = 0; e < 4; ++e) (e < 3 ? d.train : d.val).append(data::build_track_sequences(sim.generate(e), tok, to));
  return d;
}

// A bidirectional 2-layer Mamba with dropout in the backbone and the NTP head (the masks are the
// same Philox draws on both devices), MDM and NTP alternating.
inline train::MdmTaskOptions tiny_mdm_options(int64_t vocab, uint64_t seed) {
  train::MdmTaskOptions o;
  o.backbone.d_model = 32;
  o.backbone.n_layer = 2;
  o.backbone.vocab = vocab;
  o.backbone.padding_idx = data::Tokenizer::kPad;
  o.backbone.max_positions = 10;
  o.backbone.norm = NormKind::kLayer;
  o.backbone.bidirectional = true;
  o.backbone.dropout = 0.1;
  o.mdm_hidden = 64;
  o.ntp_hidden = 32;
  o.ntp_dropout = 0.1;
  o.batch_size = 32;
  o.seed = seed;
  o.schedule.initial_rate = o.schedule.intermediate_rate = o.schedule.final_rate = 0.3;
  o.schedule.validation_rate = 0.3;
  return o;
}

inline train::TrainerOptions tiny_trainer_options(const std::string& run_dir) {
  train::TrainerOptions t;
  t.run_dir = run_dir;
  t.max_steps = tiny_steps();
  t.schedule = optim::Schedule::warmup_cosine(2e-3, 1e-4, 5, tiny_steps());
  t.adamw.weight_decay = 0.01;
  t.clip_norm = 1.0;
  t.eval_every = 0;
  t.log_every = 0;
  t.tensorboard = false;
  t.progress_out = std::fopen("/dev/null", "w");
  return t;
}

// Small FM4NPP events of the pixel barrel (volume 8): `n_train` + `n_val`, prepared as the program does.
struct TinyFmEvents {
  std::vector<data::Fm4nppEvent> train, val;
};
inline TinyFmEvents tiny_fm_events(uint64_t seed, int n_train, int n_val, int64_t k) {
  data::SimulatorOptions so;
  so.seed = seed;
  so.n_particles = 60;
  so.n_vertices = 1;
  so.volumes = {8};
  so.noise_per_module = 0.005;
  so.cells = false;
  const data::Simulator sim(data::Detector::trackml_builtin(), so);
  data::TrackmlPointOptions po;
  po.volumes = so.volumes;
  std::vector<data::PointSet> train, val;
  for (int i = 0; i < n_train + n_val; ++i)
    (i < n_train ? train : val).push_back(data::points_from_event(sim.generate(1000 + i), po));
  data::Fm4nppOptions fo;
  fo.k = k;
  fo.edges = train::fm4npp_edges(train);
  TinyFmEvents ev;
  ev.train = train::prepare_fm4npp_events(std::move(train), fo);
  ev.val = train::prepare_fm4npp_events(std::move(val), fo);
  return ev;
}

inline train::Fm4nppTaskOptions tiny_fm_options(uint64_t seed, int64_t k) {
  train::Fm4nppTaskOptions o;
  o.backbone.d_model = 32;
  o.backbone.n_layer = 2;
  o.backbone.norm = NormKind::kRms;
  o.k = k;
  o.batch_size = 2;
  o.eval_batch_size = 2;
  o.seed = seed;
  return o;
}

// The per-step training losses on the CPU (training_host.cpp): MDM with the Mamba mixer, and
// FM4NPP with Mamba (headdim 0) or Mamba2 (headdim > 0).
std::vector<double> cpu_tiny_mdm_losses(uint64_t seed, const std::string& run_dir);
std::vector<double> cpu_tiny_fm_losses(uint64_t seed, int headdim, const std::string& run_dir);

}  // namespace mambatrack::test
