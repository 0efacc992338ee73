// Evaluation of MAMBA-PT checkpoints (train/mdm_metrics.hpp, MdmTask::predict_mdm/predict_ntp):
// the metric definitions on hand-made cases (distance accuracy with known module centres,
// sequence accuracy, per-length bins, NTP precision/recall/F1 by hand), and the prediction
// plumbing on a tiny MDM task trained for a few steps: it agrees with the task's own validation,
// does not depend on batching, masks what MAMBA-PT masks, and survives a save/load round trip.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "mambatrack/nn/checkpoint.hpp"
#include "mambatrack/nn/cpu_backend.hpp"
#include "mambatrack/nn/mamba.hpp"
#include "mambatrack/nn/ssm_backend.hpp"
#include "mambatrack/train/mdm_metrics.hpp"
#include "mambatrack/train/mdm_task.hpp"
#include "mambatrack/train/trainer.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::train;

namespace {

// Three modules of volume 8: A at a random point, B at 19.5 mm from A, C at 20.5 mm from A (and
// more than 20 mm from B, on the opposite side), along a random direction.
struct ThreeModules {
  data::Tokenizer tokenizer;
  std::vector<data::ModuleRecord> records;
  int32_t a = 0, b = 0, c = 0;
};

ThreeModules three_modules(uint64_t seed) {
  Philox rng(seed, 1);
  double dir[3], norm = 0;
  for (auto& d : dir) {
    d = rng.normal();
    norm += d * d;
  }
  norm = std::sqrt(norm);
  const double origin[3] = {rng.uniform(-500, 500), rng.uniform(-500, 500), rng.uniform(-1000, 1000)};
  ThreeModules m;
  const double offsets[3] = {0.0, 19.5, -20.5};
  for (int i = 0; i < 3; ++i) {
    data::ModuleRecord r;
    r.volume_id = 8;
    r.layer_id = 2;
    r.module_id = 10 + i;
    r.cx = origin[0] + offsets[i] * dir[0] / norm;
    r.cy = origin[1] + offsets[i] * dir[1] / norm;
    r.cz = origin[2] + offsets[i] * dir[2] / norm;
    m.records.push_back(r);
  }
  m.tokenizer = data::Tokenizer::from_modules(m.records);
  m.a = m.tokenizer.token(8, 2, 10);
  m.b = m.tokenizer.token(8, 2, 11);
  m.c = m.tokenizer.token(8, 2, 12);
  return m;
}

}  // namespace

TEST_CASE("module centres: distances between tokens, specials and unknown modules", "[train][eval]") {
  const uint64_t seed = test::test_seed(311);
  INFO("seed " << seed);
  const ThreeModules m = three_modules(seed);
  const ModuleCentres centres(m.tokenizer, m.records);
  // Tolerance 1e-9 mm: double arithmetic on coordinates of ~1e3 mm.
  CHECK(std::abs(centres.distance(m.a, m.b) - 19.5) < 1e-9);
  CHECK(std::abs(centres.distance(m.a, m.c) - 20.5) < 1e-9);
  CHECK(std::abs(centres.distance(m.b, m.c) - 40.0) < 1e-9);
  CHECK(centres.distance(m.a, m.a) == 0.0);
  CHECK(std::isinf(centres.distance(data::Tokenizer::kMask, m.a)));  // specials are no modules
  CHECK(std::isinf(centres.distance(m.a, data::Tokenizer::kUnk)));
  CHECK(std::isinf(centres.distance(m.a, 99)));                        // beyond the vocabulary
  // A tokenizer module without a detectors.csv row is a DataError naming it.
  auto fewer = m.records;
  fewer.pop_back();
  CHECK_THROWS_WITH(ModuleCentres(m.tokenizer, fewer), Catch::Contains("module 12"));
}

TEST_CASE("MDM metrics: token, sequence and distance accuracy per track length by hand", "[train][eval]") {
  const uint64_t seed = test::test_seed(312);
  INFO("seed " << seed);
  const ThreeModules m = three_modules(seed);
  const ModuleCentres centres(m.tokenizer, m.records);
  MdmEvaluation ev;
  ev.mask_rate = 0.3;
  ev.threshold = 20.0;
  // Four tracks: 0 (4 hits) two masks, both right; 1 (4 hits) one right, one near miss (B for A,
  // 19.5 mm); 2 (5 hits) a far miss (C for B, 40 mm) and a special prediction (MASK for A);
  // 3 (6 hits) no masked token.
  MdmPredictions p;
  p.sample_ids = {7, 3, 11, 0};
  p.hits = {4, 4, 5, 6};
  p.track = {0, 0, 1, 1, 2, 2};
  p.position = {1, 3, 2, 4, 1, 5};
  p.label = {m.a, m.b, m.c, m.a, m.b, m.a};
  p.predicted = {m.a, m.b, m.c, m.b, m.c, data::Tokenizer::kMask};
  p.loss_sum = 4.5;
  ev.add(p, centres);
  // A second batch: one 5-hit track whose only mask is a near miss the other way (A for C,
  // 20.5 mm: just outside).
  MdmPredictions q;
  q.sample_ids = {5};
  q.hits = {5};
  q.track = {0};
  q.position = {2};
  q.label = {m.c};
  q.predicted = {m.a};
  q.loss_sum = 1.5;
  ev.add(q, centres);

  CHECK(ev.total.tracks == 5);
  CHECK(ev.total.masked_tracks == 4);
  CHECK(ev.total.tokens == 7);
  CHECK(ev.total.tokens_correct == 3);
  CHECK(ev.total.tokens_near == 4);  // the three right ones and the 19.5 mm miss
  CHECK(ev.total.tracks_all_correct == 1);
  CHECK(ev.total.token_accuracy() == Approx(3.0 / 7).epsilon(1e-12));  // exact ratios of small counts
  CHECK(ev.total.sequence_accuracy() == Approx(1.0 / 4).epsilon(1e-12));
  CHECK(ev.total.distance_accuracy() == Approx(4.0 / 7).epsilon(1e-12));
  CHECK(ev.total.loss() == Approx(6.0 / 7).epsilon(1e-12));

  REQUIRE(ev.by_hits.size() == 3);
  const MdmCounts& four = ev.by_hits.at(4);
  CHECK(four.tracks == 2);
  CHECK(four.masked_tracks == 2);
  CHECK(four.tokens == 4);
  CHECK(four.token_accuracy() == Approx(0.75).epsilon(1e-12));
  CHECK(four.sequence_accuracy() == Approx(0.5).epsilon(1e-12));
  CHECK(four.distance_accuracy() == Approx(1.0).epsilon(1e-12));
  const MdmCounts& five = ev.by_hits.at(5);
  CHECK(five.tracks == 2);
  CHECK(five.masked_tracks == 2);
  CHECK(five.tokens == 3);
  CHECK(five.tokens_correct == 0);
  CHECK(five.tokens_near == 0);
  CHECK(five.sequence_accuracy() == 0.0);
  const MdmCounts& six = ev.by_hits.at(6);
  CHECK(six.tracks == 1);
  CHECK(six.masked_tracks == 0);
  CHECK(std::isnan(six.token_accuracy()));  // nothing to count: NaN, written as null
  CHECK(std::isnan(six.sequence_accuracy()));

  // A larger threshold takes the 20.5 mm miss in; a track index out of range is a ShapeError.
  MdmEvaluation wide;
  wide.threshold = 21.0;
  wide.add(q, centres);
  CHECK(wide.total.tokens_near == 1);
  q.track = {1};
  CHECK_THROWS_AS(wide.add(q, centres), ShapeError);
}

TEST_CASE("NTP metrics: accuracy, precision, recall and F1 by hand", "[train][eval]") {
  NtpPredictions p;
  //             tp tp tp fp fp fn tn tn tn tn
  p.label = {1, 1, 1, 0, 0, 1, 0, 0, 0, 0};
  p.predicted = {1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
  p.loss_sum = 5.0;
  NtpCounts c;
  c.add(p);
  CHECK(c.tp == 3);
  CHECK(c.fp == 2);
  CHECK(c.fn == 1);
  CHECK(c.tn == 4);
  // Exact ratios of small counts; 1e-12 covers the division.
  CHECK(c.accuracy() == Approx(0.7).epsilon(1e-12));
  CHECK(c.precision() == Approx(0.6).epsilon(1e-12));
  CHECK(c.recall() == Approx(0.75).epsilon(1e-12));
  CHECK(c.f1() == Approx(2 * 0.6 * 0.75 / (0.6 + 0.75)).epsilon(1e-12));
  CHECK(c.loss() == Approx(0.5).epsilon(1e-12));
  NtpCounts none;
  none.add(0, 0);
  CHECK(std::isnan(none.precision()));  // no positive prediction
  CHECK(std::isnan(none.recall()));     // no positive label
  CHECK(none.accuracy() == 1.0);
}

namespace {

using Backend = nn::WithSsmOps<nn::CpuBackend>;
using Mixer = nn::MambaMixer<Backend>;
using Task = MdmTask<Backend, Mixer>;
constexpr int64_t kModules = 11;

// Tracks of 4..7 hits whose modules run 5 + (s + k) mod kModules: the next module follows from
// the previous one, so a few steps already teach the model something. |p| is random.
data::TrackSequences pattern_tracks(int64_t n, uint64_t seed) {
  Philox rng(seed, 2);
  data::TrackSequences t;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t hits = 4 + static_cast<int64_t>(rng.below(4));
    const int64_t start = static_cast<int64_t>(rng.below(kModules));
    t.tokens.push_back(data::Tokenizer::kCls);
    t.hit_id.push_back(-1);
    for (int64_t k = 0; k < hits; ++k) {
      t.tokens.push_back(static_cast<int32_t>(data::Tokenizer::kNumSpecial + (start + k) % kModules));
      t.hit_id.push_back(static_cast<int32_t>(i * 10 + k));
    }
    t.tokens.push_back(data::Tokenizer::kSep);
    t.hit_id.push_back(-1);
    t.offsets.push_back(static_cast<int64_t>(t.tokens.size()));
    t.event_id.push_back(i / 20);
    t.particle_id.push_back(static_cast<uint64_t>(i + 1));
    t.p.push_back(static_cast<float>(rng.uniform(0.3, 5.0)));
    t.pt.push_back(t.p.back() * 0.8f);
    t.q.push_back(rng.below(2) ? 1 : -1);
  }
  return t;
}

std::unique_ptr<Task> make_task(uint64_t seed, const data::TrackSequences& train, const data::TrackSequences& val) {
  MdmTaskOptions o;
  o.backbone.d_model = 16;
  o.backbone.n_layer = 2;
  o.backbone.input = nn::BackboneInput::kTokens;
  o.backbone.vocab = data::Tokenizer::kNumSpecial + kModules;
  o.backbone.padding_idx = data::Tokenizer::kPad;
  o.backbone.norm = NormKind::kLayer;
  o.mdm_hidden = 32;
  o.ntp_hidden = 16;
  o.batch_size = 16;
  o.seed = seed;
  o.schedule.initial_rate = o.schedule.intermediate_rate = o.schedule.final_rate = 0.3;
  o.model_config = {{"task", "mambapt"}};
  const Mixer mixer(nn::Mamba<4, 4, 2, Backend>(o.backbone.d_model, nn::MambaOptions{}));
  return std::make_unique<Task>(o, mixer, train, val);
}

std::map<std::pair<int64_t, int64_t>, std::pair<int32_t, int32_t>> by_sample(const MdmPredictions& p) {
  std::map<std::pair<int64_t, int64_t>, std::pair<int32_t, int32_t>> out;  // (sample, position) → (label, pred)
  for (std::size_t i = 0; i < p.label.size(); ++i)
    out[{p.sample_ids[p.track[i]], p.position[i]}] = {p.label[i], p.predicted[i]};
  return out;
}

}  // namespace

TEST_CASE("MdmTask predictions: agree with validation, batch-independent, reload unchanged", "[train][eval]") {
  const uint64_t seed = test::test_seed(313);
  INFO("seed " << seed);
  const data::TrackSequences train = pattern_tracks(160, seed), val = pattern_tracks(61, seed + 1);
  auto task = make_task(seed, train, val);
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("mambatrack_test_eval_" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(dir);
  {
    TrainerOptions o;
    o.run_dir = dir;
    o.max_steps = 40;
    o.schedule = optim::Schedule::constant(1e-2);
    o.tensorboard = false;
    o.log_every = 100;
    o.progress.mode = ProgressMode::kPlain;
    o.progress.plain_interval_s = 1e9;
    o.progress_out = std::fopen("/dev/null", "w");
    Trainer(o, *task).run();
    std::fclose(o.progress_out);
  }

  for (double rate : {0.3, 0.5}) {
    INFO("mask rate " << rate);
    // Over the validation tracks in the task's batch order: the same masks as evaluate_at.
    MdmEvaluation ev;
    std::vector<MdmPredictions> batches;
    for (int64_t b = 0; b < val.size(); b += 16) {
      std::vector<int64_t> ids;
      for (int64_t i = b; i < std::min(val.size(), b + 16); ++i) ids.push_back(i);
      batches.push_back(task->predict_mdm(val, ids, rate));
      ev.add(batches.back(), ModuleCentres());
    }
    const auto reference = task->evaluate_at(rate);
    CHECK(ev.total.token_accuracy() == reference.at("mdm_accuracy"));  // same counts: exact
    // Loss: sums of the same per-token terms in another order; 1e-9 relative.
    CHECK(ev.total.loss() == Approx(reference.at("mdm_loss")).epsilon(1e-9));
    CHECK(ev.total.tracks == val.size());
    // MAMBA-PT masking: floor(hits · rate) module tokens per track, labels the true tokens,
    // never [CLS] or [SEP].
    int64_t expected_tokens = 0;
    for (int64_t i = 0; i < val.size(); ++i)
      expected_tokens += static_cast<int64_t>(static_cast<double>(val.length(i) - 2) * rate);
    CHECK(ev.total.tokens == expected_tokens);
    std::map<std::pair<int64_t, int64_t>, std::pair<int32_t, int32_t>> batched;
    for (const auto& p : batches) {
      for (std::size_t i = 0; i < p.label.size(); ++i) {
        const int64_t s = p.sample_ids[p.track[i]];
        REQUIRE(p.position[i] >= 1);
        REQUIRE(p.position[i] <= val.length(s) - 2);
        CHECK(p.label[i] == val.sequence(s)[p.position[i]]);
      }
      const auto m = by_sample(p);
      batched.insert(m.begin(), m.end());
    }
    // Sequence accuracy recomputed from the per-token predictions.
    std::map<int64_t, bool> all_right;
    for (const auto& [key, lp] : batched) {
      auto it = all_right.emplace(key.first, true).first;
      it->second = it->second && lp.first == lp.second;
    }
    int64_t right = 0;
    for (const auto& [s, ok] : all_right) right += ok;
    CHECK(ev.total.masked_tracks == static_cast<int64_t>(all_right.size()));
    CHECK(ev.total.tracks_all_correct == right);
    // Another batching (reversed order, batches of 7) gives the same masks and predictions.
    std::map<std::pair<int64_t, int64_t>, std::pair<int32_t, int32_t>> rebatched;
    for (int64_t b = val.size(); b > 0; b -= 7) {
      std::vector<int64_t> ids;
      for (int64_t i = b - 1; i >= std::max<int64_t>(0, b - 7); --i) ids.push_back(i);
      const auto m = by_sample(task->predict_mdm(val, ids, rate));
      rebatched.insert(m.begin(), m.end());
    }
    CHECK(rebatched == batched);
  }
  // The pattern is learnable: after 40 steps the model beats chance (1/16) by far at rate 0.3.
  {
    MdmEvaluation ev;
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < val.size(); ++i) ids.push_back(i);
    ev.add(task->predict_mdm(val, ids, 0.3), ModuleCentres());
    INFO("token accuracy " << ev.total.token_accuracy());
    CHECK(ev.total.token_accuracy() > 0.3);
  }

  // NTP on explicit pairs: labels from |p|, predictions independent of the batching.
  std::vector<int64_t> first, second;
  Philox rng(seed, 3);
  for (int64_t k = 0; k < 40; ++k) {
    first.push_back(static_cast<int64_t>(rng.below(static_cast<uint64_t>(val.size()))));
    second.push_back(static_cast<int64_t>(rng.below(static_cast<uint64_t>(val.size()))));
  }
  const NtpPredictions all = task->predict_ntp(val, first, second);
  REQUIRE(all.label.size() == 40);
  for (int64_t k = 0; k < 40; ++k) CHECK(all.label[k] == (val.p[first[k]] > val.p[second[k]] ? 1 : 0));
  std::vector<int32_t> pieces;
  for (int64_t b = 0; b < 40; b += 9) {
    const std::vector<int64_t> f(first.begin() + b, first.begin() + std::min<int64_t>(40, b + 9));
    const std::vector<int64_t> s(second.begin() + b, second.begin() + std::min<int64_t>(40, b + 9));
    const auto part = task->predict_ntp(val, f, s);
    pieces.insert(pieces.end(), part.predicted.begin(), part.predicted.end());
  }
  CHECK(pieces == all.predicted);
  CHECK(std::isfinite(all.loss_sum));
  CHECK_THROWS_AS(task->predict_ntp(val, {0, 1}, {2}), ShapeError);

  // What eval does: a fresh task from the same options, weights from the checkpoint, gives the
  // same predictions.
  const auto latest = RunCheckpoints(dir).latest();
  REQUIRE(latest);
  auto reloaded = make_task(seed, train, val);
  auto values = reloaded->store().values();  // scrambled, so that only the loaded weights count
  const auto noise = test::random_uniform<float>(static_cast<std::size_t>(values.numel()), seed + 5);
  for (int64_t i = 0; i < values.numel(); ++i) values.data[i] = noise[static_cast<std::size_t>(i)];
  nn::load_model(latest->path + "/model.safetensors", reloaded->store());
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < val.size(); ++i) ids.push_back(i);
  CHECK(by_sample(reloaded->predict_mdm(val, ids, 0.5)) == by_sample(task->predict_mdm(val, ids, 0.5)));
  CHECK(reloaded->predict_ntp(val, first, second).predicted == all.predicted);
  std::filesystem::remove_all(dir);
}
