// ParameterStore layout and checkpoints: save -> load gives identical parameters and training
// state; missing, extra and mis-shaped tensors are all named in one CheckpointError; a
// checkpoint directory is either complete or absent.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include "mambatrack/core/philox.hpp"
#include "mambatrack/nn/checkpoint.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::nn;

namespace {
// A small store shaped like one Mamba layer's parameters.
ParameterStore make_store(int64_t d_inner = 8, int64_t d_state = 4) {
  ParameterStore s;
  s.add("backbone.embedding.weight", Shape{10, 6}, true);
  s.add("backbone.layers.0.mixer.in_proj.weight", Shape{2 * d_inner, 6});
  s.add("backbone.layers.0.mixer.conv1d.weight", Shape{d_inner, 4}, false, {d_inner, 1, 4});
  s.add("backbone.layers.0.mixer.conv1d.bias", Shape{d_inner}, true);
  s.add("backbone.layers.0.mixer.A_log", Shape{d_inner, d_state}, true);
  s.add("backbone.fixed_projection", Shape{3, 5}, false, {}, /*frozen=*/true);
  s.finalize();
  return s;
}
void randomize(ParameterStore& s, uint64_t seed) {
  Philox rng(seed);
  for (const auto& p : s.params()) {
    auto v = s.param(s.handle(p.name));
    for (int64_t i = 0; i < v.numel(); ++i) v[i] = static_cast<float>(rng.normal());
  }
}
bool exists(const std::string& p) { return test::path_exists(p); }
}  // namespace

TEST_CASE("parameter store: flat layout, alignment, decay ranges", "[cpu][nn]") {
  ParameterStore s = make_store();
  CHECK(s.params().size() == 6);
  for (const auto& p : s.params()) CHECK(p.offset % ParameterStore::kAlign == 0);
  CHECK(s.num_total() == 60 + 96 + 32 + 8 + 32 + 15);
  CHECK(s.num_trainable() == s.num_total() - 15);
  const auto h = s.handle("backbone.layers.0.mixer.in_proj.weight");
  CHECK(s.param(h).shape == Shape{16, 6});
  CHECK(s.param(h).data == s.values().data + s.info(h).offset);
  CHECK(s.grad(h).data == s.grads().data + s.info(h).offset);
  // Decay: in_proj and conv1d.weight; no decay: embedding, conv bias, A_log. Frozen in neither.
  int64_t decay = 0, no_decay = 0;
  for (auto [b, e] : s.decay_ranges()) decay += e - b;
  for (auto [b, e] : s.no_decay_ranges()) no_decay += e - b;
  CHECK(decay == 96 + 32);
  CHECK(no_decay == 60 + 8 + 32);
  CHECK_THROWS_WITH(s.handle("nope"), Catch::Contains("no parameter named 'nope'"));
  ParameterStore t;
  t.add("a", Shape{2});
  CHECK_THROWS_WITH(t.add("a", Shape{2}), Catch::Contains("registered twice"));
  CHECK_THROWS_AS(t.add("b", Shape{2, 3}, false, {5}), ShapeError);
}

TEST_CASE("checkpoint: save then load restores parameters and training state exactly", "[cpu][nn]") {
  const uint64_t seed = test::test_seed(404);
  INFO("seed " << seed);
  ParameterStore a = make_store();
  randomize(a, seed);
  TrainState st;
  st.step = 1234;
  st.buffers["exp_avg"] = std::vector<float>(static_cast<std::size_t>(a.flat_size()));
  st.buffers["exp_avg_sq"] = std::vector<float>(static_cast<std::size_t>(a.flat_size()));
  Philox rng(seed + 1);
  for (const auto& p : a.params())
    for (int64_t i = 0; i < p.numel(); ++i) {
      st.buffers["exp_avg"][p.offset + i] = static_cast<float>(rng.normal());
      st.buffers["exp_avg_sq"][p.offset + i] = static_cast<float>(rng.uniform());
    }
  for (const auto& p : a.params())  // frozen parameters carry no optimizer state
    if (p.frozen)
      for (int64_t i = 0; i < p.numel(); ++i) st.buffers["exp_avg"][p.offset + i] = st.buffers["exp_avg_sq"][p.offset + i] = 0;
  st.integers["rng.data"] = {42, 3, 987654321};
  st.integers["data_cursor"] = {2, 17};
  st.extra = {{"best_val_loss", 1.25}};
  const nlohmann::json config = {{"d_model", 6}, {"n_layer", 1}, {"ssm", "mamba"}};
  const std::string dir = "test_nn_ckpt_step_1234";
  save_checkpoint(dir, a, config, st);
  CHECK(exists(dir + "/model.safetensors"));
  CHECK_FALSE(exists(dir + ".tmp-" + std::to_string(::getpid())));

  ParameterStore b = make_store();
  nlohmann::json got_config;
  TrainState got = load_checkpoint(dir, b, &got_config);
  CHECK(got_config == config);
  CHECK(got.step == 1234);
  CHECK(got.integers == st.integers);
  CHECK(got.extra == st.extra);
  for (const auto& p : a.params())
    for (int64_t i = 0; i < p.numel(); ++i) REQUIRE(a.values()[p.offset + i] == b.values()[p.offset + i]);
  CHECK(got.buffers == st.buffers);
  // The file on disk holds the reference's shapes and the metadata a PyTorch user expects.
  const auto f = SafetensorsFile::open(dir + "/model.safetensors");
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.info("backbone.layers.0.mixer.conv1d.weight").shape == std::vector<int64_t>{8, 1, 4});
  // Saving again over the same directory replaces it completely.
  st.step = 1235;
  save_checkpoint(dir, a, config, st);
  CHECK(load_train_state(dir + "/train_state.safetensors", b).step == 1235);
  std::remove((dir + "/model.safetensors").c_str());
  std::remove((dir + "/train_state.safetensors").c_str());
  ::rmdir(dir.c_str());
}

TEST_CASE("checkpoint: every mismatch is named in one error, the model left untouched", "[cpu][nn]") {
  ParameterStore a = make_store(8, 4);
  randomize(a, 7);
  save_model("test_nn_model_mismatch.safetensors", a, {{"d_state", 4}});
  // A model with a different d_state and an extra parameter the file lacks.
  ParameterStore b;
  b.add("backbone.embedding.weight", Shape{10, 6}, true);
  b.add("backbone.layers.0.mixer.in_proj.weight", Shape{16, 6});
  b.add("backbone.layers.0.mixer.conv1d.weight", Shape{8, 4}, false, {8, 1, 4});
  b.add("backbone.layers.0.mixer.A_log", Shape{8, 16}, true);
  b.add("backbone.layers.0.mixer.D", Shape{8}, true);
  b.finalize();
  randomize(b, 8);
  const float before = b.values()[0];
  try {
    load_model("test_nn_model_mismatch.safetensors", b);
    FAIL("no error");
  } catch (const CheckpointError& e) {
    const std::string m = e.what();
    CHECK_THAT(m, Catch::Contains("4 mismatches"));
    CHECK_THAT(m, Catch::Contains("tensor 'backbone.layers.0.mixer.A_log' has shape (8, 4), the model expects (8, 16)"));
    CHECK_THAT(m, Catch::Contains("missing tensor 'backbone.layers.0.mixer.D' (8)"));
    CHECK_THAT(m, Catch::Contains("unexpected tensor 'backbone.layers.0.mixer.conv1d.bias'"));
    CHECK_THAT(m, Catch::Contains("unexpected tensor 'backbone.fixed_projection'"));
  }
  CHECK(b.values()[0] == before);
  std::remove("test_nn_model_mismatch.safetensors");
}
