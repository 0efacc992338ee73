// Checkpoint rotation: step directories ordered by number (step_9 < step_10 < step_100, padded
// or not), incomplete ones and crash leftovers ignored and cleaned, keep-last-K deleting the
// oldest by step, and the best checkpoint surviving the rotation of its step directory.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "mambatrack/core/philox.hpp"
#include "mambatrack/nn/checkpoint.hpp"
#include "mambatrack/train/checkpoint_rotation.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::train;
namespace fs = std::filesystem;

namespace {
std::string fresh_run(const std::string& name) {
  fs::remove_all(name);
  fs::create_directories(name);
  return name;
}
void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}
std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
// A stand-in checkpoint directory; `complete` decides whether both files are there.
void fake_checkpoint(const std::string& dir, bool complete = true) {
  fs::create_directories(dir);
  write_text(dir + "/model.safetensors", "model of " + dir);
  if (complete) write_text(dir + "/train_state.safetensors", "state of " + dir);
}
std::vector<int64_t> steps_of(const std::vector<CheckpointEntry>& entries) {
  std::vector<int64_t> s;
  for (const auto& e : entries) s.push_back(e.step);
  return s;
}
}  // namespace

TEST_CASE("checkpoint rotation: ordered by step number, incomplete and leftovers ignored", "[cpu][train]") {
  const std::string run = fresh_run("test_train_rot_order");
  RunCheckpoints ck(run);
  CHECK(ck.list().empty());  // no checkpoints directory yet
  CHECK_FALSE(ck.latest().has_value());
  CHECK(ck.prepare().empty());
  CHECK(ck.path_for(10) == run + "/checkpoints/step_000000010");
  CHECK(ck.path_for(1234567890) == run + "/checkpoints/step_1234567890");  // padding is a minimum
  // As strings "step_100" < "step_9": the seed code's rotation bug. Padded and unpadded names mix.
  fake_checkpoint(ck.dir() + "/step_9");
  fake_checkpoint(ck.path_for(10));
  fake_checkpoint(ck.dir() + "/step_100");
  fake_checkpoint(ck.dir() + "/step_5", /*complete=*/false);
  fake_checkpoint(ck.dir() + "/step_000000007.tmp-4242");  // a save interrupted before its rename
  fake_checkpoint(ck.dir() + "/step_000000003.old-4242");  // a replacement interrupted after it
  fake_checkpoint(ck.dir() + "/best.tmp-99");
  fake_checkpoint(ck.dir() + "/step_12x");
  write_text(ck.dir() + "/notes.txt", "not a checkpoint");
  CHECK(steps_of(ck.list()) == std::vector<int64_t>{9, 10, 100});
  REQUIRE(ck.latest().has_value());
  CHECK(ck.latest()->step == 100);
  CHECK(ck.latest()->path == ck.dir() + "/step_100");
  CHECK(RunCheckpoints::parse_step_name("step_000000010") == std::optional<int64_t>(10));
  CHECK_FALSE(RunCheckpoints::parse_step_name("step_").has_value());
  CHECK_FALSE(RunCheckpoints::parse_step_name("step_-3").has_value());
  CHECK_FALSE(RunCheckpoints::parse_step_name("step_10.tmp-1").has_value());
  // Cleaning removes exactly the three leftovers.
  const auto removed = ck.clean_leftovers();
  CHECK(removed == std::vector<std::string>{"best.tmp-99", "step_000000003.old-4242", "step_000000007.tmp-4242"});
  CHECK_FALSE(fs::exists(ck.dir() + "/step_000000007.tmp-4242"));
  CHECK(fs::exists(ck.dir() + "/step_5"));
  CHECK(fs::exists(ck.dir() + "/notes.txt"));
  CHECK(steps_of(ck.list()) == std::vector<int64_t>{9, 10, 100});
  fs::remove_all(run);
}

TEST_CASE("checkpoint rotation: keep the last K by step number, never the newest", "[cpu][train]") {
  const uint64_t seed = test::test_seed(4711);
  INFO("seed " << seed);
  const std::string run = fresh_run("test_train_rot_keep");
  RunCheckpoints ck(run);
  ck.prepare();
  // Steps with different digit counts, created in a shuffled order.
  std::vector<int64_t> steps = {8, 90, 100, 999, 1000, 25000};
  Philox rng(seed);
  for (std::size_t i = steps.size(); i > 1; --i) std::swap(steps[i - 1], steps[rng.below(i)]);
  for (int64_t s : steps) fake_checkpoint(ck.path_for(s));
  fake_checkpoint(ck.dir() + "/step_3", false);  // incomplete: neither counted nor deleted
  CHECK(ck.keep_last(10).empty());
  CHECK(ck.keep_last(4) == std::vector<int64_t>{8, 90});
  CHECK(steps_of(ck.list()) == std::vector<int64_t>{100, 999, 1000, 25000});
  CHECK(ck.keep_last(1) == std::vector<int64_t>{100, 999, 1000});
  CHECK(steps_of(ck.list()) == std::vector<int64_t>{25000});
  CHECK(ck.keep_last(1).empty());
  CHECK(fs::exists(ck.dir() + "/step_3"));
  CHECK_THROWS_AS(ck.keep_last(0), ConfigError);
  // Deletion leaves no "*.old-*" behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(ck.dir())) entries += RunCheckpoints::is_leftover_name(e.path().filename().string()) ? 100 : 1;
  CHECK(entries == 2);
  fs::remove_all(run);
}

TEST_CASE("checkpoint rotation: real checkpoints from save_checkpoint, and the best copy", "[cpu][train]") {
  const uint64_t seed = test::test_seed(808);
  INFO("seed " << seed);
  const std::string run = fresh_run("test_train_rot_best");
  RunCheckpoints ck(run);
  ck.prepare();
  nn::ParameterStore store;
  store.add("backbone.embedding.weight", Shape{6, 4}, true);
  store.add("lm_head.weight", Shape{6, 4});
  store.finalize();
  Philox rng(seed);
  auto randomize = [&] {
    for (int64_t i = 0; i < store.flat_size(); ++i) store.values()[i] = static_cast<float>(rng.normal());
  };
  std::map<int64_t, std::string> model_bytes;
  for (int64_t step : {10, 20, 30, 40}) {
    randomize();
    nn::TrainState st;
    st.step = step;
    nn::save_checkpoint(ck.path_for(step), store, {{"d_model", 4}}, st);
    model_bytes[step] = slurp(ck.path_for(step) + "/model.safetensors");
  }
  CHECK(steps_of(ck.list()) == std::vector<int64_t>{10, 20, 30, 40});
  CHECK_FALSE(ck.best().has_value());
  // Validation losses 0.75, 0.875, 0.5, 0.625: best is 10, stays at 10, moves to 30, stays.
  CHECK(ck.update_best(10, "val/loss", 0.75, BestMode::kMin));
  CHECK_FALSE(ck.update_best(20, "val/loss", 0.875, BestMode::kMin));
  CHECK(ck.update_best(30, "val/loss", 0.5, BestMode::kMin));
  CHECK_FALSE(ck.update_best(40, "val/loss", 0.625, BestMode::kMin));
  CHECK_FALSE(ck.update_best(40, "val/loss", std::nan(""), BestMode::kMin));
  REQUIRE(ck.best().has_value());
  CHECK(ck.best()->step == 30);
  CHECK(ck.best()->value == 0.5);
  CHECK(ck.best()->metric == "val/loss");
  // The best is not a step directory, and survives the rotation of step_30.
  CHECK(ck.keep_last(1) == std::vector<int64_t>{10, 20, 30});
  CHECK(slurp(ck.best_path() + "/model.safetensors") == model_bytes[30]);
  nn::ParameterStore loaded;
  loaded.add("backbone.embedding.weight", Shape{6, 4}, true);
  loaded.add("lm_head.weight", Shape{6, 4});
  loaded.finalize();
  CHECK(nn::load_checkpoint(ck.best_path(), loaded).step == 30);
  CHECK(steps_of(ck.list()) == std::vector<int64_t>{40});
  // A higher-is-better metric replaces the record; a missing checkpoint is an error.
  CHECK(ck.update_best(40, "val/accuracy", 0.375, BestMode::kMax));
  CHECK(ck.best()->mode == BestMode::kMax);
  CHECK_FALSE(ck.update_best(40, "val/accuracy", 0.25, BestMode::kMax));
  CHECK_THROWS_WITH(ck.update_best(50, "val/accuracy", 0.5, BestMode::kMax), Catch::Contains("not a complete checkpoint"));
  CHECK(ck.clean_leftovers().empty());  // the best replacement left nothing behind
  fs::remove_all(run);
}
