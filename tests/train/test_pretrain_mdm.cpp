// Science check of MAMBA-PT pretraining on simulated pixel tracks, small enough for CI: a small
// bidirectional Mamba model trained for a few hundred steps must predict masked modules far
// better than the module-frequency baseline, and tell which of two tracks has the larger |p|
// above 70%. A broken gradient anywhere in the backbone leaves MDM at the baseline.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <map>

#include "mambatrack/data/simulator.hpp"
#include "mambatrack/data/tokenizer.hpp"
#include "mambatrack/nn/cpu_backend.hpp"
#include "mambatrack/nn/dispatch.hpp"
#include "mambatrack/nn/ssm_backend.hpp"
#include "mambatrack/train/mdm_task.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;

namespace {
using Backend = nn::WithSsmOps<nn::CpuBackend>;
using Mixer = nn::MambaMixer<Backend>;

struct Data {
  data::TrackSequences train, val;
  int64_t vocab = 0;
  double frequency_baseline = 0;  // accuracy of always predicting the most common module
};

Data simulate(uint64_t seed) {
  data::SimulatorOptions so;
  so.seed = seed;
  so.n_particles = 1200;
  so.n_vertices = 20;
  so.volumes = {7, 8, 9};
  so.noise_per_module = 0;
  so.cells = false;
  const data::Detector det = data::Detector::trackml_builtin();
  const data::Simulator sim(det, so);
  const data::Tokenizer tok = data::Tokenizer::from_modules(det.records(), so.volumes);
  data::TrackSequenceOptions to;
  to.volumes = so.volumes;
  Data d;
  d.vocab = tok.vocab_size();
  for (int e = 0; e < 24; ++e) (e < 20 ? d.train : d.val).append(data::build_track_sequences(sim.generate(e), tok, to));
  std::map<int32_t, int64_t> counts;
  int64_t modules = 0;
  for (int32_t t : d.train.tokens)
    if (!data::Tokenizer::is_special(t)) ++counts[t], ++modules;
  int64_t top = 0;
  for (const auto& [t, c] : counts) top = std::max(top, c);
  d.frequency_baseline = static_cast<double>(top) / static_cast<double>(modules);
  return d;
}
}  // namespace

TEST_CASE("pretrain-mdm science: MDM far above the frequency baseline and NTP above 70%", "[cpu][train][slow]") {
  const uint64_t seed = test::test_seed(2026);
  INFO("seed " << seed);
  // One thread: CTest runs tests side by side on CI's two cores; results do not depend on it.
  const int threads_before = num_threads();
  set_num_threads(1);
  Data d = simulate(seed);
  REQUIRE(d.train.size() > 5000);
  train::MdmTaskOptions o;
  o.backbone.d_model = 48;
  o.backbone.n_layer = 2;
  o.backbone.vocab = d.vocab;
  o.backbone.padding_idx = data::Tokenizer::kPad;
  o.backbone.max_positions = 10;
  o.backbone.norm = NormKind::kLayer;
  o.backbone.bidirectional = true;
  o.mdm_hidden = 96;
  o.ntp_hidden = 64;
  o.ntp_dropout = 0.0;
  o.batch_size = 64;
  o.seed = seed;
  o.schedule.initial_rate = o.schedule.intermediate_rate = o.schedule.final_rate = 0.3;
  o.schedule.validation_rate = 0.3;
  o.label_smoothing = 0.0;
  o.ntp_weight = 1.0;
  const Mixer mixer = nn::make_mamba<Backend>(16, 4, 2, o.backbone.d_model);
  train::MdmTask<Backend, Mixer> task(o, mixer, std::move(d.train), std::move(d.val));

  train::TrainerOptions t;
  t.run_dir = "test_pretrain_mdm_run";
  t.max_steps = 800;
  t.schedule = optim::Schedule::warmup_cosine(3e-3, 2e-4, 50, t.max_steps);
  t.adamw.weight_decay = 0.01;
  t.clip_norm = 1.0;
  t.log_every = 50;
  t.tensorboard = false;
  t.progress.mode = train::ProgressMode::kPlain;
  t.progress.plain_interval_s = 1e9;
  t.progress_out = std::fopen("/dev/null", "w");
  const auto s = train::Trainer(t, task).run();
  std::fclose(t.progress_out);
  (void)std::system("rm -rf test_pretrain_mdm_run");
  set_num_threads(threads_before);

  const double mdm = s.last_eval.at("mdm_accuracy"), ntp = s.last_eval.at("ntp_accuracy");
  std::printf("pretrain-mdm science check: MDM accuracy %.4f (frequency baseline %.4f), NTP accuracy %.4f\n", mdm,
              d.frequency_baseline, ntp);
  INFO("MDM accuracy " << mdm << ", frequency baseline " << d.frequency_baseline << ", NTP accuracy " << ntp);
  CHECK(mdm > 10 * d.frequency_baseline);
  CHECK(mdm > 0.05);
  // NTP: chance is 0.5; this model reaches ~0.73 on 20 training events (the quickstart 0.745), while
  // an untrained backbone stays near 0.5-0.6.
  CHECK(ntp > 0.70);
}
