// Metric sinks: exact JSONL and CSV text for a few records, the CSV header widened when a new
// metric appears, values read back bit-exactly, and resume: records past the resumed step and a
// cut-off last line are dropped, so the finished files equal those of an uninterrupted run.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mambatrack/core/philox.hpp"
#include "mambatrack/train/metric_sinks.hpp"
#include "support/test_support.hpp"

using namespace mambatrack;
using namespace mambatrack::train;

namespace {
// A fresh, empty directory under the test's working directory (one per test case: CTest runs
// test cases in parallel).
std::string fresh_dir(const std::string& name) {
  std::filesystem::remove_all(name);
  std::filesystem::create_directories(name);
  return name;
}
std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void append_raw(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::app);
  f << text;
}

MetricRecord train_record(int64_t step, double loss, double acc) {
  MetricRecord r;
  r.step = step;
  r.split = "train";
  r.values = {{"loss", loss}, {"mdm_accuracy", acc}};
  r.lr = 3e-4;
  r.grad_norm = 0.8125;
  r.tokens_per_s = 51234.5;
  r.wall_time = 1732460000.25 + static_cast<double>(step);
  return r;
}
MetricRecord val_record(int64_t step, double loss) {
  MetricRecord r;
  r.step = step;
  r.split = "val";
  r.values = {{"val_loss", loss}};
  r.wall_time = 1732460000.75 + static_cast<double>(step);
  return r;
}
}  // namespace

TEST_CASE("metric sinks: JSONL text is exact, absent fields left out, non-finite as null", "[cpu][train]") {
  const std::string dir = fresh_dir("test_train_jsonl_exact");
  {
    JsonlSink sink(dir + "/metrics.jsonl");
    sink.write(train_record(1, 2.375, 0.125));
    sink.write(val_record(1, 2.5));
    MetricRecord bad = train_record(2, std::nan(""), 0.25);
    bad.grad_norm = INFINITY;
    sink.write(bad);
    // Flushed per record: the text is on disk before the sink is closed.
    CHECK(slurp(dir + "/metrics.jsonl") ==
          "{\"step\":1,\"split\":\"train\",\"wall_time\":1732460001.25,\"lr\":0.0003,\"grad_norm\":0.8125,"
          "\"tokens_per_s\":51234.5,\"loss\":2.375,\"mdm_accuracy\":0.125}\n"
          "{\"step\":1,\"split\":\"val\",\"wall_time\":1732460001.75,\"val_loss\":2.5}\n"
          "{\"step\":2,\"split\":\"train\",\"wall_time\":1732460002.25,\"lr\":0.0003,\"grad_norm\":null,"
          "\"tokens_per_s\":51234.5,\"loss\":null,\"mdm_accuracy\":0.25}\n");
  }
  // A fresh sink truncates a previous file.
  JsonlSink again(dir + "/metrics.jsonl");
  CHECK(slurp(dir + "/metrics.jsonl").empty());
  MetricRecord reserved = val_record(3, 1.5);
  reserved.values["lr"] = 0.1;
  CHECK_THROWS_WITH(again.write(reserved), Catch::Contains("metric name 'lr' is a reserved column"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("metric sinks: CSV text is exact and the header widens when a new metric appears", "[cpu][train]") {
  const std::string dir = fresh_dir("test_train_csv_widen");
  const std::string path = dir + "/metrics.csv";
  CsvSink sink(path);
  sink.write(train_record(1, 2.375, 0.125));
  sink.write(train_record(2, 2.25, 0.1875));
  const std::string before = slurp(path);
  CHECK(before ==
        "step,split,wall_time,lr,grad_norm,tokens_per_s,loss,mdm_accuracy\n"
        "1,train,1732460001.25,0.0003,0.8125,51234.5,2.375,0.125\n"
        "2,train,1732460002.25,0.0003,0.8125,51234.5,2.25,0.1875\n");
  // A val record brings val_loss: the header gains a column and the earlier rows an empty cell.
  sink.write(val_record(2, 2.5));
  MetricRecord odd = train_record(3, -INFINITY, 0.25);
  odd.split = "train, fold \"a\"";  // quoted as RFC 4180 asks
  odd.lr.reset();
  odd.values["ntp_accuracy"] = 0.625;
  sink.write(odd);
  CHECK(slurp(path) ==
        "step,split,wall_time,lr,grad_norm,tokens_per_s,loss,mdm_accuracy,val_loss,ntp_accuracy\n"
        "1,train,1732460001.25,0.0003,0.8125,51234.5,2.375,0.125,,\n"
        "2,train,1732460002.25,0.0003,0.8125,51234.5,2.25,0.1875,,\n"
        "2,val,1732460002.75,,,,,,2.5,\n"
        "3,\"train, fold \"\"a\"\"\",1732460003.25,,0.8125,51234.5,-inf,0.25,,0.625\n");
  CHECK(sink.columns().size() == 10);
  CHECK_FALSE(test::path_exists(path + ".tmp-" + std::to_string(::getpid())));
  std::filesystem::remove_all(dir);
}

TEST_CASE("metric sinks: random values read back bit-exactly from JSONL and CSV", "[cpu][train]") {
  const uint64_t seed = test::test_seed(2024);
  INFO("seed " << seed);
  const std::string dir = fresh_dir("test_train_sinks_roundtrip");
  Philox rng(seed);
  std::vector<MetricRecord> records;
  for (int64_t s = 1; s <= 20; ++s) {
    MetricRecord r;
    r.step = s * 7;
    r.values = {{"loss", rng.uniform(0.1, 9.0) * std::pow(10.0, rng.uniform(-12, 12))}, {"acc", rng.uniform(0.0, 1.0)}};
    r.lr = rng.uniform(1e-6, 1e-3);
    r.wall_time = 1.7e9 + rng.uniform(0.0, 1e6);
    records.push_back(r);
  }
  {
    MultiSink sinks;
    sinks.emplace<JsonlSink>(dir + "/metrics.jsonl");
    sinks.emplace<CsvSink>(dir + "/metrics.csv");
    CHECK(sinks.size() == 2);
    for (const auto& r : records) sinks.write(r);
  }
  std::istringstream jsonl(slurp(dir + "/metrics.jsonl")), csv(slurp(dir + "/metrics.csv"));
  std::string line;
  std::getline(csv, line);
  CHECK(line == "step,split,wall_time,lr,grad_norm,tokens_per_s,acc,loss");
  for (const auto& r : records) {
    REQUIRE(std::getline(jsonl, line));
    const auto j = nlohmann::json::parse(line);
    CHECK(j["step"].get<int64_t>() == r.step);
    CHECK(j["loss"].get<double>() == r.values.at("loss"));  // shortest round-trip text: exact
    CHECK(j["acc"].get<double>() == r.values.at("acc"));
    CHECK(j["lr"].get<double>() == *r.lr);
    CHECK(j["wall_time"].get<double>() == r.wall_time);
    REQUIRE(std::getline(csv, line));
    bool ok = false;
    const auto cells = train::detail::csv_split(line, &ok);
    REQUIRE(cells.size() == 8);
    CHECK(std::stoll(cells[0]) == r.step);
    CHECK(std::strtod(cells[2].c_str(), nullptr) == r.wall_time);
    CHECK(std::strtod(cells[3].c_str(), nullptr) == *r.lr);
    CHECK(cells[4].empty());
    CHECK(std::strtod(cells[6].c_str(), nullptr) == r.values.at("acc"));
    CHECK(std::strtod(cells[7].c_str(), nullptr) == r.values.at("loss"));
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("metric sinks: resume drops records past the resumed step and a cut-off line", "[cpu][train]") {
  const std::string dir = fresh_dir("test_train_sinks_resume");
  // The run every resumed run must match: steps 1..8, a val record every 3 steps.
  auto records = [] {
    std::vector<MetricRecord> rs;
    for (int64_t s = 1; s <= 8; ++s) {
      rs.push_back(train_record(s, 3.0 - 0.125 * static_cast<double>(s), 0.0625 * static_cast<double>(s)));
      if (s % 3 == 0) rs.push_back(val_record(s, 2.75 - 0.0625 * static_cast<double>(s)));
    }
    return rs;
  }();
  {
    JsonlSink j(dir + "/full.jsonl");
    CsvSink c(dir + "/full.csv");
    for (const auto& r : records) {
      j.write(r);
      c.write(r);
    }
  }
  // The interrupted run got to step 7 (its last checkpoint at step 4) and was killed in the
  // middle of writing a record.
  {
    JsonlSink j(dir + "/metrics.jsonl");
    CsvSink c(dir + "/metrics.csv");
    for (const auto& r : records)
      if (r.step <= 7) {
        j.write(r);
        c.write(r);
      }
  }
  append_raw(dir + "/metrics.jsonl", "{\"step\":8,\"split\":\"tr");
  append_raw(dir + "/metrics.csv", "8,train,17324");
  std::vector<std::string> warnings;
  auto previous_sink = set_log_sink([&](LogLevel level, const std::string& m) {
    if (level == LogLevel::Warning) warnings.push_back(m);
  });
  {
    JsonlSink j(dir + "/metrics.jsonl", int64_t{4});
    CsvSink c(dir + "/metrics.csv", int64_t{4});
    set_log_sink(previous_sink);
    // The cut-off records are reported with their file and line (10 complete lines before).
    REQUIRE(warnings.size() == 2);
    CHECK_THAT(warnings[0], Catch::Contains("metrics.jsonl:10: dropped an incomplete last record"));
    CHECK_THAT(warnings[1], Catch::Contains("metrics.csv:11: dropped an incomplete last record"));
    // Right after opening: exactly the records up to step 4. The CSV keeps its header, which
    // already holds val_loss (first seen at step 3).
    std::string want_jsonl;
    for (const auto& line : train::detail::complete_lines(slurp(dir + "/full.jsonl"), nullptr))
      if (nlohmann::json::parse(line)["step"].get<int64_t>() <= 4) want_jsonl += line + "\n";
    CHECK(slurp(dir + "/metrics.jsonl") == want_jsonl);
    const auto csv_lines = train::detail::complete_lines(slurp(dir + "/metrics.csv"), nullptr);
    REQUIRE(csv_lines.size() == 1 + 5);  // header, train 1-4, val 3
    CHECK(csv_lines[0] == "step,split,wall_time,lr,grad_norm,tokens_per_s,loss,mdm_accuracy,val_loss");
    CHECK(csv_lines.back().rfind("4,train,", 0) == 0);
    for (const auto& r : records)
      if (r.step > 4) {
        j.write(r);
        c.write(r);
      }
  }
  CHECK(slurp(dir + "/metrics.jsonl") == slurp(dir + "/full.jsonl"));
  CHECK(slurp(dir + "/metrics.csv") == slurp(dir + "/full.csv"));

  // Resuming where no file exists yet starts one; a damaged line in the middle is an error
  // that names the line.
  { JsonlSink fresh(dir + "/none.jsonl", int64_t{10}); }
  CHECK(test::path_exists(dir + "/none.jsonl"));
  append_raw(dir + "/broken.jsonl", "{\"step\":1}\nnot json\n{\"step\":2}\n");
  CHECK_THROWS_WITH(JsonlSink(dir + "/broken.jsonl", int64_t{5}), Catch::Contains("broken.jsonl:2"));
  append_raw(dir + "/other.csv", "epoch,loss\n1,2.5\n");
  CHECK_THROWS_AS(CsvSink(dir + "/other.csv", int64_t{5}), DataError);
  std::filesystem::remove_all(dir);
}
