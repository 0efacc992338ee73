// The Trainer on a small task with a known answer (linear regression on a seeded data stream):
// it learns, a run stopped by SIGTERM and resumed gives bit-identical losses and weights to an
// uninterrupted run, checkpoints rotate, non-finite steps are skipped and then stop the run,
// frozen parameters never move, and accumulation equals one big batch.
#include <catch2/catch.hpp>

#include <csignal>
#include <cstdio>
#include <fstream>

#include "mambatrack/train/trainer.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::train;

namespace {

// y = W x + b with a hidden W*, b*; the micro-batch i of the stream is drawn from Philox stream
// i, so the data cursor (micro-batches consumed) is the whole data state.
class RegressionTask : public TrainTask {
 public:
  static constexpr int64_t kIn = 6, kOut = 3, kBatch = 16;

  // `seed` drives the data stream (part of the run's configuration), `init_seed` the weights.
  explicit RegressionTask(uint64_t seed, uint64_t init_seed = 0) : seed_(seed) {
    w_ = store_.add("w", Shape{kOut, kIn});
    b_ = store_.add("b", Shape{kOut}, /*no_decay=*/true);
    frozen_ = store_.add("fixed", Shape{4}, false, {}, /*frozen=*/true);
    store_.finalize();
    Philox rng(seed + init_seed, 99);
    auto w = store_.param(w_);
    for (int64_t i = 0; i < w.numel(); ++i) w[i] = static_cast<float>(rng.normal(0, 0.1));
    auto f = store_.param(frozen_);
    for (int64_t i = 0; i < f.numel(); ++i) f[i] = 1.5f + static_cast<float>(i);
  }

  nn::ParameterStore& store() override { return store_; }
  int64_t epoch() const override { return cursor_ / 10; }
  nlohmann::json model_config() const override { return {{"task", "regression"}, {"in", kIn}}; }
  void save_state(nn::TrainState& s) const override { s.integers["data.cursor"] = {cursor_}; }
  void load_state(const nn::TrainState& s) override { cursor_ = s.integers.at("data.cursor").at(0); }

  MicroBatchResult train_micro_batch(int64_t step, double grad_scale) override {
    if (step == raise_at_step) {
      raise_at_step = -1;  // once: a second SIGTERM would force-quit, as it should
      std::raise(SIGTERM);
    }
    MicroBatchResult r = batch_loss(Philox(seed_, 1000 + static_cast<uint64_t>(cursor_++)), grad_scale, true);
    if (nan_steps.count(step)) r.loss = std::nan("");
    return r;
  }
  std::map<std::string, double> evaluate() override {
    double total = 0;
    for (int i = 0; i < 4; ++i) total += batch_loss(Philox(seed_, 1u << 30 | static_cast<uint64_t>(i)), 0, false).loss;
    return {{"loss", total / 4}};
  }

  int64_t raise_at_step = -1;
  std::set<int64_t> nan_steps;

 private:
  MicroBatchResult batch_loss(Philox rng, double grad_scale, bool backward) {
    auto w = store_.param(w_);
    auto b = store_.param(b_);
    auto gw = store_.grad(w_);
    auto gb = store_.grad(b_);
    double loss = 0;
    for (int64_t n = 0; n < kBatch; ++n) {
      double x[kIn];
      for (auto& v : x) v = rng.normal();
      for (int64_t o = 0; o < kOut; ++o) {
        double target = 0.3 * static_cast<double>(o) - 0.5, pred = b[o];
        for (int64_t i = 0; i < kIn; ++i) {
          target += std::sin(static_cast<double>(o * kIn + i)) * x[i];
          pred += w.at(o, i) * x[i];
        }
        const double d = pred - target;
        loss += d * d / (kBatch * kOut);
        if (backward) {
          const double g = 2 * d / (kBatch * kOut) * grad_scale;
          for (int64_t i = 0; i < kIn; ++i) gw.at(o, i) += static_cast<float>(g * x[i]);
          gb[o] += static_cast<float>(g);
        }
      }
    }
    return MicroBatchResult{loss, {{"mse", loss}}, kBatch};
  }

  uint64_t seed_;
  nn::ParameterStore store_;
  nn::ParamHandle w_, b_, frozen_;
  int64_t cursor_ = 0;
};

TrainerOptions options(const std::string& dir, int64_t steps) {
  TrainerOptions o;
  o.run_dir = dir;
  o.max_steps = steps;
  o.schedule = optim::Schedule::warmup_cosine(0.05, 0.005, 5, steps);
  o.adamw.weight_decay = 0.01;
  o.clip_norm = 5.0;
  o.log_every = 1;
  o.tensorboard = false;
  o.progress.mode = ProgressMode::kPlain;
  o.progress.plain_interval_s = 1e9;
  o.progress_out = std::fopen("/dev/null", "w");
  return o;
}

void remove_tree(const std::string& dir) { (void)std::system(("rm -rf '" + dir + "'").c_str()); }

std::vector<float> params_of(RegressionTask& t) {
  auto v = t.store().values();
  return std::vector<float>(v.data, v.data + v.numel());
}

}  // namespace

TEST_CASE("trainer: learns the regression and writes metrics and checkpoints", "[cpu][train]") {
  const std::string dir = "test_trainer_learns";
  remove_tree(dir);
  RegressionTask task(test::test_seed(5));
  const double before = task.evaluate().at("loss");
  auto o = options(dir, 60);
  o.checkpoint_every = 10;
  o.keep_last = 2;
  o.eval_every = 20;
  Trainer trainer(o, task);
  const auto s = trainer.run();
  CHECK(s.steps == 60);
  CHECK(s.skipped == 0);
  // The data noise-free target is linear: the loss must fall by far more than noise could.
  INFO("validation loss before " << before << ", after " << s.last_eval.at("loss"));
  CHECK(s.last_eval.at("loss") < 0.05 * before);
  const RunCheckpoints ck(dir);
  const auto list = ck.list();
  REQUIRE(list.size() == 2);  // keep_last = 2 (50 and 60)
  CHECK(list.back().step == 60);
  CHECK(list.front().step == 50);
  CHECK(ck.best().has_value());
  // metrics.jsonl: one train line per step plus the validation lines.
  std::ifstream in(dir + "/metrics.jsonl");
  int train_lines = 0, val_lines = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    (j["split"] == "train" ? train_lines : val_lines)++;
  }
  CHECK(train_lines == 60);
  CHECK(val_lines == 3);
  // Frozen parameters never move.
  auto fixed = task.store().param(task.store().handle("fixed"));
  for (int64_t i = 0; i < 4; ++i) CHECK(fixed[i] == 1.5f + static_cast<float>(i));
  std::fclose(o.progress_out);
  remove_tree(dir);
}

TEST_CASE("trainer: a run stopped by SIGTERM and resumed equals an uninterrupted one bit for bit",
          "[cpu][train]") {
  const uint64_t seed = test::test_seed(11);
  INFO("seed " << seed);
  const std::string a_dir = "test_trainer_uninterrupted", b_dir = "test_trainer_resumed";
  remove_tree(a_dir);
  remove_tree(b_dir);
  RegressionTask a(seed);
  auto oa = options(a_dir, 30);
  oa.accumulation_steps = 2;
  const auto sa = Trainer(oa, a).run();

  RegressionTask b1(seed);
  b1.raise_at_step = 11;  // SIGTERM arrives during step 11: it finishes, checkpoints, returns
  auto ob = options(b_dir, 30);
  ob.accumulation_steps = 2;
  const auto sb1 = Trainer(ob, b1).run();
  CHECK(sb1.stopped_by_signal);
  CHECK(sb1.steps == 12);
  REQUIRE(RunCheckpoints(b_dir).latest()->step == 12);

  RegressionTask b2(seed, 1000);  // a fresh process with other weights: the checkpoint decides
  ob.resume = true;
  const auto sb2 = Trainer(ob, b2).run();
  CHECK(sb2.start_step == 12);
  CHECK(sb2.steps == 30);
  std::vector<double> resumed = sb1.losses;
  resumed.insert(resumed.end(), sb2.losses.begin(), sb2.losses.end());
  REQUIRE(resumed.size() == sa.losses.size());
  for (std::size_t i = 0; i < resumed.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(resumed[i] == sa.losses[i]);  // bit for bit
  }
  CHECK(params_of(b2) == params_of(a));
  // metrics.csv of the resumed run has each step once, like the uninterrupted one.
  auto count_rows = [](const std::string& path) {
    std::ifstream in(path);
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  };
  CHECK(count_rows(b_dir + "/metrics.csv") == count_rows(a_dir + "/metrics.csv"));
  std::fclose(oa.progress_out);
  std::fclose(ob.progress_out);
  remove_tree(a_dir);
  remove_tree(b_dir);
}

TEST_CASE("trainer: non-finite steps are skipped, and too many in a row stop the run", "[cpu][train]") {
  const std::string dir = "test_trainer_nonfinite";
  remove_tree(dir);
  RegressionTask task(3);
  task.nan_steps = {4, 9};
  auto o = options(dir, 15);
  const auto before = params_of(task);
  const auto s = Trainer(o, task).run();
  CHECK(s.skipped == 2);
  CHECK(s.steps == 15);
  CHECK(params_of(task) != before);
  remove_tree(dir);

  RegressionTask bad(3);
  bad.nan_steps = {2, 3, 4, 5};
  o.max_nonfinite = 3;
  CHECK_THROWS_AS(Trainer(o, bad).run(), NonFiniteError);
  std::fclose(o.progress_out);
  remove_tree(dir);
}

TEST_CASE("trainer: bad options are refused", "[cpu][train]") {
  RegressionTask task(1);
  auto o = options("unused", 10);
  o.accumulation_steps = 0;
  CHECK_THROWS_AS(Trainer(o, task), ConfigError);
  o.accumulation_steps = 1;
  o.schedule = optim::Schedule::warmup_cosine(1e-3, 1e-4, 20, 10);
  CHECK_THROWS_AS(Trainer(o, task), ConfigError);
  std::fclose(o.progress_out);
}
