// Run configurations: the seeds' own YAML files load (MAMBA-PT's four, FM4NPP's sections with
// `<<:` merges), unknown keys fail with a did-you-mean, bad values name file, line, key and type,
// --set overrides, ignored keys are listed, and the resolved dump reads back to the same values.
#include <catch2/catch.hpp>

#include <fstream>

#include "mambatrack/train/fm4npp_config.hpp"
#include "mambatrack/train/mambapt_config.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::train;

namespace {
std::string seeds_dir() { return test::shared_dir() + "/seeds/configs"; }
std::string write_temp(const std::string& name, const std::string& text) {
  std::ofstream(name) << text;
  return name;
}
}  // namespace

TEST_CASE("config: the four MAMBA-PT seed configs load with their values", "[cpu][train]") {
  if (!test::path_exists(seeds_dir())) {
    WARN("seed configs not found under " << seeds_dir() << ": skipped");
    return;
  }
  struct Want {
    const char* file;
    int d_model, d_state, n_layers, batch;
    double lr, beta2;
    std::vector<int> mask_epochs;
  };
  const Want wants[] = {{"base_config.yaml", 64, 16, 6, 128, 1e-3, 0.999, {50, 100}},
                        {"safe_12Gb_config.yaml", 192, 48, 8, 512, 1e-3, 0.95, {25, 50}},
                        {"fast_config.yaml", 256, 64, 10, 1024, 1.5e-3, 0.95, {15, 30}},
                        {"beast_config.yaml", 384, 96, 12, 2048, 2e-3, 0.95, {25, 50}}};
  for (const auto& w : wants) {
    INFO(w.file);
    const Config c = Config::load(seeds_dir() + "/mamba-pt/" + w.file, mambapt_schema());
    CHECK(c.get<int>("model.d_model") == w.d_model);
    CHECK(c.get<int>("model.d_state") == w.d_state);
    CHECK(c.get<int>("model.n_layers") == w.n_layers);
    CHECK(c.get<int>("data.batch_size") == w.batch);
    CHECK(c.get<double>("training.learning_rate") == Approx(w.lr));
    CHECK(c.get<double>("training.adam_beta2") == Approx(w.beta2));
    CHECK(c.get<std::vector<int>>("training.mask_schedule_epochs") == w.mask_epochs);
    CHECK(c.get<std::vector<int>>("data.volumes") == std::vector<int>{7, 8, 9});
    CHECK(c.get<int>("seed") == 42);
    // Where a value came from: the file and line.
    CHECK_THAT(c.origin("model.d_model"), Catch::Contains(std::string(w.file) + ":"));
    // Keys we accept and do not use are listed once each, with the reason.
    bool saw_vocab = false, saw_hardware = false;
    for (const auto& [key, why] : c.ignored()) {
      saw_vocab |= key == "model.vocab_size";
      saw_hardware |= key == "hardware";
      CHECK_FALSE(why.empty());
    }
    CHECK(saw_vocab);
    CHECK(saw_hardware);
  }
  const Config base = Config::load(seeds_dir() + "/mamba-pt/base_config.yaml", mambapt_schema());
  CHECK(base.origin("model.d_model") == seeds_dir() + "/mamba-pt/base_config.yaml:22");
  CHECK(base.get<double>("training.min_lr") == Approx(1e-6));
}

TEST_CASE("config: FM4NPP sections resolve their <<: merge keys", "[cpu][train]") {
  if (!test::path_exists(seeds_dir())) {
    WARN("seed configs not found under " << seeds_dir() << ": skipped");
    return;
  }
  const std::string path = seeds_dir() + "/fm4npp/mamba_pretrain.yaml";
  const Config m1 = Config::load(path, fm4npp_schema(), "mamba_5m");
  CHECK(m1.get<int>("num_layers_backbone") == 12);
  CHECK(m1.get<int>("d_state") == 16);
  CHECK(m1.get<int>("headdim") == 0);  // not given: Mamba v1
  CHECK(m1.get<std::string>("pe_method") == "nerf");       // from `default` through the merge
  CHECK(m1.get<int>("limit_size") == 10000000);              // likewise
  CHECK(m1.get<std::string>("save_version") == "mamba_5m");  // the section overrides the default
  const Config m2 = Config::load(path, fm4npp_schema(), "mamba2_5m");
  CHECK(m2.get<int>("d_state") == 128);
  CHECK(m2.get<int>("headdim") == 64);
  CHECK(m2.get<int>("ngroups") == 1);
  const Config small = Config::load(path, fm4npp_schema(), "mamba_small");
  CHECK(small.get<int>("embed_dim") == 128);
  CHECK(small.get<int>("total_steps") == 25000);
  CHECK_THROWS_WITH(Config::load(path, fm4npp_schema(), "mamba3"),
                    Catch::Contains("no section 'mamba3'") && Catch::Contains("mamba2_5m"));
}

TEST_CASE("config: merge keys as YAML 1.1 defines them", "[cpu][train]") {
  const auto path = write_temp("test_config_merge.yaml",
                               "base: &b\n  a: 1\n  b: 2\nother: &o\n  b: 20\n  c: 30\n"
                               "run:\n  <<: [*b, *o]\n  a: 100\n");
  ConfigSchema s;
  s.add("a", ValueType::Int, "0", "").add("b", ValueType::Int, "0", "").add("c", ValueType::Int, "0", "");
  const Config c = Config::load(path, s, "run");
  CHECK(c.get<int>("a") == 100);  // own key wins
  CHECK(c.get<int>("b") == 2);    // the first merged map wins over the second
  CHECK(c.get<int>("c") == 30);
  std::remove(path.c_str());
}

TEST_CASE("config: unknown keys and bad values give clear errors", "[cpu][train]") {
  const auto typo = write_temp("test_config_typo.yaml", "model:\n  d_modle: 64\n");
  CHECK_THROWS_WITH(Config::load(typo, mambapt_schema()),
                    Catch::Contains("test_config_typo.yaml:2: unknown key 'model.d_modle'") &&
                        Catch::Contains("did you mean 'model.d_model'"));
  const auto misplaced = write_temp("test_config_misplaced.yaml", "learning_rate: 0.1\n");
  CHECK_THROWS_WITH(Config::load(misplaced, mambapt_schema()), Catch::Contains("'training.learning_rate'"));
  const auto bad = write_temp("test_config_bad.yaml", "training:\n  warmup_steps: 10\n  learning_rate: fast\n");
  CHECK_THROWS_WITH(Config::load(bad, mambapt_schema()),
                    Catch::Contains("test_config_bad.yaml:3: key 'training.learning_rate': expected a number, got \"fast\""));
  const auto bad_int = write_temp("test_config_badint.yaml", "model:\n  n_layers: 2.5\n");
  CHECK_THROWS_WITH(Config::load(bad_int, mambapt_schema()), Catch::Contains("expected an integer, got \"2.5\""));
  const auto bad_list = write_temp("test_config_badlist.yaml", "data:\n  volumes: [7, x]\n");
  CHECK_THROWS_WITH(Config::load(bad_list, mambapt_schema()), Catch::Contains("expected a list of integers"));
  const auto broken = write_temp("test_config_broken.yaml", "model:\n  d_model: [1, 2\n");
  CHECK_THROWS_WITH(Config::load(broken, mambapt_schema()), Catch::Contains("not valid YAML"));
  CHECK_THROWS_WITH(Config::load("no_such_config.yaml", mambapt_schema()), Catch::Contains("cannot open"));
  for (const auto& f : {typo, misplaced, bad, bad_int, bad_list, broken}) std::remove(f.c_str());
}

TEST_CASE("config: --set overrides and the resolved dump reads back", "[cpu][train]") {
  Config c(mambapt_schema());
  c.set("model.d_model=96");
  c.set("training.mask_schedule_epochs=[3, 6]");
  c.set("training.learning_rate=3e-4");
  CHECK(c.get<int>("model.d_model") == 96);
  CHECK(c.origin("model.d_model") == "--set");
  CHECK(c.get<std::vector<int>>("training.mask_schedule_epochs") == std::vector<int>{3, 6});
  CHECK(c.get<int>("model.n_layers") == 6);  // default
  CHECK_FALSE(c.given("model.n_layers"));
  CHECK_THROWS_WITH(c.set("model.d_stat=8"), Catch::Contains("did you mean 'model.d_state'"));
  CHECK_THROWS_WITH(c.set("model.d_state=big"), Catch::Contains("expected an integer"));
  CHECK_THROWS_WITH(c.set("nonsense"), Catch::Contains("expected key=value"));
  const auto path = write_temp("test_config_dump.yaml", c.dump_yaml());
  const Config back = Config::load(path, mambapt_schema());
  CHECK(back.get<int>("model.d_model") == 96);
  CHECK(back.get<double>("training.learning_rate") == Approx(3e-4));
  CHECK(back.get<std::vector<int>>("training.mask_schedule_epochs") == std::vector<int>{3, 6});
  CHECK(back.get<std::string>("training.scheduler") == "cosine");
  CHECK(back.get<std::vector<std::string>>("evaluation.metrics").size() == 4);
  std::remove(path.c_str());
}
